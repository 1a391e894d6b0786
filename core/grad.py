"""Vector-Jacobian products of :func:`logmm.logmatmulexp` and :func:`logmm.logeinsum`.

For ``C = logmatmulexp(A, B)`` and an upstream gradient ``G = dL/dC``,

    dA_ik = sum_j G_ij P_ikj,   dB_kj = sum_i G_ij P_ikj,   P_ikj = exp(A_ik + B_kj - C_ij),

where ``P_ikj`` in [0, 1] is the share of term k in entry (i, j) (a softmax over k).
Writing ``G = G+ - G-`` (its positive and negative parts) and ``L±_ij = log(G±_ij) - C_ij``,

    dA = exp(A + logmatmulexp(L+, Bᵀ)) - exp(A + logmatmulexp(L-, Bᵀ)),
    dB = exp(B + logmatmulexp(Aᵀ, L+)) - exp(B + logmatmulexp(Aᵀ, L-)),

so every sum of the backward pass is a log-space product handed to the stable kernel:
the same shifted GEMMs, the same trust test and the same repair tiers as the forward
pass, never an n·k·m temporary. Each part is a sum of non-negative terms and is computed
to a small *relative* error; only the final subtraction of the two parts can cancel,
which is why the error is stated relative to ``sum_j |G_ij| P_ikj`` (see
:func:`logmatmulexp_vjp`). When ``G`` has one sign (the gradient of a log-likelihood or
log-partition function with respect to its log-space inputs always has), one part is
empty and the backward pass costs two kernel products, about twice the forward pass.

``logeinsum`` uses the same identity with einsum in place of the matrix product: the
gradient for operand ``p`` is ``exp(X_p + logeinsum(out, others -> p; L±, others))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .einsum import log_operands, logeinsum, parse_subscripts
from .errors import InputError
from .logmatmul import (
    as_log_operand,
    check_no_posinf,
    compute_dtype,
    logmatmulexp,
    matmul_operands,
    shape_str,
)
from .typing import Method

__all__ = ["logeinsum_vjp", "logmatmulexp_vjp"]


def logmatmulexp_vjp(A: np.ndarray, B: np.ndarray, C: np.ndarray, G: np.ndarray, *,
                     method: Method = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``C = logmatmulexp(A, B)``: ``(dA, dB)`` given ``G = dL/dC``.

    Parameters
    ----------
    A : array_like, shape (..., n, k)
    B : array_like, shape (..., k, m)
        The operands of the forward product (log-values; batch dimensions broadcast as
        in ``np.matmul``; 1-D operands as ``np.matmul`` treats them).
    C : array_like, shape (..., n, m)
        The forward result ``logmatmulexp(A, B)`` (the gradient is exact for the C given;
        an inaccurate C carries its error into every term).
    G : array_like, same shape as C
        The upstream gradient, any sign, finite (NaN propagates).
    method : {"auto", "fast", "exact"}
        Passed to every kernel product (``auto``: trusted GEMMs plus repair).

    Returns
    -------
    dA, dB : ndarray
        Shapes of A and B (summed over the batch dimensions they were broadcast along),
        dtypes those of A and B (float32 stays float32; computed in the common dtype).
        ``dA_ik = sum_j G_ij exp(A_ik + B_kj - C_ij)``, likewise dB. Entries with
        ``A_ik = -inf`` (``B_kj = -inf``) get exactly 0; entries of G where
        ``C_ij = -inf`` (every term is log 0) contribute nothing; a NaN in A, B, C or G
        reaches the gradients it enters.

    Error bound
    -----------
    With ``u`` half the machine epsilon of the compute dtype, to first order

        |dA_ik - dA*_ik| <= (eta_A + u (3 + |log dA±_ik|)) sum_j |G_ij| P_ikj,

    where ``dA±`` are the two parts and ``eta_A = u (2m + 9 M_A + 3 log m + 8)`` is the
    kernel's bound for ``logmatmulexp(L±, Bᵀ)`` (m terms, ``M_A = max|L±| + max|B|`` over
    finite entries, ``|L±| <= |log|G|| + |C|``); dB likewise with n terms and
    ``M_B = max|A| + max|L±|``. Each part is accurate relative to itself; when G has
    both signs the subtraction can cancel, and no method avoids that without extra
    precision. The rounding of the exponents (``A + B - C`` from values of size
    ``M = max|A| + max|B|``) dominates in practice: against mpmath (200 bits) on the
    public counterexamples, every adversarial family, ``-inf`` masks and hypothesis
    inputs, in float32 and float64, the componentwise error stayed below ``u (M + k)`` times
    ``sum_j |G_ij| P_ikj``.

    Every input the forward accepts is accepted. Where C holds values below -max/8
    (``log|G| - C`` would pass the kernel's quarter-range guard), C's row shift moves to
    A (or its column shift to B, whichever serves more lines); a line that no shift
    serves to within 1024 nats (a row and a column shift at once, or scales mixed within
    it) is summed term by term, O(k m) per line, with each exponent ``A + B - C`` formed
    by an exact two-sum. Measured against mpmath with exactly formed exponents (rows at
    -5e307 beside rows at 0, columns of B near -max, C needing both shifts, float32 and
    float64, -inf lines, small entries of size ~10): at most 28 u ``sum_j |G_ij| P_ikj``
    over 2,100 fuzzed cases; the tests allow 64 u. (Exponents of size e round by u e, as
    in the kernel's u M: the bound grows with the small entries' size.)

    Raises
    ------
    InputError
        ``+inf`` in A, B or C, infinite G, shapes of C or G other than the product's,
        and every error :func:`logmatmulexp` raises.

    Examples
    --------
    >>> import numpy as np, logmm
    >>> A = np.array([[-500.0, 900.0]]); B = np.array([[900.0], [-500.0]])
    >>> C = logmm.logmatmulexp(A, B)
    >>> dA, dB = logmm.logmatmulexp_vjp(A, B, C, np.ones_like(C))
    >>> dA.round(12).tolist(), dB.round(12).tolist()   # the two equal terms share 1/2 each
    ([[0.5, 0.5]], [[0.5], [0.5]])
    """
    A, B = as_log_operand(A, "A"), as_log_operand(B, "B")
    a_dtype, b_dtype = A.dtype, B.dtype                 # the gradients' dtypes
    A, B, batch, squeeze_a, squeeze_b = matmul_operands(A, B)
    dtype = A.dtype
    check_no_posinf(A, "A")
    check_no_posinf(B, "B")
    shape = batch + (A.shape[-2], B.shape[-1])
    C = _as_result(C, "C", shape, dtype, squeeze_a, squeeze_b)
    G = _as_result(G, "G", shape, dtype, squeeze_a, squeeze_b)
    _check_result_finite_above(C)
    parts = _log_weight_parts(C, G)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        if not np.any(_range_shift(C, axis=None)):
            # -C stays below max/8: L = log|G| - C is inside logmatmulexp's guard
            if parts:
                L = _stack_parts(parts)
                signs = [s for s, _ in parts]
                dA = _combine(A, signs, logmatmulexp(L, np.swapaxes(B, -1, -2), method=method))
                dB = _combine(B, signs, logmatmulexp(np.swapaxes(A, -1, -2), L, method=method))
            else:                                        # G is zero wherever C is live
                dA, dB = np.zeros(A.shape, dtype), np.zeros(B.shape, dtype)
        else:
            # -C passes the guard: C's row shift moves to A (or its column shift to B,
            # whichever leaves fewer lines out); lines neither serves go the direct way
            T = (np.swapaxes(B, -1, -2), np.swapaxes(A, -1, -2), np.swapaxes(C, -1, -2),
                 np.swapaxes(G, -1, -2))
            if _unserved(T[0], T[2]).sum() < _unserved(A, C).sum():
                dBT, dAT = _row_shifted_vjp(*T, method=method)
                dA, dB = np.swapaxes(dAT, -1, -2), np.swapaxes(dBT, -1, -2)
            else:
                dA, dB = _row_shifted_vjp(A, B, C, G, method=method)
        dA = _sum_to_shape(dA, A.shape)
        dB = _sum_to_shape(dB, B.shape)
    if squeeze_a:
        dA = dA[..., 0, :]
    if squeeze_b:
        dB = dB[..., 0]
    return dA.astype(a_dtype, copy=False), dB.astype(b_dtype, copy=False)


