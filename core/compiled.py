"""Compiled (numba) kernels of the fast tier for small products: one call per product.

The fast tier of :mod:`logmm.logmatmul` (row and column maxima, ``exp`` of the shifted
factors, the GEMM, the trust test, ``log`` and the shift-back) takes about a dozen numpy
calls; on a 1x8x8 product each costs more than its arithmetic. Here it is one compiled
call. Imported only by :func:`logmm.logmatmul.compiled_kernels`, never by ``import logmm``
or the CLI's start-up (numba takes about 0.3 s to import); compiled with ``cache=True``,
so a later process loads the machine code instead of compiling it again.

Same arithmetic, in the same dtype and order, and the same error argument as the numpy
fast tier (see :func:`logmm.logmatmul.logmatmulexp`): ``exp`` clamped at the dtype's
``exp_floor``, a sum of ``K`` products, ``log``, the row shift then the column shift
added. The kernels never decide anything beyond the fast tier. They return a status and leave
every other case to the numpy tiers, which raise, repair and restore ``-inf`` as before:

- ``OK`` (0): every entry written and vouched for (or ``check`` off);
- ``DEAD`` (1): a row of A or column of B has no finite maximum (all ``-inf``, or all
  NaN): the numpy path restores exact ``-inf`` for it;
- ``UNTRUSTED`` (2): some shifted sum is below the trust threshold ``tau`` (NaN is never
  below it, so NaN entries stay NaN here): the numpy path repairs it;
- ``REFUSE`` (3): a maximum is ``+inf`` or above ``limit`` (a quarter of the dtype's
  range): the numpy path raises its usual error.

Scalar ``exp``/``log`` here cost about what numpy's float64 loops cost on this AVX2
machine (6.7 vs 7.4 ns per element, measured interleaved under load), and about twice
numpy's SIMD float32 loops; callers keep the compiled path to small work.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

OK, DEAD, UNTRUSTED, REFUSE = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _fill(A, B, C, EA, EB, S, ma, mb, floor, tau, limit, check):  # pragma: no cover (compiled)
    """The fast tier of one product A (n, k) @ B (k, m) into C (n, m); returns a status.

    ``EA`` (n, k), ``EB`` (k, m), ``S`` (n, m), ``ma`` (n) and ``mb`` (m) are scratch
    arrays of the operands' dtype.
    """
    status = _row_max(A, ma, limit)
    if status == REFUSE:
        return REFUSE
    b_status = _col_max(B, mb, limit)
    if b_status != OK:          # REFUSE wins over DEAD
        return b_status
    if status != OK:
        return status
    _exp_shifted_rows(A, ma, EA, floor)
    _exp_shifted_cols(B, mb, EB, floor)
    return _gemm_log(EA, EB, C, S, ma, mb, tau, check)


@njit(cache=True, nogil=True, inline="always")
def _exp_shifted_rows(A, ma, EA, floor):  # pragma: no cover (compiled)
    n, k = A.shape
    for i in range(n):
        for p in range(k):
            d = A[i, p] - ma[i]
            if d < floor:                   # clamp off exp's subnormal path; NaN stays
                d = floor
            EA[i, p] = math.exp(d)


@njit(cache=True, nogil=True, inline="always")
def _exp_shifted_cols(B, mb, EB, floor):  # pragma: no cover (compiled)
    k, m = B.shape
    for p in range(k):
        for j in range(m):
            d = B[p, j] - mb[j]
            if d < floor:
                d = floor
            EB[p, j] = math.exp(d)


@njit(cache=True, nogil=True, inline="always")
def _gemm_log(EA, EB, C, S, ma, mb, tau, check):  # pragma: no cover (compiled)
    n, k = EA.shape
    m = EB.shape[1]
    S[:, :] = 0.0
    for i in range(n):
        for p in range(k):
            a = EA[i, p]
            for j in range(m):
                S[i, j] += a * EB[p, j]
    if check:
        for i in range(n):
            for j in range(m):
                if S[i, j] < tau:           # NaN compares False: NaN entries stay NaN
                    return UNTRUSTED
    for i in range(n):
        for j in range(m):
            C[i, j] = math.log(S[i, j]) + ma[i] + mb[j]
    return OK


@njit(cache=True, nogil=True)
def product(A, B, C, constants):  # pragma: no cover (compiled)
    """Fast tier of A (n, k) @ B (k, m) into C (n, m), all C-contiguous; returns a status.

    ``constants`` (of the operands' dtype): exp's clamp and the trust threshold ``tau``
    of the dtype, the largest log-value accepted, and 1 to run the trust test (0:
    ``method="fast"``). One array rather than four scalars: numba's dispatch costs about
    0.2 us per scalar argument.
    """
    n, k = A.shape
    m = B.shape[1]
    dt = A.dtype
    EA = np.empty((n, k), dt)
    EB = np.empty((k, m), dt)
    S = np.empty((n, m), dt)
    return _fill(A, B, C, EA, EB, S, np.empty(n, dt), np.empty(m, dt), constants[0],
                 constants[1], constants[2], constants[3] != 0)


@njit(cache=True, nogil=True)
def batched_product(A, B, C, constants, status):  # pragma: no cover (compiled)
    """Fast tier of each A[a] (n, k) @ B[b] (k, m) into C[c] (n, m).

    A is (ba, n, k), B (bb, k, m), C (bc, n, m), all C-contiguous, ``ba`` and ``bb``
    each ``bc`` or 1 (a broadcast operand); ``constants`` as for :func:`product`;
    ``status`` (bc,) int8 receives each product's status (see the module docstring).
    Returns the largest status. A shared B (``bb == 1``) is shifted and exponentiated
    once.
    """
    floor, tau, limit, check = constants[0], constants[1], constants[2], constants[3] != 0
    bc, n, m = C.shape
    k = A.shape[2]
    dt = A.dtype
    EA = np.empty((n, k), dt)
    EB = np.empty((k, m), dt)
    S = np.empty((n, m), dt)
    ma = np.empty(n, dt)
    mb = np.empty(m, dt)
    worst = OK
    shared_b = B.shape[0] == 1 and bc > 1
    b_status = OK
    if shared_b:
        b_status = _col_max(B[0], mb, limit)
        if b_status == OK:
            _exp_shifted_cols(B[0], mb, EB, floor)
    for c in range(bc):
        a = A[c if A.shape[0] > 1 else 0]
        if shared_b:
            s = _row_max(a, ma, limit)
            if s == REFUSE or b_status == REFUSE:
                s = REFUSE
            elif b_status != OK:
                s = b_status
            if s == OK:
                _exp_shifted_rows(a, ma, EA, floor)
                s = _gemm_log(EA, EB, C[c], S, ma, mb, tau, check)
        else:
            s = _fill(a, B[c if B.shape[0] > 1 else 0], C[c], EA, EB, S, ma, mb,
                      floor, tau, limit, check)
        status[c] = s
        if s > worst:
            worst = s
    return worst


@njit(cache=True, nogil=True, inline="always")
def _row_max(A, ma, limit):  # pragma: no cover (compiled)
    n, k = A.shape
    status = OK
    for i in range(n):
        top = -math.inf
        for p in range(k):
            v = A[i, p]
            if v > top:
                top = v
        ma[i] = top
        if top > limit:
            return REFUSE
        if top == -math.inf:
            status = DEAD
    return status


@njit(cache=True, nogil=True, inline="always")
def _col_max(B, mb, limit):  # pragma: no cover (compiled)
    k, m = B.shape
    for j in range(m):
        mb[j] = -math.inf
    for p in range(k):
        for j in range(m):
            v = B[p, j]
            if v > mb[j]:
                mb[j] = v
    status = OK
    for j in range(m):
        if mb[j] > limit:
            return REFUSE
        if mb[j] == -math.inf:
            status = DEAD
    return status
