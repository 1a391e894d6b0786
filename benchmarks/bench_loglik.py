"""diag_gaussian_logpdf against the ways people write it, and streamed from .npy.

    python benchmarks/bench_loglik.py            # 10^7 elements
    python benchmarks/bench_loglik.py --quick    # 10^6
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np
from scipy.stats import norm

import logmm
from logmm.loglik import loglik

from timing import timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows, cols = (10**4, 100) if args.quick else (10**5, 100)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, cols))
    mu = rng.normal(size=cols)
    sigma = np.exp(rng.normal(size=cols))
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def fused() -> np.ndarray:
        return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - half_log_2pi

    methods = {
        "logmm diag_gaussian_logpdf": lambda: logmm.diag_gaussian_logpdf(x, mu, sigma=sigma),
        "fused numpy expression": fused,
        "scipy.stats.norm.logpdf": lambda: norm.logpdf(x, mu, sigma),
    }
    times = timed(methods, args.repeats)
    sample = 2000
    flat_x, flat_mu = x.ravel()[:sample], np.broadcast_to(mu, x.shape).ravel()[:sample]
    flat_s = np.broadcast_to(sigma, x.shape).ravel()[:sample]
    t0 = time.perf_counter()
    for xi, mi, si in zip(flat_x, flat_mu, flat_s, strict=True):
        norm.logpdf(xi, mi, si)
    loop = (time.perf_counter() - t0) / sample * x.size
    print(f"logmm {logmm.__version__}, numpy {np.__version__}; {x.size:.0e} float64 "
          f"elements, medians of {args.repeats}")
    print(f"{'method':<34}{'seconds':>10}{'x fused':>10}")
    for name, t in sorted(times.items(), key=lambda kv: kv[1]):
        print(f"{name:<34}{t:>10.4f}{t / times['fused numpy expression']:>10.2f}")
    print(f"{'element loop of norm.logpdf':<34}{loop:>10.1f}"
          f"{loop / times['fused numpy expression']:>10.0f}   (extrapolated from "
          f"{sample} elements)")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        np.save(f"{tmp}/mu.npy", mu)
        np.save(f"{tmp}/sigma.npy", sigma)
        runs = iter(range(10**6))

        def stream() -> None:     # a new output each run: replacing one costs its unlink
            loglik(f"{tmp}/x.npy", f"{tmp}/y{next(runs)}.npy", mu=f"{tmp}/mu.npy",
                   sigma=f"{tmp}/sigma.npy", memory=64 << 20)

        streamed = timed({"s": stream}, args.repeats)["s"]
    print(f"{'logmm loglik streamed .npy -> .npy':<34}{streamed:>10.4f}"
          f"{streamed / times['fused numpy expression']:>10.2f}   "
          f"({times['logmm diag_gaussian_logpdf'] / streamed:.2f}x in-memory speed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
