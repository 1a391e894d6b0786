"""Log-space matrix chains and powers, in memory (the file engines: :mod:`logmm.chain_files`).

- :func:`log_chain`: ``log(exp(M1) @ exp(M2) @ … @ exp(Mn))``, parenthesised by the
  cheapest order (:func:`chain_order`, the classic matrix-chain dynamic programme on the
  shapes), every pairwise product a stable :func:`logmm.logmatmulexp`.
- :func:`log_power`: ``log(exp(P)^steps)`` by repeated squaring (``steps = 0`` gives the
  log identity: 0 on the diagonal, ``-inf`` elsewhere). Entries that are ``-inf`` (log 0)
  stay exactly ``-inf`` wherever no path of non-zero probability reaches them.
- :func:`chain_order`, :func:`chain_table`, :func:`power_schedule`: the orders, and the
  texts that describe them (:func:`parenthesize`, :func:`schedule_summary`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .logmatmul import ProductReport, check_no_posinf, compute_dtype, logmatmulexp_report, shape_str
from .policy import check_method, resolve_dtypes
from .typing import Method

__all__ = [
    "chain_dims",
    "chain_order",
    "chain_table",
    "check_steps",
    "log_chain",
    "log_chain_report",
    "log_identity",
    "log_power",
    "log_power_report",
    "parenthesize",
    "power_schedule",
    "power_terms",
    "schedule_summary",
    "sequential_cost",
]


# ----------------------------------------------------------------------------- orders


def chain_table(dims: Sequence[int]) -> tuple[int, list[list[int]]]:
    """Matrix-chain DP over ``dims`` (matrix i is dims[i] × dims[i+1]).

    Returns the least number of multiply-adds and ``split[i][j]``: the last product of
    matrices i..j multiplies (i..s) by (s+1..j). Ties go to the leftmost split.
    """
    n = len(dims) - 1
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(2, n + 1):
        for i in range(n - length + 1):
            j = i + length - 1
            best = -1
            for s in range(i, j):
                c = cost[i][s] + cost[s + 1][j] + dims[i] * dims[s + 1] * dims[j + 1]
                if best < 0 or c < best:
                    best, split[i][j] = c, s
            cost[i][j] = best
    return (cost[0][n - 1] if n else 0), split


def chain_dims(shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None
                ) -> list[int]:
    """``[r1, c1 = r2, c2 = r3, …]`` from 2-D shapes, or :class:`InputError` (one line)."""
    if len(shapes) == 0:
        raise UsageError("a chain needs at least one matrix")
    names = list(names) if names is not None else [f"M{i + 1}" for i in range(len(shapes))]
    for name, shape in zip(names, shapes, strict=True):
        if len(shape) != 2:
            raise InputError(f"{name} is {len(shape)}-D with shape {shape_str(tuple(shape))}; "
                             "a chain needs 2-D matrices")
    for i in range(len(shapes) - 1):
        (r, c), (r2, c2) = shapes[i], shapes[i + 1]
        if c != r2:
            raise InputError(
                f"shape mismatch: {names[i]} is {r}×{c} and {names[i + 1]} is {r2}×{c2}; "
                f"M{i + 1}'s columns ({c}) must equal M{i + 2}'s rows ({r2})")
    return [int(shapes[0][0])] + [int(s[1]) for s in shapes]


def parenthesize(split: list[list[int]], i: int, j: int, names: Sequence[str]) -> str:
    """``(M1 (M2 M3))``: the order :func:`chain_table`'s ``split`` gives factors i..j."""
    if i == j:
        return names[i]
    s = split[i][j]
    return f"({parenthesize(split, i, s, names)} {parenthesize(split, s + 1, j, names)})"


def chain_order(shapes: Sequence[Sequence[int]]) -> tuple[int, str]:
    """The cheapest parenthesisation of a chain of matrices of ``shapes``.

    Parameters
    ----------
    shapes : sequence of (rows, cols)
        ``M1, M2, …``; each one's columns must equal the next one's rows.

    Returns
    -------
    cost : int
        Multiply-adds of the cheapest order (``Σ n·k·m`` over its pairwise products).
    order : str
        The parenthesisation, e.g. ``"(M1 (M2 M3))"``; ``"M1"`` for a single matrix.

    Raises
    ------
    InputError
        A shape is not 2-D or adjacent shapes do not match.
    UsageError
        No shapes.

    Examples
    --------
    >>> chain_order([(40, 30), (30, 50), (50, 5)])
    (13500, '(M1 (M2 M3))')
    """
    dims = chain_dims(shapes)
    cost, split = chain_table(dims)
    names = [f"M{i + 1}" for i in range(len(shapes))]
    return cost, parenthesize(split, 0, len(shapes) - 1, names)


def sequential_cost(dims: Sequence[int], reverse: bool = False) -> int:
    """Multiply-adds of ``((M1 M2) M3) …`` (or ``… (M1 (M2 M3))`` with ``reverse``)."""
    n = len(dims) - 1
    if reverse:
        return sum(dims[i] * dims[i + 1] * dims[n] for i in range(n - 1))
    return sum(dims[0] * dims[i] * dims[i + 1] for i in range(1, n))


