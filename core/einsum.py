"""Einsum in the log, max (tropical) and real semirings, at GEMM speed in the log semiring.

``logeinsum("bimd,bind->bimn", A, B)`` computes ``log Σ exp(A[b,i,m,d] + B[b,i,n,d])``
over the summed labels. The contraction order comes from opt_einsum
(``contract_path``); every pairwise contraction is rearranged (the tensordot trick) into
a batched product ``(batch, left, summed) x (batch, summed, right)`` and handed to the
stable kernel :func:`logmm.logmatmulexp`, so it runs at GEMM speed with the kernel's
error bound. Labels summed over a single operand are reduced first with a stable
logsumexp (max in the max semiring); repeated labels within an operand take its
diagonal. ``semiring="max"`` is the tropical semiring (max of sums, computed by blocked
broadcasting); ``"real"`` delegates to opt_einsum.

Conventions as for logmatmulexp: ``-inf`` is log 0 and valid everywhere, NaN reaches the
entries it enters, ``+inf`` in a log- or max-semiring operand is an error, float32 stays
float32. Size-1 dimensions broadcast against their label's size (as numpy does for
``...``).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import numpy as np

from .accumulate import logsumexp
from .errors import InputError, UsageError
from .lazy import LazyModule
from .logmatmul import check_no_posinf, compute_dtype, logmatmulexp
from .typing import Method, Semiring

opt_einsum = LazyModule("opt_einsum")   # imported on first use: the CLI starts faster

__all__ = ["SEMIRINGS", "contraction_info", "log_operands", "log_result_dtype", "logeinsum",
           "parse_subscripts"]

SEMIRINGS = ("log", "max", "real")
_MAXPLUS_TILE_ELEMENTS = 1 << 20


def logeinsum(subscripts: str, *operands: np.ndarray, semiring: Semiring = "log",
              method: Method = "auto") -> np.ndarray:
    """Einsum with sums replaced by log-sum-exp (``"log"``) or max (``"max"``).

    Parameters
    ----------
    subscripts : str
        numpy einsum syntax: ``"ij,jk->ik"``, implicit output (``"ij,jk"``), ``...``.
    *operands : array_like
        Log-values (float32 or float64; integers become float64) for ``log``/``max``.
    semiring : {"log", "max", "real"}
    method : {"auto", "fast", "exact"}
        Passed to :func:`logmm.logmatmulexp` for every pairwise log contraction.

    Returns
    -------
    ndarray
        The contraction, shape from the output subscripts; a 0-d array for a full
        reduction.

    Raises
    ------
    UsageError
        Malformed subscripts, wrong number of operands, unknown semiring.
    InputError
        A label's sizes disagree (other than 1), ``+inf`` in a log/max operand, a
        non-real dtype.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[-500.0, 900.0]]); B = np.array([[900.0], [-500.0]])
    >>> float(logeinsum("ij,jk->ik", A, B)[0, 0])
    400.6931471805599
    """
    if semiring not in SEMIRINGS:
        raise UsageError(f"unknown semiring {semiring!r}; choose one of {', '.join(SEMIRINGS)}")
    operands = tuple(np.asarray(op) for op in operands)
    inputs, output = parse_subscripts(subscripts, operands)
    if semiring == "real":
        try:
            with np.errstate(invalid="ignore", over="ignore", under="ignore", divide="ignore"):
                return np.asarray(opt_einsum.contract(subscripts, *operands))  # inf*0: NaN
        except ValueError as exc:
            raise InputError(f"einsum {subscripts!r}: {exc}") from None
    arrays = log_operands(inputs, operands)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        terms = list(inputs)
        # diagonals and labels only one operand has (and the output lacks) first
        for i, term in enumerate(terms):
            others = set(output).union(*(set(t) for j, t in enumerate(terms) if j != i))
            terms[i], arrays[i] = _prepare(term, arrays[i], others, semiring)
        if len(terms) > 1:
            # two operands have one order (opt_einsum's path is [(0, 1)]): skip its search
            path = [(0, 1)] if len(terms) == 2 else opt_einsum.contract_path(
                ",".join(terms) + "->" + output, *[a.shape for a in arrays], shapes=True)[0]
            for step in path:
                picked = sorted(step, reverse=True)
                pairs = [(terms.pop(i), arrays.pop(i)) for i in picked][::-1]  # input order
                needed = set(output).union(*(set(t) for t in terms))
                term, array = pairs[0]
                for other_term, other in pairs[1:]:
                    term, array = _contract_pair(term, array, other_term, other, needed,
                                                 semiring, method)
                terms.append(term)
                arrays.append(array)
        term, array = _prepare(terms[0], arrays[0], set(output), semiring)
        result = np.transpose(array, [term.index(c) for c in output])
        if len(operands) > 1 and result.flags.c_contiguous:
            return result          # a fresh kernel output already in order: no 134 MB copy
        # np.array, not ascontiguousarray: a full reduction must stay 0-d; a single operand
        # may still be a view of the caller's array, so it is copied
        return np.array(result, order="C")


def contraction_info(subscripts: str, *operands_or_shapes: np.ndarray | Sequence[int]) -> str:
    """opt_einsum's description of the chosen contraction order and its cost."""
    shapes = [tuple(np.shape(x)) if hasattr(x, "shape") else tuple(x)
              for x in operands_or_shapes]
    try:
        _, info = opt_einsum.contract_path(subscripts, *shapes, shapes=True)
    except ValueError as exc:
        raise UsageError(f"einsum {subscripts!r}: {exc}") from None
    return str(info)


