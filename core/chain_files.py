"""The engines behind ``logmm chain`` and ``logmm power``: :mod:`logmm.chain` from files.

Each is prepared into a :class:`logmm.engine.Job` that reads its inputs whole, computes
the chain (in the cheapest order) or the power (by repeated squaring) in memory, and is
written whole by the runner (a gathering job with one block): under a hidden partial
name, renamed into place when complete, holding the output's lock meanwhile, with
provenance attributes. A chain whose cheapest order is ``(M1 (M2 … Mn))`` with M1 the
large factor streams M1's rows through the :func:`logmm.multiply.multiply` engine instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .chain import (
    chain_dims,
    chain_table,
    check_steps,
    log_chain_report,
    log_power_report,
    parenthesize,
    power_schedule,
    power_terms,
    schedule_summary,
    sequential_cost,
)
from .engine import Job, OutputOptions, RunOptions, RunResult, WholePlan, run
from .errors import InputError, UsageError
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.writers import check_output, temporary_path, write_failure
from .logmatmul import ProductReport
from .policy import check_at_least_one, check_method, resolve_dtypes
from .resources import accepts_threads
from .typing import Method

__all__ = ["ChainResult", "chain_files", "explain_chain", "explain_power", "open_inputs",
           "power_file", "prepare_chain", "prepare_power", "read_whole", "report_attrs",
           "shapes_json"]

Address = str | Path | ArrayAddress


@dataclass(kw_only=True)
class ChainResult(RunResult):
    """What :func:`chain_files`, :func:`power_file` or ``einsum_files`` wrote.

    The fields of :class:`logmm.engine.RunResult`, and the following.

    Attributes
    ----------
    operation : str
        ``chain``, ``power`` or ``einsum``.
    method : str
    order : str
        The chain's parenthesisation (``(M1 (M2 M3))``), the power's schedule
        (``P^13 = P^8 · P^4 · P``), or the einsum's subscripts.
    cost : int
        Multiply-adds of the pairwise products (chain and power; 0 for einsum).
    products : int
        Pairwise log-space products computed (chain and power).
    report : ProductReport or None
        Entries per kernel tier, summed over the products (None for einsum).
    """

    operation: str
    method: Method
    order: str = ""
    cost: int = 0
    products: int = 0
    report: ProductReport | None = None


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


def report_attrs(report: ProductReport) -> dict[str, int]:
    """A kernel report as output attributes: ``entries``, ``repaired_entries`` and one
    ``<tier>_entries`` per tier."""
    return {"entries": int(report.entries), "repaired_entries": int(report.repaired),
            **{f"{k}_entries": int(v) for k, v in report.as_dict().items()
               if k not in ("entries", "repaired")}}


def shapes_json(shapes: Sequence[Sequence[int]]) -> str:
    """``[[8, 4, 5], [8, 5, 3]]``: operand shapes as JSON text (ranks may differ, which
    HDF5 attributes cannot hold as an array)."""
    return json.dumps([[int(s) for s in shape] for shape in shapes])


def _whole_header(header: dict[str, Any], operation: str, method: Method, dtype: np.dtype,
                  shape: tuple[int, ...]) -> dict[str, Any]:
    """The attributes every whole-array engine stores after the common header."""
    return {**header, "operation": operation, "method": method, "dtype": str(dtype),
            "shape": list(shape)}


def _options(method: Method, dtype: Any, output: OutputOptions) -> None:
    """Validate options before any file is opened (:class:`UsageError`)."""
    check_method(method)
    check_at_least_one(chunk_rows=output.chunk_rows)
    if dtype is not None:
        resolve_dtypes([], dtype)


# ----------------------------------------------------------------------------- chain


@accepts_threads
def chain_files(addresses: Sequence[Address], out_address: Address, *, method: Method = "auto",
                dtype: np.dtype | type | str | None = None, overwrite: bool = False,
                compression: str | None = None, chunk_rows: int | None = None,
                memory: int | None = None, block_rows: int | None = None,
                progress: bool = False, command: str = "",
                explain: Callable[[str], None] | None = None,
                zarr_format: int = 3) -> ChainResult:
    """Write ``log(exp(M1) @ … @ exp(Mn))`` for matrices in files, in the cheapest order.

    When the cheapest order is ``(M1 (M2 … Mn))`` and M1 is the large one (more bytes
    than the rest together), ``R = M2 … Mn`` is computed in memory and M1's rows are
    streamed against it by the :func:`logmm.multiply.multiply` engine (``memory``,
    ``block_rows``, read-ahead, progress). Otherwise every input is read whole into
    memory. Either way the result is written under a hidden partial name and renamed
    into place when complete, with the attributes ``logmm_version``, ``command``,
    ``operation: chain``, ``method``, ``inputs``, ``input_shapes``, ``order`` (e.g.
    ``(M1 (M2 M3))``), ``cost`` (multiply-adds), ``dtype``, ``shape`` and the kernel's
    ``repaired_entries`` and per-tier counts.

    Parameters
    ----------
    addresses : sequence of addresses
        The matrices ``M1 … Mn`` (``x.npy``, ``x.h5:/name``, ``x.zarr:name``), 2-D.
    out_address : address
        The output; dataset ``data`` unless named.
    method, dtype
        As :func:`logmm.chain.log_chain`.
    overwrite, compression, chunk_rows
        As :func:`logmm.multiply.multiply`.
    progress : bool
        A tqdm bar on stderr counting the pairwise products.
    command : str
        Stored as the ``command`` attribute (the CLI passes its command line).
    explain : callable, optional
        Called with a description of the chosen order and its cost before computing.
    zarr_format : {3, 2}
        Format of a new Zarr output (2: readable by zarr-python 2.x).
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
    output = OutputOptions(overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
                           zarr_format=zarr_format)
    options = RunOptions(memory=memory, block_rows=block_rows, progress=progress,
                         command=command)
    job = prepare_chain(addresses, out_address, method=method, dtype=dtype, output=output,
                        options=options, explain=explain)
    if isinstance(job, Job):
        return run(job)
    return job


