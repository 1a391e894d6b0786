"""``logmm.dask`` graphs against ``logmm multiply`` on the same input, into Zarr.

A (rows x K float64, HDF5, chunks of BLOCK rows) times B (K x M, ``.npy``), into a Zarr
store, with the same row blocks every way (so the same kernel calls and the same bytes,
checked), interleaved and shuffled (benchmarks/timing.py), medians:

- ``multiply``: ``logmm.multiply.multiply`` (the engine behind ``logmm multiply``, local
  scheduler: one process, read-ahead / compute / write-behind threads);
- ``dask-threads``: ``logmm.dask.logmatmulexp(from_address(A), from_address(B))
  .to_zarr(...)`` on dask's threaded scheduler (one thread per core);
- ``dask-2procs``: the same graph on a ``distributed.LocalCluster`` of 2 single-threaded
  worker processes (start-up timed separately and excluded), each worker writing its own
  Zarr chunks.

    python benchmarks/bench_dask_api.py            # A 262144 x 256 (512 MiB), 5 repeats
    python benchmarks/bench_dask_api.py --quick    # A 16384 x 256 (32 MiB), 1 repeat
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from logmm.io.readers import open_array
from logmm.multiply import multiply

from timing import timed

BLOCK = 8192
MiB = 1 << 20


def write_inputs(directory: Path, rows: int, k: int, m: int) -> tuple[str, str]:
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(directory / "a.h5", "w") as f:
        ds = f.create_dataset("a", shape=(rows, k), dtype=np.float64, chunks=(BLOCK, k))
        for start in range(0, rows, BLOCK):
            w = rng.standard_exponential((min(rows, start + BLOCK) - start, k))
            ds[start:start + len(w)] = np.log(w / w.sum(axis=1, keepdims=True))
    w = rng.standard_exponential((k, m))
    np.save(directory / "b.npy", np.log(w / w.sum(axis=1, keepdims=True)))
    return f"{directory}/a.h5:/a", str(directory / "b.npy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--k", type=int, default=256, help="K = M (default 256)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        import dask

        import logmm.dask as ld
    except ImportError:
        print("dask is not installed (pip install 'logmm[dask]'): nothing to compare")
        return 0
    try:
        import distributed
    except ImportError:
        distributed = None
    rows = args.rows or (2 * BLOCK if args.quick else 32 * BLOCK)
    repeats = args.repeats or (1 if args.quick else 5)
    k = m = args.k
    in_mib = rows * k * 8 / MiB

    with tempfile.TemporaryDirectory(prefix="logmm-bench-dask-api-") as tmp:
        directory = Path(tmp)
        a, b = write_inputs(directory, rows, k, m)

        def graph_to_zarr(out: Path) -> None:
            if out.exists():
                shutil.rmtree(out)
            A = ld.from_address(a, chunks=(BLOCK, -1))
            ld.logmatmulexp(A, ld.from_address(b)).to_zarr(str(out))

        def cli() -> None:
            multiply(a, b, directory / "multiply.zarr", block_rows=BLOCK, overwrite=True)

        def threads() -> None:
            with dask.config.set(scheduler="threads"):
                graph_to_zarr(directory / "dask-threads.zarr")

        runs = {"multiply": cli, "dask-threads": threads}
        cluster = client = None
        startup = float("nan")
        if distributed is not None:
            t0 = time.perf_counter()
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                               processes=True, dashboard_address=None,
                                               silence_logs=40,
                                               scheduler_kwargs={"dashboard_address": ":0"})
            client = distributed.Client(cluster, set_as_default=False)
            startup = time.perf_counter() - t0

            def procs() -> None:
                with dask.config.set(scheduler=client):
                    graph_to_zarr(directory / "dask-2procs.zarr")

            runs["dask-2procs"] = procs
        try:
            medians = timed(runs, repeats)
        finally:
            if client is not None:
                client.close()
                cluster.close()
        with open_array(f"{directory}/multiply.zarr:data") as reader:
            reference = reader.read_all().tobytes()
        same = {}
        for name in runs:
            if name != "multiply":
                with open_array(directory / f"{name}.zarr") as reader:
                    same[name] = reader.read_all().tobytes() == reference

    load = os.getloadavg()[0]
    print(f"## logmm.dask vs logmm multiply: A {rows}x{k} float64 HDF5 ({in_mib:.0f} MiB) "
          f"times B {k}x{m}, into Zarr, blocks of {BLOCK} rows, {os.cpu_count()} cores, "
          f"load average {load:.1f}, {repeats} repeats")
    print(f"bytes identical to multiply: {same}; LocalCluster start-up {startup:.2f} s "
          "(excluded)\n")
    print(f"{'run':<16}{'seconds':>10}{'MiB/s in':>12}{'vs multiply':>13}")
    for name, sec in medians.items():
        print(f"{name:<16}{sec:>10.3f}{in_mib / sec:>12.1f}{medians['multiply'] / sec:>12.2f}x")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