def power_schedule(steps: int) -> tuple[int, int]:
    """``(squarings, products)`` that :func:`log_power` performs for ``steps``.

    >>> power_schedule(13)   # 13 = 8 + 4 + 1: P², P⁴, P⁸ and two products
    (3, 2)
    """
    check_steps(steps)
    if steps == 0:
        return 0, 0
    return steps.bit_length() - 1, bin(steps).count("1") - 1


def power_terms(steps: int) -> str:
    """``P^8 · P^4 · P`` for 13: the powers whose product is ``P^steps``."""
    if steps == 0:
        return "identity"
    return " · ".join(f"P^{1 << b}" if b else "P" for b in range(steps.bit_length() - 1, -1, -1)
                      if steps >> b & 1)


def schedule_summary(steps: int) -> str:
    """``P^13 = P^8 · P^4 · P: 3 squarings, 2 products``; ``P^16: 4 squarings``."""
    if steps == 0:
        return "P^0 = identity"
    squarings, products = power_schedule(steps)
    terms = power_terms(steps)
    head = f"P^{steps}" if terms == f"P^{steps}" or steps == 1 else f"P^{steps} = {terms}"
    counts = [f"{squarings} squaring{'s' if squarings != 1 else ''}"] if squarings else []
    if products:
        counts.append(f"{products} product{'s' if products != 1 else ''}")
    return f"{head}: {', '.join(counts)}" if counts else head


def check_steps(steps: Any) -> int:
    """``steps`` as an int, or a :class:`UsageError` unless a non-negative integer."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise UsageError(f"steps must be a non-negative integer, got {steps!r}")
    if steps < 0:
        raise UsageError(f"steps must be a non-negative integer, got {steps}")
    return int(steps)


# ----------------------------------------------------------------------------- in memory


def _operand(x: Any, name: str, dtype: np.dtype | None) -> np.ndarray:
    """A validated log-space matrix: real float (ints become float64), no ``+inf``,
    cast to ``dtype`` when given (narrowing that would overflow is an error)."""
    x = np.asarray(x)
    try:
        own = compute_dtype(x.dtype)
    except InputError:
        raise InputError(f"{name} has dtype {x.dtype}; log-space products need float32 or "
                         "float64") from None
    x = x.astype(own, copy=False)
    check_no_posinf(x, name)
    if dtype is not None and x.dtype != dtype:
        if x.dtype.itemsize > dtype.itemsize and x.size:
            finite = x[np.isfinite(x)]
            top = float(np.abs(finite).max(initial=0.0))
            if top > float(np.finfo(dtype).max):
                raise InputError(f"{name} holds {top:.6g}, beyond the range of {dtype}")
        x = x.astype(dtype)
    return x


class _CountedProducts:
    """``logmatmulexp`` that sums the tiers' reports and ticks a progress step per product."""

    def __init__(self, method: Method, dtype: np.dtype,
                 step: Callable[[], None] | None = None) -> None:
        self.method, self.dtype, self.step = method, dtype, step
        self.report = ProductReport()

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        C, part = logmatmulexp_report(X, Y, method=self.method, dtype=self.dtype)
        self.report += part
        if self.step is not None:
            self.step()
        return C


def log_chain_report(matrices: Sequence[np.ndarray], names: Sequence[str], method: Method,
                      dtype: Any, step: Callable[[], None] | None = None
                      ) -> tuple[np.ndarray, ProductReport, int, str]:
    """:func:`log_chain` with the tiers' report, the order's cost and its string."""
    check_method(method)
    arrays = [np.asarray(m) for m in matrices]
    dims = chain_dims([a.shape for a in arrays], names)
    out_dtype = resolve_dtypes([a.dtype for a in arrays], dtype)
    arrays = [_operand(a, name, out_dtype) for a, name in zip(arrays, names, strict=True)]
    cost, split = chain_table(dims)
    mul = _CountedProducts(method, out_dtype, step)

    def product(i: int, j: int) -> np.ndarray:
        if i == j:
            return arrays[i]
        s = split[i][j]
        return mul(product(i, s), product(s + 1, j))

    result = product(0, len(arrays) - 1)
    if len(arrays) == 1:
        result = result.copy()
    order = parenthesize(split, 0, len(arrays) - 1, [f"M{i + 1}" for i in range(len(arrays))])
    return result, mul.report, cost, order


