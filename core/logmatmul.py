"""``log(exp(A) @ exp(B))`` without overflow, underflow or an n·k·m temporary.

Tiers of ``method="auto"`` (see :func:`logmatmulexp` for the error argument):

1. *fast*: the row/column-shifted GEMM. ``ma_i = max_k A[i,k]``, ``mb_j = max_k B[k,j]``,
   ``S = exp(A - ma) @ exp(B - mb)``, ``C = ma + mb + log(S)``. Every factor lies in
   [0, 1], so ``S`` is as accurate as a GEMM except where underflow has eaten it: an entry
   is vouched for when ``S_ij >= tau`` (``tau = 32 tiny / eps``, see ``log_tau``).
2. *rebalanced*: untrusted rows and columns, sorted by where their maxima sit, are cut
   into tiles; each tile gets one GEMM of ``A - e`` and ``B + e`` (every term unchanged,
   maxima lined up), with the same trust test.
3. *blocked*: for what is left, the contraction axis is cut into blocks of ``b`` with
   block-local shifts, one batched GEMM over all blocks, and the blocks are combined per
   entry by a logsumexp. An entry is vouched for when its combined value is at least
   ``2 tau`` in units of its largest block shift.
4. *exact*: what is still untrusted is recomputed per entry, exactly
   (``logsumexp_k(A[i,k] + B[k,j])``, accumulated in float64).

Entries whose every term has a ``-inf`` factor are exactly ``-inf`` and need no repair;
NaN reaches every entry whose sum it enters.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from functools import cache
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .accumulate import clamped_exp, exp_floor, finite_or_zero, logsumexp
from .errors import InputError
from .resources import thread_limit
from .typing import Method

if TYPE_CHECKING:
    from types import ModuleType

    from threadpoolctl import ThreadpoolController

__all__ = [
    "METHODS",
    "ProductReport",
    "as_log_operand",
    "check_no_posinf",
    "compute_dtype",
    "log_tau",
    "logmatmulexp",
    "logmatmulexp_report",
    "matmul_operands",
    "result_dtype",
    "set_compiled",
    "shape_str",
]

METHODS = ("auto", "fast", "exact")
_FAST_METHODS = ("auto", "fast")
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NO_ERRSTATE = nullcontext()

# Working-set targets (elements) that keep temporaries cache- and memory-friendly.
# The fast tier cuts rows into tiles whose size depends on the shape alone, never on the
# thread count, and every GEMM runs on one BLAS thread: OpenBLAS's result for a row
# changes with the number of rows in the call (a float32 102000x40x17 product in 1000-row
# calls differs from one call in about half its entries) and with its thread count, so
# this is what makes the bytes the same whatever the cores or ``--threads``.
# Rows of A per fast-path tile: ~this many elements of A and C. Measured on 2 threads
# against the old split (one equal block per thread), six skinny shapes, f64 and f32:
# 1 << 17 took 0.50-1.20x the old time (two runs, machine shared and noisy); 1 << 15 and
# 1 << 16 up to 1.66x on 30000x300x3.
_FAST_TILE_ELEMENTS = 1 << 17
_GEMM_BOUND_TILE_ROWS = 256         # ... when the GEMM dominates: 2048^3 in 256-row tiles on
                                    # 2 threads ran at 0.83-0.92x the time of one 2-thread
                                    # GEMM (64 rows: 1.07-1.24x, B packed more often)
_GEMM_BOUND_RATIO = 128             # k*m/(k+m) above which the GEMM dominates the fast path
_PARALLEL_MIN_WORK = 1 << 22        # n*k*m below which row tiles run on one thread
# GEMMs of at most this many multiply-adds skip pinning BLAS to one thread (the pin cost
# ~20 us of CPU per 64^3 call, +12-18%): OpenBLAS runs them on one thread anyway
# (interface/gemm.c: 65536 x 4). Measured: no product up to it (320 shapes, f32/f64)
# changed bytes under 1-64 BLAS threads; 41 of those up to 4x larger did. A matrix-vector
# product (one row or column: gemv) uses gemv's lower threshold, 2304 x 4.
_SERIAL_BLAS_MIN_WORK = 1 << 18
_SERIAL_BLAS_MIN_VECTOR_WORK = 9216
_BATCHED_MAX_WORK = 1 << 25         # n*k*m per batch element up to which batches run as one
_REPAIR_CHUNK_ELEMENTS = 1 << 18    # per-entry repair: entries x K per chunk
_BLOCKED_TIER_ELEMENTS = 1 << 20    # blocked tier: blocks x rows x cols per group
_REBALANCE_TILE_ENTRIES = 1 << 14   # rebalanced tier: output entries per tile
_REBALANCE_TILE_COLS = 128          # rebalanced tier: at most this many columns per tile
_REPAIR_GATHER_ELEMENTS = 1 << 20   # rebalanced tier: rows x K gathered per tile, at most
_EXACT_TILE_ELEMENTS = 1 << 19      # exact method: rows x cols x K-chunk per tile
# exact method, certified path: terms per GEMM block sum (its rounding, (b - 1) u, enters
# the exact-tier bound; at 512^3 float64 b = 8, 16, 32, 64 took 69, 60, 50, 46 ms, one noisy
# run) and the smallest shifted sum it vouches for, 2^-20 (see _exact_product)
_EXACT_BLOCK = 16
_EXACT_CERTIFIED_LOG_SUM = -20 * math.log(2.0)
# Factors smaller than this skip exp's clamp (see clamped_exp): the clamp costs a ufunc
# call (~1 us), more than the few ns per element numpy's exp loses on subnormal results
# at this size in the typical case (at worst ~30 ns x 1024 elements). Unclamped, a term
# is off by less than tiny absolute (0 or subnormal), within the error argument's
# (2e + 1) tiny.
_CLAMP_MIN_ELEMENTS = 1024
# Line maxima of factors with lines this short (and this many elements) use a halving tree
# of elementwise fmax: numpy's reduce along a short axis costs ~7 ns per element (measured
# on 10000 x 8 x 8), the tree ~1.
_SHORT_LINE = 32
_SHORT_LINE_MIN_ELEMENTS = 1 << 14

# Small products take the compiled fast tier (logmm.compiled, numba) once it is loaded:
# one call instead of about a dozen numpy calls. Measured interleaved against the numpy
# tiers (machine under load): float64 as fast as the naive recipe up to 1x256x256 and
# 8x64x64 (work 65536), slower than numpy's GEMM from 64^3; float32 loses to numpy's SIMD
# exp once the factors hold more than about 8192 elements (1x128x128: 99 vs 93 us).
_COMPILED_MAX_WORK = 1 << 16        # n*k*m per product
_COMPILED_MAX_F32_ELEMENTS = 1 << 13    # n*k + k*m per float32 product
_KERNEL_REFUSE = 3                  # logmm.compiled.REFUSE: +inf, refused by the numpy tiers


class _Compiled:
    """Whether small products use :mod:`logmm.compiled` (see :func:`set_compiled`)."""

    mode = "off"                    # "on" or "off"
    kernels: ModuleType | None = None   # the loaded module, while it is in use


def set_compiled(mode: str) -> str:
    """Choose whether small products use the compiled (numba) kernels.

    ``"on"`` (or ``"1"``): from the next small product on, which imports numba (0.3-0.6
    s, once; ``pip install logmm[fast]``; without numba the numpy tiers run). ``"off"``
    (or ``"0"``): the numpy tiers alone. The default is the environment variable
    ``LOGMM_COMPILED`` (``1``: on), else off: numba's import would cost a short run or a
    CLI call more than it saves. Results agree within the error bound either way, not
    to the last bit, so the mode is best chosen once per process (a result's bytes then
    do not depend on what the process computed before).

    Returns
    -------
    str
        The mode before, ``"on"`` or ``"off"`` (to restore it).

    Raises
    ------
    InputError
        Any other mode.
    """
    mode = {"1": "on", "0": "off"}.get(mode, mode)
    if mode not in ("on", "off"):
        raise InputError(f"compiled mode {mode!r}; choose on or off")
    before = _Compiled.mode
    _Compiled.mode = mode
    _Compiled.kernels = None        # loaded again on the next small product if "on"
    return before


def _load_compiled() -> ModuleType | None:
    """Import the compiled kernels; None (and the numpy tiers from then on) without numba."""
    try:
        from . import compiled
    except ImportError:         # numba is optional (logmm[fast])
        _Compiled.mode = "off"
        return None
    _Compiled.kernels = compiled
    return compiled


def _compiled_kernels() -> ModuleType | None:
    """The compiled kernels if small products use them (loaded on first use)."""
    if _Compiled.kernels is not None or _Compiled.mode == "off":
        return _Compiled.kernels
    return _load_compiled()


def _compiled_size(n: int, k: int, m: int, dtype: np.dtype) -> bool:
    """Whether a product (n, k) @ (k, m) is small enough for the compiled kernels."""
    return 0 < n * k * m <= _COMPILED_MAX_WORK and (
        dtype == np.float64 or n * k + k * m <= _COMPILED_MAX_F32_ELEMENTS)


def _compiled_product(A: np.ndarray, B: np.ndarray, C: np.ndarray, check: bool) -> bool:
    """The fast tier of a small 2-D product in one compiled call; False (C then holds
    nothing useful) unless it wrote and vouched for every entry: dead lines, +inf, values
    beyond the range and untrusted sums are left to the numpy tiers, which handle them
    (restore -inf, refuse, repair) as always. ``C`` must be C-contiguous."""
    kernels = _compiled_kernels()
    if kernels is None:
        return False
    if not A.flags.c_contiguous:
        A = np.ascontiguousarray(A)
    if not B.flags.c_contiguous:
        B = np.ascontiguousarray(B)
    return kernels.product(A, B, C, _compiled_constants(C.dtype, A.shape[1], check)) == 0


@cache
def _compiled_constants(dtype: np.dtype, k: int, check: bool) -> np.ndarray:
    """The kernels' constants in ``dtype`` (they compute and compare in it, as numpy
    does): exp's clamp, the trust threshold, the largest log-value accepted, ``check``."""
    constants = np.array([_exp_floor(dtype), _trust_threshold(dtype, k),
                          _posinf_limit(dtype), check], dtype=dtype)
    constants.flags.writeable = False
    return constants