def prepare_chain(addresses: Sequence[Address], out_address: Address, *,
                  method: Method = "auto", dtype: np.dtype | type | str | None = None,
                  output: OutputOptions | None = None, options: RunOptions | None = None,
                  explain: Callable[[str], None] | None = None) -> Job[ChainResult] | ChainResult:
    """The :class:`logmm.engine.Job` of :func:`chain_files`; a chain streaming its first
    factor is run at once through the multiply engine (its result is returned)."""
    started = time.perf_counter()
    output, options = output or OutputOptions(), options or RunOptions()
    _options(method, dtype, output)
    if len(addresses) == 0:
        raise UsageError("a chain needs at least one matrix")
    stack = ExitStack()
    try:
        readers = open_inputs(stack, addresses)
        names = [f"M{i + 1} ({r.address})" for i, r in enumerate(readers)]
        for i, r in enumerate(readers, start=1):
            require_matrix(r, f"M{i}")
        dims = chain_dims([r.shape for r in readers], names)
        out_dtype = resolve_dtypes([r.dtype for r in readers], dtype)
        out = check_output(out_address, overwrite=output.overwrite,
                           compression=output.compression,
                           inputs=[r.address for r in readers])
    except BaseException:
        stack.close()
        raise
    cost, split = chain_table(dims)
    order = parenthesize(split, 0, len(readers) - 1, [f"M{i + 1}" for i in range(len(readers))])
    if explain is not None:
        explain(explain_chain(readers, dims, cost, order))
    if not options.command:
        options = replace(options, command=(
            f"logmm.chain_files({[str(r.address) for r in readers]!r}, {str(out)!r}, "
            f"method={method!r})"))
    n_mats = len(readers)
    if (n_mats > 1 and split[0][n_mats - 1] == 0
            and readers[0].nbytes > sum(r.nbytes for r in readers[1:])):
        with stack:
            return _chain_streaming_first(readers, names, out, out_dtype, method, order, cost,
                                          output, options, started)

    def compute(block: Any, matrices: list[np.ndarray], out_: None,
                advance: Callable[[int], Any]) -> tuple[np.ndarray, ProductReport]:
        result, report, _, _ = log_chain_report(matrices, names, method, out_dtype,
                                                step=lambda: advance(1))
        return result, report

    def describe(header: dict[str, Any], report: ProductReport, _: Any) -> dict[str, Any]:
        return {**_whole_header(header, "chain", method, out_dtype, (dims[0], dims[-1])),
                "input_shapes": [list(r.shape) for r in readers], "order": order,
                "cost": int(cost), **report_attrs(report)}

    return Job(operation="chain", inputs=[r.address for r in readers], output=out,
               shape=None, dtype=None, output_options=output, options=options,
               fingerprint=None, make_plan=WholePlan.make,
               load=lambda _: [read_whole(r) for r in readers], compute=compute,
               gather=lambda values: values[0][0], summarize=lambda values: values[0][1],
               describe=describe, progress_unit="product", progress_total=n_mats - 1,
               result=lambda base, report: ChainResult(
                   **base, operation="chain", method=method, order=order, cost=int(cost),
                   products=n_mats - 1, report=report),
               stack=stack)


