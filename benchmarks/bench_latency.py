"""logmm at every size, against the unstable naive recipe, measured side by side in one run.

    python benchmarks/bench_latency.py            # the targets of issue 15
    python benchmarks/bench_latency.py --quick    # small shapes, a smoke run
    python benchmarks/bench_latency.py --plot docs/img/latency_vs_size.png   # the figure

Prints one table: per case the median time of the naive numpy recipe
``log(exp(A) @ exp(B))`` (or the case's own reference), torch's broadcast
``logsumexp(A[:, :, None] + B[None], 1)`` where torch is importable (else ``n/a``), logmm,
the ratio logmm / reference and the target. Per-call cases time loops of many calls
(interleaved, shuffled, medians: see timing.py). Timings are never asserted in tests.

logmm runs with its compiled kernels for small products (``logmm[fast]``, numba, opted
into with ``LOGMM_COMPILED=1`` or ``logmm.logmatmul.set_compiled("on")``) where numba is
installed; the column "numpy tiers" times the same calls with them off (logmm's
default), in the same interleaved run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp as scipy_logsumexp

import logmm
from logmm.einsum import logeinsum
from logmm.logmatmul import set_compiled

from timing import timed

try:
    import torch
except ImportError:  # optional: the torch column then reads n/a
    torch = None


@dataclass
class Row:
    case: str
    reference: float           # seconds per call of the reference recipe
    logmm: float
    target: str                # e.g. "<= 2.0x naive"
    limit: float               # bound on the ratio (at most; at least for "faster")
    torch: float | None = None
    numpy_tiers: float | None = None   # logmm without the compiled kernels
    faster: bool = False       # the target is "reference / logmm >= limit"
    absolute: bool = False     # the target is "logmm <= limit seconds"

    @property
    def ratio(self) -> float:
        return self.reference / self.logmm if self.faster else self.logmm / self.reference

    @property
    def met(self) -> bool:
        if self.absolute:
            return self.logmm <= self.limit
        ok = self.ratio >= self.limit if self.faster else self.ratio <= self.limit
        if self.torch is not None and "torch" in self.target:
            ok = ok and self.logmm < self.torch
        return ok


def naive(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        return np.log(np.exp(A) @ np.exp(B))


def log_probs(rng: np.random.Generator, *shape: int, dtype: type = np.float64) -> np.ndarray:
    """Log-probabilities: rows of a Dirichlet sample, the typical input."""
    return np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])).astype(dtype)


def per_call(fn: Callable[[], object], calls: int, compiled: str | None = None
             ) -> Callable[[], None]:
    """A loop of ``calls`` calls of ``fn``, with logmm's compiled kernels ``"on"`` or
    ``"off"`` (None: logmm's default) during it."""
    def loop() -> None:
        before = set_compiled(compiled) if compiled is not None else None
        try:
            for _ in range(calls):
                fn()
        finally:
            if before is not None:
                set_compiled(before)
    return loop


def _numba_version() -> str | None:
    try:
        import numba
    except ImportError:
        return None
    return numba.__version__


NUMBA = _numba_version()
COMPILED = "on" if NUMBA else "off"     # the logmm column's mode
COMPILED_MAX_WORK = 1 << 16             # n*k*m up to which logmm uses them (logmatmul.py)


def product_methods(A: np.ndarray, B: np.ndarray, calls: int,
                    with_torch: bool) -> dict[str, Callable[[], None]]:
    """Loops of ``calls`` calls: naive, logmm and (if asked and importable) torch broadcast."""
    methods = {"naive": per_call(lambda: naive(A, B), calls),
               "logmm": per_call(lambda: logmm.logmatmulexp(A, B), calls, COMPILED)}
    if NUMBA and A.shape[0] * A.shape[1] * B.shape[1] <= COMPILED_MAX_WORK:
        methods["numpy tiers"] = per_call(lambda: logmm.logmatmulexp(A, B), calls, "off")
    if with_torch and torch is not None:
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        methods["torch"] = per_call(lambda: torch.logsumexp(tA[:, :, None] + tB[None], 1),
                                    calls)
    return methods


def product_row(rng: np.random.Generator, n: int, k: int, m: int, dtype: type, target: str,
                limit: float, repeats: int, with_torch: bool) -> Row:
    A, B = log_probs(rng, n, k, dtype=dtype), log_probs(rng, k, m, dtype=dtype)
    work = n * k * m
    calls = max(1, min(2000, (1 << 22) // max(work, 1)))
    methods = product_methods(A, B, calls, with_torch and work <= 1 << 24)
    t = {name: s / calls for name, s in timed(methods, repeats).items()}
    name = f"{n}x{k}x{m} {np.dtype(dtype).name}"
    return Row(name, t["naive"], t["logmm"], target, limit, torch=t.get("torch"),
               numpy_tiers=t.get("numpy tiers"))


def batched_row(rng: np.random.Generator, b: int, repeats: int) -> Row:
    A, B = log_probs(rng, b, 8, 8), log_probs(rng, b, 8, 8)
    methods = {"naive": lambda: naive(A, B),
               "logmm": per_call(lambda: logmm.logmatmulexp(A, B), 1, COMPILED)}
    if NUMBA:
        methods["numpy tiers"] = per_call(lambda: logmm.logmatmulexp(A, B), 1, "off")
    t = timed(methods, repeats)
    return Row(f"batched {b} x (8x8 @ 8x8)", t["naive"], t["logmm"], "<= 2.0x naive np.matmul",
               2.0, numpy_tiers=t.get("numpy tiers"))


def einsum_row(rng: np.random.Generator, quick: bool, repeats: int) -> Row:
    b, i, m, d = (2, 2, 64, 16) if quick else (8, 8, 512, 64)
    A, B = log_probs(rng, b, i, m, d), log_probs(rng, b, i, m, d)
    eA, eB = np.exp(A), np.exp(B)
    sub = "bimd,bind->bimn"
    t = timed({"real": lambda: np.einsum(sub, eA, eB, optimize=True),
               "logmm": lambda: logeinsum(sub, A, B)}, repeats)
    return Row(f"{sub} b=i={b} m=n={m} d={d}", t["real"], t["logmm"],
               "<= 1.3x real np.einsum", 1.3)


def exact_row(rng: np.random.Generator, n: int, repeats: int) -> Row:
    A, B = log_probs(rng, n, n), log_probs(rng, n, n)
    t = timed({"broadcast": lambda: scipy_logsumexp(A[:, :, None] + B[None, :, :], axis=1),
               "logmm": lambda: logmm.logmatmulexp(A, B, method="exact")}, repeats)
    return Row(f"exact vs broadcast {n}^3", t["broadcast"], t["logmm"],
               ">= 10x faster than broadcast", 10.0, faster=True)


def hmm_row(rng: np.random.Generator, steps: int, repeats: int) -> Row:
    """A 6-state HMM forward pass, one (1, S) @ (S, S) product per step in a Python loop."""
    states = 6
    log_trans = log_probs(rng, states, states)
    log_emit = np.log(rng.random((steps, states)))
    start = np.full((1, states), -np.log(states))

    def forward(product: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[], None]:
        def run() -> None:
            alpha = start
            for t in range(steps):
                alpha = product(alpha, log_trans) + log_emit[t]
        return run

    methods = {"naive": forward(naive),
               "logmm": per_call(forward(logmm.logmatmulexp), 1, COMPILED)}
    if NUMBA:
        methods["numpy tiers"] = per_call(forward(logmm.logmatmulexp), 1, "off")
    t = timed(methods, repeats)
    return Row(f"HMM forward, 6 states, T={steps}", t["naive"], t["logmm"],
               "<= 2.0x naive loop", 2.0, numpy_tiers=t.get("numpy tiers"))


def version_row(repeats: int) -> Row:
    """Wall time of ``logmm --version`` in a fresh interpreter, against ``import numpy``.

    As an installed package runs: with bytecode caches (PYTHONDONTWRITEBYTECODE, which
    some environments set, would compile every module on every start: +0.3 s here),
    written by one warm-up run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def wall(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
        return time.perf_counter() - t0

    cli = "import sys\nfrom logmm.cli.main import main\nmain(['--version'])"
    wall(cli)
    runs = {"numpy": [], "logmm": []}
    for _ in range(repeats):
        runs["numpy"].append(wall("import numpy"))
        runs["logmm"].append(wall(cli))
    t = {name: statistics.median(v) for name, v in runs.items()}
    return Row("logmm --version (ref: python -c 'import numpy')", t["numpy"], t["logmm"],
               "<= 0.2 s wall", 0.2, absolute=True)


def sweep(sizes: list[int], repeats: int, torch_max: int) -> dict[str, list[tuple[int, float]]]:
    """Seconds per call of square float64 products of every size: naive, logmm and (up to
    ``torch_max``, beyond which its n^3 temporary grows past 1 GiB) torch broadcast."""
    rng = np.random.default_rng(1)
    series: dict[str, list[tuple[int, float]]] = {"naive numpy": [], "logmm": []}
    if torch is not None:
        series["torch broadcast logsumexp"] = []
    for n in sizes:
        A, B = log_probs(rng, n, n), log_probs(rng, n, n)
        calls = max(1, min(2000, (1 << 22) // n ** 3))
        methods = product_methods(A, B, calls, n <= torch_max)
        names = {"naive": "naive numpy", "torch": "torch broadcast logsumexp"}
        for name, seconds in timed(methods, repeats if n < 1024 else 3).items():
            series.setdefault(names.get(name, name), []).append((n, seconds / calls))
        print(f"n={n}: " + ", ".join(f"{name} {_fmt(v[-1][1])}" for name, v in series.items()
                                     if v and v[-1][0] == n), flush=True)
    return series


def plot_sweep(series: dict[str, list[tuple[int, float]]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = {"naive numpy": ("tab:gray", "o", "--"), "logmm": ("tab:blue", "s", "-"),
              "numpy tiers": ("tab:cyan", "s", "-."),
              "torch broadcast logsumexp": ("tab:red", "^", ":")}
    labels = {"logmm": "logmm" + (" (compiled kernels for small products)" if NUMBA else ""),
              "numpy tiers": "logmm, numpy tiers only"}
    for name, points in series.items():
        if points:
            color, marker, style = styles[name]
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=color, marker=marker, linestyle=style,
                    label=labels.get(name, name))
    sizes = [n for n, _ in series["logmm"]]
    ax.set(xscale="log", yscale="log", xlabel="n = k = m (float64, log-probabilities)",
           ylabel="median seconds per call",
           title="Time per call vs size: logmm, the unstable naive recipe, torch broadcast")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--plot", metavar="PNG",
                        help="measure sizes 1..2048 (1..64 with --quick) and draw this figure "
                             "instead of the table")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    r = args.repeats
    if args.plot:
        top = 64 if args.quick else 2048
        sizes = [1 << i for i in range(top.bit_length())]
        plot_sweep(sweep(sizes, r, torch_max=256), args.plot)
        print(f"wrote {args.plot}")
        return 0
    print(f"logmm {logmm.__version__}, numpy {np.__version__}, torch "
          f"{torch.__version__ if torch is not None else 'not installed'}, compiled kernels "
          f"{'on (numba ' + NUMBA + ')' if NUMBA else 'off (numba not installed)'}; "
          f"medians of {r}")
    rows = [product_row(rng, 1, 8, 8, np.float64, "<= 4x naive", 4.0, r, True),
            product_row(rng, 1, 64, 64, np.float64, "<= 2.0x naive, < torch", 2.0, r, True),
            product_row(rng, 64, 64, 64, np.float64, "<= 2.0x naive, < torch", 2.0, r, True),
            product_row(rng, 1, 512, 512, np.float64, "(issue table)", np.inf, r, True)]
    sizes = (64, 128) if args.quick else (256, 512)
    rows += [product_row(rng, s, s, s, np.float64, "<= 1.15x naive", 1.15, r, s <= 256)
             for s in sizes]
    big = 256 if args.quick else 2048
    rows += [product_row(rng, big, big, big, dt, "<= 1.05x naive", 1.05, min(r, 5), False)
             for dt in (np.float32, np.float64)]
    rows += [batched_row(rng, 100 if args.quick else 10000, r),
             einsum_row(rng, args.quick, r),
             exact_row(rng, 64 if args.quick else 512, min(r, 3)),
             hmm_row(rng, 200 if args.quick else 100_000, min(r, 3)),
             version_row(1 if args.quick else 7)]
    print(f"\n{'case':<44}{'reference':>12}{'torch bcast':>13}{'numpy tiers':>13}{'logmm':>12}"
          f"{'ratio':>8}  {'target':<30}met")
    for row in rows:
        torch_col = "n/a" if row.torch is None else _fmt(row.torch)
        numpy_col = "n/a" if row.numpy_tiers is None else _fmt(row.numpy_tiers)
        ratio = f"{row.ratio:.2f}x"
        print(f"{row.case:<44}{_fmt(row.reference):>12}{torch_col:>13}{numpy_col:>13}"
              f"{_fmt(row.logmm):>12}{ratio:>8}  {row.target:<30}{'yes' if row.met else 'NO'}")
    print("\nreference: naive numpy log(exp(A) @ exp(B)) unless the case names another; "
          "numpy tiers: logmm without its compiled kernels; "
          "ratio: logmm / reference (reference / logmm for 'faster' targets)")
    return 0


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