def logeinsum_vjp(subscripts: str, operands: Sequence[np.ndarray], C: np.ndarray,
                  G: np.ndarray, *, method: Method = "auto") -> tuple[np.ndarray, ...]:
    """Gradients of ``C = logeinsum(subscripts, *operands)`` (log semiring) given ``G``.

    For operand ``p`` with subscripts ``t_p``, the gradient is
    ``sum over the sign parts of ±exp(X_p + R±)``, with
    ``R± = logeinsum("<out>,<other terms>-><labels of t_p>", L±, *others)`` and
    ``L± = log(G±) - C`` as in :func:`logmatmulexp_vjp`; it inherits logeinsum's
    contraction paths and the kernel's error bound per part (relative to
    ``sum |G| P``, as there). Labels of ``t_p`` that no other operand and not the output
    carry (summed within ``X_p``) broadcast; repeated labels (diagonals) get their
    gradient on the diagonal and 0 elsewhere; operands broadcast along size-1
    dimensions get the gradient summed over them. Cost: one gradient einsum per operand
    (and per sign of G), each about as costly as the forward pass, i.e. ``N (N - 1)``
    pairwise products for N operands, against ``2 (N - 1)`` for a tape of the forward's
    pairwise VJPs (plus ``N - 1`` to recompute the forward, or the memory to keep its
    intermediates): the same for two operands, dearer from four. Memory is that of the
    forward contractions; nothing of the forward is kept.

    Parameters
    ----------
    subscripts : str
        As for :func:`logmm.logeinsum`.
    operands : sequence of array_like
        The forward operands (log-values).
    C : array_like
        The forward result (shape of the output subscripts).
    G : array_like
        The upstream gradient, same shape as C (any sign, finite; NaN propagates).
    method : {"auto", "fast", "exact"}
        Passed to every pairwise kernel product.

    Returns
    -------
    tuple of ndarray
        One gradient per operand, with its shape and (float) compute dtype.

    Every C the forward gives is accepted. Where C holds values below -max/8, one
    constant shift moves from C to an operand if all finite C and that operand's finite
    entries lie within 1024 nats of it; otherwise (a C of mixed scales) every gradient is
    summed term by term over all labels (the product of their sizes, in blocks), each
    exponent ``sum X - C`` a compensated two-sum. Measured against mpmath with exactly
    formed exponents (matrix, batch, diagonal/broadcast, reduction; C at -5e307 or
    -1.7e308 beside 0, float32 at -1e38 and -3.3e38): within 64 u ``sum |G| P``; on every
    einsum test case, forced, within the ``4 u (K + M)`` form of the other tests.

    Raises
    ------
    UsageError, InputError
        As :func:`logmm.logeinsum`; ``+inf`` in C, infinite G, wrong C or G shape.

    Examples
    --------
    >>> import numpy as np, logmm
    >>> X = np.log(np.array([[1.0, 3.0]]))
    >>> C = logmm.logeinsum("ij->i", X)
    >>> logmm.logeinsum_vjp("ij->i", [X], C, np.ones_like(C))[0].round(12).tolist()
    [[0.25, 0.75]]
    """
    operands = [np.asarray(op) for op in operands]
    inputs, output = parse_subscripts(subscripts, tuple(operands))
    dtypes = [compute_dtype(op.dtype) for op in operands]     # the gradients' dtypes
    full = log_operands(inputs, operands)
    dtype = full[0].dtype
    sizes = {c: n for term, a in zip(inputs, full, strict=True)
             for c, n in zip(term, a.shape, strict=True)}
    shape = tuple(sizes[c] for c in output)
    C = _as_result(C, "C", shape, dtype)
    G = _as_result(G, "G", shape, dtype)
    _check_result_finite_above(C)
    parts = _log_weight_parts(C, G)
    c = float(_range_shift(C, axis=None))              # -C past the forward's guard: shift
    shifted_parts = parts
    if c:                     # the shift joins one operand, used everywhere as shifted
        with np.errstate(over="ignore", invalid="ignore"):
            spread = float(np.max(np.where(np.isfinite(C), C - c, 0)))
        p0 = next((p for p, a in enumerate(full) if _near(a, c)), None)
        if spread > _SHIFT_REACH or p0 is None:
            # no one constant serves C (mixed scales) or no operand absorbs it accurately:
            # sum term by term over all labels, exponents by compensated two-sums
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                return _direct_einsum_vjp(inputs, output, full, C, G, sizes, operands, dtypes)
        full = [a - c if p == p0 else a for p, a in enumerate(full)]
        shifted_parts = _log_weight_parts(C - c, G)

    grads = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for p, (term, X) in enumerate(zip(inputs, full, strict=True)):
            if not parts:
                grads.append(np.zeros(operands[p].shape, dtypes[p]))
                continue
            others = [(t, a) for q, (t, a) in enumerate(zip(inputs, full, strict=True))
                      if q != p]
            unique = "".join(dict.fromkeys(term))
            available = set(output).union(*(set(t) for t, _ in others))
            keep = "".join(c for c in unique if c in available)
            spec = ",".join([output] + [t for t, _ in others]) + "->" + keep
            R = np.stack([logeinsum(spec, L, *(a for _, a in others), method=method)
                          for _, L in shifted_parts])    # (parts, *keep sizes)
            # to the layout of `unique`: dropped labels (summed in X_p alone) broadcast
            R = R.reshape(R.shape[:1] + tuple(sizes[c] if c in keep else 1 for c in unique))
            if len(unique) != len(term):                # a diagonal: 0 (log: -inf) elsewhere
                R = _embed_diagonal(R, term, unique, sizes)
            grad = _combine(X, [s for s, _ in parts], R)
            axes = tuple(i for i, (n0, n1) in enumerate(zip(operands[p].shape, grad.shape,
                                                              strict=True)) if n0 != n1)
            if axes:                                    # broadcast along size-1 dimensions
                grad = grad.sum(axis=axes, keepdims=True)
            grads.append(np.asarray(grad, dtype=dtypes[p], order="C"))
    return tuple(grads)


