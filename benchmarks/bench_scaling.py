"""Scale-out figures: 1 process vs a 2-worker Dask LocalCluster, per-block costs, and an
estimate for 1 TB on 64 nodes built from them (docs/scaling.md quotes its output).

A (rows x K float64, HDF5, chunked by the block) times B (K x M) with ``logmm.multiply``
on the same block plan three ways, interleaved and shuffled (benchmarks/timing.py):

- ``local``: one process, the read-ahead / compute / write-behind pipeline, BLAS on all
  cores;
- ``local-1thread``: the same with BLAS limited to one thread (the per-core rate);
- ``dask-2``: a LocalCluster of 2 single-threaded worker processes (its start-up is
  timed separately and excluded: a cluster is started once per pipeline, not per call).

Then, for the estimate, one block's parts are timed alone: reading it from HDF5 on disk
(its pages evicted from the page cache first, this file only), the kernel on one thread,
writing the result block to HDF5 and fsync-ing it. The whole-run timings above read
and write through the page cache (the machine has room for the files).

    python benchmarks/bench_scaling.py            # A 262144 x 256 (512 MiB), 5 repeats
    python benchmarks/bench_scaling.py --quick    # A 32768 x 256 (64 MiB), 2 repeats
    python benchmarks/bench_scaling.py --k 1024 --rows 65536 --repeats 3   # compute-heavy
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from logmm.logmatmul import logmatmulexp_report
from logmm.multiply import multiply

from timing import timed

K = M = 256
BLOCK = 8192
MiB = 1 << 20


def write_inputs(directory: Path, rows: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    with h5py.File(directory / "a.h5", "w") as f:
        ds = f.create_dataset("a", shape=(rows, K), dtype=np.float64, chunks=(BLOCK, K))
        for start in range(0, rows, BLOCK):
            stop = min(rows, start + BLOCK)
            w = rng.standard_exponential((stop - start, K))
            ds[start:stop] = np.log(w / w.sum(axis=1, keepdims=True))
    w = rng.standard_exponential((K, M))
    np.save(directory / "b.npy", np.log(w / w.sum(axis=1, keepdims=True)))
    return f"{directory}/a.h5:/a", str(directory / "b.npy")


def _evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (this file only), so reads hit the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def block_parts(directory: Path, a: str, b: str, repeats: int) -> dict[str, float]:
    """Median seconds of one block's read (from disk, its pages evicted first), kernel
    (1 BLAS thread) and write (to disk: fsync included)."""
    B = np.load(b)
    with h5py.File(directory / "a.h5", "r") as f:
        A = f["a"][:BLOCK]
    reads, kernels, writes = [], [], []
    for i in range(repeats):
        _evict(directory / "a.h5")
        with h5py.File(directory / "a.h5", "r") as f:
            t0 = time.perf_counter()
            f["a"][BLOCK * (i % 2):BLOCK * (i % 2 + 1)]
            reads.append(time.perf_counter() - t0)
        with threadpool_limits(1):
            t0 = time.perf_counter()
            C, _ = logmatmulexp_report(A, B)
            kernels.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with h5py.File(directory / "w.h5", "w") as f:
            f.create_dataset("c", data=C)
        _evict(directory / "w.h5")
        writes.append(time.perf_counter() - t0)
    return {"read": statistics.median(reads), "kernel": statistics.median(kernels),
            "write": statistics.median(writes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--k", type=int, default=256, help="K = M (default 256)")
    args = parser.parse_args(argv)
    global K, M
    K = M = args.k
    rows = args.rows or (32768 if args.quick else 262144)
    repeats = args.repeats or (2 if args.quick else 5)
    try:
        import distributed
    except ImportError:
        distributed = None
        print("dask is not installed (pip install 'logmm[dask]'): the dask-2 run is skipped\n")

    with tempfile.TemporaryDirectory(prefix="logmm-bench-scaling-") as tmp:
        directory = Path(tmp)
        a, b = write_inputs(directory, rows)
        in_mib = rows * K * 8 / MiB
        t0 = time.perf_counter()
        runs: dict[str, dict] = {"local": {}, "local-1thread": {"threads": 1}}
        cluster = client = None
        if distributed is not None:
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                               dashboard_address=None, silence_logs=40,
                                               scheduler_kwargs={"dashboard_address": ":0"})
            client = distributed.Client(cluster)
            runs["dask-2"] = {"scheduler": client}
        startup = time.perf_counter() - t0

        def run(name: str):
            extra = dict(runs[name])
            threads = extra.pop("threads", None)

            def go() -> None:
                out = directory / f"c-{name}.h5"
                with threadpool_limits(threads):
                    multiply(a, b, out, block_rows=BLOCK, overwrite=True, **extra)
            return go

        try:
            medians = timed({name: run(name) for name in runs}, repeats)
        finally:
            if client is not None:
                client.close()
                cluster.close()
        same = all(_read(directory / f"c-{n}.h5").tobytes()
                   == _read(directory / "c-local.h5").tobytes() for n in runs)
        parts = block_parts(directory, a, b, max(3, repeats))

    load = os.getloadavg()[0]
    print(f"## logmm multiply, A {rows}x{K} float64 HDF5 ({in_mib:.0f} MiB) times B {K}x{M}, "
          f"blocks of {BLOCK} rows, {os.cpu_count()} cores, load average {load:.1f}")
    print(f"results identical across schedulers: {same}; dask LocalCluster start-up "
          f"{startup:.2f} s (excluded)\n")
    print(f"{'run':<16}{'seconds':>10}{'MiB/s in':>12}{'rows/s':>14}{'vs local':>10}")
    for name, sec in medians.items():
        print(f"{name:<16}{sec:>10.3f}{in_mib / sec:>12.1f}{rows / sec:>14.0f}"
              f"{medians['local'] / sec:>10.2f}")
    block_mib = BLOCK * K * 8 / MiB
    print(f"\n## one block of {BLOCK} rows ({block_mib:.0f} MiB in, {block_mib:.0f} MiB out)")
    for part, sec in parts.items():
        print(f"{part:<16}{sec * 1e3:>10.1f} ms{block_mib / sec:>12.1f} MiB/s")
    for cores in (2, 32):      # nodes like this machine, and typical cluster nodes
        estimate(parts, block_mib, cores=cores)
    return 0


def estimate(parts: dict[str, float], block_mib: float, nodes: int = 64,
             cores: int = 32, total_tb: float = 1.0) -> None:
    """1 TB of A (K = 256 float64) on ``nodes`` nodes of ``cores`` cores, from the parts."""
    total_mib = total_tb * 1e12 / MiB
    per_node = total_mib / nodes
    blocks = per_node / block_mib
    compute = blocks * parts["kernel"] / cores
    read = per_node / (block_mib / parts["read"])
    write = per_node / (block_mib / parts["write"])
    print(f"\n## estimate: {total_tb:g} TB of A (and as much C) on {nodes} nodes x {cores} cores")
    print(f"per node {per_node / 1024:.1f} GiB in = {blocks:.0f} blocks; kernel "
          f"{blocks:.0f} x {parts['kernel']:.3f} s / {cores} cores = {compute:.0f} s")
    print(f"read {per_node:.0f} MiB at {block_mib / parts['read']:.0f} MiB/s = {read:.0f} s; "
          f"write at {block_mib / parts['write']:.0f} MiB/s = {write:.0f} s")
    print(f"overlapped (pipeline): max = {max(compute, read, write):.0f} s; serial: sum = "
          f"{compute + read + write:.0f} s; the filesystem must then carry "
          f"{nodes * block_mib / parts['read'] / 1024:.1f} GiB/s in and "
          f"{nodes * block_mib / parts['write'] / 1024:.1f} GiB/s out")


def _read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["data"][...]


if __name__ == "__main__":
    sys.exit(main())
