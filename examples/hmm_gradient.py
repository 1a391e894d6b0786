"""Gradient of an HMM's log-likelihood with respect to its transition logits.

    python examples/hmm_gradient.py                    # 64 states, 200 steps
    python examples/hmm_gradient.py --states 4 --steps 6

The forward algorithm in log space is a chain of log-space products,
``alpha_t = logmatmulexp(alpha_{t-1}, log T) + log E[:, x_t]``, and the log-likelihood is
``logsumexp(alpha_T)``. Its gradient with respect to the transition logits ``theta``
(``log T = log_softmax(theta)``) is computed twice: by hand in numpy with
:func:`logmm.logmatmulexp_vjp` (reverse pass through the recursion), and by torch
autograd through :func:`logmm.torch.logmatmulexp` when torch is installed. Neither
forms a states x states x steps tensor. The script prints the log-likelihood, the
gradient's norm and how far the two gradients (and central differences on a few
entries) are apart.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import logmm
from logmm.accumulate import logsumexp


def log_softmax(theta: np.ndarray) -> np.ndarray:
    return theta - logsumexp(theta, axis=1, keepdims=True)


def make_hmm(states: int, steps: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random transition logits, initial and emission log-probabilities, observations."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(scale=2.0, size=(states, states))
    log_pi = np.log(rng.dirichlet(np.ones(states)))
    symbols = max(2, states // 2)
    log_E = np.log(rng.dirichlet(np.ones(symbols), size=states))
    x = rng.integers(0, symbols, size=steps)
    return theta, log_pi, log_E, x


def loglik_and_grad(theta: np.ndarray, log_pi: np.ndarray, log_E: np.ndarray,
                    x: np.ndarray) -> tuple[float, np.ndarray]:
    """log p(x) and d log p(x) / d theta, forward and reverse passes in numpy."""
    log_T = log_softmax(theta)
    alphas = [log_pi + log_E[:, x[0]]]
    products = []                                   # C of each step, for its VJP
    for t in range(1, len(x)):
        C = logmm.logmatmulexp(alphas[-1][None, :], log_T)     # (1, states)
        products.append(C)
        alphas.append(C[0] + log_E[:, x[t]])
    loglik = float(logsumexp(alphas[-1]))
    # reverse pass: d loglik / d alpha_T is the posterior of the last state
    g_alpha = np.exp(alphas[-1] - loglik)
    g_log_T = np.zeros_like(log_T)
    for t in range(len(x) - 1, 0, -1):
        d_alpha, d_T = logmm.logmatmulexp_vjp(alphas[t - 1][None, :], log_T,
                                              products[t - 1], g_alpha[None, :])
        g_log_T += d_T
        g_alpha = d_alpha[0]
    # log_softmax's backward: g - softmax * rowsum(g)
    g_theta = g_log_T - np.exp(log_T) * g_log_T.sum(axis=1, keepdims=True)
    return loglik, g_theta


def torch_grad(theta: np.ndarray, log_pi: np.ndarray, log_E: np.ndarray,
               x: np.ndarray) -> np.ndarray:
    """The same gradient by torch autograd through logmm.torch.logmatmulexp."""
    import torch

    import logmm.torch

    th = torch.tensor(theta, requires_grad=True)
    log_T = torch.log_softmax(th, dim=1)
    E = torch.tensor(log_E)
    alpha = torch.tensor(log_pi) + E[:, x[0]]
    for t in range(1, len(x)):
        alpha = logmm.torch.logmatmulexp(alpha[None, :], log_T)[0] + E[:, x[t]]
    torch.logsumexp(alpha, 0).backward()
    return th.grad.numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    theta, log_pi, log_E, x = make_hmm(args.states, args.steps)
    loglik, grad = loglik_and_grad(theta, log_pi, log_E, x)
    print(f"log p(x) = {loglik:.10f} over {args.steps} steps, {args.states} states")
    print(f"|d log p / d theta| = {np.linalg.norm(grad):.10f}")
    # central differences on a few entries
    h, worst = 1e-5, 0.0
    for i, j in [(0, 0), (args.states - 1, 0), (0, args.states - 1)]:
        step = np.zeros_like(theta)
        step[i, j] = h
        up = loglik_and_grad(theta + step, log_pi, log_E, x)[0]
        down = loglik_and_grad(theta - step, log_pi, log_E, x)[0]
        worst = max(worst, abs((up - down) / (2 * h) - grad[i, j]))
    print(f"largest difference from central differences: {worst:.2e}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: autograd comparison skipped")
        return 0
    difference = float(np.max(np.abs(torch_grad(theta, log_pi, log_E, x) - grad)))
    print(f"largest difference from torch autograd through logmm.torch: {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
