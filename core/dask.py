"""Lazy dask graphs over logmm's kernels: ``logmm.dask`` (needs ``logmm[dask]``).

Every function takes dask arrays (numpy arrays are wrapped) and returns a lazy
``dask.array.Array``; nothing is computed until the caller asks (``.compute()``,
``.to_zarr(...)``, ``dask.array.store``, a reduction, xarray), on whichever scheduler is
active (threads, processes, ``distributed.LocalCluster``, ``dask_jobqueue.SLURMCluster``).
Each task calls the in-memory kernel on its blocks, so the numbers are logmm's:

- :func:`logmatmulexp`: one task per (i, j) tile of ``C`` (per k chunk when the
  contraction axis is chunked, the partial products then folded in k order by the
  kernel's :class:`~logmm.accumulate.LogSumAccumulator`);
- :func:`from_address`: a lazy reader over logmm's readers (``a.h5:/a``, ``b.zarr:b``,
  ``c.npy``) whose tasks open the file themselves, so a graph pickles by address;
- :func:`kron_matvec`, :func:`block_project`, :func:`diag_gaussian_logpdf`: row-blockwise
  versions of the kernels (one task per row chunk).

Conventions are the kernels': ``-inf`` is log 0 (an all-``-inf`` row gives ``-inf``, no
RuntimeWarning), NaN reaches the entries whose sums it enters, float32 stays float32, and
``+inf`` in a log-value input raises :class:`logmm.InputError` when the block holding it
is computed (a graph is built without reading data). Shapes and dtypes are checked when
the graph is built.

This module is imported only on request (``import logmm.dask``); ``import logmm`` never
imports dask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UsageError, install_hint

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:      # exercised by tests/test_dask_api.py with dask hidden
    raise ImportError(f"logmm.dask needs dask ({exc.name} is missing): "
                      f"{install_hint('dask')}") from exc

from . import gaussian as _gaussian
from . import kron as _kron
from .accumulate import LogSumAccumulator
from .io.addresses import ArrayAddress, parse_address
from .io.readers import open_array
from .logmatmul import METHODS, result_dtype
from .logmatmul import logmatmulexp as _logmatmulexp
from .resources import one_thread_per_task
from .typing import KronSemiring, Method, Reduce

__all__ = ["block_project", "diag_gaussian_logpdf", "from_address", "kron_matvec",
           "logmatmulexp"]


# ------------------------------------------------------------------------- logmatmulexp

def logmatmulexp(A: Any, B: Any, *, method: Method = "auto",
                 dtype: np.dtype | type | str | None = None) -> da.Array:
    """Lazy stable ``log(exp(A) @ exp(B))`` of 2-D dask arrays.

    Parameters
    ----------
    A : dask or numpy array, shape (n, k)
        Log-values; its row chunks are ``C``'s row chunks.
    B : dask or numpy array, shape (k, m)
        Log-values; its column chunks are ``C``'s column chunks. A's column chunks and
        B's row chunks are unified first (``dask.array.core.unify_chunks``: give them
        the same chunks to keep your blocking).
    method, dtype
        As :func:`logmm.logmatmulexp` (float32 operands give float32).

    Returns
    -------
    dask.array.Array, shape (n, m)
        Chunks (A's row chunks, B's column chunks). With one k chunk, tile ``(i, j)`` is
        ``logmm.logmatmulexp(A_i, B_j)``. With several, each k chunk's partial product
        ``P_t`` is a task of its own (they run in parallel) and the tile is
        ``acc.add(P_0); acc.add(P_1); …; acc.result(dtype)`` with one float64
        :class:`~logmm.accumulate.LogSumAccumulator`, applied in k order by a chain of
        small tasks that each carry the running (max, scaled sum). That is exactly what
        ``logmm multiply`` does for a contraction split, so the bytes equal the
        in-memory result for the same blocking; a balanced tree of pairwise combines
        would regroup the rescalings and could change the last bit.

    Error bound
    -----------
    Each partial product is within the kernel's bound ``u (2 k_t + 9M + 3 log k_t + 8)``
    (``k_t`` its chunk's width, ``u`` half the result dtype's eps, ``M = max|A| +
    max|B|``), and a log-sum of terms with absolute errors ``d_t`` is off by at most
    ``max d_t``. The float64 fold adds about ``(nk + 2) u64`` and the final rounding
    ``u |C|``: ``|C - C_exact| <= u (2K + 9M + 3 log K + 8 + |C|) + (nk + 2) u64`` to
    first order (``nk`` k chunks). The tests check the kernel's ``4 u (K + M)``.

    Raises
    ------
    InputError
        When building: operands that are not 2-D, mismatched contraction sizes,
        unsupported dtypes, unknown ``method``. When computing: ``+inf`` in a block
        (the kernel's message).
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    A, B = _as_dask(A, "A"), _as_dask(B, "B")
    if A.ndim != 2 or B.ndim != 2:
        raise InputError(f"logmm.dask.logmatmulexp needs 2-D operands; A is {A.ndim}-D and "
                         f"B is {B.ndim}-D")
    if A.shape[1] != B.shape[0]:
        raise InputError(f"shape mismatch: A is {_shape(A.shape)} and B is {_shape(B.shape)}; "
                         f"A's last dimension ({A.shape[1]}) must equal B's first "
                         f"({B.shape[0]})")
    out_dtype = result_dtype(A.dtype, B.dtype, dtype)
    _, (A, B) = da.core.unify_chunks(A, "ik", B, "kj")
    meta = np.empty((0, 0), dtype=out_dtype)
    token = tokenize(A.name, B.name, method, out_dtype)
    name, fold = f"logmatmulexp-{token}", f"logmatmulexp-fold-{token}"
    if A.numblocks[1] <= 1:
        return da.blockwise(_tile, "ij", A, "ik", B, "kj", concatenate=True, dtype=out_dtype,
                            meta=meta, name=name, method=method, out_dtype=out_dtype)
    nk = A.numblocks[1]
    partials = da.blockwise(_partial, "ijk", A, "ik", B, "kj", dtype=out_dtype,
                            adjust_chunks={"k": (1,) * nk}, meta=np.empty((0, 0, 0), out_dtype),
                            name=f"logmatmulexp-partial-{token}", method=method,
                            out_dtype=out_dtype)
    dsk: dict[Any, Any] = {}
    for i in range(A.numblocks[0]):
        for j in range(B.numblocks[1]):
            for t in range(nk):
                previous = (fold, i, j, t - 1) if t else None
                dsk[(fold, i, j, t)] = (_fold, previous, (partials.name, i, j, t))
            dsk[(name, i, j)] = (_fold_result, (fold, i, j, nk - 1), out_dtype)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[partials])
    return da.Array(graph, name, chunks=(A.chunks[0], B.chunks[1]), meta=meta)