_Compiled.mode = "on" if os.environ.get("LOGMM_COMPILED", "0") in ("1", "on") else "off"


@dataclass
class ProductReport:
    """How many output entries each tier produced.

    ``fast``: vouched for by the shifted GEMM (including exact ``-inf`` and NaN entries);
    ``rebalanced``: resolved by a tile's rebalanced GEMM; ``blocked``: resolved by the
    contraction-blocked tier; ``exact``: recomputed per entry (or by ``method="exact"``);
    ``unchecked``: returned by ``method="fast"`` unverified.
    """

    entries: int = 0
    fast: int = 0
    rebalanced: int = 0
    blocked: int = 0
    exact: int = 0
    unchecked: int = 0

    @property
    def repaired(self) -> int:
        """Entries the fast path could not vouch for and that were recomputed."""
        return self.rebalanced + self.blocked + self.exact

    def __iadd__(self, other: ProductReport) -> ProductReport:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, int]:
        """Every count by name, ``repaired`` included (for provenance and ``-v``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["repaired"] = self.repaired
        return out


def log_tau(dtype: np.dtype) -> float:
    """log of the fast-path trust threshold tau = 32 * tiny / eps for ``dtype``.

    float64: about -668.9; float32: about -68.0. Each term of a shifted sum is off by at
    most ``(2e + 1) tiny`` from clamping its factors' exponents (see ``clamped_exp``) and
    from underflow in the product, so over K terms a sum ``S >= tau`` is off by at most
    ``K u S / 2`` relative.
    """
    info = np.finfo(dtype)
    return math.log(32.0 * float(info.tiny) / float(info.eps))


def compute_dtype(dtype: np.dtype | type | str) -> np.dtype:
    """The dtype a log-space operand of ``dtype`` is computed in.

    Integers and bools become float64, float16 becomes float32, float32 and float64 stay,
    in the machine's byte order whatever the input's (``>f8`` from HDF5, Zarr v2 or
    ``.npy`` computes as ``float64``).

    Raises
    ------
    InputError
        Any other dtype (complex, strings, objects, longdouble, ...).
    """
    dt = np.dtype(dtype)
    if dt.kind in "biuf" and not dt.isnative:
        dt = dt.newbyteorder("=")
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in (np.float32, np.float64):
        raise InputError(f"dtype {dt} is not supported; log-space inputs must be float32 or "
                         "float64 (integers are read as float64)")
    return dt


def result_dtype(a_dtype: np.dtype | type | str, b_dtype: np.dtype | type | str,
                 dtype: np.dtype | type | str | None = None) -> np.dtype:
    """Result dtype of a product: ``dtype`` if given (float32 or float64), else the
    common type of the operands' :func:`compute_dtype`.

    Raises
    ------
    InputError
        An unsupported operand dtype, or a ``dtype`` other than float32/float64.
    """
    if dtype is not None:
        try:
            out = np.dtype(dtype)
        except TypeError:
            out = None
        if out not in (np.float32, np.float64):
            raise InputError(f"dtype {dtype!r} is not supported; use float32 or float64")
        return out
    return np.result_type(compute_dtype(a_dtype), compute_dtype(b_dtype))


def check_no_posinf(x: np.ndarray, name: str) -> None:
    """Raise :class:`InputError` naming ``name`` if ``x`` holds ``+inf`` (one pass)."""
    x = np.asarray(x)
    if x.size:
        _raise_on_posinf(np.fmax.reduce(x, axis=None, keepdims=True), name)


def as_log_operand(x: np.ndarray, name: str) -> np.ndarray:
    """Validate a log-space operand: real floating (ints/bools become float64).

    Raises :class:`InputError` naming ``name`` for a complex/object dtype or a scalar.
    """
    x = np.asarray(x)
    try:
        x = x.astype(compute_dtype(x.dtype), copy=False)
    except InputError:
        raise InputError(f"{name} has dtype {x.dtype}; logmatmulexp needs float32 or "
                         "float64") from None
    if x.ndim == 0:
        raise InputError(f"{name} is a scalar; logmatmulexp needs at least 1-D arrays")
    return x


def _cast_checked(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` as ``dtype``; narrowing that would overflow finite values is an error."""
    if x.dtype.itemsize > dtype.itemsize and x.size:
        top = float(np.nanmax(np.abs(np.where(np.isinf(x), 0, x)), initial=0))
        if top > float(np.finfo(dtype).max):
            raise InputError(f"{name} holds {top:.6g}, beyond the range of {dtype}; "
                             f"compute in {x.dtype}")
    return x.astype(dtype, copy=False)


def _raise_on_posinf(max_values: np.ndarray, name: str) -> None:
    """``max_values`` are fmax reductions, so any +inf in the operand shows up here.

    Finite log-values above a quarter of the dtype's range are refused too: the sum of a
    row maximum and a column maximum (the fast path's shift) could overflow.
    """
    if not max_values.size:
        return
    top = np.fmax.reduce(max_values, axis=None)   # NaN only if every value is NaN
    if top == np.inf:      # not np.isposinf: ~9 us per call on a 0-d array
        raise InputError(
            f"{name} contains +inf, which is not a log-probability "
            "(log(0) is -inf; +inf would be an infinite probability)"
        )
    limit = float(np.finfo(max_values.dtype).max) / 4
    if top > limit:
        raise InputError(f"{name} holds {float(top):.4g}; log-values above {limit:.4g} (a "
                         f"quarter of the {max_values.dtype} range) would overflow the product")


_T = TypeVar("_T")
_R = TypeVar("_R")


@cache
def _blas_controller() -> ThreadpoolController:
    from threadpoolctl import ThreadpoolController  # on first use: the CLI starts faster
    return ThreadpoolController()


def _worker_count() -> int:
    """Compute threads: the job's CPUs, or ``--threads`` (see :mod:`logmm.resources`)."""
    return thread_limit()


@cache
def _blas_thread_setters() -> tuple[tuple[Callable[[], int], Callable[[int], object]], ...]:
    """``(get, set)`` thread-count functions of each BLAS library loaded.

    OpenBLAS's own process-wide functions are called directly: threadpoolctl (3.8) ignores
    a set from any thread but the first to set one (its "controlling thread", e.g. the
    CLI's main thread under ``--threads``), which would leave BLAS threaded when the
    kernel runs in another thread. Other libraries go through threadpoolctl.
    """
    setters = []
    for lib in _blas_controller().lib_controllers:
        if lib.user_api != "blas":
            continue
        found = None
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
            for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
                get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                put = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    found = (get, put)
                    break
        setters.append(found or (lib.get_num_threads, lib.set_num_threads))
    return tuple(setters)


