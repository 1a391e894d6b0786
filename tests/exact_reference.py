"""Exact references for log-space products, computed with mpmath at 200 bits.

Each term ``A[i, k] + B[k, j]`` is formed exactly (binary floats are exact mpf values) and
exponentiated and summed at high precision, so the reference is the correctly rounded
float64 of the true value (up to mpmath's own few ulps at 200 bits).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

_PREC = 200


def exact_logsumexp(values: list[float]) -> float:
    """Exact ``log(sum(exp(v)))`` of finite or -inf floats (NaN gives NaN)."""
    with mpmath.workprec(_PREC):
        total = mpmath.mpf(0)
        for v in values:
            if math.isnan(v):
                return math.nan
            if v == -math.inf:
                continue
            total += mpmath.exp(mpmath.mpf(v))
        return float(mpmath.log(total)) if total > 0 else -math.inf


def exact_logmatmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Exact ``log(exp(A) @ exp(B))`` for 2-D A (n, k), B (k, m), as float64."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    n, k = A.shape
    m = B.shape[1]
    C = np.empty((n, m))
    with mpmath.workprec(_PREC):
        for i in range(n):
            for j in range(m):
                terms = []
                nan = False
                for t in range(k):
                    a, b = float(A[i, t]), float(B[t, j])
                    if math.isnan(a) or math.isnan(b):
                        nan = True
                        break
                    if a == -math.inf or b == -math.inf:
                        continue
                    terms.append(mpmath.mpf(a) + mpmath.mpf(b))
                if nan:
                    C[i, j] = math.nan
                    continue
                total = mpmath.fsum(mpmath.exp(x) for x in terms)
                C[i, j] = float(mpmath.log(total)) if total > 0 else -math.inf
    return C


def error_bound(A: np.ndarray, B: np.ndarray, dtype: np.dtype) -> float:
    """The documented bound ``4 u (K + max|A| + max|B|)`` over finite entries."""
    u = float(np.finfo(dtype).eps) / 2
    k = A.shape[-1]

    def finite_max(x: np.ndarray) -> float:
        x = np.abs(np.asarray(x, dtype=np.float64))
        x = x[np.isfinite(x)]
        return float(x.max()) if x.size else 0.0

    return 4 * u * (k + finite_max(A) + finite_max(B))


def exact_tier_errors(C: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Per entry, ``|C - ref|`` over ``method="exact"``'s exact-tier bound (documented in
    ``logmatmulexp``): ``2^-53 (2|C| + 5 log2 K + K/512 + 100) + u |C|`` with ``u`` of C's
    dtype, plus ``2^-53 |ref|`` for ``ref``'s own rounding to float64. At most 1 where the
    bound holds; equal infinities and NaN-vs-NaN count as 0, other mismatches inf."""
    u = float(np.finfo(np.asarray(C).dtype).eps) / 2
    C = np.asarray(C, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    size = np.where(np.isfinite(ref), np.abs(ref), 0.0)
    bound = 2.0**-53 * (3 * size + 5 * math.log2(max(k, 1)) + k / 512 + 100) + u * size
    same = (C == ref) | (np.isnan(C) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        ratio = np.abs(C - ref) / bound
    ratio[same] = 0.0
    ratio[np.isnan(ratio)] = np.inf
    return ratio


def max_abs_error(C: np.ndarray, ref: np.ndarray) -> float:
    """Largest |C - ref|; equal infinities and NaN-vs-NaN count as 0, other mismatches inf."""
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    ref = np.atleast_1d(np.asarray(ref, dtype=np.float64))
    same = (C == ref) | (np.isnan(C) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        d = np.abs(C - ref)
    d[same] = 0.0
    d[np.isnan(d)] = np.inf
    return float(d.max()) if d.size else 0.0


def _labels(subscripts: str, operands: list[np.ndarray]
            ) -> tuple[list[str], str, dict[str, int], list[str]]:
    """Terms, output, label sizes (size-1 dimensions broadcast) and summed labels."""
    import opt_einsum

    inputs, output, _ = opt_einsum.parser.parse_einsum_input((subscripts, *operands))
    terms = inputs.split(",")
    sizes: dict[str, int] = {}
    for term, op in zip(terms, operands, strict=True):
        for label, size in zip(term, op.shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), size)
    return terms, output, sizes, [c for c in sizes if c not in output]


def exact_logeinsum(subscripts: str, *operands: np.ndarray) -> np.ndarray:
    """Exact log-semiring einsum by brute force over every label assignment (small inputs)."""
    import itertools

    operands = [np.asarray(op, dtype=np.float64) for op in operands]
    terms, output, sizes, summed = _labels(subscripts, operands)
    result = np.empty([sizes[c] for c in output])
    with mpmath.workprec(_PREC):
        for out_index in itertools.product(*(range(sizes[c]) for c in output)):
            total, nan = mpmath.mpf(0), False
            for sum_index in itertools.product(*(range(sizes[c]) for c in summed)):
                where = dict(zip(output, out_index, strict=True)) | dict(
                    zip(summed, sum_index, strict=True))
                exponent = mpmath.mpf(0)
                dead = False
                for term, op in zip(terms, operands, strict=True):
                    idx = tuple(where[c] if op.shape[i] > 1 else 0 for i, c in enumerate(term))
                    value = float(op[idx])
                    if math.isnan(value):
                        nan = True
                    elif value == -math.inf:
                        dead = True
                    else:
                        exponent += mpmath.mpf(value)
                if not dead:
                    total += mpmath.exp(exponent)
            result[out_index] = math.nan if nan else (
                float(mpmath.log(total)) if total > 0 else -math.inf)
    return result


def exact_logeinsum_vjp(subscripts: str, operands: list[np.ndarray], G: np.ndarray,
                        C: np.ndarray | None = None
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exact gradients of ``logeinsum(subscripts, *operands)`` against ``G``, and their
    error scales, by brute force over every label assignment (small inputs).

    Returns ``(grads, scales)``: for each operand entry x, ``grad = sum G[out] P`` and
    ``scale = sum |G[out]| P`` over the assignments that use x, with
    ``P = exp(sum of the assignment's log-values - C*[out])`` and ``C*`` the exact
    (unrounded) result. Entries of G where ``C* = -inf`` contribute nothing; NaN inputs
    are not supported here. Operands broadcast along size-1 dimensions get the sum.
    With ``C`` given: ``P = exp(sum of log-values - C[out])`` for that C, every exponent
    formed exactly (2300 bits hold any sum of float64s); a ValueError if the C given lies
    below one of its terms by more than 12 (C's own rounding at huge magnitude).
    """
    import itertools

    operands = [np.asarray(op, dtype=np.float64) for op in operands]
    G = np.asarray(G, dtype=np.float64)
    terms, output, sizes, summed = _labels(subscripts, operands)
    grads_mp: list[dict] = [{} for _ in operands]      # entry -> exact sum (mpf)
    scales_mp: list[dict] = [{} for _ in operands]
    with mpmath.workprec(_PREC):
        for out_index in itertools.product(*(range(sizes[c]) for c in output)):
            live = []                     # (exponent, operand indices) of finite terms
            for sum_index in itertools.product(*(range(sizes[c]) for c in summed)):
                where = dict(zip(output, out_index, strict=True)) | dict(
                    zip(summed, sum_index, strict=True))
                idxs = [tuple(where[c] if op.shape[i] > 1 else 0 for i, c in enumerate(term))
                        for term, op in zip(terms, operands, strict=True)]
                values = [float(op[idx]) for op, idx in zip(operands, idxs, strict=True)]
                if any(v == -math.inf for v in values):
                    continue
                if C is None:
                    live.append((mpmath.fsum(mpmath.mpf(v) for v in values), idxs))
                else:
                    with mpmath.workprec(2300):
                        e = mpmath.fsum(mpmath.mpf(v) for v in values) - float(C[out_index])
                    if e > 12:
                        raise ValueError("C lies below one of its terms")
                    live.append((e, idxs))
            if not live or (C is not None and float(C[out_index]) == -math.inf):
                continue                  # C* = -inf: contributes nothing
            total = mpmath.fsum(mpmath.exp(e) for e, _ in live) if C is None else 1
            g = mpmath.mpf(float(G[out_index]))
            for e, idxs in live:
                share = mpmath.exp(e) / total
                for grad, scale, idx in zip(grads_mp, scales_mp, idxs, strict=True):
                    grad[idx] = grad.get(idx, 0) + g * share
                    scale[idx] = scale.get(idx, 0) + abs(g) * share
        grads = [np.zeros(op.shape) for op in operands]
        scales = [np.zeros(op.shape) for op in operands]
        for grad, scale, g_mp, s_mp in zip(grads, scales, grads_mp, scales_mp, strict=True):
            for idx, value in g_mp.items():
                grad[idx] = float(value)
                scale[idx] = float(s_mp[idx])
    return grads, scales