# --------------------------------------------------------------------------- parsing

def parse_subscripts(subscripts: str, operands: tuple[np.ndarray, ...]
                     ) -> tuple[list[str], str]:
    """``(terms, output)``: one label string per operand and the output's labels.

    ``operands`` need only ``ndim`` (and what opt_einsum's parser reads: shapes), so
    zero-stride stand-ins of the real arrays do. Raises :class:`UsageError` for malformed
    subscripts or a wrong operand count, :class:`InputError` when an operand's dimensions
    do not match its term.
    """
    if not isinstance(subscripts, str) or not subscripts.strip():
        raise UsageError("einsum needs subscripts such as 'ij,jk->ik'")
    if not operands:
        raise UsageError(f"einsum {subscripts!r} needs at least one operand")
    named = subscripts.split("->")[0].count(",") + 1
    if named != len(operands):
        raise UsageError(f"einsum {subscripts!r} names {named} operands but "
                         f"{len(operands)} were given")
    try:
        inputs, output, _ = opt_einsum.parser.parse_einsum_input((subscripts, *operands))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(f"bad einsum subscripts {subscripts!r}: {exc}") from None
    terms = inputs.split(",")
    for i, (term, op) in enumerate(zip(terms, operands, strict=True)):
        if len(term) != op.ndim:
            raise InputError(f"operand {i + 1} has {op.ndim} dimensions but its subscripts "
                             f"{term!r} name {len(term)}")
    unknown = set(output) - set("".join(terms))
    if unknown:
        raise UsageError(f"einsum {subscripts!r}: output label(s) {''.join(sorted(unknown))} "
                         "appear in no operand")
    if len(set(output)) != len(output):
        raise UsageError(f"einsum {subscripts!r}: an output label is repeated")
    return terms, output


def log_result_dtype(dtypes: Sequence[np.dtype]) -> np.dtype:
    """The dtype log/max-semiring operands of ``dtypes`` are computed in, and the result's:
    the common type of their :func:`logmm.logmatmul.compute_dtype` (float32 or float64)."""
    return np.result_type(*(compute_dtype(dt) for dt in dtypes))


