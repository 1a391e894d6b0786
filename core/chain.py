"""Log-space matrix chains and powers, in memory and file to file.

- :func:`log_chain`: ``log(exp(M1) @ exp(M2) @ … @ exp(Mn))``, parenthesised by the
  cheapest order (:func:`chain_order`, the classic matrix-chain dynamic programme on the
  shapes), every pairwise product a stable :func:`logmm.logmatmulexp`.
- :func:`log_power`: ``log(exp(P)^steps)`` by repeated squaring (``steps = 0`` gives the
  log identity: 0 on the diagonal, ``-inf`` elsewhere). Entries that are ``-inf`` (log 0)
  stay exactly ``-inf`` wherever no path of non-zero probability reaches them.
- :func:`chain_files` and :func:`power_file`: the engines behind ``logmm chain`` and
  ``logmm power``: read the inputs from addresses, compute, and write the result through
  the atomic writers (:func:`logmm.io.create_writer`) with provenance attributes, holding
  the output's lock (:class:`logmm.io.resume.OutputLock`) meanwhile.

This increment reads whole inputs into memory (no row streaming, no ``--memory``,
no ``--resume``); the result is written in one piece.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.resume import OutputLock
from .io.writers import check_output, create_writer, temporary_path, write_failure
from .logmatmul import (
    METHODS,
    ProductReport,
    check_no_posinf,
    compute_dtype,
    logmatmulexp_report,
    result_dtype,
)
from .resources import accepts_threads

__all__ = [
    "ChainResult",
    "chain_files",
    "chain_order",
    "log_chain",
    "log_identity",
    "log_power",
    "power_file",
    "power_schedule",
]

Address = str | Path | ArrayAddress


# ----------------------------------------------------------------------------- orders


def _chain_table(dims: Sequence[int]) -> tuple[int, list[list[int]]]:
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


def _chain_dims(shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None
                ) -> list[int]:
    """``[r1, c1 = r2, c2 = r3, …]`` from 2-D shapes, or :class:`InputError` (one line)."""
    if len(shapes) == 0:
        raise UsageError("a chain needs at least one matrix")
    names = list(names) if names is not None else [f"M{i + 1}" for i in range(len(shapes))]
    for name, shape in zip(names, shapes, strict=True):
        if len(shape) != 2:
            raise InputError(f"{name} is {len(shape)}-D with shape {_shape_str(shape)}; "
                             "a chain needs 2-D matrices")
    for i in range(len(shapes) - 1):
        (r, c), (r2, c2) = shapes[i], shapes[i + 1]
        if c != r2:
            raise InputError(
                f"shape mismatch: {names[i]} is {r}×{c} and {names[i + 1]} is {r2}×{c2}; "
                f"M{i + 1}'s columns ({c}) must equal M{i + 2}'s rows ({r2})")
    return [int(shapes[0][0])] + [int(s[1]) for s in shapes]


def _paren(split: list[list[int]], i: int, j: int, names: Sequence[str]) -> str:
    if i == j:
        return names[i]
    s = split[i][j]
    return f"({_paren(split, i, s, names)} {_paren(split, s + 1, j, names)})"


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
    dims = _chain_dims(shapes)
    cost, split = _chain_table(dims)
    names = [f"M{i + 1}" for i in range(len(shapes))]
    return cost, _paren(split, 0, len(shapes) - 1, names)


def _sequential_cost(dims: Sequence[int], reverse: bool = False) -> int:
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
    _check_steps(steps)
    if steps == 0:
        return 0, 0
    return steps.bit_length() - 1, bin(steps).count("1") - 1


def _power_terms(steps: int) -> str:
    """``P^8 · P^4 · P`` for 13: the powers whose product is ``P^steps``."""
    if steps == 0:
        return "identity"
    return " · ".join(f"P^{1 << b}" if b else "P" for b in range(steps.bit_length() - 1, -1, -1)
                      if steps >> b & 1)


def _schedule_summary(steps: int) -> str:
    """``P^13 = P^8 · P^4 · P: 3 squarings, 2 products``; ``P^16: 4 squarings``."""
    if steps == 0:
        return "P^0 = identity"
    squarings, products = power_schedule(steps)
    terms = _power_terms(steps)
    head = f"P^{steps}" if terms == f"P^{steps}" or steps == 1 else f"P^{steps} = {terms}"
    counts = [f"{squarings} squaring{'s' if squarings != 1 else ''}"] if squarings else []
    if products:
        counts.append(f"{products} product{'s' if products != 1 else ''}")
    return f"{head}: {', '.join(counts)}" if counts else head


def _check_steps(steps: Any) -> int:
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


def _out_dtype(dtypes: Sequence[np.dtype], dtype: Any) -> np.dtype:
    if dtype is not None:
        try:
            return result_dtype(np.float64, np.float64, dtype)
        except InputError as exc:
            raise UsageError(str(exc)) from None
    own = []
    for dt in dtypes:
        try:
            own.append(compute_dtype(dt))
        except InputError:
            raise InputError(f"dtype {dt} is not supported; log-space inputs must be "
                             "float32 or float64 (integers are read as float64)") from None
    return np.result_type(*own) if own else np.dtype(np.float64)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


class _CountedProducts:
    """``logmatmulexp`` that sums the tiers' reports and ticks a progress step per product."""

    def __init__(self, method: str, dtype: np.dtype,
                 step: Callable[[], None] | None = None) -> None:
        self.method, self.dtype, self.step = method, dtype, step
        self.report = ProductReport()

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        C, part = logmatmulexp_report(X, Y, method=self.method, dtype=self.dtype)
        self.report += part
        if self.step is not None:
            self.step()
        return C