_blas_pin_lock = threading.Lock()
_blas_pins = 0                      # kernel calls in progress that hold BLAS to one thread
_blas_restore: list[tuple[Callable[[int], object], int]] = []


@contextmanager
def _serial_blas() -> Iterator[None]:
    """Hold BLAS to one thread while any kernel call is inside this block.

    A GEMM's bytes depend on its BLAS thread count (OpenBLAS splits rows and columns
    across threads, and edge rows take other code paths), so every GEMM of the kernel
    runs on one BLAS thread and the kernel's own threads share fixed tiles. Counted
    across threads: the first to enter saves and pins, the last to leave restores (a
    BLAS with per-thread limits, e.g. OpenMP-threaded, is pinned in the calling thread
    only).
    """
    global _blas_pins, _blas_restore
    with _blas_pin_lock:
        if _blas_pins == 0:
            _blas_restore = []
            for get, put in _blas_thread_setters():
                threads = get()
                if threads is not None and threads != 1:
                    put(1)
                    _blas_restore.append((put, threads))
        _blas_pins += 1
    try:
        yield
    finally:
        with _blas_pin_lock:
            _blas_pins -= 1
            if _blas_pins == 0:
                for put, threads in _blas_restore:
                    put(threads)
                _blas_restore = []


def _map_parallel(fn: Callable[[_T], _R], items: Iterable[_T], work: int) -> list[_R]:
    """``[fn(x) for x in items]``, on one thread per core when ``work`` is large enough.

    numpy's ufuncs and BLAS release the GIL, so independent row blocks run in parallel;
    BLAS is held to one thread (:func:`_serial_blas`), so the bytes do not depend on the
    thread count (and a multi-threaded GEMM per block would oversubscribe the cores:
    measured 1.8x slower on skinny products). Each call of ``fn`` must write only its
    own part of any shared output, and the items must not depend on the thread count.
    """
    items = list(items)

    def quiet(x: _T) -> _R:   # np.errstate is per thread: set it in each worker
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            return fn(x)

    workers = min(_worker_count(), len(items))
    if workers <= 1 or work < _PARALLEL_MIN_WORK:
        return [quiet(x) for x in items]
    with _serial_blas(), ThreadPoolExecutor(workers, thread_name_prefix="logmm") as pool:
        return list(pool.map(quiet, items))


def logmatmulexp(A: np.ndarray, B: np.ndarray, *, method: Method = "auto",
                 dtype: np.dtype | type | str | None = None) -> np.ndarray:
    """Stable ``log(exp(A) @ exp(B))``.

    Parameters
    ----------
    A : array_like, shape (..., n, k)
        Log-values (float32 or float64; integers are promoted to float64).
    B : array_like, shape (..., k, m)
        Log-values. Batch dimensions broadcast as in ``np.matmul``; 1-D operands are
        promoted and the added dimension removed, as ``np.matmul`` does.
    method : {"auto", "fast", "exact"}
        ``auto``: shifted GEMM plus repair of every entry it cannot vouch for (accurate to
        the bound below, at GEMM speed when little needs repair). ``fast``: the shifted
        GEMM alone; possibly far off (``-inf``, or a value near the underflow floor)
        where the row maximum of ``A`` and the column maximum of ``B`` sit on different
        ``k`` far apart in scale; ``report.unchecked`` counts its entries.
        ``exact``: every entry within the tighter exact-tier bound below, computed in
        float64 (memory bounded by tiles, independent of n·k·m; slower than ``auto``).
    dtype : float32 or float64, optional
        Result dtype; default ``np.result_type(A, B)``. float32 inputs are computed in
        float32 (repairs accumulate in float64).

    Returns
    -------
    C : ndarray, shape (..., n, m)
        ``C[..., i, j] = log sum_k exp(A[..., i, k] + B[..., k, j])``; ``-inf`` where every
        term is ``-inf`` (including ``k == 0``), NaN where a NaN enters the sum.

    Error bound
    -----------
    With ``u = eps/2`` of the result dtype and ``M = max|A| + max|B|`` over finite
    entries, every entry of ``auto`` and ``exact`` satisfies, to first order,
    ``|C - C_exact| <= u (2K + 9M + 3 log K + 8)``; the tests (mpmath references on
    adversarial families and hypothesis inputs) and about 550k fuzzed cases all stayed
    within ``4 u (K + M)``, at most 0.91 of it. Argument for the fast tier: the shifted
    exponents ``A - ma`` carry absolute rounding error ``<= u |A - ma| <= 2u max|A|``
    (same for B); exp adds ``<= 2u`` per factor, the product ``u`` and the GEMM's sum of
    K non-negative terms ``(K - 1) u``, all relative. exp's argument is clamped at
    ``log(tiny) + 1`` (off numpy's slow subnormal path), and the product may underflow,
    so each term is off by at most ``(2e + 1) tiny`` absolute: a sum ``S >= tau = 32
    tiny/eps`` loses at most ``K u / 2`` relative (for float32 with K beyond about 4e6,
    tau grows to ``64 K tiny``, bounding that loss by a tenth). log turns relative into
    absolute error and rounds by ``u |log S|``; adding the two shifts back rounds by
    ``u (2M + log K)`` more. The
    rebalanced tier's ``A - e``, ``B + e`` add ``<= 2uM``; the blocked tier repeats the
    argument per block and its logsumexp adds ``O(u log K)``; the exact tier is a
    two-pass logsumexp in float64. Entries below the trust thresholds are never
    returned from a tier that cannot vouch for them.

    ``exact`` also satisfies the exact-tier bound, with no ``K`` or ``M`` term::

        |C - C_exact| <= 2^-53 (2 |C| + 5 log2 K + K / 512 + 100) + u |C|

    (``u |C|``: rounding to the result dtype): a float64 GEMM per block of 16 terms,
    blocks added pairwise, where its certificate holds, and a per-entry float64
    logsumexp elsewhere (argument in :func:`_exact_product`).

    Raises
    ------
    InputError (a ValueError)
        ``+inf`` in either operand (or finite log-values above a quarter of the dtype's
        range, which would overflow), non-float dtype, values that do not fit a
        narrower ``dtype``, mismatched contraction sizes or batch shapes that do not
        broadcast, unknown ``method``.

    Examples
    --------
    >>> import numpy as np, logmm
    >>> A = np.array([[-500.0, 900.0]]); B = np.array([[900.0], [-500.0]])
    >>> float(logmm.logmatmulexp(A, B)[0, 0])   # row/column-max recipes give -inf
    400.6931471805599
    """
    kernels = _Compiled.kernels
    if (kernels is not None and type(A) is np.ndarray and type(B) is np.ndarray
            and A.ndim == 2 == B.ndim and dtype is None and method in _FAST_METHODS):
        # a loop of small products: no report, no validation beyond what this needs
        (n, k), m, dt = A.shape, B.shape[1], A.dtype
        if (B.dtype == dt and dt in _NATIVE_FLOATS and B.shape[0] == k
                and _compiled_size(n, k, m, dt) and A.flags.c_contiguous
                and B.flags.c_contiguous):
            C = np.empty((n, m), dtype=dt)
            if kernels.product(A, B, C, _compiled_constants(dt, k, method == "auto")) == 0:
                return C
    return logmatmulexp_report(A, B, method=method, dtype=dtype)[0]