def log_operands(terms: list[str], operands: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Log/max-semiring operands checked (no +inf), in their common float dtype, with
    size-1 dimensions broadcast to their label's size."""
    dtype = log_result_dtype([op.dtype for op in operands])
    arrays = []
    for position, op in enumerate(operands):
        array = op.astype(dtype, copy=False)      # integers first become floats
        check_no_posinf(array, f"operand {position + 1}")
        arrays.append(array)
    return _broadcast_labels(terms, arrays)


def _broadcast_labels(terms: list[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Check that each label has one size; size-1 dimensions broadcast to it."""
    sizes: dict[str, int] = {}
    where: dict[str, int] = {}               # the operand (1-based) that set each size
    for position, (term, array) in enumerate(zip(terms, arrays, strict=True), 1):
        for label, size in zip(term, array.shape, strict=True):
            known = sizes.get(label, 1)
            if size != 1 and known != 1 and size != known:
                raise InputError(f"label {label!r} has size {known} in operand "
                                 f"{where[label]} and {size} in operand {position}")
            if size != 1 or label not in sizes:
                where[label] = position
            sizes[label] = max(known, size) if size != known else size
    return [np.broadcast_to(a, [sizes[c] if s == 1 else s for c, s in zip(t, a.shape,
                                                                       strict=True)])
            for t, a in zip(terms, arrays, strict=True)]


# --------------------------------------------------------------------------- contraction

def _reduce(array: np.ndarray, axes: tuple[int, ...], semiring: Semiring) -> np.ndarray:
    if not axes:
        return array
    if semiring == "log":
        return logsumexp(array, axis=axes)
    return np.max(array, axis=axes, initial=-np.inf)


def _prepare(term: str, array: np.ndarray, keep: set[str], semiring: Semiring
             ) -> tuple[str, np.ndarray]:
    """Take diagonals of repeated labels, then reduce labels not in ``keep``."""
    if len(set(term)) != len(term):
        unique = "".join(dict.fromkeys(term))
        array = np.einsum(f"{_ascii(term)}->{_ascii(unique, term)}", array)   # the diagonal
        term = unique
    drop = tuple(i for i, c in enumerate(term) if c not in keep)
    array = _reduce(array, drop, semiring)
    return "".join(c for c in term if c in keep), array


def _ascii(labels: str, reference: str | None = None) -> str:
    """Map labels to letters np.einsum accepts (opt_einsum may use other symbols)."""
    order = list(dict.fromkeys(reference or labels))
    letters = string.ascii_letters
    table = {c: letters[i] for i, c in enumerate(order)}
    return "".join(table[c] for c in labels)


def _contract_pair(ta: str, a: np.ndarray, tb: str, b: np.ndarray, needed: set[str],
                   semiring: Semiring, method: Method) -> tuple[str, np.ndarray]:
    """Contract two operands, keeping the labels in ``needed`` (and batch labels)."""
    shared = set(ta) & set(tb)
    ta, a = _prepare(ta, a, needed | set(tb), semiring)
    tb, b = _prepare(tb, b, needed | set(ta), semiring)
    batch = [c for c in ta if c in shared and c in needed]
    summed = [c for c in ta if c in shared and c not in needed]
    left = [c for c in ta if c not in shared]
    right = [c for c in tb if c not in shared]
    size = dict(zip(ta, a.shape, strict=True)) | dict(zip(tb, b.shape, strict=True))

    def prod(labels: list[str]) -> int:
        return math.prod(size[c] for c in labels)

    A3 = np.transpose(a, [ta.index(c) for c in batch + left + summed]).reshape(
        prod(batch), prod(left), prod(summed))
    B3 = np.transpose(b, [tb.index(c) for c in batch + summed + right]).reshape(
        prod(batch), prod(summed), prod(right))
    if semiring == "log":
        C3 = logmatmulexp(A3, B3, method=method)
    else:
        C3 = _maxplus(A3, B3)
    term = "".join(batch + left + right)
    return term, C3.reshape([size[c] for c in term])


def _maxplus(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``C[b, i, j] = max_k A[b, i, k] + B[b, k, j]`` by tiles of broadcast sums."""
    nb, n, k = A.shape
    m = B.shape[2]
    C = np.empty((nb, n, m), dtype=np.result_type(A, B))
    rows = max(1, _MAXPLUS_TILE_ELEMENTS // max(1, k * m))
    for batch in range(nb):
        for start in range(0, n, rows):
            tile = A[batch, start:start + rows, :, None] + B[batch, None, :, :]
            C[batch, start:start + rows] = np.max(tile, axis=1, initial=-np.inf)
    return C
