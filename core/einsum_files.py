"""The engine behind ``logmm einsum``: :func:`logmm.einsum.logeinsum` from files to a file.

By default every operand is read whole into memory and the result is written whole
(a gathering :class:`logmm.engine.Job` of one block): under a hidden partial name,
renamed into place when complete, holding the output's lock meanwhile.

Streaming over rows: with ``block_rows``, ``memory``, ``resume``, ``shard`` or the dask
scheduler (or ``stream=True``), the result is computed in row blocks of its first output
label (``i`` in ``'ij,jk->ik'``, ``b`` in ``'bij,bjk->bik'``) through :mod:`logmm.engine` like
``multiply``: operands holding that label as their first axis are read block by block,
the others once. The first output label must then be a free label that occurs at most
once in each operand. Every block is ``logeinsum`` of the operands' slices, so sharded,
resumed and dask runs equal the streamed run bit for bit.

The numerics are all :func:`logmm.einsum.logeinsum`'s; this module reads, validates,
casts and writes.

:mod:`logmm.einsum` (and with it opt_einsum) is imported only when an einsum runs, so
the command line starts without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import numpy as np

from .chain_files import ChainResult, open_inputs, read_whole, shapes_json
from .engine import Block, Job, OutputOptions, RunOptions, WholePlan, run
from .errors import InputError, UsageError
from .io.readers import ArrayReader
from .io.resume import input_fingerprint
from .io.writers import check_output, default_chunk_rows
from .plan import RowPlan, plan_rows
from .policy import check_at_least_one, check_choice, check_method, checked_cast, resolve_dtypes
from .resources import accepts_threads
from .shards import Shard
from .typing import Method, Semiring

Address = Any

__all__ = ["EINSUM_SEMIRINGS", "einsum_files", "prepare_einsum"]

#: the semirings of :func:`logmm.einsum.logeinsum` (``logmm.einsum.SEMIRINGS``; repeated
#: here so that the command line can list them without importing opt_einsum)
EINSUM_SEMIRINGS = ("log", "max", "real")


def _check_operand(reader: ArrayReader, index: int) -> None:
    if reader.dtype.kind not in "biuf":
        raise InputError(f"operand {index} ({reader.address}) has dtype {reader.dtype}; "
                         "einsum needs real numbers (float32 or float64; integers are "
                         "converted)")


@accepts_threads
def einsum_files(subscripts: str, addresses: Sequence[Address], out_address: Address, *,
                 semiring: Semiring = "log", method: Method = "auto",
                 dtype: np.dtype | type | str | None = None, overwrite: bool = False,
                 compression: str | None = None, chunk_rows: int | None = None,
                 progress: bool = False, command: str = "",
                 explain: Callable[[str], None] | None = None, block_rows: int | None = None,
                 memory: int | None = None, resume: bool = False,
                 shard: Shard | str | None = None, scheduler: Any = "local",
                 dask_address: str | None = None,
                 zarr_format: int = 3) -> ChainResult:
    """Write ``logeinsum(subscripts, *operands, semiring=…)`` for operands in files.

    Parameters
    ----------
    subscripts : str
        numpy einsum subscripts: ``"bij,bjk->bik"``, implicit output (``"ij,jk"``),
        ``...`` ellipsis.
    addresses : sequence of addresses
        The operands (``x.npy``, ``x.h5:/name``, ``x.zarr:name``), any number of
        dimensions; read whole into memory.
    out_address : address
        The output; dataset ``data`` unless named. A scalar result (e.g. ``"ii->"``)
        needs a ``.npy`` or ``.h5`` output.
    semiring : {"log", "max", "real"}
        ``log``: log-sum-exp of sums (inputs are log-values); ``max``: max of sums;
        ``real``: ordinary einsum.
    method : {"auto", "fast", "exact"}
        Kernel method of the log semiring's pairwise products (see
        :func:`logmm.logmatmulexp`).
    dtype : float32 or float64, optional
        Operands are cast to it (a narrowing that would overflow is an error); default
        the result type :func:`logeinsum` gives the inputs.
    overwrite, compression, chunk_rows, progress, command
        As :func:`logmm.chain_files.chain_files`.
    explain : callable, optional
        Called with opt_einsum's description of the contraction order and its cost
        (:func:`logmm.einsum.contraction_info`) before computing.
    block_rows, memory, resume, shard, scheduler, dask_address
        Any of them streams the result by row blocks of its first output label (see the
        module docstring); as for :func:`logmm.multiply.multiply`.
    threads : int, optional
        Compute threads and BLAS threads in all (default the job's CPUs, see
        :mod:`logmm.resources`).
    zarr_format : {3, 2}
        Zarr format of a ``.zarr`` output (2 for readers that only know Zarr v2; refused
        for a ``shard`` run, whose shared store is format 3).

    Returns
    -------
    ChainResult
        ``operation`` is ``einsum``, ``order`` the subscripts; ``report`` is None.

    The output carries ``logmm_version``, ``command``, ``operation: einsum``,
    ``subscripts``, ``semiring``, ``method``, ``inputs``, ``input_shapes`` (JSON text,
    since ranks may differ), ``dtype`` and ``shape``.

    Raises
    ------
    UsageError
        Bad subscripts, an operand count that does not match them, unknown semiring,
        method, dtype or compression (exit code 2).
    InputError
        Dimensions that do not match, ``+inf`` in a log-semiring operand, a non-numeric
        operand (exit code 1).
    MissingInputError, FormatError, OutputExistsError
        As :func:`logmm.chain_files.chain_files`.
    """
    options = RunOptions.checked(memory=memory, block_rows=block_rows, resume=resume,
                                 shard=shard, scheduler=scheduler, dask_address=dask_address,
                                 progress=progress, command=command)
    return run(prepare_einsum(
        subscripts, addresses, out_address, semiring=semiring, method=method, dtype=dtype,
        output=OutputOptions(overwrite=overwrite, compression=compression,
                             chunk_rows=chunk_rows,
                             zarr_format=zarr_format),
        options=options, explain=explain))


def prepare_einsum(subscripts: str, addresses: Sequence[Address], out_address: Address, *,
                   semiring: Semiring = "log", method: Method = "auto",
                   dtype: np.dtype | type | str | None = None,
                   output: OutputOptions | None = None, options: RunOptions | None = None,
                   explain: Callable[[str], None] | None = None,
                   stream: bool | None = None) -> Job[ChainResult]:
    """The :class:`logmm.engine.Job` of :func:`einsum_files` (same parameters, grouped).

    ``stream``: True streams by rows (``logmm plan`` asks it), False reads whole; None
    (default) streams when a memory budget, block rows, resume, a shard or the dask
    scheduler is given.
    """
    output, options = output or OutputOptions(), options or RunOptions()
    check_choice("semiring", semiring, EINSUM_SEMIRINGS)
    if not isinstance(subscripts, str) or not subscripts.strip():
        raise UsageError("einsum needs subscripts, e.g. 'ij,jk->ik'")
    check_method(method)
    check_at_least_one(chunk_rows=output.chunk_rows, block_rows=options.block_rows,
                       memory=options.memory)
    out_dtype = resolve_dtypes([], dtype) if dtype is not None else None
    if len(addresses) == 0:
        raise UsageError("einsum needs at least one operand")
    if stream is None:
        stream = (options.block_rows is not None or options.memory is not None
                  or options.resume or options.shard is not None
                  or options.scheduler != "local" or options.dask_address is not None)
    from .einsum import contraction_info

    stack = ExitStack()
    try:
        readers = open_inputs(stack, addresses)
        for i, r in enumerate(readers, start=1):
            _check_operand(r, i)
        out = check_output(out_address, overwrite=output.overwrite,
                           compression=output.compression,
                           inputs=[r.address for r in readers], resume=options.resume)
        if not options.command:
            options = replace(options, command=(
                f"logmm.einsum_files({subscripts!r}, "
                f"{[str(r.address) for r in readers]!r}, {str(out)!r}, "
                f"semiring={semiring!r}, method={method!r})"))
        if stream:
            return _streamed_job(stack, subscripts, readers, out, semiring=semiring,
                                 method=method, out_dtype=out_dtype, output=output,
                                 options=options, explain=explain)
    except BaseException:
        stack.close()
        raise

    def load(_: Block) -> list[np.ndarray]:
        operands = [read_whole(r) for r in readers]
        if out_dtype is not None:
            operands = [checked_cast(x, out_dtype, f"operand {i} ({r.address})")
                        for i, (x, r) in enumerate(zip(operands, readers, strict=True), 1)]
        return operands

    def compute(block: Block, operands: list[np.ndarray], out_: None,
                advance: Callable[[int], Any]) -> np.ndarray:
        if explain is not None:
            explain(contraction_info(subscripts, *operands).rstrip("\n"))
        result = _named_logeinsum(subscripts, operands, readers, semiring, method)
        advance(1)
        return result if out_dtype is None else result.astype(out_dtype, copy=False)

    def describe(header: dict[str, Any], result: np.ndarray, _: Any) -> dict[str, Any]:
        return {**header, "operation": "einsum", "method": method,
                "dtype": str(result.dtype), "shape": list(result.shape),
                "subscripts": subscripts, "semiring": semiring,
                "input_shapes": shapes_json([r.shape for r in readers])}

    return Job(operation="einsum", inputs=[r.address for r in readers], output=out,
               shape=None, dtype=None, output_options=output, options=options,
               fingerprint=None, make_plan=WholePlan.make, load=load, compute=compute,
               gather=lambda values: values[0], summarize=lambda values: values[0],
               describe=describe, progress_unit="product", progress_total=1,
               result=lambda base, _: ChainResult(**base, operation="einsum", method=method,
                                                  order=subscripts),
               stack=stack)


def _named_logeinsum(subscripts: str, operands: Sequence[np.ndarray],
                     readers: Sequence[ArrayReader], semiring: Semiring, method: Method, *,
                     rows: tuple[int, int] | None = None,
                     split: Sequence[bool] = ()) -> np.ndarray:
    """``logeinsum`` whose errors name the operands' files ("operand 2 contains +inf" →
    "operand 2 (b.h5:/x, rows 0:500) contains +inf"); ``rows`` is the block being
    streamed, shown for the operands it splits (``split[i]``)."""
    from .einsum import logeinsum

    try:
        return np.asarray(logeinsum(subscripts, *operands, semiring=semiring, method=method))
    except InputError as exc:
        def name(m: re.Match[str]) -> str:
            i = int(m[1]) - 1
            if not 0 <= i < len(readers):
                return m[0]
            where = str(readers[i].address)
            if rows is not None and i < len(split) and split[i]:
                where += f", rows {rows[0]}:{rows[1]}"
            return f"{m[0]} ({where})"
        raise InputError(re.sub(r"\boperand (\d+)\b", name, str(exc))) from None


def _row_label(subscripts: str, readers: Sequence[ArrayReader]) -> tuple[list[str], str, int]:
    """``(terms, output, n)``: the parsed subscripts and the size of the first output label,
    which streaming splits; a :class:`UsageError` when it cannot be split."""
    from .einsum import parse_subscripts as _parse

    stand_ins = tuple(np.broadcast_to(np.zeros((), r.dtype), r.shape) for r in readers)
    terms, output = _parse(subscripts, stand_ins)
    if not output or any(term.count(output[0]) > 1 for term in terms):
        raise UsageError(f"einsum {subscripts!r} cannot stream by rows: its output's first "
                         "label must be a free label occurring at most once per operand "
                         "(drop --block-rows/--memory/--resume/--shard/--scheduler)")
    label = output[0]
    sizes = [r.shape[t.index(label)] for t, r in zip(terms, readers, strict=True)
             if label in t]
    return terms, output, max(sizes)


def _streamed_job(stack: ExitStack, subscripts: str, readers: list[ArrayReader], out: Any,
                  *, semiring: Semiring, method: Method, out_dtype: np.dtype | None,
                  output: OutputOptions, options: RunOptions,
                  explain: Callable[[str], None] | None) -> Job[ChainResult]:
    """The einsum by row blocks of its first output label, through :mod:`logmm.engine`."""
    from .einsum import contraction_info, log_result_dtype

    terms, output_labels, n = _row_label(subscripts, readers)
    label = output_labels[0]
    # per operand: the axis holding the row label when it is split (size n), else None
    axes = [t.index(label) if label in t and r.shape[t.index(label)] == n else None
            for t, r in zip(terms, readers, strict=True)]
    # read once: operands without the label, or with it on an axis other than the first
    resident = {i: read_whole(r) for i, (r, ax) in enumerate(zip(readers, axes, strict=True))
                if ax != 0}
    if out_dtype is not None:
        resident = {i: checked_cast(x, out_dtype, f"operand {i + 1} ({readers[i].address})")
                    for i, x in resident.items()}
    kinds = [r.dtype if out_dtype is None else out_dtype for r in readers]
    result_dtype = out_dtype or (np.result_type(*kinds) if semiring == "real" else
                                 log_result_dtype(kinds))
    sizes: dict[str, int] = {}
    for t, r in zip(terms, readers, strict=True):
        for c, size in zip(t, r.shape, strict=True):
            sizes[c] = max(sizes.get(c, 1), size)
    shape = tuple(sizes[c] for c in output_labels)
    if explain is not None:
        explain(contraction_info(subscripts, *[r.shape for r in readers]).rstrip("\n"))
    row_of = lambda r, ax: int(np.prod(r.shape, dtype=np.int64)) // max(1, r.shape[ax])  # noqa: E731
    sliced_row = sum(row_of(r, ax) * 8 for r, ax in zip(readers, axes, strict=True)
                     if ax is not None)
    out_row = int(np.prod(shape[1:], dtype=np.int64)) * result_dtype.itemsize
    chunk_rows = output.chunk_rows

    def make_plan(options: RunOptions) -> RowPlan:
        return plan_rows(n, row_bytes=4 * sliced_row + 4 * out_row,
                         resident=2 * sum(x.nbytes for x in resident.values()),
                         memory=options.memory, block_rows=options.block_rows,
                         chunk_rows=chunk_rows,
                         default_chunk_rows=default_chunk_rows(n, out_row),
                         min_blocks=options.min_blocks)

    fingerprint = {
        "operation": "einsum", "subscripts": subscripts, "semiring": semiring,
        "method": method, "dtype": str(result_dtype), "output": str(out),
        "compression": output.compression,
        "operands": [input_fingerprint(r.address, r.shape, r.dtype) for r in readers],
    }

    def load(block: Block) -> list[np.ndarray]:
        _, r0, r1 = block
        parts = []
        for i, (r, ax) in enumerate(zip(readers, axes, strict=True)):
            if ax == 0:
                part = np.asarray(r.read_rows(r0, r1))
                if out_dtype is not None:
                    part = checked_cast(part, out_dtype, f"operand {i + 1} ({r.address})")
            elif ax is None:
                part = resident[i]
            else:
                part = resident[i][(slice(None),) * ax + (slice(r0, r1),)]
            parts.append(part)
        return parts

    def compute(block: Block, parts: list[np.ndarray], out_: np.ndarray,
                advance: Any = None) -> None:
        _, r0, r1 = block
        out_[...] = _named_logeinsum(subscripts, parts, readers, semiring, method,
                                     rows=(r0, r1), split=[ax == 0 for ax in axes])

    def describe(header: dict[str, Any], _: Any, plan: RowPlan) -> dict[str, Any]:
        return {**header, "operation": "einsum", "method": method,
                "dtype": str(result_dtype), "shape": list(shape),
                "subscripts": subscripts, "semiring": semiring,
                "input_shapes": shapes_json([r.shape for r in readers]),
                "block_rows": plan.block_rows}

    return Job(operation="einsum", inputs=[r.address for r in readers], output=out,
               shape=shape, dtype=result_dtype, output_options=output, options=options,
               fingerprint=fingerprint, make_plan=make_plan,
               load_plan=lambda d: RowPlan(**d), load=load, compute=compute,
               describe=describe,
               result=lambda base, _: ChainResult(**base, operation="einsum", method=method,
                                                  order=subscripts),
               stack=stack)
