"""Forward + backward of log(exp(A) @ exp(B)): logmm against torch autograd through a
broadcast logsumexp, ``torch.logsumexp(A[:, :, None] + B[None], 1)``.

    python benchmarks/bench_grad.py              # 1024^3 float32 (the issue's case)
    python benchmarks/bench_grad.py --quick      # 128^3

Times are medians of interleaved repeats (benchmarks/timing.py). Peak memory is measured
per method in a fresh subprocess: the peak resident set (VmHWM, reset through
/proc/self/clear_refs after the inputs exist) minus the resident set before the call,
so BLAS and torch allocations are seen too. The loss is ``C.sum()`` (G = 1, the sign
every log-likelihood gradient has); "signed G" uses a random-sign G (four kernel
products instead of two). Errors are the largest componentwise relative error of dA and
dB against logmm's float64 gradient (for G = 1, dA is its own error scale).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import logmm

from timing import timed

METHODS = ["logmm numpy (forward + vjp)", "logmm numpy, signed G", "logmm.torch autograd",
           "torch autograd, broadcast logsumexp"]


def inputs(n: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-normalised log-probabilities (an HMM-like transition product) and a signed G."""
    rng = np.random.default_rng(seed)
    A = np.log(rng.dirichlet(np.ones(n), size=n)).astype(dtype)
    B = np.log(rng.dirichlet(np.ones(n), size=n)).astype(dtype)
    G = rng.normal(size=(n, n)).astype(dtype)
    return A, B, G


def method_fn(name: str, A: np.ndarray, B: np.ndarray, G: np.ndarray
              ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A zero-argument function doing forward + backward and returning (dA, dB)."""
    if name.startswith("logmm numpy"):
        upstream = G if "signed" in name else None

        def run() -> tuple[np.ndarray, np.ndarray]:
            C = logmm.logmatmulexp(A, B)
            return logmm.logmatmulexp_vjp(A, B, C, np.ones_like(C) if upstream is None
                                          else upstream)
        return run

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if name == "logmm.torch autograd":
        import logmm.torch as lt

        forward = lt.logmatmulexp
    else:
        def forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.logsumexp(a[:, :, None] + b[None], 1)

    At, Bt = torch.from_numpy(A), torch.from_numpy(B)

    def run_torch() -> tuple[np.ndarray, np.ndarray]:
        a, b = At.clone().requires_grad_(), Bt.clone().requires_grad_()
        forward(a, b).sum().backward()
        return a.grad.numpy(), b.grad.numpy()
    return run_torch


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _available_memory() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024.0
    return float("inf")


def child(name: str, n: int, dtype: str) -> None:
    """Run one method once in this (fresh) process; print its extra peak memory."""
    A, B, G = inputs(n, dtype)
    fn = method_fn(name, A, B, G)
    Path("/proc/self/clear_refs").write_text("5")       # reset VmHWM to the current RSS
    before = _status("VmRSS")
    fn()
    print(json.dumps({"peak_extra": _status("VmHWM") - before}))


def peak_memory(name: str, n: int, dtype: str) -> int | None:
    result = subprocess.run([sys.executable, __file__, "--child", name, "--n", str(n),
                             "--dtype", dtype], capture_output=True, text=True)
    if result.returncode:
        print(f"  ({name}: child failed with code {result.returncode}: "
              f"{result.stderr.strip().splitlines()[-1:] or 'killed'})")
        return None
    return json.loads(result.stdout.splitlines()[-1])["peak_extra"]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    live = ref > 16 * np.finfo(got.dtype).tiny
    return float(np.max(np.abs(got[live].astype(np.float64) - ref[live]) / ref[live],
                        initial=0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128^3 instead of 1024^3")
    parser.add_argument("--n", type=int, default=None, help="n = k = m")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[],
                        help="leave out methods whose name contains this")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n or (128 if args.quick else 1024)
    if args.child:
        child(args.child, n, args.dtype)
        return 0
    try:
        import torch
    except ImportError:
        torch = None
    names = [m for m in METHODS if not any(s in m for s in args.skip)
             and (torch is not None or "torch" not in m)]
    broadcast = "torch autograd, broadcast logsumexp"
    need = 4.5 * n**3 * np.dtype(args.dtype).itemsize    # four n·k·m tensors at its peak
    if broadcast in names and need > _available_memory():
        names.remove(broadcast)
        print(f"(the broadcast needs about {need / 2**30:.1f} GiB and "
              f"{_available_memory() / 2**30:.1f} GiB are available: left out; try a "
              "smaller --n)")
    A, B, G = inputs(n, args.dtype)
    print(f"logmm {logmm.__version__}, numpy {np.__version__}, torch "
          f"{torch.__version__ if torch else 'not installed'}; {n}^3 {args.dtype}, "
          f"{len(os.sched_getaffinity(0))} threads, medians of {args.repeats}")
    fns = {name: method_fn(name, A, B, G) for name in names}

    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    C64 = logmm.logmatmulexp(A64, B64)
    reference = {False: logmm.logmatmulexp_vjp(A64, B64, C64, np.ones_like(C64)),
                 True: logmm.logmatmulexp_vjp(A64, B64, C64, G.astype(np.float64))}
    errors = {}
    for name, fn in fns.items():
        signed = "signed" in name
        dA, dB = fn()
        if signed:      # signed sums: error relative to the scale sum |G| P, i.e. G = |G|
            scale = logmm.logmatmulexp_vjp(A64, B64, C64, np.abs(G.astype(np.float64)))
            errors[name] = max(float(np.max(np.abs(d - r) / np.maximum(s, 1e-300)))
                               for d, r, s in zip((dA, dB), reference[True], scale,
                                                  strict=True))
        else:
            errors[name] = max(relative_error(d, r)
                               for d, r in zip((dA, dB), reference[False], strict=True))
    times = timed(fns, args.repeats)
    memory = {name: None if args.no_memory else peak_memory(name, n, args.dtype)
              for name in names}
    io = 4 * n * n * np.dtype(args.dtype).itemsize   # A, B, C and G: n·k + k·m + 2 n·m

    base = times[names[0]]
    print(f"\n## forward + backward, {n}^3 {args.dtype}")
    print(f"{'method':<38}{'median s':>10}{'x logmm':>9}{'peak MiB':>10}{'x inputs':>10}"
          f"{'max rel err':>13}")
    for name in names:
        mem = memory[name]
        mem_text = (f"{mem / 2**20:>10.0f}{mem / io:>10.1f}" if mem is not None
                    else f"{'-':>10}{'-':>10}")
        print(f"{name:<38}{times[name]:>10.4f}{times[name] / base:>9.2f}{mem_text}"
              f"{errors[name]:>13.2e}")
    print(f"(x inputs: peak extra memory over 4 n^2 = {io / 2**20:.0f} MiB, the size of "
          "A, B, C and G)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