def _chain_streaming_first(readers: Sequence[ArrayReader], names: Sequence[str],
                           out: ArrayAddress, out_dtype: np.dtype, method: Method, order: str,
                           cost: int, output: OutputOptions, options: RunOptions,
                           started: float) -> ChainResult:
    """``M1 @ (M2 … Mn)`` with M1 streamed by rows through the multiply engine."""
    from .multiply import prepare_multiply
    from .provenance import run_provenance

    rest = [read_whole(r) for r in readers[1:]]
    R, rest_report, _, _ = log_chain_report(rest, names[1:], method, out_dtype)
    scratch = temporary_path(out.path, "chain-rest").with_suffix(".npy")
    try:
        try:                           # inside the outer try: a full disk leaves no half file
            np.save(scratch, R)
        except OSError as exc:
            raise write_failure(out.path, exc) from exc
        attrs = _whole_header(run_provenance(options.command, [r.address for r in readers]),
                              "chain", method, out_dtype, (readers[0].shape[0], R.shape[1]))
        attrs.update(input_shapes=[list(r.shape) for r in readers], order=order,
                     cost=int(cost), streamed="M1")
        try:
            result = run(prepare_multiply(
                readers[0].address, scratch, out, method=method, dtype=out_dtype,
                output=output, options=RunOptions(
                    memory=options.memory, block_rows=options.block_rows,
                    progress=options.progress, command=options.command),
                provenance=attrs | {"b": "M2 … Mn (in memory)"}))
        except InputError as exc:   # the engine calls M1 "A": "M1 (m1.h5:/m, rows 0:512) …"
            message = str(exc)
            raise InputError("M1 " + message[2:] if message.startswith("A (") else
                             message) from None
    finally:
        scratch.unlink(missing_ok=True)
    report = result.report
    report += rest_report
    attrs.update(report_attrs(report))
    return ChainResult(output=out, shape=result.shape, dtype=out_dtype, operation="chain",
                       method=method, seconds=time.perf_counter() - started,
                       plan=result.plan, order=order, cost=int(cost),
                       products=len(readers) - 1, report=report, attrs=attrs)


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
                 f"{sequential_cost(dims):,}; right to left: "
                 f"{sequential_cost(dims, reverse=True):,})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- power


def explain_power(n: int, steps: int) -> str:
    """The ``--explain`` text of a power: the squaring schedule and its cost."""
    if steps == 0:
        return f"P^0 of a {n}×{n} matrix is the log identity: no products"
    if steps == 1:
        return f"P^1 of a {n}×{n} matrix is P itself: no products"
    squarings, products = power_schedule(steps)
    return (f"{schedule_summary(steps)} of {n}×{n} matrices (repeated squaring); cost "
            f"{(squarings + products) * n ** 3:,} multiply-adds (one product per step: "
            f"{(steps - 1) * n ** 3:,})")


