"""The pictures in docs/benchmarks.md: time, accuracy and memory, measured in one run.

Three figures (PNG) and the numbers behind them (``bench_plots.json``) go to ``--out``:

``time_vs_size.png``
    Median time of logmm (``auto``, ``exact``) and the textbook recipes (naive
    ``log(exp(A) @ exp(B))``, global max shift, row/column max shift, scipy broadcast
    ``logsumexp(A[:, :, None] + B[None], 1)``) on square float64 products, for random
    log-probabilities and for the banded adversarial family. Timings are interleaved
    (``benchmarks/timing.py``).
``accuracy.png``
    Largest error against a 200-bit mpmath reference (``tests/exact_reference.py``) on
    every adversarial family, float64 and float32, with the tests' bound 4u(K + M).
    Recipes that return ``-inf``/NaN where the answer is finite are drawn as "fails".
``memory_vs_size.png``
    Peak anonymous memory (RssAnon, sampled every 5 ms in a fresh interpreter, minus
    the interpreter's own) of ``logmm multiply`` streaming under ``--memory`` against
    loading the inputs and running the kernel in memory; and of broadcast logsumexp
    against logmm on square products.

    python benchmarks/bench_plots.py                 # docs/img (a few minutes)
    python benchmarks/bench_plots.py --quick --out /tmp/plots
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

import logmm
from logmm import adversarial

from bench_logmatmul import broadcast, global_max, naive, rowcol_max
from bench_streaming import run_measured
from timing import timed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from exact_reference import error_bound, exact_logmatmul  # noqa: E402

MiB = 1 << 20
TEXTBOOK = {"naive": naive, "global max shift": global_max, "row/col max shift": rowcol_max}
STYLE = {"logmm auto": ("C0", "o", "-"), "logmm exact": ("C0", "s", "--"),
         "naive": ("C3", "x", ":"), "global max shift": ("C1", "v", ":"),
         "row/col max shift": ("C2", "^", ":"), "broadcast logsumexp": ("C4", "D", "-."),
         "logmm fast": ("C9", "P", "--")}


def _auto(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return logmm.logmatmulexp(A, B, method="auto")


def _exact(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return logmm.logmatmulexp(A, B, method="exact")


def _fast(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return logmm.logmatmulexp(A, B, method="fast")


def time_vs_size(sizes: list[int], broadcast_max: int, exact_max: int,
                 repeats: int) -> dict:
    """{family: {method: [(n, seconds), ...]}} for square float64 products."""
    results: dict[str, dict[str, list]] = {}
    for family in ("log_probabilities", "banded"):
        series: dict[str, list] = {}
        for n in sizes:
            A, B = adversarial.FAMILIES[family](n, n, n, dtype=np.float64, seed=n)
            methods = {"logmm auto": _auto, **TEXTBOOK}
            if n <= exact_max:
                methods["logmm exact"] = _exact
            if n <= broadcast_max:
                methods["broadcast logsumexp"] = broadcast
            times = timed({name: (lambda fn=fn, A=A, B=B: fn(A, B))
                           for name, fn in methods.items()},
                          repeats)
            for name, seconds in times.items():
                series.setdefault(name, []).append((n, seconds))
            print(f"time {family} n={n}: " + ", ".join(
                f"{name} {t:.4g}s" for name, t in times.items()), flush=True)
        results[family] = series
    return results


def _error(C: np.ndarray, ref: np.ndarray) -> float:
    """Largest |C - ref|; -inf/NaN where ref is finite counts as a failure (inf)."""
    C = np.asarray(C, dtype=np.float64)
    same = (C == ref) | (np.isnan(C) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        d = np.abs(C - ref)
    d[same] = 0.0
    d[np.isnan(d)] = np.inf
    return float(d.max())


def accuracy(size: int) -> dict:
    """{dtype: {family: {method: max error, "bound": 4u(K+M)}}} against mpmath."""
    methods = {"logmm auto": _auto, "logmm fast": _fast, **TEXTBOOK}
    results: dict[str, dict] = {}
    for dtype in (np.float64, np.float32):
        per_family: dict[str, dict] = {}
        cases = {name: make(size, size, size, dtype=dtype, seed=7)
                 for name, make in adversarial.FAMILIES.items()}
        for i, (A, B, _) in enumerate(adversarial.counterexamples()):
            cases[f"counterexample {i + 1}"] = (A.astype(dtype), B.astype(dtype))
        for name, (A, B) in cases.items():
            ref = exact_logmatmul(A, B)
            with np.errstate(all="ignore"):
                row = {m: _error(fn(A, B), ref) for m, fn in methods.items()}
            row["bound"] = error_bound(A, B, dtype)
            per_family[name] = row
            print(f"accuracy {np.dtype(dtype).name} {name}: " + ", ".join(
                f"{m} {e:.3g}" for m, e in row.items()), flush=True)
        results[np.dtype(dtype).name] = per_family
    return results


STREAM = """
import time, numpy as np, logmm.multiply
logmm.multiply.multiply("a.npy", "b.npy", "out.npy", memory={memory}, overwrite=True)
print(0.0)
"""
IN_MEMORY = """
import numpy as np, logmm
A = np.load("a.npy"); B = np.load("b.npy")
np.save("out.npy", logmm.logmatmulexp(A, B))
print(0.0)
"""
NAIVE = """
import numpy as np
A = np.load("a.npy"); B = np.load("b.npy")
np.save("out.npy", np.log(np.exp(A) @ np.exp(B)))
print(0.0)
"""
SQUARE = """
import numpy as np, logmm
from scipy.special import logsumexp
rng = np.random.default_rng(0)
A = rng.standard_normal(({n}, {n})); B = rng.standard_normal(({n}, {n}))
C = {call}
print(0.0)
"""


def memory_vs_size(sizes_mib: list[int], budget_mib: int, squares: list[int]) -> dict:
    """Peak RssAnon above the interpreter's own, in MiB, per method and input size."""
    k = 64
    results: dict[str, dict[str, list]] = {"streamed": {}, "square": {}}
    with tempfile.TemporaryDirectory(prefix="logmm-plots-") as tmp:
        cwd = Path(tmp)
        base = run_measured("import numpy, scipy.special, logmm, logmm.multiply\nprint(0.0)",
                            cwd)[1]
        np.save(cwd / "b.npy", np.log(np.random.default_rng(1).dirichlet(
            np.ones(k), size=k)).astype(np.float32))
        rng = np.random.default_rng(0)
        for size in sizes_mib:
            rows = size * MiB // (k * 4)
            a = np.lib.format.open_memmap(cwd / "a.npy", mode="w+", dtype=np.float32,
                                          shape=(rows, k))
            for r0 in range(0, rows, 1 << 18):
                r1 = min(rows, r0 + (1 << 18))
                a[r0:r1] = -rng.exponential(4.0, size=(r1 - r0, k))
            a.flush()
            del a
            runs = {f"logmm multiply --memory {budget_mib}MB":
                    STREAM.format(memory=budget_mib * MiB),
                    "np.load + logmm.logmatmulexp": IN_MEMORY,
                    "np.load + naive": NAIVE}
            for name, code in runs.items():
                peak = run_measured(textwrap.dedent(code), cwd)[1]
                results["streamed"].setdefault(name, []).append(
                    (size, max(0.0, (peak - base) / MiB)))
            print(f"memory {size} MiB input: " + ", ".join(
                f"{name} {v[-1][1]:.0f} MiB" for name, v in results["streamed"].items()),
                flush=True)
        for n in squares:
            calls = {"logmm auto": "logmm.logmatmulexp(A, B)",
                     "broadcast logsumexp": "logsumexp(A[:, :, None] + B[None], axis=1)"}
            for name, call in calls.items():
                peak = run_measured(textwrap.dedent(SQUARE.format(n=n, call=call)), cwd)[1]
                results["square"].setdefault(name, []).append(
                    (n, max(0.0, (peak - base) / MiB)))
            print(f"memory square n={n}: " + ", ".join(
                f"{name} {v[-1][1]:.0f} MiB" for name, v in results["square"].items()),
                flush=True)
    return results


