"""Rows of X times a Kronecker-structured operator, without forming the Kronecker product.

``kron_matvec(factors, X)`` returns ``X @ (F1 ⊗ F2 ⊗ … ⊗ Fd)ᵀ`` for X of shape
(r, n1·n2·…·nd) and factors Fi of shape (mi, ni): each row is viewed as a tensor of shape
(n1, …, nd) and multiplied by one factor per mode (successive mode products), which costs
``r · Σ_i (mi · Π_{j<i} mj · Π_{j≥i} nj)`` instead of ``r · Π mi · Π ni``. Identity
factors (:class:`Identity`) are skipped, not multiplied. ``block_project(X, W, K)`` is the
case ``(I_K ⊗ W)``: one GEMM of X viewed as (r·K, d) by Wᵀ.

Semirings: ``"real"`` (ordinary sums of products) and ``"log"`` (factors and data are
log-values; every mode product is the stable :func:`logmm.logmatmulexp`, since Kronecker
structure holds in log space with entries adding). One mechanism serves both.

Sparse X (scipy.sparse, CSR preferred): the first mode product is done on the sparse data
(index arithmetic turns the mode into the columns of a sparse matrix, which multiplies the
dense factor), so a sparse block is not densified in the real semiring unless more than
10% of it is stored, where a dense GEMM is faster. In the log semiring, absent entries
mean log 0 = ``-inf`` (zero probability), and each block is densified with ``-inf``
before its first mode product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .errors import InputError
from .lazy import LazyModule
from .logmatmul import check_no_posinf, compute_dtype, logmatmulexp
from .typing import KronSemiring

sp = LazyModule("scipy.sparse")   # imported on first use: the CLI starts faster
if TYPE_CHECKING:                 # for annotations only (scipy ships no types: Any to mypy)
    from scipy.sparse import csr_matrix, spmatrix

__all__ = ["DENSIFY_ABOVE", "SEMIRINGS", "Identity", "block_project", "kron_matvec"]

SEMIRINGS = ("real", "log")
#: sparse rows denser than this are densified (per call, so per streamed block): measured
#: at 1666 x 23520 float32, K = 30, the sparse product wins below about 10% density
#: (0.014 s vs 0.051 s at 1%) and loses above (0.14 s vs 0.10 s at 20%)
DENSIFY_ABOVE = 0.1


@dataclass(frozen=True)
class Identity:
    """An identity factor of size ``n`` in a Kronecker product (skipped, never formed)."""

    n: int

    def __post_init__(self) -> None:
        if int(self.n) < 1:
            raise InputError(f"an identity factor needs a size of at least 1, got {self.n}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``, as for a dense factor."""
        return (self.n, self.n)


Factor = np.ndarray | Identity


def block_project(X: np.ndarray | spmatrix, W: np.ndarray, blocks: int, *,
                  semiring: KronSemiring = "real") -> np.ndarray:
    """Rows of ``X`` times ``(I_blocks ⊗ W)ᵀ``: each row, viewed as (blocks, d), times Wᵀ.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix, shape (r, blocks·d)
    W : ndarray, shape (p, d)
    blocks : int
        Number of diagonal blocks (K); must divide X's width.
    semiring : {"real", "log"}
        ``"log"``: X and W are log-values and sums are log-sum-exps.

    Returns
    -------
    ndarray, shape (r, blocks·p), dense; dtype the common dtype of X and W (float32 stays
    float32).

    Raises
    ------
    InputError
        ``blocks`` does not divide X's width, W's width is not ``width/blocks``, or (log
        semiring) ``+inf`` in an input.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(12.0).reshape(2, 6); W = np.eye(3)[:2]
    >>> block_project(X, W, 2)
    array([[ 0.,  1.,  3.,  4.],
           [ 6.,  7.,  9., 10.]])
    """
    blocks = int(blocks)
    width = X.shape[1]
    if blocks < 1 or width % blocks:
        raise InputError(f"--blocks {blocks} does not divide X's width {width}")
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[1] != width // blocks:
        raise InputError(f"W has shape {tuple(W.shape)}; with {blocks} blocks of X's width "
                         f"{width} it must have {width // blocks} columns")
    return kron_matvec([Identity(blocks), W], X, semiring=semiring)


