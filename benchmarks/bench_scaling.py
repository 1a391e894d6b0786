"""Scale-out figures: 1 process vs a 2-worker Dask LocalCluster, bytes through the
client, per-block costs, and an estimate for 1 TB on 64 nodes built from them
(docs/scaling.md quotes its output).

A (rows x K float64, HDF5, chunked by the block) times B (K x M) with ``logmm.multiply``
on the same block plan, into a Zarr output (dask workers write their own chunks) and an
HDF5 output (dask workers write their blocks one at a time under the file's cluster
lock), each of these ways, interleaved and shuffled (benchmarks/timing.py):

- ``local-2``: one process, the read-ahead / compute / write-behind pipeline,
  ``--threads 2``;
- ``local-1``: the same with ``--threads 1`` (the per-core rate);
- ``dask-2``: the LocalCluster ``--scheduler dask`` starts, one single-threaded worker
  process per core (2 here; its start-up is timed separately and excluded: a cluster is
  started once per pipeline). ``--dask-defaults`` uses a LocalCluster with dask's own
  worker environment instead, as a cluster of the user's own would have it (it sets
  ``MALLOC_TRIM_THRESHOLD_``, see :mod:`logmm.dask_backend`).

For the dask runs it also counts the result bytes that reach the calling process
(``dask.sizeof`` of what each task returns) and the bytes the workers sent
(``transfer_outgoing_bytes_total``), as % of nbytes(C).

Then, for the estimate, one block's parts are timed alone: reading it from HDF5 on disk
(its pages evicted from the page cache first, this file only), the kernel on one thread
(``--threads 1``: one compute thread, one BLAS thread),
writing the result block to HDF5 and fsync-ing it. The whole-run timings above read
and write through the page cache (the machine has room for the files).

    python benchmarks/bench_scaling.py            # A 262144 x 256 (512 MiB), 5 repeats
    python benchmarks/bench_scaling.py --quick    # A 16384 x 256 (32 MiB), 1 repeat
    python benchmarks/bench_scaling.py --k 1024 --rows 65536 --repeats 3   # compute-heavy
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np

from logmm.logmatmul import logmatmulexp_report
from logmm.multiply import multiply
from logmm.resources import use_threads

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
        with use_threads(1):
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


def _spy_on_results(counts: dict[str, int]):
    """Wrap :func:`logmm.dask_backend.run_dask` so that ``counts["results"]`` adds up the
    bytes of what every task returns to this process; returns the undo function."""
    from dask.sizeof import sizeof

    from logmm import dask_backend

    real = dask_backend.run_dask

    def spy(pending, task, store, on_stored, *, client):
        def counting(block, result):
            counts["results"] += sizeof(result)
            store(block, result)
        return real(pending, task, counting, on_stored, client=client)

    dask_backend.run_dask = spy
    return lambda: setattr(dask_backend, "run_dask", real)


def _sent(client) -> int:
    """Bytes the cluster's workers have sent so far (to this process or each other)."""
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
               .values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--k", type=int, default=256, help="K = M (default 256)")
    parser.add_argument("--fs-gbps", type=float, default=10.0,
                        help="aggregate filesystem bandwidth each way assumed for the "
                             "estimate, GB/s (default 10)")
    parser.add_argument("--dask-defaults", action="store_true",
                        help="dask-2 on a LocalCluster with dask's default worker environment")
    args = parser.parse_args(argv)
    global K, M
    K = M = args.k
    rows = args.rows or (16384 if args.quick else 262144)
    repeats = args.repeats or (1 if args.quick else 5)
    try:
        import distributed
    except ImportError:
        distributed = None
        print("dask is not installed (pip install 'logmm[dask]'): the dask-2 runs are "
              "skipped\n")
    with tempfile.TemporaryDirectory(prefix="logmm-bench-scaling-") as tmp:
        directory = Path(tmp)
        a, b = write_inputs(directory, rows)
        in_mib = rows * K * 8 / MiB
        c_bytes = rows * M * 8
        t0 = time.perf_counter()
        ways: dict[str, dict] = {"local-2": {"threads": 2}, "local-1": {"threads": 1}}
        stack = ExitStack()
        client = None
        if distributed is not None and args.dask_defaults:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=40, scheduler_kwargs={"dashboard_address": ":0"}))
            client = stack.enter_context(distributed.Client(cluster))
        elif distributed is not None:
            from logmm.dask_backend import connect

            client = stack.enter_context(connect("dask", None, None))
        if client is not None:
            ways["dask-2"] = {"scheduler": client}
            workers = len(client.nthreads())
        startup = time.perf_counter() - t0
        counts = {"results": 0, "runs": 0, "sent": 0}

        def run(way: str, ext: str):
            extra = dict(ways[way])
            threads = extra.pop("threads", None)

            def go() -> None:
                out = directory / f"c-{way}.{ext}"
                before = _sent(client) if "scheduler" in extra else 0
                with use_threads(threads):
                    multiply(a, b, out, block_rows=BLOCK, overwrite=True, **extra)
                if "scheduler" in extra:
                    counts["sent"] += _sent(client) - before
                    counts["runs"] += 1
            return go

        undo = _spy_on_results(counts) if client is not None else lambda: None
        medians: dict[str, dict[str, float]] = {}
        through: dict[str, tuple[float, float]] = {}
        try:
            for ext in ("zarr", "h5"):
                counts.update(results=0, runs=0, sent=0)
                medians[ext] = timed({way: run(way, ext) for way in ways}, repeats)
                if counts["runs"]:
                    through[ext] = (100 * counts["results"] / counts["runs"] / c_bytes,
                                    100 * counts["sent"] / counts["runs"] / c_bytes)
        finally:
            undo()
            stack.close()
        reference = _read(directory / "c-local-1.h5").tobytes()
        same = all(_read(directory / f"c-{way}.{ext}").tobytes() == reference
                   for way in ways for ext in ("zarr", "h5"))
        parts = block_parts(directory, a, b, max(3, repeats))

    load = os.getloadavg()[0]
    print(f"## logmm multiply, A {rows}x{K} float64 HDF5 ({in_mib:.0f} MiB) times B {K}x{M}, "
          f"blocks of {BLOCK} rows, {os.cpu_count()} cores, load average {load:.1f}")
    if "dask-2" in ways:
        print("dask-2: " + ("a LocalCluster with dask's default worker environment"
                            if args.dask_defaults else "the LocalCluster --scheduler dask starts")
              + f", {workers} single-threaded workers")
    print(f"results identical across ways and formats: {same}; dask LocalCluster start-up "
          f"{startup:.2f} s (excluded)\n")
    print(f"{'output':<8}{'run':<10}{'seconds':>10}{'MiB/s in':>12}{'vs local-2':>12}"
          f"{'vs local-1':>12}{'client %C':>11}{'sent %C':>9}")
    for ext, runs in medians.items():
        for way, sec in runs.items():
            shares = through.get(ext, (0.0, 0.0)) if way == "dask-2" else None
            share = f"{shares[0]:>11.3f}{shares[1]:>9.3f}" if shares else f"{'':>11}{'':>9}"
            print(f"{ext:<8}{way:<10}{sec:>10.3f}{in_mib / sec:>12.1f}"
                  f"{runs['local-2'] / sec:>12.2f}{runs['local-1'] / sec:>12.2f}{share}")
    block_mib = BLOCK * K * 8 / MiB
    print(f"\n## one block of {BLOCK} rows ({block_mib:.0f} MiB in, {block_mib:.0f} MiB out)")
    for part, sec in parts.items():
        print(f"{part:<16}{sec * 1e3:>10.1f} ms{block_mib / sec:>12.1f} MiB/s")
    for cores in (2, 32):      # nodes like this machine, and typical cluster nodes
        estimate(parts, block_mib, cores=cores)
    if "dask-2" in medians.get("zarr", {}):
        node = in_mib / medians["zarr"]["dask-2"]
        dask_estimate(node, fs_gbps=args.fs_gbps, write_mib_s=block_mib / parts["write"])
    return 0


