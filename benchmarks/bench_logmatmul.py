"""Benchmark logmatmulexp against the naive and textbook recipes, interleaved in one process.

Prints, per case, the median time of each method, its ratio to the naive
``log(exp(A) @ exp(B))``, its largest error against ``method="exact"`` (or a float64 /
broadcast reference where exact is too slow), and how many entries each tier handled.

    python benchmarks/bench_logmatmul.py            # the full table (several minutes)
    python benchmarks/bench_logmatmul.py --quick    # small shapes, seconds
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp as scipy_logsumexp

import logmm
from logmm import adversarial
from logmm.logmatmul import _exact_entries

from timing import timed

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


def naive(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        return np.log(np.exp(A) @ np.exp(B))


def global_max(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        a, b = A.max(), B.max()
        return np.log(np.exp(A - a) @ np.exp(B - b)) + a + b


def rowcol_max(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        a = A.max(axis=1, keepdims=True)
        b = B.max(axis=0, keepdims=True)
        return np.log(np.exp(A - a) @ np.exp(B - b)) + a + b


def broadcast(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return scipy_logsumexp(A[:, :, None] + B[None, :, :], axis=1)


def logmm_method(name: str) -> Method:
    return lambda A, B: logmm.logmatmulexp(A, B, method=name)


def sample_entries(A: np.ndarray, B: np.ndarray, count: int = 400,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and exact float64 values of ``count`` random entries plus up to
    ``count`` entries on which the row/column-max recipe fails (-inf or NaN)."""
    rng = np.random.default_rng(seed)
    n, m = A.shape[0], B.shape[1]
    ii = rng.integers(0, n, count)
    jj = rng.integers(0, m, count)
    bad_i, bad_j = np.nonzero(~np.isfinite(rowcol_max(A, B)))
    if bad_i.size:
        pick = rng.choice(bad_i.size, size=min(count, bad_i.size), replace=False)
        ii, jj = np.concatenate([ii, bad_i[pick]]), np.concatenate([jj, bad_j[pick]])
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        exact = _exact_entries(A, B, ii, jj)
    return ii, jj, exact


def max_error(C: np.ndarray, ref: np.ndarray) -> float:
    both_neginf = np.isneginf(C) & np.isneginf(ref)
    with np.errstate(invalid="ignore"):
        d = np.abs(C.astype(np.float64) - ref)
    d[both_neginf] = 0.0
    d[np.isnan(d)] = np.inf
    return float(d.max()) if d.size else 0.0


def run_case(label: str, A: np.ndarray, B: np.ndarray, methods: dict[str, Method],
             repeats: int) -> None:
    """Print one table: time, ratio to naive, and max error on sampled exact entries."""
    n, k = A.shape
    m = B.shape[1]
    times = timed({name: (lambda fn=fn: fn(A, B)) for name, fn in methods.items()}, repeats)
    _, report = logmm.logmatmulexp_report(A, B, method="auto")
    share = report.repaired / max(report.entries, 1)
    ii, jj, exact = sample_entries(A, B)
    print(f"\n## {label}: {n}x{k}x{m} {A.dtype}, {share:.1%} of entries beyond the fast path")
    print(f"tiers (auto): fast {report.fast}, rebalanced {report.rebalanced}, "
          f"blocked {report.blocked}, exact {report.exact}")
    print(f"{'method':<12}{'median s':>12}{'x naive':>10}{'max |err| (sampled)':>22}")
    base = times["naive"]
    for name, t in times.items():
        err = max_error(methods[name](A, B)[ii, jj], exact)
        print(f"{name:<12}{t:>12.4f}{t / base:>10.2f}{err:>22.3g}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (3 if quick else 7)
    square = 256 if quick else 2048
    skinny = (20000, 64, 64) if quick else (200000, 64, 64)
    small = 96 if quick else 512

    textbook = {"naive": naive, "global_max": global_max, "rowcol_max": rowcol_max}
    ours = {"fast": logmm_method("fast"), "auto": logmm_method("auto")}
    print(f"logmm {logmm.__version__}, numpy {np.__version__}; repeats {repeats}, medians")

    for dtype in (np.float64, np.float32):
        A, B = adversarial.log_probabilities(square, square, square, dtype, seed=1)
        run_case("random log-probabilities", A, B, {**textbook, **ours}, repeats)
    A, B = adversarial.log_probabilities(*skinny, np.float64, seed=2)
    run_case("random log-probabilities, skinny", A, B, {**textbook, **ours}, repeats)
    for shape in ((square, square, square), skinny):
        A, B = adversarial.banded(*shape, fraction=0.1, dtype=np.float64, seed=3)
        run_case("banded adversarial", A, B, {**textbook, **ours}, repeats)

    A, B = adversarial.log_probabilities(small, small, small, np.float64, seed=4)
    run_case("exact vs broadcast", A, B,
             {"naive": naive, "exact": logmm_method("exact"), "broadcast": broadcast,
              "auto": logmm_method("auto")}, max(3, repeats // 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