def kron_matvec(factors: Sequence[Factor], X: np.ndarray | spmatrix, *,
                semiring: KronSemiring = "real") -> np.ndarray:
    """Rows of ``X`` times ``(F1 ⊗ F2 ⊗ …)ᵀ``, by successive mode products.

    Parameters
    ----------
    factors : sequence of ndarray (mi, ni) or :class:`Identity`
        At least one; non-square factors are fine. Identity factors cost nothing.
    X : ndarray or scipy.sparse matrix, shape (r, Π ni)
    semiring : {"real", "log"}

    Returns
    -------
    ndarray, shape (r, Π mi), dense.

    Raises
    ------
    InputError
        The factors' widths do not multiply to X's width, a factor is not 2-D, an unknown
        semiring, or (log semiring) ``+inf`` in an input.

    Examples
    --------
    >>> import numpy as np
    >>> F1 = np.array([[1.0, 2.0]]); F2 = np.eye(2)
    >>> X = np.arange(4.0)[None]
    >>> kron_matvec([F1, F2], X), X @ np.kron(F1, F2).T
    (array([[4., 7.]]), array([[4., 7.]]))
    """
    if semiring not in SEMIRINGS:
        raise InputError(f"unknown semiring {semiring!r}; choose one of {', '.join(SEMIRINGS)}")
    factors = [f if isinstance(f, Identity) else np.asarray(f) for f in factors]
    if not factors:
        raise InputError("kron_matvec needs at least one factor")
    for i, f in enumerate(factors):
        if not isinstance(f, Identity) and f.ndim != 2:
            raise InputError(f"factor {i + 1} has {f.ndim} dimensions; factors are matrices")
    widths = [f.shape[1] for f in factors]
    if X.ndim != 2 or X.shape[1] != math.prod(widths):
        raise InputError(
            f"X has shape {tuple(X.shape)} but the factors' widths "
            f"{' x '.join(str(w) for w in widths)} multiply to {math.prod(widths)}"
        )
    with np.errstate(invalid="ignore", over="ignore", under="ignore", divide="ignore"):
        return _kron_matvec(factors, widths, X, semiring)   # inf * 0 is NaN, quietly


def _kron_matvec(factors: list[Factor], widths: list[int], X: Any,
                 semiring: str) -> np.ndarray:
    # X: ndarray or scipy.sparse matrix (Any: ``sp.issparse`` narrows nothing for mypy)
    dtype = _result_dtype(X, factors, semiring)
    r = X.shape[0]
    heights = [f.shape[0] for f in factors]
    live = [i for i, f in enumerate(factors) if not isinstance(f, Identity)]
    if sp.issparse(X) and semiring == "log":
        X = _log_canonical(X, dtype)               # duplicates log-added, +inf refused
    if not live:                                   # all identities: a copy of X
        if sp.issparse(X) and semiring == "log":   # absent entries are log 0 = -inf
            out = np.full(X.shape, -np.inf, dtype=dtype)
            row_of = np.repeat(np.arange(r, dtype=np.int64), np.diff(X.indptr))
            out[row_of, X.indices] = X.data
            return out
        if semiring == "log":
            check_no_posinf(np.asarray(X), "X")
        out = X.toarray() if sp.issparse(X) else np.array(X)
        return out.astype(dtype, copy=False)

    if sp.issparse(X) and semiring == "real" and X.nnz > DENSIFY_ABOVE * r * X.shape[1]:
        X = X.toarray()     # this dense, BLAS beats the sparse product (crossover ~10%)
    if sp.issparse(X):
        first = live[-1]                           # the sparse mode product goes first
        T = _sparse_mode_product(sp.csr_matrix(X), cast(np.ndarray, factors[first]), widths,
                                 first, semiring, dtype)       # live: no Identity
        shape = [r, *widths[:first], heights[first], *widths[first + 1:]]
        live = live[:-1]
        T = T.reshape(shape)
    else:
        T = np.asarray(X, dtype=dtype).reshape([r, *widths])
    for i in live:
        T = _mode_product(T, np.asarray(factors[i], dtype=dtype), i + 1, semiring)
    return np.ascontiguousarray(T).reshape(r, math.prod(heights))