def log_chain(matrices: Sequence[np.ndarray], *, method: Method = "auto",
              dtype: np.dtype | type | str | None = None) -> np.ndarray:
    """Stable ``log(exp(M1) @ exp(M2) @ … @ exp(Mn))`` in the cheapest order.

    Parameters
    ----------
    matrices : sequence of 2-D array_like
        Log-valued matrices (float32 or float64; integers become float64); each one's
        columns must equal the next one's rows. ``-inf`` is log 0.
    method : {"auto", "fast", "exact"}
        Kernel method of every pairwise product, see :func:`logmm.logmatmulexp`.
    dtype : float32 or float64, optional
        Result (and working) dtype; default the inputs' common type.

    Returns
    -------
    ndarray, shape (rows of M1, columns of Mn)
        For one matrix, a copy of it (validated, in the result dtype).

    Raises
    ------
    InputError
        A matrix is not 2-D, adjacent shapes differ, ``+inf`` in an input, unsupported
        dtype.
    UsageError
        No matrices, unknown method, ``dtype`` not float32/float64.

    Examples
    --------
    >>> import numpy as np
    >>> M = [np.log(np.full((2, 3), 1 / 3)), np.log(np.full((3, 4), 1 / 4)),
    ...      np.zeros((4, 1))]
    >>> np.round(log_chain(M), 12)           # row-stochastic @ row-stochastic @ ones
    array([[0.],
           [0.]])
    """
    names = [f"M{i + 1}" for i in range(len(matrices))]
    return log_chain_report(matrices, names, method, dtype)[0]


def log_identity(n: int, dtype: np.dtype | type | str = np.float64) -> np.ndarray:
    """The log of the n×n identity: 0 on the diagonal, ``-inf`` elsewhere."""
    eye = np.full((n, n), -np.inf, dtype=dtype)
    np.fill_diagonal(eye, 0)
    return eye


def log_power_report(P: np.ndarray, steps: int, name: str, method: Method, dtype: Any,
                      step: Callable[[], None] | None = None) -> tuple[np.ndarray, ProductReport]:
    """:func:`log_power` and the kernel's tier counts; ``name`` names P in messages and
    ``step()`` runs after each product."""
    check_method(method)
    steps = check_steps(steps)
    P = np.asarray(P)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise InputError(f"{name} has shape {shape_str(P.shape)}; a matrix power needs a "
                         "square 2-D matrix")
    out_dtype = resolve_dtypes([P.dtype], dtype)
    P = _operand(P, name, out_dtype)
    if steps == 0:
        return log_identity(P.shape[0], out_dtype), ProductReport()
    if steps == 1:
        return P.copy(), ProductReport()
    # float32: square in float64 (exact for float32 values) and round once at the end;
    # each squaring doubles the error, so float32 squarings lost 11.7 nats at n = 2**30
    work = np.dtype(np.float64)
    mul = _CountedProducts(method, work, step)
    result: np.ndarray | None = None
    base, remaining = P.astype(work, copy=False), steps
    while True:
        if remaining & 1:
            result = base if result is None else mul(result, base)
        remaining >>= 1
        if not remaining:
            break
        base = mul(base, base)
    assert result is not None
    if out_dtype != work:
        top = float(np.max(result, initial=-np.inf))
        if top > float(np.finfo(out_dtype).max):
            raise InputError(f"{name}^{steps} holds {top:.6g}, beyond the range of {out_dtype}; "
                             "use float64")
        with np.errstate(over="ignore"):     # below -max: log of a probability float32
            result = result.astype(out_dtype)   # cannot hold, -inf as float32 products gave
    return result, mul.report


def log_power(P: np.ndarray, steps: int, *, method: Method = "auto",
              dtype: np.dtype | type | str | None = None) -> np.ndarray:
    """Stable ``log(exp(P) ^ steps)`` (matrix power) by repeated squaring.

    ``steps.bit_length() - 1`` squarings and one product per further set bit of
    ``steps``, each a :func:`logmm.logmatmulexp`; e.g. the ``steps``-step transition
    log-probabilities of a Markov chain with log transition matrix ``P``. An entry that
    no path of non-zero probability reaches stays exactly ``-inf``.

    Error: a log-space product is 1-Lipschitz in each operand, so ``err(X·Y) <= err(X) +
    err(Y) + b`` and a squaring doubles: ``|log_power(P, n) - exact| <= (n - 1) b`` with
    ``b`` the largest pairwise bound of :func:`logmm.logmatmulexp` in float64. float32
    inputs are squared in float64 (exact for their values) and rounded to float32 once,
    adding half a float32 ulp of the result: ``(n - 1) b64 + ulp32/2``. Measured (400-bit
    mpmath, P = log([[.3, .7], [.6, .4]]), n = 2³⁰): 1.8e-8 in float64; in float32 11.7
    nats with float32 squarings, 1.8e-7 now (0.19 ulp of the result, about -11).

    Parameters
    ----------
    P : 2-D array_like, square
        Log-values (float32 or float64; integers become float64); ``-inf`` is log 0.
    steps : int
        ``>= 0``; 0 gives the log identity (0 on the diagonal, ``-inf`` elsewhere).
    method : {"auto", "fast", "exact"}
        Kernel method of every product, see :func:`logmm.logmatmulexp`.
    dtype : float32 or float64, optional
        Result dtype; default P's (the products are computed in float64).

    Raises
    ------
    InputError
        P not square 2-D, ``+inf`` in P, unsupported dtype, a float32 result above the
        float32 range.
    UsageError
        ``steps`` negative or not an integer, unknown method, ``dtype`` not
        float32/float64.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.log(np.array([[0.5, 0.5], [0.0, 1.0]]))
    >>> np.exp(log_power(P, 3))
    array([[0.125, 0.875],
           [0.   , 1.   ]])
    """
    return log_power_report(P, steps, "P", method, dtype)[0]
