"""The one (max, sum) log-accumulator that every tier and every contraction split uses.

A log-sum is carried as a pair ``(m, s)`` with value ``m + log(s)``: ``m`` is a running
maximum (non-finite maxima are carried as they are) and ``s`` a sum of ``exp(term - m)``
that stays in ``[1, count]`` whenever ``m`` is finite. Combining blocks rescales the
older sum by ``exp(m_old - m_new)`` (the online-softmax rescaling of Milakov & Gimelshein),
so no term ever overflows and a term underflows only when it is negligible beside the
maximum. Conventions: ``-inf`` is log(0) and an all-``-inf`` reduction is ``-inf`` (never
NaN); NaN anywhere in a reduction makes that result NaN. No RuntimeWarning escapes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LogSumAccumulator", "clamped_exp", "exp_floor", "finite_or_zero", "logsumexp"]


def exp_floor(dtype: np.dtype | type) -> float:
    """Smallest argument :func:`clamped_exp` passes to exp: ``log(tiny) + 1``.

    float64: about -707.4; float32: about -86.3. exp of anything lower would be subnormal
    or 0, which numpy's exp computes 7 to 35 times slower (measured: 0.9 ns per element
    normally, 5.8 ns for results that flush to 0, 25-30 ns for subnormal results).
    """
    return math.log(float(np.finfo(dtype).tiny)) + 1.0


def clamped_exp(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``exp(max(x, exp_floor))``: exp on numpy's fast path, NaN kept.

    Each result is off by at most ``e * tiny`` (absolute) from ``exp(x)``, and only where
    ``exp(x)`` is below that; ``-inf`` gives ``e * tiny`` rather than 0, so callers
    restore exact ``-inf`` where every term was ``-inf``.
    """
    x = np.asarray(x)
    out = np.maximum(x, exp_floor(x.dtype), out=out)      # maximum (not fmax) keeps NaN
    return np.exp(out, out=out)


def finite_or_zero(shift: np.ndarray) -> np.ndarray:
    """Return ``shift`` with non-finite entries replaced by 0 (in place when writable).

    Subtracting a finite shift keeps ``exp(-inf - shift) == 0`` and avoids the NaN of
    ``-inf - (-inf)``; a row whose maximum was ``-inf`` then sums to 0, i.e. log 0.
    """
    shift = np.asarray(shift)
    if shift.ndim == 0:
        return shift if np.isfinite(shift) else np.zeros_like(shift)
    bad = ~np.isfinite(shift)
    if bad.any():
        if not shift.flags.writeable:
            shift = shift.copy()
        shift[bad] = 0
    return shift


def logsumexp(x: np.ndarray, axis: int | tuple[int, ...] | None = None, *,
              keepdims: bool = False, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Stable ``log(sum(exp(x), axis))``.

    Two passes: the maximum (``np.fmax``, so NaN does not hide it), then the shifted sum.
    ``dtype`` sets the accumulation dtype (e.g. float64 for float32 input); the result
    has that dtype. Error: ``|result - exact| <= u * (N + 2 + |result|)`` to first order,
    with ``N`` the number of summed terms and ``u`` half the machine epsilon.
    """
    x = np.asarray(x, dtype=dtype) if dtype is not None else np.asarray(x)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        m_raw = np.fmax.reduce(x, axis=axis, keepdims=True, initial=-np.inf)
        m = finite_or_zero(m_raw.copy())
        scaled = x - m
        s = clamped_exp(scaled, out=scaled).sum(axis=axis, keepdims=True)
        out = np.log(s)
        out += m
        # No finite term: log 0, not the clamp floor; a NaN term keeps the result NaN.
        np.copyto(out, -np.inf, where=(m_raw == -np.inf) & ~np.isnan(out))
    if not keepdims:
        out = np.squeeze(out, axis=axis) if axis is not None else out.reshape(())
    return out


class LogSumAccumulator:
    """Running elementwise log-sum of blocks of log-values, of a fixed output shape.

    ``add(log_values)`` adds one array of log-values elementwise; ``add_reduced(terms,
    axis)`` adds the log-sum of ``terms`` over ``axis``. ``result()`` returns
    ``m + log(s)``. Used for contraction-axis splits (partial products combined) and for
    the exact blocked product.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float64) -> None:
        self.m = np.full(shape, -np.inf, dtype=dtype)
        self.s = np.zeros(shape, dtype=dtype)

    def _rescale_to(self, new_m: np.ndarray) -> np.ndarray:
        """Rescale the running sum to the new maximum; return the finite shift to use."""
        shift = finite_or_zero(new_m.copy())
        # exp(m_old - shift) <= 1 where the old maximum is finite (shift >= m_old); where
        # it was -inf the running sum is 0 and the factor exp(-inf) = 0 keeps it 0.
        self.s *= np.exp(self.m - shift)
        self.m = new_m
        return shift

    def add(self, log_values: np.ndarray) -> None:
        """Add log-values elementwise (shape broadcastable to the accumulator's)."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
            log_values = np.asarray(log_values, dtype=self.m.dtype)
            shift = self._rescale_to(np.fmax(self.m, log_values))
            # A NaN term makes the running sum NaN for good: NaN reaches the result
            # even though fmax ignored it in the maximum.
            scaled = log_values - shift
            self.s += clamped_exp(scaled, out=scaled)

    def add_reduced(self, terms: np.ndarray, axis: int, *, overwrite_terms: bool = False,
                    spread: float = math.inf) -> None:
        """Add ``logsumexp(terms, axis)`` without forming it: one rescale per block.

        With ``overwrite_terms`` the (writable, accumulator-dtype) ``terms`` array is used
        as scratch space, saving two temporaries of its size. ``spread`` is a bound on
        ``max(terms) - min(terms)`` known to the caller; when it is below ``-exp_floor``
        no shifted term can underflow and the clamping pass is skipped.
        """
        with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
            terms = np.asarray(terms)
            block_max = np.fmax.reduce(terms, axis=axis)
            shift = np.expand_dims(self._rescale_to(np.fmax(self.m, block_max)), axis)
            if overwrite_terms and terms.dtype == self.s.dtype and terms.flags.writeable:
                scaled = np.subtract(terms, shift, out=terms)
            else:
                scaled = terms - shift
            if spread < -exp_floor(scaled.dtype):
                np.exp(scaled, out=scaled)
            else:
                clamped_exp(scaled, out=scaled)
            self.s += scaled.sum(axis=axis)

    def result(self, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The accumulated ``m + log(s)``: -inf where nothing finite was added."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(self.s)
            out += finite_or_zero(self.m.copy())
            # nothing finite added: log 0 (a NaN added keeps the result NaN)
            np.copyto(out, -np.inf, where=(self.m == -np.inf) & ~np.isnan(out))
        return out.astype(dtype, copy=False) if dtype is not None else out