def _line(ax, name: str, points: list) -> None:
    color, marker, style = STYLE.get(name, ("k", ".", "-"))
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, color=color, marker=marker, linestyle=style, label=name)


def plot_time(data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    titles = {"log_probabilities": "random log-probabilities",
              "banded": "banded adversarial (~10% entries beyond the fast path)"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, (family, series) in zip(axes, data.items(), strict=True):
        for name, points in series.items():
            _line(ax, name, points)
        ax.set(xscale="log", yscale="log", xlabel="n = k = m (float64)",
               title=titles.get(family, family))
        ax.set_xticks([p[0] for p in series["logmm auto"]],
                      [str(p[0]) for p in series["logmm auto"]])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median seconds")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle("Time vs size: logmm against the textbook recipes "
                 "(only logmm and broadcast are correct on the banded family)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    methods = ["logmm auto", "logmm fast", *TEXTBOOK]
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5))
    for ax, (dtype, per_family) in zip(axes, data.items(), strict=True):
        families = list(per_family)
        finite = [e for row in per_family.values() for m, e in row.items()
                  if math.isfinite(e) and e > 0]
        floor = min(finite) / 10 if finite else 1e-18
        fail = max(finite) * 1e3 if finite else 1.0
        width = 0.8 / len(methods)
        for j, method in enumerate(methods):
            values = [per_family[f][method] for f in families]
            heights = [fail if not math.isfinite(v) else max(v, floor) for v in values]
            xs = np.arange(len(families)) + (j - len(methods) / 2 + 0.5) * width
            color = STYLE[method][0]
            bars = ax.bar(xs, heights, width, color=color, label=method)
            for bar, v in zip(bars, values, strict=True):
                if v == 0:
                    ax.text(bar.get_x() + width / 2, floor, "0", ha="center",
                            va="bottom", fontsize=6)
                elif not math.isfinite(v):
                    bar.set_hatch("//")
                    bar.set_alpha(0.45)
                    ax.text(bar.get_x() + width / 2, fail, "fails", rotation=90,
                            ha="center", va="bottom", fontsize=6)
        for i, family in enumerate(families):
            ax.hlines(per_family[family]["bound"], i - 0.45, i + 0.45, colors="k",
                      linestyles="--", label="bound 4u(K+M)" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_ylim(floor, fail * 1e3)
        ax.set_xticks(np.arange(len(families)), families, fontsize=8)
        ax.set_ylabel(f"max |error| ({dtype})")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=6, loc="upper center",
               bbox_to_anchor=(0.5, 0.955))
    fig.suptitle("Accuracy against a 200-bit mpmath reference "
                 "(hatched 'fails': -inf, +inf or NaN where the answer is finite; "
                 "'0': exact)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, points in data["streamed"].items():
        xs, ys = zip(*points, strict=True)
        axes[0].plot(xs, ys, marker="o", label=name)
    axes[0].set(xlabel="input A size, MiB (rows x 64 float32)",
                ylabel="peak anonymous memory above baseline, MiB",
                title="Streaming keeps memory flat")
    for name, points in data["square"].items():
        _line(axes[1], name, points)
    axes[1].set(xscale="log", yscale="log", xlabel="n = k = m (float64)",
                ylabel="peak anonymous memory above baseline, MiB",
                title="Broadcasting needs n·k·m memory; logmm needs n·k + k·m + n·m")
    axes[1].set_xticks([p[0] for p in data["square"]["logmm auto"]],
                       [str(p[0]) for p in data["square"]["logmm auto"]])
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"logmm {logmm.__version__}, numpy {np.__version__}; repeats {repeats}, medians")
    data = {
        "time": time_vs_size([32, 64] if quick else [64, 128, 256, 512, 1024, 2048],
                             broadcast_max=64 if quick else 512,
                             exact_max=64 if quick else 1024, repeats=repeats),
        "accuracy": accuracy(6 if quick else 24),
        "memory": memory_vs_size([8, 16] if quick else [64, 128, 256, 512, 1024],
                                 budget_mib=64 if quick else 128,
                                 squares=[32, 64] if quick else [64, 128, 256, 384, 512]),
    }
    plot_time(data["time"], args.out / "time_vs_size.png")
    plot_accuracy(data["accuracy"], args.out / "accuracy.png")
    plot_memory(data["memory"], args.out / "memory_vs_size.png")
    (args.out / "bench_plots.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}/time_vs_size.png, accuracy.png, memory_vs_size.png, "
          "bench_plots.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
