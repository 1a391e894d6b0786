"""Out-of-core multiply: throughput and peak memory against the in-memory kernel.

A (rows x 64 float32) is written as .npy, HDF5 (uncompressed and gzip) and Zarr; each is
multiplied by B (64 x 64) with ``logmm.multiply`` under a memory budget a quarter of A's
size or less, in a fresh interpreter whose anonymous memory (RssAnon, sampled every 5 ms;
file-backed pages of memory maps are reclaimable and not counted) is tracked. The
in-memory kernel on the same arrays gives the reference throughput.

    python benchmarks/bench_streaming.py                 # 1 GiB input, 256 MiB budget
    python benchmarks/bench_streaming.py --quick         # 256 MiB input, 64 MiB budget
    python benchmarks/bench_streaming.py --huge-gb 30    # also a 30 GB input (slow)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import zarr

import logmm

K = M = 64
MiB = 1 << 20


def write_inputs(directory: Path, rows: int, formats: list[str], seed: int = 0) -> dict:
    """A in every requested format (written in slabs, never whole in memory) and B."""
    rng = np.random.default_rng(seed)
    slab = 1 << 18
    paths: dict[str, str] = {}
    npy = np.lib.format.open_memmap(directory / "a.npy", mode="w+", dtype=np.float32,
                                    shape=(rows, K))
    h5 = {name: h5py.File(directory / f"a_{name}.h5", "w") for name in ("none", "gzip")
          if f"h5-{name}" in formats}
    dsets = {name: f.create_dataset("a", shape=(rows, K), dtype=np.float32,
                                    chunks=(min(rows, 16384), K),
                                    compression=None if name == "none" else "gzip")
             for name, f in h5.items()}
    za = None
    if "zarr" in formats:
        za = zarr.open_group(str(directory / "a.zarr"), mode="w").create_array(
            "a", shape=(rows, K), dtype=np.float32, chunks=(min(rows, 16384), K))
    for start in range(0, rows, slab):
        stop = min(rows, start + slab)
        weights = rng.standard_exponential((stop - start, K))      # Dirichlet(1) rows
        block = np.log(weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        npy[start:stop] = block
        for ds in dsets.values():
            ds[start:stop] = block
        if za is not None:
            za[start:stop] = block
    npy.flush()
    del npy
    for f in h5.values():
        f.close()
    paths["npy"] = str(directory / "a.npy")
    for name in h5:
        paths[f"h5-{name}"] = f"{directory / f'a_{name}.h5'}:/a"
    if za is not None:
        paths["zarr"] = f"{directory / 'a.zarr'}:a"
    np.save(directory / "b.npy",
            np.log(rng.dirichlet(np.ones(M), size=K)).astype(np.float32))
    return {fmt: paths[fmt] for fmt in formats}


def run_measured(code: str, cwd: Path) -> tuple[float, int]:
    """(seconds, peak RssAnon bytes) of ``code`` run in a fresh interpreter."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE,
                            text=True)
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({proc.returncode})")
    return float(out.strip().splitlines()[-1]), peak


PRELUDE = "import time, numpy as np, logmm, logmm.multiply\n"


def streamed(a: str, out: str, memory: int, cwd: Path) -> tuple[float, int]:
    code = PRELUDE + textwrap.dedent(f"""
        t = time.perf_counter()
        logmm.multiply.multiply({a!r}, "b.npy", {out!r}, memory={memory}, overwrite=True)
        print(time.perf_counter() - t)
    """)
    return run_measured(code, cwd)


def in_memory(a_npy: str, cwd: Path) -> tuple[float, int]:
    code = PRELUDE + textwrap.dedent(f"""
        A = np.load({a_npy!r}); B = np.load("b.npy")
        logmm.logmatmulexp(A[:1000], B)
        t = time.perf_counter()
        logmm.logmatmulexp(A, B)
        print(time.perf_counter() - t)
    """)
    return run_measured(code, cwd)


def baseline(cwd: Path) -> int:
    code = PRELUDE + "import h5py, zarr, threadpoolctl\nprint(0.0)\n"
    return run_measured(code, cwd)[1]


def report(rows: int, memory: int, formats: list[str], directory: Path) -> None:
    size = rows * K * 4
    print(f"\n## A {rows}x{K} float32 ({size / MiB:.0f} MiB) x B {K}x{M}, "
          f"budget {memory / MiB:.0f} MiB (input / budget = {size / memory:.1f})")
    t0 = time.perf_counter()
    paths = write_inputs(directory, rows, formats)
    print(f"inputs written in {time.perf_counter() - t0:.1f} s")
    base = baseline(directory)
    t_mem, rss_mem = in_memory(paths["npy"], directory) if size < 8 << 30 else (None, None)
    print(f"interpreter baseline RssAnon: {base / MiB:.0f} MiB")
    print(f"{'input':<10}{'output':<8}{'seconds':>9}{'Mrows/s':>9}{'x in-memory':>13}"
          f"{'peak anon MiB':>15}{'over baseline':>15}")
    if t_mem is not None:
        print(f"{'in memory':<10}{'-':<8}{t_mem:>9.2f}{rows / t_mem / 1e6:>9.2f}{1.0:>13.2f}"
              f"{rss_mem / MiB:>15.0f}{(rss_mem - base) / MiB:>15.0f}")
    for fmt, a in paths.items():
        for out in ("c.npy", "c.h5"):
            seconds, peak = streamed(a, out, memory, directory)
            ratio = f"{t_mem / seconds:.2f}" if t_mem else "-"
            print(f"{fmt:<10}{out:<8}{seconds:>9.2f}{rows / seconds / 1e6:>9.2f}{ratio:>13}"
                  f"{peak / MiB:>15.0f}{(peak - base) / MiB:>15.0f}")
            (directory / out).unlink(missing_ok=True)
            (directory / (out + ".json")).unlink(missing_ok=True)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB input, 64 MiB budget")
    parser.add_argument("--huge-gb", type=float, default=0,
                        help="also stream an input of this many GB (.npy only)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    args = parser.parse_args(argv)
    print(f"logmm {logmm.__version__}, numpy {np.__version__}, h5py {h5py.__version__}, "
          f"zarr {zarr.__version__}")
    size, memory = (256 * MiB, 64 * MiB) if args.quick else (1 << 30, 256 * MiB)
    formats = ["npy", "h5-none", "h5-gzip", "zarr"]
    directory = Path(tempfile.mkdtemp(prefix="logmm-bench-", dir=args.dir))
    try:
        report(size // (K * 4), memory, formats, directory)
        if args.huge_gb:
            for path in directory.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            report(int(args.huge_gb * 1e9) // (K * 4), 256 * MiB, ["npy"], directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