def logmatmulexp_report(A: np.ndarray, B: np.ndarray, *, method: Method = "auto",
                        dtype: np.dtype | type | str | None = None,
                        out: np.ndarray | None = None) -> tuple[np.ndarray, ProductReport]:
    """:func:`logmatmulexp`, also returning a :class:`ProductReport` of the tiers used.

    ``out``, if given, receives the result (2-D operands only; shape (n, m) and the result
    dtype), e.g. a slice of a memory-mapped output, saving a copy.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    A, B, batch, squeeze_a, squeeze_b = matmul_operands(A, B, dtype)
    out_dtype = A.dtype

    n, k, m = A.shape[-2], A.shape[-1], B.shape[-1]
    if out is not None:
        if squeeze_a or squeeze_b or out.shape != batch + (n, m) or out.dtype != out_dtype:
            raise InputError(f"out has shape {shape_str(out.shape)} and dtype {out.dtype}; "
                             f"the result is {shape_str(batch + (n, m))} {out_dtype}")
        C = out
    else:
        C = np.empty(batch + (n, m), dtype=out_dtype)
    # every GEMM on one BLAS thread, so the bytes do not depend on the thread count; a
    # product OpenBLAS keeps on one thread anyway skips the pin (repairs pin their own)
    small = _SERIAL_BLAS_MIN_VECTOR_WORK if n == 1 or m == 1 else _SERIAL_BLAS_MIN_WORK
    serial = _NO_ERRSTATE if n * k * m <= small else _serial_blas()
    if not batch:          # the common 2-D case, without per-batch bookkeeping
        if (method != "exact" and _Compiled.mode != "off" and _compiled_size(n, k, m, out_dtype)
                and C.flags.c_contiguous and _compiled_product(A, B, C, method == "auto")):
            return _squeezed(C, squeeze_a, squeeze_b), _fast_report(n * m, method)
        report = None
        lean = method != "exact" and k and n * m and _one_block(n, k, m)
        if lean and serial is _NO_ERRSTATE:     # small: no context to enter at all
            report = _lean_product(A, B, C, method == "auto")
        if report is None:
            with serial:
                if lean and serial is not _NO_ERRSTATE:
                    report = _lean_product(A, B, C, method == "auto")
                if report is None:
                    with np.errstate(divide="ignore", invalid="ignore", over="ignore",
                                     under="ignore"):
                        report = _product_2d(A, B, C, method)
        return _squeezed(C, squeeze_a, squeeze_b), report
    report = ProductReport()
    A_b = np.broadcast_to(A, batch + (n, k))
    B_b = np.broadcast_to(B, batch + (k, m))
    with serial, np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        if (batch and method != "exact" and k and n * m and C.flags.c_contiguous
                and n * k * m <= _BATCHED_MAX_WORK):
            # runs of the leading batch axis, sized by the shape alone, share the threads
            step = max(1, _BATCHED_MAX_WORK // (math.prod(batch[1:]) * n * k * m))
            for part in _map_parallel(
                    lambda i: _batched_product(A_b[i:i + step], B_b[i:i + step],
                                               C[i:i + step], method),
                    range(0, batch[0], step), math.prod(batch) * n * k * m):
                report += part
        else:
            for idx in np.ndindex(*batch):
                report += _product_2d(A_b[idx], B_b[idx], C[idx], method)
    return _squeezed(C, squeeze_a, squeeze_b), report


def _squeezed(C: np.ndarray, squeeze_a: bool, squeeze_b: bool) -> np.ndarray:
    """``C`` without the dimensions that 1-D operands were promoted with."""
    if squeeze_b:
        C = C[..., 0]
    if squeeze_a:
        C = C[..., 0, :] if not squeeze_b else C[..., 0]
    return C


def matmul_operands(A: np.ndarray, B: np.ndarray, dtype: np.dtype | type | str | None = None
                    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], bool, bool]:
    """Validate the operands of a log-space product as ``np.matmul`` would take them.

    Returns ``(A, B, batch, squeeze_a, squeeze_b)``: A (..., n, k) and B (..., k, m) in
    the result dtype (see :func:`result_dtype`), 1-D operands promoted (``squeeze_a``:
    a row dimension was added to A, ``squeeze_b``: a column dimension to B), and the
    broadcast batch shape.

    Raises
    ------
    InputError
        Non-float dtypes, scalars, values that do not fit ``dtype``, mismatched
        contraction sizes, batch shapes that do not broadcast.
    """
    if (type(A) is np.ndarray and type(B) is np.ndarray and A.dtype == B.dtype
            and A.dtype in _NATIVE_FLOATS and (dtype is None or np.dtype(dtype) == A.dtype)
            and A.ndim == B.ndim >= 2 and A.shape[-1] == B.shape[-2]
            and A.shape[:-2] == B.shape[:-2]):
        return A, B, A.shape[:-2], False, False   # already valid: skip the general checks
    A = as_log_operand(A, "A")
    B = as_log_operand(B, "B")
    out_dtype = result_dtype(A.dtype, B.dtype, dtype)
    A = _cast_checked(A, out_dtype, "A")
    B = _cast_checked(B, out_dtype, "B")
    squeeze_a, squeeze_b = A.ndim == 1, B.ndim == 1
    if squeeze_a:
        A = A[np.newaxis, :]
    if squeeze_b:
        B = B[:, np.newaxis]
    if A.shape[-1] != B.shape[-2]:
        raise InputError(
            f"shape mismatch: A is {shape_str(A.shape)} and B is {shape_str(B.shape)}; "
            f"A's last dimension ({A.shape[-1]}) must equal B's second-to-last ({B.shape[-2]})"
        )
    try:
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise InputError(
            f"batch dimensions of A {shape_str(A.shape)} and B {shape_str(B.shape)} "
            "do not broadcast"
        ) from None
    return A, B, batch, squeeze_a, squeeze_b


def shape_str(shape: tuple[int, ...]) -> str:
    """``(2, 3)`` for a shape (``(5)`` for one dimension, not Python's ``(5,)``): messages."""
    return "(" + ", ".join(str(s) for s in shape) + ")"


class _ShiftedFactor:
    """``exp(X - shift)`` with the shift taken as the maximum along ``axis``.

    ``max`` keeps the raw maxima (-inf for an all--inf line, which is then exactly log 0);
    ``shift`` is the same with non-finite values replaced by 0; ``E`` lies in [0, 1].
    """

    __slots__ = ("E", "live", "max", "shift", "smallest")

    def __init__(self, X: np.ndarray, axis: int, name: str) -> None:
        self.max = _line_max(X, axis)
        # The +inf refusal on one NaN-ignoring scalar (NaN only if every line is all NaN).
        if self.max.size and not np.fmax.reduce(self.max, axis=None) <= _posinf_limit(X.dtype):
            _raise_on_posinf(self.max, name)
        #: every line has a finite maximum (no dead line, no all-NaN line): minimum
        #: propagates NaN, and +inf was refused above
        self.live = bool(self.max.size == 0 or np.minimum.reduce(self.max, axis=None) > -np.inf)
        self.shift = self.max if self.live else finite_or_zero(self.max.copy())
        self.smallest: float | None = None     # see vouches_for
        along = (slice(None),) * (X.ndim + axis if axis < 0 else axis) + (np.newaxis,)
        self.E = np.subtract(X, self.shift[along])
        if X.size >= _CLAMP_MIN_ELEMENTS:       # clamped_exp, inlined
            np.maximum(self.E, _exp_floor(X.dtype), out=self.E)
        np.exp(self.E, out=self.E)

    def vouches_for(self, tau: float, work: int) -> bool:
        """Whether ``E``'s smallest entry alone shows every shifted sum with a live
        partner line is at least ``tau``, computing it only if that costs at most a
        quarter of scanning ``work`` sums (once per factor, then cached).

        Why: the other factor's live line has an entry exactly 1 (its maximum shifted
        by itself, ``exp(0)``), so each sum holds a term ``1 * E[.]`` exactly, and a
        floating-point sum of non-negative terms is at least each of them (rounding is
        monotone). Dead lines are excluded from the trust test anyway; NaN sums need no
        repair, and ``fmin`` ignores NaN. So this never passes a sum below ``tau``.
        """
        if self.smallest is None:
            if 4 * self.E.size > work or not self.E.size:
                return False
            self.smallest = float(np.fmin.reduce(self.E, axis=None))
        return self.smallest >= tau


def _line_max(X: np.ndarray, axis: int) -> np.ndarray:
    """``np.fmax.reduce(X, axis)``, as a few elementwise ``fmax`` calls when the lines are
    short and many (a batch of small matrices): numpy's reduction along a short axis costs
    about 7 ns per element there, the halving tree below under 1. Same values (the
    maximum is exact; fmax ignores NaN either way)."""
    size = X.shape[axis]
    if not 1 < size <= _SHORT_LINE or X.size < _SHORT_LINE_MIN_ELEMENTS:
        return np.fmax.reduce(X, axis=axis)
    lead = (slice(None),) * (axis % X.ndim)
    x = X
    while size > 1:
        half = size // 2
        top = np.fmax(x[lead + (slice(0, half),)], x[lead + (slice(half, 2 * half),)])
        if size % 2:
            first = top[lead + (slice(0, 1),)]
            np.fmax(first, x[lead + (slice(size - 1, size),)], out=first)
        x, size = top, half
    return x[lead + (0,)]


@cache
def _posinf_limit(dtype: np.dtype) -> float:
    """A quarter of ``dtype``'s range: larger log-values are refused (see _raise_on_posinf)."""
    return float(np.finfo(dtype).max) / 4


@cache
def _exp_floor(dtype: np.dtype) -> float:
    return exp_floor(dtype)


@cache
def _trust_threshold(dtype: np.dtype, terms: int) -> float:
    """The smallest shifted sum of ``terms`` terms the error argument vouches for.

    ``tau = 32 tiny / eps`` (see :func:`log_tau`), raised to ``64 K tiny`` when K is so
    large (float32 beyond about 4e6 terms) that K clamped floors alone, ``(2e + 1) tiny``
    each, could come near tau: then their total stays below a tenth of any trusted sum.
    """
    tiny = float(np.finfo(dtype).tiny)
    return max(math.exp(log_tau(dtype)), 64.0 * terms * tiny)


def _restore_neg_inf(C: np.ndarray, dead_rows: np.ndarray, dead_cols: np.ndarray) -> None:
    """Set entries of ``C`` (..., r, q) on dead rows (..., r) or columns (..., q) to
    exactly -inf (log 0), keeping NaN.

    A line is dead when every term on it has a -inf factor; its clamped exponentials
    left a tiny sum rather than 0. A NaN there came from a NaN input and must stay.
    """
    if dead_rows.any() or dead_cols.any():
        dead = dead_rows[..., :, None] | dead_cols[..., None, :]
        np.copyto(C, -np.inf, where=dead & ~np.isnan(C))


def _shifted_gemm(fa: _ShiftedFactor, fb: _ShiftedFactor, out: np.ndarray,
                  check: bool) -> np.ndarray | None:
    """``out = fa.shift + fb.shift + log(fa.E @ fb.E)``: the one GEMM every tier uses.

    ``fa`` shifts rows of a (..., r, k), ``fb`` columns of b (..., k, q); ``out`` is
    (..., r, q) (leading batch dimensions alike). With ``check``, returns the mask of
    entries the error argument cannot vouch for: shifted sum below the trust threshold,
    excluding exact -inf lines and NaN entries.
    """
    untrusted = _shifted_gemm_untrusted(fa, fb, out, check)
    if check and untrusted is None:
        untrusted = np.zeros(out.shape, dtype=bool)
    return untrusted


def _shifted_gemm_untrusted(fa: _ShiftedFactor, fb: _ShiftedFactor, out: np.ndarray,
                            check: bool) -> np.ndarray | None:
    """:func:`_shifted_gemm`, returning None rather than an all-False mask (and always
    None without ``check``)."""
    S = np.matmul(fa.E, fb.E, out=out)
    live = fa.live and fb.live
    if not live:
        dead_rows, dead_cols = ~np.isfinite(fa.max), ~np.isfinite(fb.max)
    untrusted = None
    if check:
        tau = _trust_threshold(out.dtype, fa.E.shape[-1])
        # a factor's smallest entry, or one NaN-ignoring reduction over the sums, tells
        # whether any entry needs the mask at all
        if (S.size and not (fb.vouches_for(tau, S.size) or fa.vouches_for(tau, S.size))
                and np.fmin.reduce(S, axis=None) < tau):
            untrusted = S < tau                            # NaN compares False
            if not live and (dead_rows.any() or dead_cols.any()):
                untrusted &= ~(dead_rows[..., :, None] | dead_cols[..., None, :])
    np.log(S, out=S)
    S += fa.shift[..., :, None]
    S += fb.shift[..., None, :]
    if not live:
        _restore_neg_inf(S, dead_rows, dead_cols)
    return untrusted


def _batched_product(A: np.ndarray, B: np.ndarray, out: np.ndarray,
                     method: str) -> ProductReport:
    """The fast tier over all batch elements at once (one numpy call per step instead of
    one per batch), then the repair tiers for the batch elements that need them."""
    report = ProductReport(entries=out.size)
    status = _compiled_batched(A, B, out, method == "auto")
    if status is not None and not (status == _KERNEL_REFUSE).any():   # else refused below
        A_flat = A.reshape(-1, *A.shape[-2:])
        B_flat = B.reshape(-1, *B.shape[-2:])
        C_flat = out.reshape(-1, *out.shape[-2:])
        for index in np.flatnonzero(status):    # dead lines or untrusted sums
            part = _product_2d(A_flat[index], B_flat[index], C_flat[index], method)
            report.rebalanced += part.rebalanced
            report.blocked += part.blocked
            report.exact += part.exact
        return _fast_report(out.size, method, report)
    untrusted = _shifted_gemm_untrusted(_ShiftedFactor(A, -1, "A"), _ShiftedFactor(B, -2, "B"),
                                        out, check=method == "auto")
    if method == "fast":
        report.unchecked = out.size
        return report
    if untrusted is None:
        report.fast = out.size
        return report
    n, m = out.shape[-2:]
    flat = untrusted.reshape(-1, n, m)
    needy = np.flatnonzero(flat.any(axis=(1, 2)))
    if needy.size:
        A_flat = A.reshape(-1, *A.shape[-2:])
        B_flat = B.reshape(-1, *B.shape[-2:])
        C_flat = out.reshape(-1, n, m)           # out is C-contiguous: a view
        for index in needy:
            report += _repair(A_flat[index], B_flat[index], C_flat[index], flat[index])
    report.fast = out.size - report.repaired
    return report


def _fast_report(entries: int, method: str, report: ProductReport | None = None
                 ) -> ProductReport:
    """``report`` (or a new one) for ``entries`` entries of which all but its repaired
    ones came from the fast tier: vouched for (``auto``) or unchecked (``fast``)."""
    report = report if report is not None else ProductReport()
    report.entries = entries
    if method == "fast":
        report.unchecked = entries
    else:
        report.fast = entries - report.repaired
    return report


def _compiled_batched(A: np.ndarray, B: np.ndarray, out: np.ndarray,
                      check: bool) -> np.ndarray | None:
    """The compiled fast tier over a batch of small products: A (..., n, k) and B
    (..., k, m) each contiguous or broadcast along every batch axis, ``out`` (..., n, m)
    C-contiguous. Returns each product's status, flattened (0: done; else see
    :mod:`logmm.compiled`), or None where the kernels do not apply."""
    n, k = A.shape[-2:]
    m = B.shape[-1]
    if not _compiled_size(n, k, m, out.dtype) or not out.flags.c_contiguous:
        return None
    A3, B3 = _batch_3d(A), _batch_3d(B)
    if A3 is None or B3 is None:
        return None
    kernels = _compiled_kernels()
    if kernels is None:
        return None
    count = out.size // max(1, n * m)
    status = np.empty(count, dtype=np.int8)
    kernels.batched_product(A3, B3, out.reshape(-1, n, m),
                            _compiled_constants(out.dtype, k, check), status)
    return status


def _batch_3d(X: np.ndarray) -> np.ndarray | None:
    """``X`` (..., r, c) as a C-contiguous (b, r, c) array without copying the batch: the
    batch itself if contiguous, its one matrix (b = 1) if broadcast along every batch
    axis; else None."""
    if X.flags.c_contiguous:
        return X.reshape(-1, *X.shape[-2:])
    if any(X.strides[:-2]):
        return None
    return np.ascontiguousarray(X[(0,) * (X.ndim - 2)])[None]


def _fast_tile_rows(n: int, k: int, m: int) -> int:
    """Rows per fast-tier tile of (n, k) @ (k, m): a function of the shape only, so each
    output row is computed by the same GEMM call shape on any machine."""
    if k * m >= _GEMM_BOUND_RATIO * (k + m):    # the GEMM dominates
        return min(n, _GEMM_BOUND_TILE_ROWS)
    return max(1, min(n, _FAST_TILE_ELEMENTS // max(k, m)))


def _one_block(n: int, k: int, m: int) -> bool:
    """Whether :func:`_product_2d` computes the fast tier of (n, k) @ (k, m) as one block
    (``_fast_tile_rows(n, k, m) >= n``, inlined)."""
    if k * m >= _GEMM_BOUND_RATIO * (k + m):
        return n <= _GEMM_BOUND_TILE_ROWS
    return n <= max(1, _FAST_TILE_ELEMENTS // max(k, m))


def _lean_product(A: np.ndarray, B: np.ndarray, C: np.ndarray,
                  check: bool) -> ProductReport | None:
    """The fast tier of a one-block 2-D product in as few numpy calls as it can take.

    Fills ``C`` and returns the report, or returns None, leaving the product to
    :func:`_product_2d`, unless every row maximum of A and column maximum of B is finite
    and within a quarter of the dtype's range in magnitude (so no +inf, no dead or
    all-NaN line, nothing to refuse - :func:`_product_2d` then refuses what must be
    refused - and no shift-back ``log S + ma + mb`` that overflows to -inf). With
    every maximum finite no floating-point exception can arise before the trust test,
    so this runs without ``np.errstate``; one NaN-ignoring minimum of the shifted sums
    decides whether any entry needs repair, and only then is the mask formed and the
    repair run (as in :func:`_product_2d`). Same arithmetic, same error bound.
    """
    ma = np.fmax.reduce(A, axis=1)
    mb = np.fmax.reduce(B, axis=0)
    limit = _posinf_limit(A.dtype)
    if ma.size + mb.size <= 32:     # Python beats four numpy reductions on a few values
        maxima = ma.tolist() + mb.tolist()
        if not (math.isfinite(sum(maxima)) and -limit <= min(maxima)
                and max(maxima) <= limit):                              # NaN, inf: False
            return None
    elif not (_finite_at_most(ma, limit) and _finite_at_most(mb, limit)):
        return None
    try:
        EA = np.subtract(A, ma[:, None])
        EB = np.subtract(B, mb)
        if A.size >= _CLAMP_MIN_ELEMENTS:
            np.maximum(EA, _exp_floor(A.dtype), out=EA)
        if B.size >= _CLAMP_MIN_ELEMENTS:
            np.maximum(EB, _exp_floor(B.dtype), out=EB)
        np.exp(EA, out=EA)                      # in [0, 1]: may underflow, never overflow
        np.exp(EB, out=EB)
    except FloatingPointError:                  # the caller's np.seterr raises on underflow
        return None
    S = np.matmul(EA, EB, out=C)
    n, m = C.shape
    report = ProductReport(entries=n * m)
    untrusted = None
    if check:
        tau = _trust_threshold(C.dtype, A.shape[1])
        if np.fmin.reduce(S, axis=None) < tau:  # NaN-ignoring: NaN entries need no repair
            untrusted = S < tau
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore") \
            if untrusted is not None or not check else _NO_ERRSTATE:
        np.log(S, out=S)                        # checked: S >= tau > 0 unless repaired
        S += ma[:, None]
        S += mb
        if untrusted is not None:
            report += _repair(A, B, C, untrusted)
    if check:
        report.fast = n * m - report.repaired
    else:
        report.unchecked = n * m
    return report


def _finite_at_most(x: np.ndarray, limit: float) -> bool:
    """Every entry of the 1-D ``x`` within ``[-limit, limit]`` (NaN fails)."""
    return bool(np.minimum.reduce(x) >= -limit) and bool(np.maximum.reduce(x) <= limit)


def _product_2d(A: np.ndarray, B: np.ndarray, out: np.ndarray, method: str) -> ProductReport:
    """Fill ``out`` (n, m) with the log-product of A (n, k) and B (k, m); return the report."""
    n, k = A.shape
    m = B.shape[1]
    report = ProductReport(entries=n * m)
    if k == 0 or n * m == 0 or method == "exact":
        check_no_posinf(A, "A")
        check_no_posinf(B, "B")
    if k == 0 or n * m == 0:
        out.fill(-np.inf)
        report.fast = n * m
        return report
    if method == "exact":
        _exact_product(A, B, out)
        report.exact = n * m
        return report

    fb = _ShiftedFactor(B, 0, "B")
    if method == "auto":        # once for all tiles, when cheaper than scanning C
        fb.vouches_for(_trust_threshold(out.dtype, k), n * m)
    # Row tiles of a size set by the shape alone, shared by the threads, each one
    # single-threaded GEMM: the same bytes whatever the thread count (see _serial_blas).
    rows_per_block = _fast_tile_rows(n, k, m)

    def fast_block(start: int) -> tuple[int, np.ndarray | None]:
        stop = min(n, start + rows_per_block)
        untrusted = _shifted_gemm_untrusted(_ShiftedFactor(A[start:stop], 1, "A"), fb,
                                            out[start:stop], check=method == "auto")
        return start, (untrusted if untrusted is not None and untrusted.any() else None)

    if rows_per_block >= n:     # one block: no thread pool, no block bookkeeping
        blocks = [fast_block(0)]
    else:
        blocks = _map_parallel(fast_block, range(0, n, rows_per_block), n * k * m)
    untrusted_blocks = [(start, u) for start, u in blocks if u is not None]
    if untrusted_blocks:
        # One repair over all rows, so that tiles gather like rows from the whole matrix.
        mask = np.zeros((n, m), dtype=bool)
        for start, untrusted in untrusted_blocks:
            mask[start:start + untrusted.shape[0]] = untrusted
        del untrusted_blocks
        report += _repair(A, B, out, mask)
    if method == "fast":
        report.unchecked = n * m
    else:
        report.fast = n * m - report.repaired
    return report


def _repair(a: np.ndarray, B: np.ndarray, C: np.ndarray, untrusted: np.ndarray) -> ProductReport:
    """Recompute the ``untrusted`` entries of ``C`` (r, m) in place, cheapest tier first.

    Rows and columns holding untrusted entries are sorted by the position of their maximum
    and cut into tiles, so that each tile's rows (and columns) peak at nearby ``k``; see
    :func:`_repair_tile` for what each tile gets. Row tiles run in parallel.
    """
    rows = np.flatnonzero(untrusted.any(axis=1))
    cols = np.flatnonzero(untrusted.any(axis=0))
    rows = rows[np.argsort(_argmax_of(a, rows, axis=1), kind="stable")]
    cols = cols[np.argsort(_argmax_of(B, cols, axis=0), kind="stable")]
    tile_cols = min(_REBALANCE_TILE_COLS, max(8, -(-cols.size // 4)))
    tile_rows = max(128, _REBALANCE_TILE_ENTRIES // tile_cols)
    tile_rows = max(1, min(tile_rows, _REPAIR_GATHER_ELEMENTS // max(1, a.shape[1])))
    B_cols = B[:, cols]          # one gather; tiles below are contiguous column ranges
    # structural zeros need a -inf on both sides: look for them only then
    structural = bool(np.isneginf(B_cols).any()) and bool(np.isneginf(a[rows]).any())

    def repair_row_tile(r0: int) -> ProductReport:
        report = ProductReport()
        R = rows[r0:r0 + tile_rows]
        a_tile = a[R]
        a_colmax = np.fmax.reduce(a_tile, axis=0)
        untrusted_rows = untrusted[R]
        for c0 in range(0, cols.size, tile_cols):
            Q = cols[c0:c0 + tile_cols]
            todo = untrusted_rows[:, Q]
            if todo.any():
                ii, jj = np.nonzero(todo)
                values, tile_report = _repair_tile(a_tile, a_colmax, B_cols[:, c0:c0 + tile_cols],
                                                   todo, structural)
                C[R[ii], Q[jj]] = values[ii, jj]     # row tiles own disjoint rows of C
                report += tile_report
        return report

    report = ProductReport()
    with _serial_blas():   # a tile of one row is a gemv, threaded above 9216 terms
        for tile_report in _map_parallel(repair_row_tile, range(0, rows.size, tile_rows),
                                         rows.size * a.shape[1] * cols.size):
            report += tile_report
    return report


def _argmax_of(x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """Position of the maximum of the rows (``axis=1``) or columns (``axis=0``) of ``x``
    listed in ``index``; reduces in place rather than gathering when most are listed."""
    if 4 * index.size >= x.shape[1 - axis]:
        return np.argmax(x, axis=axis)[index]
    return np.argmax(np.take(x, index, axis=1 - axis), axis=axis)


def _repair_tile(a: np.ndarray, a_colmax: np.ndarray, b: np.ndarray, todo: np.ndarray,
                 look_for_structural: bool = True) -> tuple[np.ndarray, ProductReport]:
    """Values for the ``todo`` entries of the tile ``a`` (r, k) x ``b`` (k, q).

    First one *rebalanced* shifted GEMM of ``a - e`` and ``b + e``, with ``e_k`` half the
    difference of the tile's column maxima of ``a`` (``a_colmax``) and row maxima of
    ``b``: every term ``a + b`` is unchanged but the maxima line up. What that cannot
    vouch for goes to the contraction-blocked tier, and what is left to the per-entry
    exact tier. Returns the (r, q) values (meaningful where ``todo``) and the tier counts.
    """
    report = ProductReport()
    values = np.empty(todo.shape, dtype=np.result_type(a, b))
    # Structural zeros first: where no k has both factors finite the entry is exactly
    # log 0 (a banded or triangular transition matrix has many). One small GEMM of the
    # supports finds them; they are exact, so they count as vouched for, not repaired.
    # (Both sides need a -inf for one to exist, dead lines aside: two cheap passes gate it.)
    if look_for_structural and np.isneginf(a).any() and np.isneginf(b).any():
        support = np.matmul((a != -np.inf).astype(np.float32),
                            (b != -np.inf).astype(np.float32))
        structural = todo & (support == 0)
    else:
        structural = np.zeros_like(todo)
    if structural.any():
        todo = todo & ~structural
        if not todo.any():
            values[structural] = -np.inf
            return values, report
    e = finite_or_zero(a_colmax / 2 - np.fmax.reduce(b, axis=1) / 2)   # halves: no overflow
    with np.errstate(over="ignore"):
        a_e, b_e = a - e, b + e[:, None]
        # e_k reaches ~0.6 max: a finite a (b) below ~-0.4 max would become -inf, and a
        # line of such entries would pass for dead; those k keep e_k = 0 (no shift)
        lost = ((np.isneginf(a_e) & (a != -np.inf)).any(axis=0)
                | (np.isneginf(b_e) & (b != -np.inf)).any(axis=1))
        if lost.any():
            e = np.where(lost, 0, e).astype(e.dtype, copy=False)
            a_e, b_e = a - e, b + e[:, None]
    left = _shifted_gemm(_ShiftedFactor(a_e, 1, "A"), _ShiftedFactor(b_e, 0, "B"),
                         values, check=True)
    left &= todo
    report.rebalanced = int(todo.sum()) - int(left.sum())
    k = a.shape[1]
    block = _blocked_tier_block_size(k)
    if left.any() and block < k:
        lr, lc = np.flatnonzero(left.any(axis=1)), np.flatnonzero(left.any(axis=0))
        sub = np.ix_(lr, lc)
        blocked_values, trusted = _blocked_product(a[lr], b[:, lc], block)
        rescued = left[sub] & trusted
        report.blocked = int(rescued.sum())
        values[sub] = np.where(rescued, blocked_values, values[sub])
        left[sub] &= ~trusted
    ii, jj = np.nonzero(left)
    if ii.size:
        values[ii, jj] = _exact_entries(a, b, ii, jj)
        report.exact = int(ii.size)
    values[structural] = -np.inf        # after the GEMMs, which write the whole tile
    return values, report


def _blocked_tier_block_size(k: int) -> int:
    """Contraction block for the blocked tier: 16 blocks, each of at least 8 terms."""
    return max(8, -(-k // 16))


def _blocked_product(a: np.ndarray, b: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Contraction-blocked shifted product of a (r, k) and b (k, q).

    Returns ``(C, trusted)``, both (r, q). Each block of ``block`` terms gets its own row
    and column shifts; blocks are combined per entry by a logsumexp of their log-sums
    taken *relative to the largest block shift*, so the trust test never subtracts two
    huge numbers. ``trusted`` marks entries whose combined relative sum is at least twice
    the trust threshold (see :func:`_trust_threshold`), or that are exactly -inf because
    every block has a -inf side.
    """
    r, k = a.shape
    q = b.shape[1]
    nblocks = -(-k // block)
    pad = nblocks * block - k
    if pad:
        a = np.concatenate([a, np.full((r, pad), -np.inf, a.dtype)], axis=1)
        b = np.concatenate([b, np.full((pad, q), -np.inf, b.dtype)], axis=0)
    C = np.empty((r, q), dtype=a.dtype)
    trusted = np.empty((r, q), dtype=bool)
    log_2tau = math.log(2.0 * _trust_threshold(a.dtype, k))
    b_blocks = b.reshape(nblocks, block, q)
    mb = np.fmax.reduce(b_blocks, axis=1)                    # (nblocks, q)
    mb_shift = finite_or_zero(mb.copy())
    EB = b_blocks - mb_shift[:, None, :]
    clamped_exp(EB, out=EB)
    rows_per_group = max(1, _BLOCKED_TIER_ELEMENTS // max(1, nblocks * q))
    for start in range(0, r, rows_per_group):
        stop = min(r, start + rows_per_group)
        a_blocks = a[start:stop].reshape(stop - start, nblocks, block).transpose(1, 0, 2)
        ma = np.fmax.reduce(a_blocks, axis=2)               # (nblocks, rows)
        ma_shift = finite_or_zero(ma.copy())
        EA = a_blocks - ma_shift[:, :, None]
        clamped_exp(EA, out=EA)
        rel = np.matmul(EA, EB)                             # (nblocks, rows, q)
        np.log(rel, out=rel)
        shift = ma_shift[:, :, None] + mb_shift[:, None, :]
        empty = ~np.isfinite(ma)[:, :, None] | ~np.isfinite(mb)[:, None, :]  # a -inf side
        top = np.max(np.where(empty, -np.inf, shift), axis=0)     # largest live shift
        top_shift = finite_or_zero(top.copy())
        rel += shift - top_shift                            # log-sums relative to top
        rel[empty & ~np.isnan(rel)] = -np.inf               # such a block adds exactly 0
        margin = logsumexp(rel, axis=0)                     # combined sum, relative to top
        C[start:stop] = margin + top_shift
        dead = top == -np.inf                               # every block has a -inf side
        C[start:stop][dead & ~np.isnan(margin)] = -np.inf
        trusted[start:stop] = (margin >= log_2tau) | dead
    return C, trusted


def _exact_entries(a: np.ndarray, B: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``logsumexp_k(a[rows[e], k] + B[k, cols[e]])`` for each listed entry, in float64."""
    k = a.shape[1]
    out = np.empty(rows.size, dtype=np.float64)
    BT = B.T
    chunk = max(1, _REPAIR_CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, rows.size, chunk):
        stop = min(rows.size, start + chunk)
        terms = a[rows[start:stop]].astype(np.float64)
        terms += BT[cols[start:stop]]
        out[start:stop] = logsumexp(terms, axis=1)
    return out


def _exact_product(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> int:
    """``method="exact"`` into ``out`` (n, m); returns how many entries were evaluated
    term by term (the rest are certified).

    Every entry is within the exact-tier bound (see :func:`logmatmulexp`)::

        |C - C_exact| <= u (2 |C| + 5 log2 K + K / 512 + 100) + u_out |C|

    with ``u = 2^-53`` (everything below is computed in float64, whatever the result
    dtype) and ``u_out |C|`` the rounding to the result dtype. Unlike ``auto``'s bound it
    has no ``K`` or ``max|A| + max|B|`` term, so a GEMM summing K terms in one running
    sum cannot vouch for an entry; two paths meet it.

    *Certified* (:func:`_exact_certified`): with ``x_k = exp(A[i,k] - a)``, ``y_k =
    exp(B[k,j] - b)`` (``a``, ``b`` the row and column maxima, both computed in float64)
    the shifted sum ``S = sum_k x_k y_k`` is formed by one GEMM per block of
    ``_EXACT_BLOCK`` terms and the block sums are added in a pairwise tree. Each term is
    a non-negative product, so (first order, ``w_k`` the term's share of the sum,
    ``H = -sum w log w <= log K`` and ``sum_k w_k (a + b - A[i,k] - B[k,j]) = H - log S``)
    the relative error of S is at most ``u (H - log S)`` (rounding of the exponents
    ``A - a``, ``B - b``, each at most ``u`` times itself) ``+ 5u`` (two exps of at most
    one ulp and the product) ``+ (b - 1) u`` (one block's GEMM sum, any order) ``+
    ceil(log2 nblocks) u`` (the tree) ``+ u`` (exp's clamp and underflow: at most
    ``(2e + 1) tiny`` per term, below ``u S / 2^40`` for S >= 2^-20 and any K below
    1e270). The entry is vouched for when ``S >= 2^-20`` (``_EXACT_CERTIFIED_LOG_SUM``,
    ``L = 20 log 2``): then ``|log S| <= max(L, log K)`` and ``C = log S + (a + b)`` adds
    ``2u |log S|`` (log) ``+ u |a + b|`` (``<= u (|C| + |log S|)``) and the final
    rounding. In all, with ``b = 16``: ``u (|C| + L + log K + log2 K + 19 + 3 max(L,
    log K))`` plus the final rounding, within the bound for every K (the final add
    rounds to float64, by ``u |C|``, then to the result dtype). Entries below 2^-20
    (row and column maxima misaligned: the adversarial families) never come from here.

    *Per entry*: what the certificate cannot vouch for is recomputed as ``c +
    log sum_k exp(A[i,k] + B[k,j] - c)``: by :func:`_exact_tiles` (``c`` the ``auto``
    result, at most ``u (2 |C| + 2 log K + 31 + K / 512)``) on the rows and columns
    holding such entries when they are dense there, else by :func:`_exact_entries` (two
    passes, ``c`` the maximum term, at most ``u (2 |C| + 5 log K + log2 K + 30)``).
    Dead lines (all ``-inf``) are exactly ``-inf``; NaN reaches the entries it enters.
    """
    k = A.shape[1]
    untrusted = _exact_certified(A, B, out)
    if untrusted is None:
        return 0
    rows = np.flatnonzero(untrusted.any(axis=1))
    cols = np.flatnonzero(untrusted.any(axis=0))
    count = int(np.count_nonzero(untrusted))
    if 4 * count >= rows.size * cols.size and rows.size * cols.size * k > _EXACT_TILE_ELEMENTS:
        # dense among their rows and columns: the tiled pass over that block
        sub = np.empty((rows.size, cols.size), dtype=out.dtype)
        _exact_tiles(A[rows], B[:, cols], sub)
        todo = untrusted[np.ix_(rows, cols)]
        ii, jj = np.nonzero(todo)
        out[rows[ii], cols[jj]] = sub[ii, jj]
    else:
        ii, jj = np.nonzero(untrusted)
        out[ii, jj] = _exact_entries(A, B, ii, jj)     # chunked: O(chunk x K) terms
    return count


def _exact_certified(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """The certified path of :func:`_exact_product`: fills ``out`` (n, m) and returns the
    mask of entries it cannot vouch for (None if there are none).

    Tiles of rows and columns of a size set by the shape alone (the same bytes on any
    thread count): ``(nblocks, rows, cols)`` float64 block sums per tile, at most
    ``_EXACT_TILE_ELEMENTS`` whatever n and m are. Row tiles run in parallel.
    """
    n, k = A.shape
    m = B.shape[1]
    acc = np.dtype(np.float64)
    b = min(_EXACT_BLOCK, k)
    nblocks = -(-k // b)
    fb = _ShiftedFactor(B.astype(acc, copy=False), 0, "B")
    if nblocks * b != k:                 # zero factors: the padding adds exactly nothing
        fb.E = np.concatenate([fb.E, np.zeros((nblocks * b - k, m), acc)], axis=0)
    EB = fb.E.reshape(nblocks, b, m)
    floor = _EXACT_CERTIFIED_LOG_SUM
    tile_cols = max(1, min(m, _EXACT_TILE_ELEMENTS // nblocks))
    tile_rows = max(1, min(n, _EXACT_TILE_ELEMENTS // (nblocks * tile_cols)))
    untrusted = np.zeros((n, m), dtype=bool)

    def row_tile(r0: int) -> bool:
        r1 = min(n, r0 + tile_rows)
        fa = _ShiftedFactor(A[r0:r1].astype(acc, copy=False), 1, "A")
        EA = fa.E
        if nblocks * b != k:
            EA = np.concatenate([EA, np.zeros((r1 - r0, nblocks * b - k), acc)], axis=1)
        EA = EA.reshape(r1 - r0, nblocks, b).transpose(1, 0, 2)
        dead = None
        if not (fa.live and fb.live):
            dead = ~np.isfinite(fa.max), ~np.isfinite(fb.max)
        for c0 in range(0, m, tile_cols):
            c1 = min(m, c0 + tile_cols)
            parts = np.matmul(EA, EB[:, :, c0:c1])
            size = nblocks
            while size > 1:              # pairwise tree over the blocks, in place
                half = (size + 1) // 2
                parts[:size - half] += parts[half:size]
                size = half
            log_s = np.log(parts[0], out=parts[0])
            mask = untrusted[r0:r1, c0:c1]
            np.less(log_s, floor, out=mask)   # NaN compares False: NaN entries are final
            C = np.add(fa.shift[:, None], fb.shift[None, c0:c1])
            C += log_s
            if dead is not None:
                _restore_neg_inf(C, dead[0], dead[1][c0:c1])
                mask &= ~(dead[0][:, None] | dead[1][None, c0:c1])
            out[r0:r1, c0:c1] = C
        return bool(untrusted[r0:r1].any())

    flagged = _map_parallel(row_tile, range(0, n, tile_rows), n * k * m)
    return untrusted if any(flagged) else None


def _exact_tiles(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """Exact logsumexp over every term into ``out`` (n, m), shifted per entry by the
    ``auto`` result.

    ``auto`` is accurate to ``u (2K + 9M + ...)``, so with ``c`` its value every term
    ``exp(A[i,k] + B[k,j] - c[i,j])`` is at most about 1 and their sum at least about 1:
    one pass of add, exp and sum per term (in float64, exp clamped as in
    :func:`clamped_exp`), no running maximum or rescaling, and ``c + log(sum)`` is the
    two-pass logsumexp with its shift already known. Entries ``auto`` finds ``-inf``
    (every term ``-inf``, exact) or NaN (a NaN term) are already final. Tiles of (rows,
    cols, K-chunk) terms keep memory O(tile) whatever n, k and m are; row tiles run in
    parallel.
    """
    n, k = A.shape
    m = B.shape[1]
    acc_dtype = np.float64
    auto = np.empty((n, m), dtype=out.dtype)
    _product_2d(A, B, auto, "auto")
    final = ~np.isfinite(auto)                   # -inf (exact) or NaN: nothing to add
    shift = finite_or_zero(auto.astype(acc_dtype))
    BT = B.T.astype(acc_dtype)                  # (m, k): contraction axis contiguous
    k_chunk = min(k, 512)
    tile_cols = max(1, min(m, 64))
    tile_rows = max(1, min(n, _EXACT_TILE_ELEMENTS // (tile_cols * k_chunk)))
    floor = exp_floor(acc_dtype)
    b_min = np.min(BT, axis=1)                  # per column of B: NaN or -inf clamp below

    def row_tile(r0: int) -> None:
        r1 = min(n, r0 + tile_rows)
        a = A[r0:r1].astype(acc_dtype)
        a_min = float(np.min(a))
        scratch = np.empty((r1 - r0, tile_cols, k_chunk), dtype=acc_dtype)
        for c0 in range(0, m, tile_cols):
            c1 = min(m, c0 + tile_cols)
            c = shift[r0:r1, c0:c1, None]
            # the clamp (a pass) only where some term may fall below exp's fast range
            clamp = not a_min + float(np.min(b_min[c0:c1])) - float(np.max(c)) >= floor
            total = np.zeros((r1 - r0, c1 - c0), dtype=acc_dtype)
            for k0 in range(0, k, k_chunk):
                k1 = min(k, k0 + k_chunk)
                terms = np.add(a[:, None, k0:k1], BT[None, c0:c1, k0:k1],
                               out=scratch[:, :c1 - c0, :k1 - k0])
                terms -= c
                if clamp:
                    np.maximum(terms, floor, out=terms)     # maximum keeps NaN
                np.exp(terms, out=terms)
                total += terms.sum(axis=2)
            np.log(total, out=total)
            total += shift[r0:r1, c0:c1]
            out[r0:r1, c0:c1] = total

    _map_parallel(row_tile, range(0, n, tile_rows), n * k * m)
    if final.any():
        out[final] = auto[final]