@accepts_threads
def power_file(address: Address, steps: int, out_address: Address, *, method: Method = "auto",
               dtype: np.dtype | type | str | None = None, overwrite: bool = False,
               compression: str | None = None, chunk_rows: int | None = None,
               progress: bool = False, command: str = "",
               explain: Callable[[str], None] | None = None,
               zarr_format: int = 3) -> ChainResult:
    """Write ``log(exp(P) ^ steps)`` for a square log-valued matrix P in a file.

    P is read whole into memory; the result is written atomically with the attributes
    ``logmm_version``, ``command``, ``operation: power``, ``method``, ``inputs``,
    ``input_shapes``, ``steps``, ``order`` (the schedule, e.g. ``P^8 · P^4 · P``),
    ``cost``, ``dtype``, ``shape``, ``repaired_entries`` and the per-tier counts.
    Parameters and errors as :func:`chain_files` and :func:`logmm.chain.log_power`.
    """
    output = OutputOptions(overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
                           zarr_format=zarr_format)
    return run(prepare_power(address, steps, out_address, method=method,
                             dtype=dtype, output=output,
                             options=RunOptions(progress=progress, command=command),
                             explain=explain))


def prepare_power(address: Address, steps: int, out_address: Address, *,
                  method: Method = "auto", dtype: np.dtype | type | str | None = None,
                  output: OutputOptions | None = None, options: RunOptions | None = None,
                  explain: Callable[[str], None] | None = None) -> Job[ChainResult]:
    """The :class:`logmm.engine.Job` of :func:`power_file`."""
    output, options = output or OutputOptions(), options or RunOptions()
    _options(method, dtype, output)
    steps = check_steps(steps)
    stack = ExitStack()
    try:
        (reader,) = open_inputs(stack, [address])
        name = f"P ({reader.address})"
        require_matrix(reader, "P")
        n, n2 = reader.shape
        if n != n2:
            raise InputError(f"{name} is {n}×{n2}; a matrix power needs a square matrix")
        out_dtype = resolve_dtypes([reader.dtype], dtype)
        out = check_output(out_address, overwrite=output.overwrite,
                           compression=output.compression, inputs=[reader.address])
    except BaseException:
        stack.close()
        raise
    squarings, products = power_schedule(steps)
    if explain is not None:
        explain(explain_power(n, steps))
    if not options.command:
        options = replace(options, command=(
            f"logmm.power_file({str(reader.address)!r}, {steps}, {str(out)!r}, "
            f"method={method!r})"))
    order, cost = power_terms(steps), (squarings + products) * n ** 3

    def compute(block: Any, P: np.ndarray, out_: None,
                advance: Callable[[int], Any]) -> tuple[np.ndarray, ProductReport]:
        return log_power_report(P, steps, name, method, out_dtype, step=lambda: advance(1))

    def describe(header: dict[str, Any], report: ProductReport, _: Any) -> dict[str, Any]:
        return {**_whole_header(header, "power", method, out_dtype, (n, n)),
                "input_shapes": [list(reader.shape)], "steps": steps,
                "squarings": squarings, "products": products, "order": order,
                "cost": int(cost), **report_attrs(report)}

    return Job(operation="power", inputs=[reader.address], output=out, shape=None,
               dtype=None, output_options=output, options=options, fingerprint=None,
               make_plan=WholePlan.make, load=lambda _: read_whole(reader), compute=compute,
               gather=lambda values: values[0][0], summarize=lambda values: values[0][1],
               describe=describe, progress_unit="product",
               progress_total=squarings + products,
               result=lambda base, report: ChainResult(
                   **base, operation="power", method=method,
                   order=schedule_summary(steps), cost=int(cost),
                   products=squarings + products, report=report),
               stack=stack)
