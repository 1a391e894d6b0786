"""logeinsum against blocked broadcasting (the semiring-einsum method) and real einsum.

    python benchmarks/bench_einsum.py            # the issue's shapes
    python benchmarks/bench_einsum.py --quick    # small shapes
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import opt_einsum

import logmm
from logmm.accumulate import logsumexp
from logmm.einsum import logeinsum

from timing import timed

_BLOCK_ELEMENTS = 1 << 22


def blocked_broadcast_pair(subscripts: str, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Log-semiring einsum of two operands by broadcasting over one output label in
    blocks (what semiring-einsum does): memory O(block), every term exponentiated."""
    inputs, output = subscripts.split("->")
    ta, tb = inputs.split(",")
    labels = list(dict.fromkeys(ta + tb))
    summed = [c for c in labels if c not in output]
    size = dict(zip(ta, A.shape, strict=True)) | dict(zip(tb, B.shape, strict=True))
    full = list(output) + summed
    split = output[0]
    per_row = int(np.prod([size[c] for c in full if c != split]))
    step = max(1, _BLOCK_ELEMENTS // per_row)
    out = np.empty([size[c] for c in output])

    def view(X: np.ndarray, term: str, lo: int, hi: int) -> np.ndarray:
        X = X[tuple(slice(lo, hi) if c == split else slice(None) for c in term)]
        X = np.transpose(X, [term.index(c) for c in full if c in term])
        return X.reshape([X.shape[[c for c in full if c in term].index(c)] if c in term else 1
                          for c in full])

    for lo in range(0, size[split], step):
        hi = min(size[split], lo + step)
        terms = view(A, ta, lo, hi) + view(B, tb, lo, hi)
        out[tuple(slice(lo, hi) if c == split else slice(None) for c in output)] = \
            logsumexp(terms, axis=tuple(range(len(output), len(full))))
    return out


def report(title: str, methods: dict[str, Callable[[], object]], repeats: int) -> None:
    times = timed(methods, repeats)
    base = times["logeinsum (log)"]
    print(f"\n## {title}")
    print(f"{'method':<36}{'median s':>10}{'x logeinsum':>13}")
    for name, t in times.items():
        print(f"{name:<36}{t:>10.4f}{t / base:>13.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    b, i, m, d = (2, 2, 64, 16) if args.quick else (8, 8, 512, 64)
    A = np.log(rng.dirichlet(np.ones(d), size=(b, i, m)))
    B = np.log(rng.dirichlet(np.ones(d), size=(b, i, m)))
    eA, eB = np.exp(A), np.exp(B)
    print(f"logmm {logmm.__version__}, numpy {np.__version__}, opt_einsum "
          f"{opt_einsum.__version__}; medians of {args.repeats}")
    sub = "bimd,bind->bimn"
    reference = blocked_broadcast_pair(sub, A, B)
    assert np.allclose(logeinsum(sub, A, B), reference, rtol=1e-12, atol=1e-12)
    report(f"{sub}  b={b} i={i} m=n={m} d={d}", {
        "logeinsum (log)": lambda: logeinsum(sub, A, B),
        "blocked broadcasting (log)": lambda: blocked_broadcast_pair(sub, A, B),
        "np.einsum optimize=True (real)": lambda: np.einsum(sub, eA, eB, optimize=True),
    }, args.repeats)

    n = 128 if args.quick else 1024
    X, Y, Z = (np.log(rng.dirichlet(np.ones(n), size=n)) for _ in range(3))
    eX, eY, eZ = np.exp(X), np.exp(Y), np.exp(Z)
    sub = "ij,jk,kl->il"

    def broadcast_chain() -> np.ndarray:
        return blocked_broadcast_pair("ik,kl->il", blocked_broadcast_pair("ij,jk->ik", X, Y), Z)

    report(f"{sub}  {n}^3", {
        "logeinsum (log)": lambda: logeinsum(sub, X, Y, Z),
        "blocked broadcasting (log)": broadcast_chain,
        "np.einsum optimize=True (real)": lambda: np.einsum(sub, eX, eY, eZ, optimize=True),
    }, max(1, args.repeats // 2) if not args.quick else args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