@one_thread_per_task             # dask's threads or workers are the parallelism
def _tile(a: np.ndarray, b: np.ndarray, *, method: Method, out_dtype: np.dtype) -> np.ndarray:
    """One (i, j) tile with the whole contraction axis: the kernel itself."""
    return _logmatmulexp(a, b, method=method, dtype=out_dtype)


@one_thread_per_task
def _partial(a: np.ndarray, b: np.ndarray, *, method: Method, out_dtype: np.dtype) -> np.ndarray:
    """The partial product of one k chunk, as an (r, q, 1) block of the partials array."""
    return _logmatmulexp(a, b, method=method, dtype=out_dtype)[..., np.newaxis]


def _fold(state: tuple[np.ndarray, np.ndarray] | None,
          partial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The accumulator's ``(m, s)`` after adding ``partial`` to ``state`` (None: empty).

    A fresh accumulator given copies of the state, so a retried task (distributed
    retries a task whose worker died) never sees an input this task changed.
    """
    values = partial[..., 0]
    acc = LogSumAccumulator(values.shape, np.float64)
    if state is not None:
        acc.m, acc.s = state[0].copy(), state[1].copy()
    acc.add(values)
    return acc.m, acc.s


def _fold_result(state: tuple[np.ndarray, np.ndarray], out_dtype: np.dtype) -> np.ndarray:
    acc = LogSumAccumulator(state[0].shape, np.float64)
    acc.m, acc.s = state
    return acc.result(out_dtype)


# ------------------------------------------------------------------------- from_address

def from_address(address: str | Path | ArrayAddress, chunks: Any = None, *,
                 sparse: bool = False) -> da.Array:
    """A lazy dask array over the array at ``address``, read through logmm's readers.

    Parameters
    ----------
    address : str, Path or ArrayAddress
        ``a.h5:/a``, ``b.zarr:b``, ``c.npy`` (see :func:`logmm.io.open_array`); the file
        is opened here for its shape, dtype and storage chunks only.
    chunks : dask chunk specification, optional
        Default: whole rows (one column chunk) and rows in multiples of the reader's
        ``chunk_rows`` (the storage chunks) up to dask's ``array.chunk-size``; for
        contiguous storage, dask's ``"auto"`` rows. Anything ``dask.array`` accepts
        (``1000``, ``(1000, -1)``, ``{0: 4096}``) is normalised with the storage chunks
        as ``previous_chunks``.
    sparse : bool
        Also accept a sparse CSR matrix (scipy ``.npz``, HDF5/Zarr CSR group): its blocks
        are then :class:`scipy.sparse.csr_matrix` row blocks (whole rows; the rows per
        block sized as for a dense array of its shape), which :func:`block_project` and
        :func:`kron_matvec` take as the in-memory kernels do (in the log semiring an
        absent entry is log 0). A dense file gives a dense array either way. Every task
        of a ``.npz`` reads the whole archive (a zip has no partial reads): for large
        matrices use an HDF5 or Zarr CSR group, whose tasks read only their rows.

    Returns
    -------
    dask.array.Array of the stored dtype. Each task opens the file by its absolute path,
    reads its region (``read_region``; ``read_rows`` for 1-D and N-D arrays, which may be
    chunked along rows only, and for sparse rows) and closes it: the graph holds
    addresses, never an open h5py or zarr handle, so it pickles and runs on any worker
    that sees the file at the same path. The graph's name includes the file's size and
    modification time, so a rewritten file is not served from an old result.

    Raises
    ------
    MissingInputError, FormatError
        As :func:`logmm.io.open_array`.
    InputError
        A sparse matrix without ``sparse=True`` (densifying needs the semiring's fill, 0
        or ``-inf``); a 0-D array; column chunks of an array that is not 2-D or is sparse.
    """
    addr = parse_address(address)
    addr = ArrayAddress(Path(addr.path).resolve(), addr.format, addr.dataset)
    with open_array(addr, sparse=True) as reader:
        is_sparse = reader.is_sparse
        if is_sparse and not sparse:
            raise InputError(f"{reader.address} holds a sparse matrix; give "
                             "logmm.dask.from_address(..., sparse=True) for CSR row blocks")
        shape, dtype, storage = reader.shape, reader.dtype, reader.chunks
        addr = reader.address                        # the dataset resolved
    if not shape:
        raise InputError(f"{addr} is a scalar; from_address needs at least one dimension")
    spec = chunks if chunks is not None else ("auto",) + (-1,) * (len(shape) - 1)
    previous = storage if storage else None
    normal = da.core.normalize_chunks(spec, shape, dtype=dtype, previous_chunks=previous)
    if (len(shape) != 2 or is_sparse) and any(len(c) > 1 for c in normal[1:]):
        kind = "sparse" if is_sparse else f"{len(shape)}-D"
        raise InputError(f"{addr} is {kind}; from_address chunks such arrays by rows only "
                         "(give chunks=(rows, -1))")
    stat = os.stat(addr.path)
    name = "from-address-" + tokenize(str(addr), addr.format, stat.st_mtime_ns, stat.st_size,
                                      normal, str(dtype), is_sparse)
    starts = [np.cumsum((0,) + c) for c in normal]
    dsk: dict[Any, Any] = {}
    for index in np.ndindex(*(len(c) for c in normal)):
        bounds = tuple((int(s[i]), int(s[i + 1])) for s, i in zip(starts, index, strict=True))
        dsk[(name,) + tuple(index)] = (_read_block, addr, bounds, is_sparse)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    if is_sparse:
        import scipy.sparse

        meta = scipy.sparse.csr_matrix((0, 0), dtype=dtype)
    else:
        meta = np.empty((0,) * len(shape), dtype)
    return da.Array(graph, name, chunks=normal, meta=meta)


def _read_block(address: ArrayAddress, bounds: tuple[tuple[int, int], ...],
                sparse: bool = False) -> Any:
    """One block, read by a reader opened for it (and closed after)."""
    with open_array(address, sparse=sparse) as reader:
        (r0, r1), *rest = bounds
        if len(bounds) == 2 and not sparse:
            (c0, c1), = rest
            return reader.read_region(r0, r1, c0, c1)
        return reader.read_rows(r0, r1)


# ------------------------------------------------------------- row-blockwise kernels

def kron_matvec(factors: Sequence[Any], X: Any, *, semiring: KronSemiring = "real") -> da.Array:
    """Lazy :func:`logmm.kron_matvec`: rows of ``X`` times ``(F1 ⊗ F2 ⊗ …)ᵀ``, per row chunk.

    ``X`` (r, Π ni) is rechunked to one column chunk if it has several (a row of X is one
    tensor; its mode products need all of it). The factors (small, in memory) are
    literals of the graph. Returns (r, Π mi) with X's row chunks; each block is exactly
    ``logmm.kron_matvec(factors, X_block)``.

    Raises
    ------
    InputError
        As :func:`logmm.kron_matvec`, when building (shapes, dtypes, semiring) or, for
        ``+inf`` in a block of X, when computing.
    """
    X = _rows_blockwise(X, "X")
    probe = _kron.kron_matvec(factors, np.empty((0, X.shape[1]), X.dtype), semiring=semiring)
    return da.map_blocks(_kron_block, X, list(factors), semiring, dtype=probe.dtype,
                         chunks=(X.chunks[0], (probe.shape[1],)),
                         meta=np.empty((0, 0), probe.dtype))


def block_project(X: Any, W: Any, blocks: int, *, semiring: KronSemiring = "real") -> da.Array:
    """Lazy :func:`logmm.block_project`: rows of ``X`` times ``(I_blocks ⊗ W)ᵀ``, per row
    chunk (X rechunked to one column chunk if needed; W a literal of the graph).

    Returns (r, blocks·p) with X's row chunks; each block is exactly
    ``logmm.block_project(X_block, W, blocks)``.

    Raises
    ------
    InputError
        As :func:`logmm.block_project`.
    """
    X = _rows_blockwise(X, "X")
    W = np.asarray(W)
    probe = _kron.block_project(np.empty((0, X.shape[1]), X.dtype), W, blocks,
                                semiring=semiring)
    return da.map_blocks(_project_block, X, W, int(blocks), semiring, dtype=probe.dtype,
                         chunks=(X.chunks[0], (probe.shape[1],)),
                         meta=np.empty((0, 0), probe.dtype))


def diag_gaussian_logpdf(x: Any, mu: Any, *, sigma: Any = None, rho: Any = None,
                         reduce: Reduce = "none") -> da.Array:
    """Lazy :func:`logmm.diag_gaussian_logpdf` of a 2-D ``x`` (rows × features), per row
    chunk.

    ``mu`` and ``sigma``/``rho`` are scalars, per-feature vectors (literals of the graph),
    or arrays of ``x``'s shape or (r, 1) (dask or numpy; aligned with ``x``'s row chunks). ``x`` is
    rechunked to one column chunk if needed.

    Returns
    -------
    dask.array.Array
        ``"none"``: (r, d), ``"row"``: (r,), each block exactly the in-memory function on
        its rows; ``"sum"``: a 0-D float64 array, the float64 sum of the blocks' float64
        totals (the same terms as the in-memory ``"sum"``, added in a different order:
        equal to within ``log2(N) eps`` relative, not bit for bit).

    Raises
    ------
    UsageError
        Both or neither of ``sigma``/``rho``; unknown ``reduce``.
    InputError
        When building: shapes that do not broadcast, non-real dtypes. When computing:
        a block's invalid ``sigma``/``rho`` (the kernel's message).
    """
    if (sigma is None) == (rho is None):
        raise UsageError("give exactly one of sigma and rho")
    if reduce not in _gaussian.REDUCTIONS:
        raise UsageError(f"unknown reduce {reduce!r}; choose one of "
                         f"{', '.join(_gaussian.REDUCTIONS)}")
    x = _rows_blockwise(x, "x")
    scale_name = "sigma" if sigma is not None else "rho"
    scale = sigma if sigma is not None else rho
    pieces: list[Any] = [x, "ij"]
    for value in (mu, scale):
        pieces += _aligned(value, x)
    # shapes and dtypes checked on a few rows of zeros (the real values are checked per
    # block: sigma = 0 in a later row must not stop the graph from being built)
    probe = _gaussian.diag_gaussian_logpdf(
        np.zeros((1, x.shape[1]), x.dtype), _probe_operand(mu, x),
        **{scale_name: _probe_operand(scale, x, one=True)}, reduce="row")
    row_dtype = np.asarray(probe).dtype
    kwargs = {"scale_name": scale_name, "reduce": reduce}
    if reduce == "none":
        none_dtype = np.asarray(_gaussian.diag_gaussian_logpdf(
            np.zeros((1, x.shape[1]), x.dtype), _probe_operand(mu, x),
            **{scale_name: _probe_operand(scale, x, one=True)})).dtype
        return da.blockwise(_gaussian_block, "ij", *pieces, dtype=none_dtype, concatenate=True,
                            meta=np.empty((0, 0), none_dtype), **kwargs)
    if reduce == "row":
        return da.blockwise(_gaussian_block, "i", *pieces, dtype=row_dtype, concatenate=True,
                            meta=np.empty((0,), row_dtype), **kwargs)
    totals = da.blockwise(_gaussian_block, "i", *pieces, dtype=np.float64, concatenate=True,
                          adjust_chunks={"i": 1}, meta=np.empty((0,), np.float64), **kwargs)
    return totals.sum(dtype=np.float64)


def _kron_block(X: Any, factors: list[Any], semiring: KronSemiring) -> np.ndarray:
    return _kron.kron_matvec(factors, X, semiring=semiring)


def _project_block(X: Any, W: np.ndarray, blocks: int, semiring: KronSemiring) -> np.ndarray:
    return _kron.block_project(X, W, blocks, semiring=semiring)


def _gaussian_block(x: np.ndarray, mu: Any, scale: Any, *, scale_name: str,
                    reduce: Reduce) -> np.ndarray:
    out = _gaussian.diag_gaussian_logpdf(x, mu, **{scale_name: scale}, reduce=reduce)
    return np.asarray([out], dtype=np.float64) if reduce == "sum" else np.asarray(out)


def _aligned(value: Any, x: da.Array) -> list[Any]:
    """``[value, index]`` for blockwise: a full (r, d) or per-row (r, 1) array follows x's
    row blocks, anything smaller (scalar, (d,), (1, d)) is a literal broadcast against
    every block."""
    if isinstance(value, da.Array) or (np.ndim(value) == 2 and np.shape(value)[0] != 1):
        arr = _as_dask(value, "mu/sigma/rho")
        if arr.ndim == 2 and arr.shape == x.shape:
            return [arr.rechunk(x.chunks), "ij"]
        if arr.ndim == 2 and arr.shape == (x.shape[0], 1):      # one value per row
            return [arr.rechunk((x.chunks[0], 1)), "iz"]
        if arr.ndim <= 1 or arr.shape[0] == 1:
            return [np.asarray(arr.compute()), None]
        raise InputError(f"shapes do not broadcast: x {x.shape}, parameter {arr.shape}")
    return [value if np.ndim(value) == 0 and not isinstance(value, np.ndarray)
            else np.asarray(value), None]


def _probe_operand(value: Any, x: da.Array, *, one: bool = False) -> Any:
    """A stand-in of ``value``'s shape and dtype for one row of x (ones for sigma)."""
    if np.ndim(value) == 0 and not isinstance(value, np.ndarray | np.generic):
        return 1.0 if one else 0.0
    dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
    shape = tuple(np.shape(value))
    if len(shape) == 2 and shape[0] != 1:
        shape = (1, shape[1])
    return np.ones(shape, dtype) if one else np.zeros(shape, dtype)


# ------------------------------------------------------------------------- helpers

def _as_dask(x: Any, name: str) -> da.Array:
    """``x`` as a dask array (numpy arrays are wrapped as one chunk)."""
    if isinstance(x, da.Array):
        return x
    arr = np.asarray(x)
    if arr.dtype == object:
        raise InputError(f"{name} is not a numeric array")
    return da.from_array(arr, chunks=arr.shape or ())


def _rows_blockwise(X: Any, name: str) -> da.Array:
    """A 2-D dask array with one column chunk (rechunked when it has several)."""
    X = _as_dask(X, name)
    if X.ndim != 2:
        raise InputError(f"{name} has shape {_shape(X.shape)}; the row-blockwise functions of "
                         "logmm.dask need a 2-D array (rows × columns)")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    return X


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
