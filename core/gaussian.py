"""Diagonal-Gaussian log-likelihood over whole arrays, with an overflow-free softplus.

``diag_gaussian_logpdf(x, mu, sigma=...)`` is ``log N(x; mu, diag(sigma²))`` elementwise,
per row or in total; ``rho=...`` gives ``sigma = softplus(rho) = log(1 + exp(rho))``, the
usual unconstrained parameterisation, computed without overflow for large ``rho`` and
without losing ``log sigma`` for very negative ``rho`` (where ``sigma ≈ exp(rho)``
underflows): the density only ever needs ``log sigma`` and ``1/sigma``, and both are
taken from ``rho`` directly.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError, UsageError
from .logmatmul import compute_dtype

__all__ = ["REDUCTIONS", "diag_gaussian_logpdf", "log_softplus", "softplus"]

REDUCTIONS = ("none", "row", "sum")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def softplus(rho: np.ndarray) -> np.ndarray:
    """``log(1 + exp(rho))`` without overflow: ``rho`` itself for large ``rho``,
    ``exp(rho)`` to full precision for very negative ``rho`` (numpy's ``logaddexp(0, rho)``
    computes ``max + log1p(exp(-|rho|))``, accurate to a few ulps over the whole range)."""
    rho = np.asarray(rho)
    with np.errstate(over="ignore", under="ignore"):
        return np.logaddexp(np.zeros((), rho.dtype), rho)


def log_softplus(rho: np.ndarray) -> np.ndarray:
    """``log(softplus(rho))``, finite for every finite ``rho``.

    Below ``rho = -30`` softplus is ``exp(rho) (1 - exp(rho)/2 + …)``, so its log is
    ``rho - exp(rho)/2`` to far better than a ulp; above, ``log(softplus(rho))`` is taken
    directly (softplus ≥ 9e-14 there, no underflow).
    """
    rho = np.asarray(rho)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        tail = rho - np.exp(rho) / 2
        return np.where(rho < -30, tail, np.log(softplus(np.maximum(rho, -30))))


def diag_gaussian_logpdf(x: np.ndarray, mu: np.ndarray | float, *,
                         sigma: np.ndarray | float | None = None,
                         rho: np.ndarray | float | None = None,
                         reduce: str = "none", out: np.ndarray | None = None
                         ) -> np.ndarray | float:
    """``log N(x; mu, diag(sigma²))`` for arrays of any rank, without Python loops.

    Parameters
    ----------
    x : array_like, shape (...)
    mu : array_like or float
        Broadcasts against ``x`` (scalar, per-column vector, full array).
    sigma, rho : array_like or float
        Exactly one: the standard deviation (finite, > 0), or ``rho`` with
        ``sigma = softplus(rho)`` (any finite value; ``+inf`` is an error).
    reduce : {"none", "row", "sum"}
        ``"none"``: elementwise, the broadcast shape; ``"row"``: summed over the last
        axis (one log-likelihood per sample), float64-accumulated; ``"sum"``: the total
        as a Python float, accumulated in float64 by pairwise summation (relative error
        about ``log2(N) · eps``, so 10⁸ terms keep 13 digits or more).

    out : ndarray, optional
        For ``reduce="none"``: receives the result (the broadcast shape and result
        dtype), e.g. a slice of a memory-mapped output, saving a copy.

    Returns
    -------
    ndarray or float
        float32 stays float32 for ``"none"`` and ``"row"`` (accumulated in float64, then
        rounded); ``"sum"`` returns a float.

    Raises
    ------
    UsageError
        Both or neither of ``sigma``/``rho``, unknown ``reduce``.
    InputError
        ``sigma`` ≤ 0 or not finite, ``rho`` ``+inf`` or NaN, shapes that do not
        broadcast, non-real dtypes.

    Examples
    --------
    >>> import numpy as np
    >>> float(diag_gaussian_logpdf(np.array([0.0]), 0.0, sigma=1.0, reduce="sum"))
    -0.9189385332046727
    """
    if (sigma is None) == (rho is None):
        raise UsageError("give exactly one of sigma and rho")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    given = (x, mu, sigma if sigma is not None else rho)
    # Python numbers are weak (as in NEP 50): float32 arrays with a scalar mu stay float32
    typed = [compute_dtype(np.asarray(a).dtype) for a in given
             if isinstance(a, np.ndarray | np.generic)]
    dtype = np.result_type(*typed) if typed else np.dtype(np.float64)
    x, mu, scale = (np.asarray(a) for a in given)
    try:
        shape = np.broadcast_shapes(x.shape, mu.shape, scale.shape)
    except ValueError:
        raise InputError(f"shapes do not broadcast: x {x.shape}, mu {mu.shape}, "
                         f"{'sigma' if sigma is not None else 'rho'} {scale.shape}") from None
    x, mu, scale = (a.astype(dtype, copy=False) for a in (x, mu, scale))
    if sigma is not None:
        if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise InputError("sigma must be finite and > 0 everywhere")
        log_sigma = np.log(scale)
        inv_sigma = 1.0 / scale
    else:
        if np.isnan(scale).any() or np.isposinf(scale).any() or np.isneginf(scale).any():
            raise InputError("rho must be finite (sigma = softplus(rho))")
        log_sigma = log_softplus(scale)
        with np.errstate(over="ignore"):
            inv_sigma = np.exp(-log_sigma)      # inf where sigma underflows: exact limit
    with np.errstate(over="ignore", invalid="ignore"):
        # five in-place passes over the data: (x - mu), * 1/sigma, squared, * -1/2,
        # - (log sigma + log(2 pi)/2), the last two terms combined on the small operand
        target = out if (out is not None and reduce == "none" and out.shape == shape
                         and out.dtype == dtype) else None
        out = np.subtract(x, mu, dtype=dtype, out=target)
        out *= inv_sigma
        if not np.all(np.isfinite(inv_sigma)):   # sigma underflowed: 0 * inf at x == mu
            out[np.broadcast_to(x == mu, out.shape)] = 0
        out *= out
        out *= -0.5
        out -= log_sigma + dtype.type(_HALF_LOG_2PI)
    if out.shape != shape:
        out = np.broadcast_to(out, shape)
    if reduce == "none":
        return out if out.flags.writeable and out.dtype == dtype else np.array(out, dtype)
    if reduce == "row":
        return out.sum(axis=-1, dtype=np.float64).astype(dtype) if out.ndim else \
            out.astype(dtype)
    return float(out.sum(dtype=np.float64))
