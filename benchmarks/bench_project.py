"""Kronecker-free projection against the ways people write it, interleaved in one process.

Shapes users reported: X (1666, 23520) float32, dense and 20% sparse; W (30, 784); K = 30,
so every row maps to (I_30 ⊗ W) x of length 900.

    python benchmarks/bench_project.py           # the reported shapes
    python benchmarks/bench_project.py --quick   # a tenth of the rows
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import scipy.sparse as sp

import logmm

from timing import timed

K, D, P = 30, 784, 30


def streamed_from_hdf5(X: np.ndarray, W: np.ndarray, in_memory: float) -> None:
    """``logmm project`` from an uncompressed HDF5 file to .npy, under a 64 MiB budget."""
    import h5py

    from logmm.project import project

    with tempfile.TemporaryDirectory() as tmp:
        with h5py.File(f"{tmp}/x.h5", "w") as f:
            f.create_dataset("x", data=X)
        np.save(f"{tmp}/w.npy", W)
        t0 = time.perf_counter()
        result = project(f"{tmp}/x.h5:/x", f"{tmp}/y.npy", w_address=f"{tmp}/w.npy",
                         blocks=K, memory=64 << 20)
        seconds = time.perf_counter() - t0
        blocks = len(result.plan.row_blocks())
    print(f"{'logmm project, streamed from HDF5':<34}{seconds:>10.4f}"
          f"{seconds / in_memory:>10.2f}   ({blocks} blocks under --memory 64MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = 166 if args.quick else 1666
    rng = np.random.default_rng(0)
    X = rng.random((rows, K * D), dtype=np.float32)
    W = rng.random((P, D), dtype=np.float32)
    Xs = sp.random(rows, K * D, density=0.2, random_state=1, format="csr", dtype=np.float32)
    kron = np.kron(np.identity(K, dtype=np.float32), W)            # (900, 23520)
    reference = (X.reshape(-1, D) @ W.T).reshape(rows, K * P)

    dense = {
        "logmm block_project": lambda: logmm.block_project(X, W, K),
        "reshape then dot": lambda: (X.reshape(-1, D) @ W.T).reshape(rows, K * P),
        "np.tensordot": lambda: np.tensordot(X.reshape(rows, K, D), W,
                                             axes=([2], [1])).reshape(rows, K * P),
        "np.kron + dot": lambda: X @ kron.T,
    }
    times = timed(dense, args.repeats)
    per_row_rows = max(1, rows // 20)          # the per-row loop users wrote, on a sample
    t0 = time.perf_counter()
    for i in range(per_row_rows):
        kron @ X[i]
    per_row = (time.perf_counter() - t0) / per_row_rows * rows
    best = min(t for name, t in times.items() if name != "logmm block_project")
    print(f"logmm {logmm.__version__}, numpy {np.__version__}; X {rows}x{K * D} float32, "
          f"W {P}x{D}, K={K}; medians of {args.repeats}")
    print(f"\n{'dense X':<34}{'seconds':>10}{'x logmm':>10}")
    for name, t in sorted(times.items(), key=lambda kv: kv[1]):
        print(f"{name:<34}{t:>10.4f}{t / times['logmm block_project']:>10.2f}")
    print(f"{'np.kron + per-row dot (as reported)':<34}{per_row:>10.3f}"
          f"{per_row / times['logmm block_project']:>10.0f}   (extrapolated from "
          f"{per_row_rows} rows)")
    print(f"logmm vs the best numpy way: {times['logmm block_project'] / best:.2f}x")
    streamed_from_hdf5(X, W, times["logmm block_project"])
    assert np.allclose(logmm.block_project(X, W, K), reference, rtol=1e-4, atol=1e-3)

    sparse = {
        "logmm block_project (CSR)": lambda: logmm.block_project(Xs, W, K),
        "densify, then logmm": lambda: logmm.block_project(Xs.toarray(), W, K),
    }
    stimes = timed(sparse, args.repeats)
    dense_same = timed({"d": lambda: logmm.block_project(X, W, K)}, args.repeats)["d"]
    for density in (0.01, 0.05):
        thin = sp.random(rows, K * D, density=density, random_state=2, format="csr",
                         dtype=np.float32)
        stimes[f"logmm, {density:.0%} sparse"] = timed(
            {"s": lambda thin=thin: logmm.block_project(thin, W, K)}, args.repeats)["s"]
    # Timed apart: after its 4 s of scipy work, the next call in the process runs up to
    # 3x slower (allocator state), which would blur the interleaved medians.
    stimes["scipy CSR @ kron(I, W).T"] = timed({"k": lambda: Xs @ kron.T}, 1)["k"]
    print(f"\n{'sparse X (20% unless named)':<34}{'seconds':>10}{'x dense':>10}")
    for name, t in sorted(stimes.items(), key=lambda kv: kv[1]):
        print(f"{name:<34}{t:>10.4f}{t / dense_same:>10.2f}")
    print(f"{'(dense logmm on a dense X)':<34}{dense_same:>10.4f}{1.0:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