def _as_result(X: np.ndarray, name: str, shape: tuple[int, ...], dtype: np.dtype,
               squeeze_a: bool = False, squeeze_b: bool = False) -> np.ndarray:
    """``X`` (C or G) as ``dtype`` with the product's ``shape``, re-adding the dimensions
    a 1-D operand removed."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {X.dtype}; it must be real")
    expected = tuple(s for i, s in enumerate(shape)
                     if not (squeeze_a and i == len(shape) - 2)
                     and not (squeeze_b and i == len(shape) - 1))
    if X.shape != expected:
        raise InputError(f"{name} has shape {shape_str(X.shape)}; the product is "
                         f"{shape_str(expected)}")
    X = X.astype(dtype, copy=False)
    if squeeze_b:
        X = X[..., np.newaxis]
    if squeeze_a:
        X = X[..., np.newaxis, :]
    return X


def _check_result_finite_above(C: np.ndarray) -> None:
    """``+inf`` in C is an InputError (as in an operand); finite C above a quarter of the
    range is not: the forward gives C up to half of it (each operand up to a quarter)."""
    if C.size and np.isposinf(np.fmax.reduce(C, axis=None)):
        raise InputError("C contains +inf, which is not a log-probability "
                         "(log(0) is -inf; +inf would be an infinite probability)")


def _log_weight_parts(C: np.ndarray, G: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """``[(sign, L)]``: ``L = log(sign G) - C`` where ``sign G > 0``, else -inf.

    Entries where ``C = -inf`` are -inf in every part (they contribute nothing); NaN in
    C or G is NaN in the first part, so it reaches every gradient it enters. A part with
    no finite entry (G has no entry of that sign) is left out; if G has no NaN either,
    the list may be empty.
    """
    if np.isinf(G).any():
        raise InputError("G (the upstream gradient) holds an infinite value")
    with np.errstate(divide="ignore", invalid="ignore"):
        logabs = np.log(np.abs(G))
        logabs -= C                                     # -inf C gives +inf or NaN: fixed below
        dead = C == -np.inf                             # G there is ignored, even NaN
        nan = np.isnan(C) | (np.isnan(G) & ~dead)
    parts = []
    for sign, where in ((1.0, G > 0), (-1.0, G < 0)):
        if not where.any() and not (sign > 0 and nan.any()):
            continue
        L = np.where(where, logabs, -np.inf)
        if sign > 0:
            L[nan] = np.nan
        L[dead] = -np.inf
        parts.append((sign, L))
    return parts


def _range_shift(C: np.ndarray, axis: int | None) -> np.ndarray:
    """Per slice along ``axis`` (kept as size 1; one scalar for ``axis=None``): the
    smallest finite C where it lies below -max/8, else 0.

    ``log|G| - C`` reaches ``-C``, up to the dtype's max for a C the forward accepted
    (C = -5e307 gives 5e307, above logmatmulexp's quarter-range guard on its operands).
    The backward uses ``log|G| - (C - c)`` and ``X - c`` instead: ``C - c`` is small
    where C is near c (no log|G| is lost to rounding against 5e307), ``X - c`` cannot
    overflow (X <= max/4 and C >= X + B >= -0.75 max in a row of C that reaches +max/2).
    """
    limit = float(np.finfo(C.dtype).max) / 8
    finite = np.where(np.isfinite(C), C, np.inf)
    low = np.min(finite, axis=axis, keepdims=axis is not None, initial=np.inf)
    return np.where(low < -limit, low, 0).astype(C.dtype)


#: how far (in nats) C's row shift may leave A and C from it and still serve the row: the
#: shifted GEMM's error grows with the shifted values (u M), and a shift that does not cancel
#: A's or C's magnitude (e.g. A near 0 beside C near -5e307) would round A away
_SHIFT_REACH = 1024.0


def _unserved(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Rows (batch + (n,)) that C's row shift c (:func:`_range_shift`) cannot serve
    accurately: c != 0 and a finite ``A - c`` or ``C - c`` farther than
    :data:`_SHIFT_REACH` from 0."""
    c = _range_shift(C, axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        far_a = np.where(np.isfinite(A), np.abs(A - c), 0) > _SHIFT_REACH
        far_c = np.where(np.isfinite(C), C - c, 0) > _SHIFT_REACH
        out = (c != 0)[..., 0] & (far_a.any(axis=-1) | far_c.any(axis=-1))
    return np.broadcast_to(out, C.shape[:-1])


def _near(X: np.ndarray, c: float) -> bool:
    """Every finite entry of X within :data:`_SHIFT_REACH` of ``c`` (and one at least)."""
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(X)
        return bool(finite.any() and np.all(np.where(finite, np.abs(X - c), 0)
                                            <= _SHIFT_REACH))


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)``: ``hi = fl(a + b)`` and ``hi + lo = a + b`` exactly (Knuth), for
    finite a, b and a finite hi (NaN or inf otherwise: the callers mask those)."""
    hi = a + b
    bb = hi - a
    return hi, (a - (hi - bb)) + (b - bb)


def _direct_einsum_vjp(inputs: list[str], output: str, full: list[np.ndarray],
                       C: np.ndarray, G: np.ndarray, sizes: dict[str, int],
                       operands: list[np.ndarray], dtypes: list[np.dtype]
                       ) -> tuple[np.ndarray, ...]:
    """Every operand's gradient summed term by term over all labels (the product of all
    label sizes, in blocks of about :data:`_DIRECT_CHUNK` terms along the first label):
    ``grad_p = sum G exp(sum_q X_q - C)`` with ``sum_q X_q`` as a compensated two-sum
    ``hi + lo`` and the exponent ``(hi - C) + lo`` (exact where the term matters but
    for the error of ``lo``'s own sum, see :func:`_direct_rows`)."""
    labels = "".join(dict.fromkeys("".join(inputs) + output))
    letter = {c: chr(ord("a") + i) if i < 26 else chr(ord("A") + i - 26)
              for i, c in enumerate(labels)}

    def spread(term: str, a: np.ndarray) -> np.ndarray:
        """``a`` over all labels (its diagonal where a label repeats; size 1 elsewhere)."""
        unique = "".join(dict.fromkeys(term))
        a = np.einsum("".join(letter[c] for c in term) + "->"
                      + "".join(letter[c] for c in sorted(unique, key=labels.index)), a)
        return a.reshape([sizes[c] if c in unique else 1 for c in labels])

    X = [spread(t, a) for t, a in zip(inputs, full, strict=True)]
    Cx, Gx = spread(output, C), spread(output, G)
    uniques = ["".join(dict.fromkeys(t)) for t in inputs]
    sums = [np.zeros([sizes[c] for c in u], C.dtype) for u in uniques]
    first = labels[0] if labels else ""
    total = int(np.prod([sizes[c] for c in labels]))
    step = max(1, _DIRECT_CHUNK // max(total // max(sizes.get(first, 1), 1), 1))
    for start in range(0, sizes.get(first, 1), step):
        part = slice(start, start + step)
        xs, cs, gs = ([a[part] if a.ndim and a.shape[0] > 1 else a for a in arrays]
                      for arrays in (X, [Cx], [Gx]))
        cb, gb = cs[0], gs[0]
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            hi, lo = xs[0], np.zeros((), C.dtype)
            for x in xs[1:]:
                hi, e = _two_sum(hi, x)
                lo = lo + e
            exponent = (hi - cb) + lo
            neg = np.zeros((), bool)
            for x in xs:
                neg = neg | np.isneginf(x)
            wide = np.isneginf(hi) & ~neg               # the sum below -max, C not
            if wide.any():                              # (hi - C) + lo lost it: C first
                seq = xs[0] - cb
                for x in xs[1:]:
                    seq = seq + x
                exponent = np.where(wide, seq, exponent)
            exponent = np.where(neg, -np.inf, exponent)
            w = np.where(cb == -np.inf, 0, gb * np.exp(exponent))
        shape = [sizes[label] for label in labels]
        if shape:
            shape[0] = len(range(shape[0])[part])
        w = np.broadcast_to(w, shape)
        for p, u in enumerate(uniques):
            block = w.sum(axis=tuple(i for i, c in enumerate(labels) if c not in u))
            block = block.transpose([sorted(u, key=labels.index).index(c) for c in u])
            if first in u:
                sums[p][tuple(part if c == first else slice(None) for c in u)] = block
            else:
                sums[p] += block
    grads = []
    for p, (term, u) in enumerate(zip(inputs, uniques, strict=True)):
        grad = sums[p]
        if len(u) != len(term):                         # a diagonal: 0 elsewhere
            grad = _embed_diagonal(grad[None], term, u, sizes, fill=0.0)[0]
        axes = tuple(i for i, (n0, n1) in enumerate(zip(operands[p].shape, grad.shape,
                                                          strict=True)) if n0 != n1)
        if axes:
            grad = grad.sum(axis=axes, keepdims=True)
        grads.append(np.asarray(grad, dtype=dtypes[p], order="C"))
    return tuple(grads)


def _row_shifted_vjp(A: np.ndarray, B: np.ndarray, C: np.ndarray, G: np.ndarray, *,
                     method: Method) -> tuple[np.ndarray, np.ndarray]:
    """``(dA, dB)`` with the batch dimensions unsummed: C's row shift ``c`` moved to A
    (``A - c + B - (C - c)`` is the same exponent, and ``L = log|G| - (C - c)`` stays
    inside logmatmulexp's guard); rows that shift cannot serve (:func:`_unserved`) go
    through :func:`_direct_rows` instead, at O(k m) per row."""
    c = _range_shift(C, axis=-1)
    bad = _unserved(A, C)
    batch = C.shape[:-2]
    n, k, m = A.shape[-2], A.shape[-1], B.shape[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        As = np.where(bad[..., None], -np.inf, A - c)          # batch + (n, k)
        Cs = np.where(bad[..., None], -np.inf, C - c)          # bad rows: dead here
    parts = _log_weight_parts(Cs, G)
    if parts:
        L = _stack_parts(parts)
        signs = [s for s, _ in parts]
        dA = _combine(As, signs, logmatmulexp(L, np.swapaxes(B, -1, -2), method=method))
        dB = _combine(B, signs, logmatmulexp(np.swapaxes(As, -1, -2), L, method=method))
        dA = np.array(np.broadcast_to(dA, batch + (n, k)))
        dB = np.array(np.broadcast_to(dB, batch + (k, m)))
    else:
        dA, dB = np.zeros(batch + (n, k), C.dtype), np.zeros(batch + (k, m), C.dtype)
    if bad.any():
        _direct_rows(np.broadcast_to(A, batch + (n, k)), np.broadcast_to(B, batch + (k, m)),
                     C, G, bad, dA, dB)
    return dA, dB


#: terms (k x m per row) formed at once by the direct path
_DIRECT_CHUNK = 1 << 21


def _direct_rows(A: np.ndarray, B: np.ndarray, C: np.ndarray, G: np.ndarray,
                 bad: np.ndarray, dA: np.ndarray, dB: np.ndarray) -> None:
    """For the rows marked in ``bad`` (batch + (n,)): set ``dA`` there to
    ``sum_j G_ij exp(A_ik + B_kj - C_ij)`` and add their terms to ``dB``, term by term.

    The exponent is ``(hi - C) + lo`` with ``hi + lo = A + B`` exactly (Knuth's two-sum):
    wherever the term matters (exponent in [-750, 0]) ``hi`` and ``C`` agree to a factor
    of 2 beyond |C| = 1500, so ``hi - C`` is exact and the exponent is correctly
    rounded but for one addition; where ``A + B`` overflows to -inf, ``(A - C) + B``.
    Sums are numpy's pairwise sums (error ``u log2(m)`` relative to ``sum |G| P``).
    """
    index = np.argwhere(bad)                                  # (rows, batch ndim + 1)
    k, m = B.shape[-2], B.shape[-1]
    step = max(1, _DIRECT_CHUNK // max(k * m, 1))
    for start in range(0, len(index), step):
        idx = tuple(index[start:start + step].T)
        bidx = idx[:-1]
        a = A[idx][:, :, None]                                 # (r, k, 1)
        b = B[bidx] if bidx else np.broadcast_to(B, (len(idx[0]), k, m))   # (r, k, m)
        c = C[idx][:, None, :]                                 # (r, 1, m)
        g = G[idx][:, None, :]
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            hi = a + b
            bb = hi - a
            lo = (a - (hi - bb)) + (b - bb)
            e = (hi - c) + lo
            wide = np.isneginf(hi) & np.isfinite(a) & np.isfinite(b)
            if wide.any():
                e = np.where(wide, (a - c) + b, e)
            e[np.isneginf(a) | np.isneginf(b) | np.isneginf(hi) & ~wide] = -np.inf
            w = g * np.exp(e)
            w = np.where(c == -np.inf, 0, w)                   # dead entries: nothing
        dA[idx] = w.sum(axis=-1)
        if bidx:
            np.add.at(dB, bidx, w)
        else:
            dB += w.sum(axis=0)


def _stack_parts(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    return np.stack([L for _, L in parts]) if len(parts) > 1 else parts[0][1][None]


def _combine(X: np.ndarray, signs: list[float], R: np.ndarray) -> np.ndarray:
    """``sum_p signs[p] exp(X + R[p])``: -inf in X or R gives exactly 0, NaN stays."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = np.asarray(np.add(X, R[0]))               # 0-d operands give a scalar
        np.exp(out, out=out)
        if signs[0] < 0:
            np.negative(out, out=out)
        for sign, r in zip(signs[1:], R[1:], strict=True):
            term = np.exp(np.add(X, r))
            if sign > 0:
                out += term
            else:
                out -= term
    return out


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the leading batch dimensions (and size-1 ones) that ``shape``
    was broadcast along."""
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (g, s) in enumerate(zip(grad.shape, shape, strict=True))
                 if s == 1 and g != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _embed_diagonal(R: np.ndarray, term: str, unique: str, sizes: dict[str, int],
                    fill: float = -np.inf) -> np.ndarray:
    """``R`` (parts, *unique layout) placed on the diagonal of the ``term`` layout,
    ``fill`` (-inf: log 0) off it."""
    letters = {c: chr(ord("a") + i) for i, c in enumerate(unique)}
    full = np.full(R.shape[:1] + tuple(sizes[c] for c in term), fill, dtype=R.dtype)
    diagonal = np.einsum("Z" + "".join(letters[c] for c in term) + "->Z"
                         + "".join(letters[c] for c in unique), full)   # a writable view
    diagonal[...] = R
    return full
