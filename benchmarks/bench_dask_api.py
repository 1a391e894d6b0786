"""``logmm.dask`` graphs against ``logmm multiply`` on the same input, into Zarr.

A (rows x K float64, HDF5, chunks of BLOCK rows) times B (K x M, ``.npy``), into a Zarr
store, with the same row blocks every way (so the same kernel calls and the same bytes,
checked), interleaved and shuffled (benchmarks/timing.py), medians:

- ``multiply``: ``logmm.multiply.multiply`` (the engine behind ``logmm multiply``, local
  scheduler: one process, read-ahead / compute / write-behind threads);
- ``dask-threads``: ``logmm.dask.logmatmulexp(from_address(A), from_address(B))
  .to_zarr(...)`` on dask's threaded scheduler (one thread per core);
- ``dask-2procs``: the same graph on the ``distributed.LocalCluster`` ``--scheduler dask``
  starts (one single-threaded worker process per core, dask's default worker environment
  less ``MALLOC_TRIM_THRESHOLD_``: see :mod:`logmm.dask_backend`; start-up timed
  separately and excluded), each worker writing its own Zarr chunks;
- ``multiply-dask``: ``multiply(..., scheduler=client)`` on that cluster (the CLI's
  ``--scheduler dask`` path), the figure ``dask-2procs`` is compared with.

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
from contextlib import ExitStack
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
        client = None
        startup = float("nan")
        with ExitStack() as stack:
            if distributed is not None:
                from logmm.dask_backend import connect

                t0 = time.perf_counter()
                client = stack.enter_context(connect("dask", None, None))
                startup = time.perf_counter() - t0

                def procs() -> None:
                    with dask.config.set(scheduler=client):
                        graph_to_zarr(directory / "dask-2procs.zarr")

                def cli_dask() -> None:
                    multiply(a, b, directory / "multiply-dask.zarr", block_rows=BLOCK,
                             overwrite=True, scheduler=client)

                runs["dask-2procs"] = procs
                runs["multiply-dask"] = cli_dask
            medians = timed(runs, repeats)
        with open_array(f"{directory}/multiply.zarr:data") as reader:
            reference = reader.read_all().tobytes()
        same = {}
        for name in runs:
            if name != "multiply":
                where = f"{directory}/{name}.zarr" + (":data" if name.startswith("multiply")
                                                      else "")
                with open_array(where) as reader:
                    same[name] = reader.read_all().tobytes() == reference

    load = os.getloadavg()[0]
    print(f"## logmm.dask vs logmm multiply: A {rows}x{k} float64 HDF5 ({in_mib:.0f} MiB) "
          f"times B {k}x{m}, into Zarr, blocks of {BLOCK} rows, {os.cpu_count()} cores, "
          f"load average {load:.1f}, {repeats} repeats")
    print(f"bytes identical to multiply: {same}; LocalCluster start-up {startup:.2f} s "
          "(excluded)\n")
    print(f"{'run':<16}{'seconds':>10}{'MiB/s in':>12}{'vs multiply':>13}"
          f"{'vs multiply-dask':>18}")
    on_cluster = medians.get("multiply-dask")
    for name, sec in medians.items():
        vs_dask = f"{on_cluster / sec:>17.2f}x" if on_cluster else ""
        print(f"{name:<16}{sec:>10.3f}{in_mib / sec:>12.1f}{medians['multiply'] / sec:>12.2f}x"
              f"{vs_dask}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
