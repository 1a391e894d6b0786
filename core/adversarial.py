"""Hard inputs for log-space products: the public counterexamples and seeded families.

Each family returns ``(A, B)`` of shapes (n, k) and (k, m) and is built to defeat a known
shortcut. They drive the accuracy tests and the benchmarks, and users can run them
against their own pipelines. All are deterministic for a given ``seed``.
"""

from __future__ import annotations

import math

import numpy as np

from .logmatmul import log_tau

__all__ = [
    "FAMILIES",
    "banded",
    "counterexamples",
    "float32_extremes",
    "huge_magnitudes",
    "log_probabilities",
    "neg_inf_mask",
    "scale_drift",
]


def counterexamples() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The two public failures of the textbook recipes, with their exact results.

    Global max shift: ``A = 0``, ``B = [[-1000, 0], [-1000, 0]]`` (exact
    ``[-999.3068528194401, 0.6931471805599453]`` per row). Row/column max shift:
    ``A = [[-500, 900]]``, ``B = [[900], [-500]]`` (exact 400.6931471805599).
    """
    ln2 = math.log(2.0)
    return [
        (np.zeros((2, 2)), np.array([[-1000.0, 0.0], [-1000.0, 0.0]]),
         np.array([[-1000.0 + ln2, ln2], [-1000.0 + ln2, ln2]])),
        (np.array([[-500.0, 900.0]]), np.array([[900.0], [-500.0]]),
         np.array([[400.0 + ln2]])),
    ]


def log_probabilities(n: int, k: int, m: int, dtype: type = np.float64,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random row-normalised log-probabilities (the easy, common case)."""
    rng = np.random.default_rng(seed)
    A = np.log(rng.dirichlet(np.ones(k), size=n))
    B = np.log(rng.dirichlet(np.ones(m), size=k))
    return A.astype(dtype), B.astype(dtype)


def banded(n: int, k: int, m: int, fraction: float = 0.1, dtype: type = np.float64,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row and column maxima at different ``k``: about ``fraction`` of entries untrusted.

    ``A[i, t] = -c (t - p_i)^2``, ``B[t, j] = -c (t - q_j)^2`` (plus noise in [-1, 0]) with
    ``p_i`` and ``q_j`` spread over [0, k). The dominant term of ``C[i, j]`` sits at
    ``t = (p_i + q_j) / 2``, where the shifted product is ``exp(-c (p_i - q_j)^2 / 2)``;
    ``c`` is chosen so that this underflows the fast path's threshold for about
    ``fraction`` of the pairs.
    """
    rng = np.random.default_rng(seed)
    t_cut = k * (1.0 - math.sqrt(fraction))      # P(|p - q| > t_cut) = fraction
    c = 2.0 * -log_tau(np.dtype(dtype)) / max(t_cut, 1.0) ** 2
    p = rng.uniform(0, k, size=n)
    q = rng.uniform(0, k, size=m)
    t = np.arange(k, dtype=np.float64)
    A = -c * (t[None, :] - p[:, None]) ** 2 - rng.uniform(0, 1, size=(n, k))
    B = -c * (t[:, None] - q[None, :]) ** 2 - rng.uniform(0, 1, size=(k, m))
    return A.astype(dtype), B.astype(dtype)


def scale_drift(n: int, k: int, m: int, drift: float | None = None,
                dtype: type = np.float64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scale that drifts along ``k`` in opposite directions in A and B.

    ``A[i, t] = drift * t + noise``, ``B[t, j] = -drift * t + noise``: every term of
    ``C`` is of order 1, yet the row maxima of A sit at ``t = k-1`` and the column maxima
    of B at ``t = 0``, so every shifted product is about ``exp(-drift * (k - 1))``. The
    default drift puts every entry 1.5 times beyond the fast path's threshold.
    """
    rng = np.random.default_rng(seed)
    if drift is None:
        drift = 1.5 * -log_tau(np.dtype(dtype)) / max(k - 1, 1)
    t = np.arange(k, dtype=np.float64)
    A = drift * t[None, :] + rng.normal(size=(n, k))
    B = -drift * t[:, None] + rng.normal(size=(k, m))
    return A.astype(dtype), B.astype(dtype)


def huge_magnitudes(n: int, k: int, m: int, scale: float = 1e5, dtype: type = np.float64,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Entries of size ``scale``, mostly ``-scale``, a few ``+scale``.

    Each row of A and column of B holds about ``sqrt(k)`` entries near ``+scale``; where
    none of them meet on the same ``k`` (about a third of the entries), ``C`` is of order
    ``0`` while the shifted products are ``exp(-2 scale)``.
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / math.sqrt(max(k, 1))
    A = scale * np.where(rng.random((n, k)) < p, 1.0, -1.0) + rng.normal(size=(n, k))
    B = scale * np.where(rng.random((k, m)) < p, 1.0, -1.0) + rng.normal(size=(k, m))
    return A.astype(dtype), B.astype(dtype)


def neg_inf_mask(n: int, k: int, m: int, density: float = 0.9, dtype: type = np.float64,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities with a random fraction ``density`` of entries set to ``-inf``.

    At high density many entries of ``C`` are exactly ``-inf`` (disjoint supports), and
    whole rows of A or columns of B may be ``-inf``.
    """
    rng = np.random.default_rng(seed)
    A, B = log_probabilities(n, k, m, np.float64, seed)
    A[rng.random(A.shape) < density] = -np.inf
    B[rng.random(B.shape) < density] = -np.inf
    return A.astype(dtype), B.astype(dtype)


def float32_extremes(n: int, k: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 log-values near its exponent limits (exp is subnormal below about -87.3).

    A is near 0 at even ``k`` and near -96 at odd ``k``; B the other way round. Every
    term pairs a near-0 with a near--96 factor, so the float32 fast path's shifted
    factors are subnormal (few significant bits, or flushed to 0) and its sums fall far
    below its threshold (about exp(-70)).
    """
    rng = np.random.default_rng(seed)
    odd = (np.arange(k) % 2).astype(bool)
    A = np.where(odd[None, :], -96.0, 0.0) - rng.uniform(0, 6, size=(n, k))
    B = np.where(odd[:, None], 0.0, -96.0) - rng.uniform(0, 6, size=(k, m))
    return A.astype(np.float32), B.astype(np.float32)


FAMILIES = {
    "log_probabilities": log_probabilities,
    "banded": banded,
    "scale_drift": scale_drift,
    "huge_magnitudes": huge_magnitudes,
    "neg_inf_mask": neg_inf_mask,
}