def _log_chain_report(matrices: Sequence[np.ndarray], names: Sequence[str], method: str,
                      dtype: Any, step: Callable[[], None] | None = None
                      ) -> tuple[np.ndarray, ProductReport, int, str]:
    """:func:`log_chain` with the tiers' report, the order's cost and its string."""
    _check_method(method)
    arrays = [np.asarray(m) for m in matrices]
    dims = _chain_dims([a.shape for a in arrays], names)
    out_dtype = _out_dtype([a.dtype for a in arrays], dtype)
    arrays = [_operand(a, name, out_dtype) for a, name in zip(arrays, names, strict=True)]
    cost, split = _chain_table(dims)
    mul = _CountedProducts(method, out_dtype, step)

    def product(i: int, j: int) -> np.ndarray:
        if i == j:
            return arrays[i]
        s = split[i][j]
        return mul(product(i, s), product(s + 1, j))

    result = product(0, len(arrays) - 1)
    if len(arrays) == 1:
        result = result.copy()
    order = _paren(split, 0, len(arrays) - 1, [f"M{i + 1}" for i in range(len(arrays))])
    return result, mul.report, cost, order


def log_chain(matrices: Sequence[np.ndarray], *, method: str = "auto",
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
    return _log_chain_report(matrices, names, method, dtype)[0]


def log_identity(n: int, dtype: np.dtype | type | str = np.float64) -> np.ndarray:
    """The log of the n×n identity: 0 on the diagonal, ``-inf`` elsewhere."""
    eye = np.full((n, n), -np.inf, dtype=dtype)
    np.fill_diagonal(eye, 0)
    return eye


def _log_power_report(P: np.ndarray, steps: int, name: str, method: str, dtype: Any,
                      step: Callable[[], None] | None = None) -> tuple[np.ndarray, ProductReport]:
    _check_method(method)
    steps = _check_steps(steps)
    P = np.asarray(P)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise InputError(f"{name} has shape {_shape_str(P.shape)}; a matrix power needs a "
                         "square 2-D matrix")
    out_dtype = _out_dtype([P.dtype], dtype)
    P = _operand(P, name, out_dtype)
    mul = _CountedProducts(method, out_dtype, step)
    if steps == 0:
        return log_identity(P.shape[0], out_dtype), mul.report

    result: np.ndarray | None = None
    base, remaining = P, steps
    while True:
        if remaining & 1:
            result = base if result is None else mul(result, base)
        remaining >>= 1
        if not remaining:
            break
        base = mul(base, base)
    assert result is not None
    return (result.copy() if result is P else result), mul.report


def log_power(P: np.ndarray, steps: int, *, method: str = "auto",
              dtype: np.dtype | type | str | None = None) -> np.ndarray:
    """Stable ``log(exp(P) ^ steps)`` (matrix power) by repeated squaring.

    ``steps.bit_length() - 1`` squarings and one product per further set bit of
    ``steps``, each a :func:`logmm.logmatmulexp`; e.g. the ``steps``-step transition
    log-probabilities of a Markov chain with log transition matrix ``P``. An entry that
    no path of non-zero probability reaches stays exactly ``-inf``.

    Error: a log-space product is 1-Lipschitz in each operand, so ``err(X·Y) <= err(X) +
    err(Y) + b`` and a squaring doubles: ``|log_power(P, n) - exact| <= (n - 1) b`` with
    ``b`` the largest pairwise bound of :func:`logmm.logmatmulexp`. Measured (400-bit
    mpmath, P = log([[.3, .7], [.6, .4]]), n = 2³⁰): 2.0e-8 in float64, 11.7 in float32,
    so large n wants float64 (``dtype=``); no compensated scheme is used.

    Parameters
    ----------
    P : 2-D array_like, square
        Log-values (float32 or float64; integers become float64); ``-inf`` is log 0.
    steps : int
        ``>= 0``; 0 gives the log identity (0 on the diagonal, ``-inf`` elsewhere).
    method : {"auto", "fast", "exact"}
        Kernel method of every product, see :func:`logmm.logmatmulexp`.
    dtype : float32 or float64, optional
        Result (and working) dtype; default P's.

    Raises
    ------
    InputError
        P not square 2-D, ``+inf`` in P, unsupported dtype.
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
    return _log_power_report(P, steps, "P", method, dtype)[0]


# ----------------------------------------------------------------------------- files


@dataclass
class ChainResult:
    """What :func:`chain_files`, :func:`power_file` or :func:`logmm.einsum_files.einsum_files`
    wrote.

    Attributes
    ----------
    output : ArrayAddress
        The output address, dataset part filled in (``OUT.h5:/data``).
    shape : tuple of int
    dtype : numpy.dtype
    operation : str
        ``chain``, ``power`` or ``einsum``.
    method : str
    seconds : float
        Wall time from opening the inputs to the committed output.
    order : str
        The chain's parenthesisation (``(M1 (M2 M3))``), the power's schedule
        (``P^13 = P^8 · P^4 · P``), or the einsum's subscripts.
    cost : int
        Multiply-adds of the pairwise products (chain and power; 0 for einsum).
    products : int
        Pairwise log-space products computed (chain and power).
    report : ProductReport or None
        Entries per kernel tier, summed over the products (None for einsum).
    attrs : dict
        The provenance attributes stored with the output.
    shard_note : str or None
        A streamed einsum's shard (``--shard``): which rows it wrote.
    """

    output: ArrayAddress
    shape: tuple[int, ...]
    dtype: np.dtype
    operation: str
    method: str
    seconds: float
    order: str = ""
    cost: int = 0
    products: int = 0
    report: ProductReport | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    shard_note: str | None = None

    @property
    def path(self) -> Path:
        """The output file or store on disk."""
        return self.output.path


def open_inputs(stack: ExitStack, addresses: Sequence[Address]) -> list[ArrayReader]:
    """Open every address (metadata only) on ``stack``; dense arrays only.

    Raises
    ------
    MissingInputError, FormatError, InputError
        As :func:`logmm.io.open_array` (a sparse input is an :class:`InputError`).
    """
    return [stack.enter_context(open_array(a)) for a in addresses]


def read_whole(reader: ArrayReader) -> np.ndarray:
    """The whole array in memory (a 0-D array for a scalar dataset)."""
    return np.asarray(reader.read_all())


def write_whole(out: ArrayAddress, result: np.ndarray, attrs: dict[str, Any], *,
                overwrite: bool, compression: str | None, chunk_rows: int | None) -> None:
    """Write ``result`` under a hidden partial name, store ``attrs`` and commit atomically.

    Raises
    ------
    InputError
        A 0-D (scalar) result for a Zarr output (the Zarr writer stores arrays of at
        least one dimension; use ``.npy`` or ``.h5``).
    """
    result = np.asarray(result)
    if result.ndim == 0 and out.format == "zarr":
        raise InputError(f"the result is a scalar; {out} cannot store a 0-D array yet, "
                         "write it to .npy or .h5")
    with create_writer(out, result.shape, result.dtype, overwrite=overwrite,
                       compression=compression, chunk_rows=chunk_rows,
                       contiguous=chunk_rows is None) as writer:
        if result.ndim == 0:
            writer._write((), result)          # write_rows needs a first axis
        elif result.size:
            writer.write_rows(0, result)
        writer.set_attrs(attrs)
        writer.commit()


def progress_steps(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar on stderr counting pairwise products (a no-op one when not enabled)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="product", desc=desc, file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)


def check_common_options(method: str, dtype: Any, chunk_rows: int | None) -> None:
    """Validate options before any file is opened (:class:`UsageError`)."""
    _check_method(method)
    if chunk_rows is not None and chunk_rows < 1:
        raise UsageError(f"chunk rows must be at least 1, got {chunk_rows}")
    if dtype is not None:
        _out_dtype([], dtype)


def base_provenance(command: str, operation: str, method: str, readers: Sequence[ArrayReader],
                    dtype: np.dtype, shape: tuple[int, ...]) -> dict[str, Any]:
    """The attributes every whole-array engine stores."""
    from .provenance import run_provenance

    return {
        **run_provenance(command, [r.address for r in readers]),
        "operation": operation,
        "method": method,
        "dtype": str(dtype),
        "shape": list(shape),
    }


def _report_attrs(report: ProductReport) -> dict[str, int]:
    return {"entries": int(report.entries), "repaired_entries": int(report.repaired),
            **{f"{k}_entries": int(v) for k, v in report.as_dict().items()
               if k not in ("entries", "repaired")}}


@accepts_threads
def chain_files(addresses: Sequence[Address], out_address: Address, *, method: str = "auto",
                dtype: np.dtype | type | str | None = None, overwrite: bool = False,
                compression: str | None = None, chunk_rows: int | None = None,
                memory: int | None = None, block_rows: int | None = None,
                progress: bool = False, command: str = "",
                explain: Callable[[str], None] | None = None) -> ChainResult:
    """Write ``log(exp(M1) @ … @ exp(Mn))`` for matrices in files, in the cheapest order.

    When the cheapest order is ``(M1 (M2 … Mn))`` and M1 is the large one (more bytes
    than the rest together), ``R = M2 … Mn`` is computed in memory and M1's rows are
    streamed against it by the :func:`logmm.multiply.multiply` engine (``memory``,
    ``block_rows``, read-ahead, progress). Otherwise every input is read whole into
    memory. Either way the result is written under a hidden partial name and renamed
    into place when complete, with
    the attributes ``logmm_version``, ``command``, ``operation: chain``, ``method``,
    ``inputs``, ``input_shapes``, ``order`` (e.g. ``(M1 (M2 M3))``), ``cost``
    (multiply-adds), ``dtype``, ``shape`` and the kernel's ``repaired_entries`` and
    per-tier counts.

    Parameters
    ----------
    addresses : sequence of addresses
        The matrices ``M1 … Mn`` (``x.npy``, ``x.h5:/name``, ``x.zarr:name``), 2-D.
    out_address : address
        The output; dataset ``data`` unless named.
    method, dtype
        As :func:`log_chain`.
    overwrite, compression, chunk_rows
        As :func:`logmm.multiply.multiply`.
    progress : bool
        A tqdm bar on stderr counting the pairwise products.
    command : str
        Stored as the ``command`` attribute (the CLI passes its command line).
    explain : callable, optional
        Called with a description of the chosen order and its cost before computing.
    threads : int, optional
        Compute threads and BLAS threads in all (default the job's CPUs, see
        :mod:`logmm.resources`).

    Raises
    ------
    MissingInputError, FormatError
        An input is missing or unreadable.
    InputError
        An input not 2-D or not numeric, adjacent shapes differ, ``+inf`` in an input.
    OutputExistsError
        The output exists and ``overwrite`` is false (nothing is computed).
    UsageError
        No inputs, unknown method, dtype or compression.
    """
    started = time.perf_counter()
    check_common_options(method, dtype, chunk_rows)
    if len(addresses) == 0:
        raise UsageError("a chain needs at least one matrix")
    with ExitStack() as stack:
        readers = open_inputs(stack, addresses)
        names = [f"M{i + 1} ({r.address})" for i, r in enumerate(readers)]
        for i, r in enumerate(readers, start=1):
            require_matrix(r, f"M{i}")
        dims = _chain_dims([r.shape for r in readers], names)
        out_dtype = _out_dtype([r.dtype for r in readers], dtype)
        out = check_output(out_address, overwrite=overwrite, compression=compression,
                           inputs=[r.address for r in readers])
        cost, split = _chain_table(dims)
        short = [f"M{i + 1}" for i in range(len(readers))]
        order = _paren(split, 0, len(readers) - 1, short)
        if explain is not None:
            explain(explain_chain(readers, dims, cost, order))
        if not command:
            command = (f"logmm.chain_files({[str(r.address) for r in readers]!r}, "
                       f"{str(out)!r}, method={method!r})")
        n_mats = len(readers)
        if (n_mats > 1 and split[0][n_mats - 1] == 0
                and readers[0].nbytes > sum(r.nbytes for r in readers[1:])):
            return _chain_streaming_first(readers, names, out, out_dtype, method, order, cost,
                                          overwrite=overwrite, compression=compression,
                                          chunk_rows=chunk_rows, memory=memory,
                                          block_rows=block_rows, progress=progress,
                                          command=command, started=started)
        stack.enter_context(OutputLock(out))
        matrices = [read_whole(r) for r in readers]
        bar = stack.enter_context(progress_steps(len(readers) - 1, progress, "chain"))
        result, report, cost, order = _log_chain_report(matrices, names, method, out_dtype,
                                                        step=lambda: bar.update(1))
        attrs = base_provenance(command, "chain", method, readers, out_dtype, result.shape)
        attrs.update(input_shapes=[list(r.shape) for r in readers], order=order,
                     cost=int(cost), **_report_attrs(report))
        write_whole(out, result, attrs, overwrite=overwrite, compression=compression,
                    chunk_rows=chunk_rows)
    return ChainResult(output=out, shape=result.shape, dtype=out_dtype, operation="chain",
                       method=method, seconds=time.perf_counter() - started, order=order,
                       cost=int(cost), products=len(readers) - 1, report=report, attrs=attrs)


def _chain_streaming_first(readers: Sequence[ArrayReader], names: Sequence[str],
                           out: ArrayAddress, out_dtype: np.dtype, method: str, order: str,
                           cost: int, *, overwrite: bool, compression: str | None,
                           chunk_rows: int | None, memory: int | None,
                           block_rows: int | None, progress: bool, command: str,
                           started: float) -> ChainResult:
    """``M1 @ (M2 … Mn)`` with M1 streamed by rows through the multiply engine."""
    from .multiply import multiply

    rest = [read_whole(r) for r in readers[1:]]
    R, rest_report, _, _ = _log_chain_report(rest, names[1:], method, out_dtype)
    scratch = temporary_path(out.path, "chain-rest").with_suffix(".npy")
    try:
        try:                           # inside the outer try: a full disk leaves no half file
            np.save(scratch, R)
        except OSError as exc:
            raise write_failure(out.path, exc) from exc
        attrs = base_provenance(command, "chain", method, readers, out_dtype,
                                (readers[0].shape[0], R.shape[1]))
        attrs.update(input_shapes=[list(r.shape) for r in readers], order=order,
                     cost=int(cost), streamed="M1")
        attrs.pop("b", None)
        try:
            result = multiply(readers[0].address, scratch, out, method=method,
                              dtype=out_dtype, overwrite=overwrite, compression=compression,
                              chunk_rows=chunk_rows, memory=memory, block_rows=block_rows,
                              progress=progress, command=command,
                              provenance=attrs | {"b": "M2 … Mn (in memory)"})
        except InputError as exc:   # the engine calls M1 "A": "M1 (m1.h5:/m, rows 0:512) …"
            message = str(exc)
            raise InputError("M1 " + message[2:] if message.startswith("A (") else
                             message) from None
    finally:
        scratch.unlink(missing_ok=True)
    report = result.report
    report += rest_report
    attrs.update(_report_attrs(report))
    return ChainResult(output=out, shape=result.shape, dtype=out_dtype, operation="chain",
                       method=method, seconds=time.perf_counter() - started, order=order,
                       cost=int(cost), products=len(readers) - 1, report=report, attrs=attrs)


def explain_chain(readers: Sequence[ArrayReader], dims: Sequence[int], cost: int,
                  order: str) -> str:
    """The ``--explain`` text of a chain: inputs, chosen order, its cost and the
    left-to-right and right-to-left costs."""
    lines = [f"chain of {len(readers)} matrices:"]
    names = [f"M{i + 1}" for i in range(len(readers))]
    shapes = [f"{dims[i]}×{dims[i + 1]}" for i in range(len(readers))]
    w1, w2 = max(map(len, names)), max(map(len, shapes))
    for name, shape, r in zip(names, shapes, readers, strict=True):
        lines.append(f"  {name:<{w1}}  {shape:<{w2}}  {r.address}")
    lines.append(f"cheapest order: {order}")
    lines.append(f"cost: {cost:,} multiply-adds (left to right: "
                 f"{_sequential_cost(dims):,}; right to left: "
                 f"{_sequential_cost(dims, reverse=True):,})")
    return "\n".join(lines)


def explain_power(n: int, steps: int) -> str:
    """The ``--explain`` text of a power: the squaring schedule and its cost."""
    if steps == 0:
        return f"P^0 of a {n}×{n} matrix is the log identity: no products"
    if steps == 1:
        return f"P^1 of a {n}×{n} matrix is P itself: no products"
    squarings, products = power_schedule(steps)
    return (f"{_schedule_summary(steps)} of {n}×{n} matrices (repeated squaring); cost "
            f"{(squarings + products) * n ** 3:,} multiply-adds (one product per step: "
            f"{(steps - 1) * n ** 3:,})")


def power_file(address: Address, steps: int, out_address: Address, *, method: str = "auto",
               dtype: np.dtype | type | str | None = None, overwrite: bool = False,
               compression: str | None = None, chunk_rows: int | None = None,
               progress: bool = False, command: str = "",
               explain: Callable[[str], None] | None = None) -> ChainResult:
    """Write ``log(exp(P) ^ steps)`` for a square log-valued matrix P in a file.

    P is read whole into memory (this increment does not stream); the result is written
    atomically with the attributes ``logmm_version``, ``command``, ``operation: power``,
    ``method``, ``inputs``, ``input_shapes``, ``steps``, ``order`` (the schedule, e.g.
    ``P^8 · P^4 · P``), ``cost``, ``dtype``, ``shape``, ``repaired_entries`` and the
    per-tier counts. Parameters and errors as :func:`chain_files` and :func:`log_power`.
    """
    started = time.perf_counter()
    check_common_options(method, dtype, chunk_rows)
    steps = _check_steps(steps)
    with ExitStack() as stack:
        (reader,) = open_inputs(stack, [address])
        name = f"P ({reader.address})"
        require_matrix(reader, "P")
        n, n2 = reader.shape
        if n != n2:
            raise InputError(f"{name} is {n}×{n2}; a matrix power needs a square matrix")
        out_dtype = _out_dtype([reader.dtype], dtype)
        out = check_output(out_address, overwrite=overwrite, compression=compression,
                           inputs=[reader.address])
        squarings, products = power_schedule(steps)
        if explain is not None:
            explain(explain_power(n, steps))
        if not command:
            command = (f"logmm.power_file({str(reader.address)!r}, {steps}, {str(out)!r}, "
                       f"method={method!r})")
        stack.enter_context(OutputLock(out))
        P = read_whole(reader)
        bar = stack.enter_context(progress_steps(squarings + products, progress, "power"))
        result, report = _log_power_report(P, steps, name, method, out_dtype,
                                           step=lambda: bar.update(1))
        order = _power_terms(steps)
        cost = (squarings + products) * n ** 3
        attrs = base_provenance(command, "power", method, [reader], out_dtype, result.shape)
        attrs.update(input_shapes=[list(reader.shape)], steps=steps, squarings=squarings,
                     products=products, order=order, cost=int(cost), **_report_attrs(report))
        write_whole(out, result, attrs, overwrite=overwrite, compression=compression,
                    chunk_rows=chunk_rows)
    return ChainResult(output=out, shape=result.shape, dtype=out_dtype, operation="power",
                       method=method, seconds=time.perf_counter() - started,
                       order=_schedule_summary(steps),
                       cost=int(cost), products=squarings + products, report=report,
                       attrs=attrs)


def _shape_str(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape) if len(shape) else "() (a scalar)"


def shapes_json(shapes: Sequence[Sequence[int]]) -> str:
    """``[[8, 4, 5], [8, 5, 3]]``: operand shapes as JSON text (ranks may differ, which
    HDF5 attributes cannot hold as an array)."""
    return json.dumps([[int(s) for s in shape] for shape in shapes])