def dask_estimate(node_mib_s: float, fs_gbps: float, write_mib_s: float, nodes: int = 64,
                  total_tb: float = 1.0) -> None:
    """1 TB of A through ``--scheduler dask`` with workers writing Zarr chunks on
    ``nodes`` nodes, each as fast as this one's ``dask-2`` run, the filesystem carrying
    at most ``fs_gbps`` GB/s each way; an HDF5 output at one writer's ``write_mib_s``."""
    total = total_tb * 1e12
    compute = total / (nodes * node_mib_s * MiB)
    filesystem = total / (fs_gbps * 1e9)
    print(f"\n## estimate, --scheduler dask: {total_tb:g} TB of A (and as much C, Zarr "
          f"written by the workers) on {nodes} nodes")
    print(f"nodes: {nodes} x {node_mib_s:.0f} MiB/s (dask-2 here) = "
          f"{nodes * node_mib_s / 1024:.1f} GiB/s -> {compute:.0f} s; filesystem "
          f"{fs_gbps:g} GB/s each way -> {filesystem:.0f} s to read A, as long to write C")
    print(f"the run takes about max = {max(compute, filesystem):.0f} s; bytes through the "
          "client: the tasks' summaries only (a few hundred bytes per block)")
    one_file = total / (min(write_mib_s * MiB, fs_gbps * 1e9))
    print(f"an HDF5 output instead: one file, written one block at a time under its lock, "
          f"at one writer's rate at most ({write_mib_s:.0f} MiB/s measured here) -> "
          f">= {one_file:.0f} s")


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
    from logmm.io.readers import open_array

    with open_array(path) as reader:
        return reader.read_all()


if __name__ == "__main__":
    sys.exit(main())