def _log_canonical(X: spmatrix, dtype: np.dtype) -> csr_matrix:
    """Canonical CSR of log-values: duplicate (row, column) entries log-added, +inf refused.

    A non-canonical matrix (COO, or CSR with repeated column indices in a row) stores one
    position more than once; as in scipy's real-semiring sum, the entries there combine,
    here by ``logaddexp`` so the result does not depend on the storage format.
    """
    C = sp.coo_matrix(X)
    data = C.data.astype(dtype, copy=False)
    check_no_posinf(data, "X")
    row = C.row.astype(np.int64)
    col = C.col.astype(np.int64)
    key = row * C.shape[1] + col
    order = np.argsort(key, kind="stable")
    key, data = key[order], data[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key[:0]
    if first.size != key.size:                     # duplicates: log-add each run
        data = np.logaddexp.reduceat(data, first)
        key = key[first]
    rows, cols = np.divmod(key, C.shape[1])
    indptr = np.zeros(C.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=C.shape[0]), out=indptr[1:])
    out = sp.csr_matrix((data, cols, indptr), shape=C.shape)
    out.has_sorted_indices = True
    return out


def _result_dtype(X: np.ndarray | spmatrix, factors: list[Factor],
                  semiring: str) -> np.dtype:
    dtypes = [compute_dtype(X.dtype)] + [compute_dtype(f.dtype) for f in factors
                                         if not isinstance(f, Identity)]
    return np.result_type(*dtypes)


def _mode_product(T: np.ndarray, F: np.ndarray, axis: int, semiring: str) -> np.ndarray:
    """Multiply axis ``axis`` of T (size n) by F (m, n): the result has size m there."""
    shape = T.shape
    pre, n, post = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    m = F.shape[0]
    if semiring == "real" and post > 1:
        out = np.matmul(F, np.ascontiguousarray(T).reshape(pre, n, post))  # batched GEMM
    else:
        T3 = np.ascontiguousarray(T).reshape(pre, n, post)
        X2 = T3.reshape(pre, n) if post == 1 else T3.transpose(0, 2, 1).reshape(pre * post, n)
        Y2 = X2 @ F.T if semiring == "real" else logmatmulexp(X2, F.T)
        out = Y2.reshape(pre, post, m).transpose(0, 2, 1)       # (pre, m, post)
    return out.reshape(*shape[:axis], m, *shape[axis + 1:])


def _sparse_mode_product(X: csr_matrix, F: np.ndarray, widths: list[int], axis: int,
                         semiring: str, dtype: np.dtype) -> np.ndarray:
    """Mode product along factor ``axis`` (0-based among the factors) of sparse rows.

    Each stored entry of X sits at column ``(pre·n + b)·post + s`` of its row; as row
    ``(row·pre + pre_index)·post + s`` and column ``b`` of a sparse (r·pre·post, n)
    matrix it multiplies Fᵀ directly. Returns dense (r, pre, m, post).
    """
    r = X.shape[0]
    pre, n, post = math.prod(widths[:axis]), widths[axis], math.prod(widths[axis + 1:])
    m = F.shape[0]
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    row_of = np.repeat(np.arange(r, dtype=np.int64), np.diff(X.indptr))
    rest, s = np.divmod(X.indices.astype(np.int64), post)
    p, b = np.divmod(rest, n)
    rows = (row_of * pre + p) * post + s
    data = X.data.astype(dtype, copy=False)
    if semiring == "real":
        if post == 1:     # rows stay in data order (columns are sorted): CSR directly
            indptr = np.zeros(r * pre + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=r * pre), out=indptr[1:])
            Z = sp.csr_matrix((data, b, indptr), shape=(r * pre, n))
        else:
            Z = sp.csr_matrix((data, (rows, b)), shape=(r * pre * post, n))
        Y = np.asarray(Z @ np.ascontiguousarray(F.T, dtype=dtype))   # C order: 10x faster
    else:                                          # absent entries are log 0 = -inf
        Z = np.full((r * pre * post, n), -np.inf, dtype=dtype)
        Z[rows, b] = data
        Y = logmatmulexp(Z, F.T.astype(dtype, copy=False))
    return Y.reshape(r, pre, post, m).transpose(0, 1, 3, 2)
