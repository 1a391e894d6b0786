"""The engine behind ``logmm convert``: copy an array between npy, HDF5 and Zarr, by row blocks.

The input is read in blocks of rows (first axis; any number of dimensions), sized from a
memory budget and rounded to whole output storage chunks, and each block goes straight
to one of the atomic writers of :mod:`logmm.io.writers`, so the output appears under its
name only when complete and the input never has to fit in memory. Values are copied bit
for bit unless ``dtype`` asks for a cast. The input's attributes (its provenance, when
logmm wrote it) are carried over, with ``converted_from``, ``logmm_version`` and
``command`` describing the conversion; the command that computed the data stays in
``source_command``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Job, OutputOptions, RunOptions, RunResult, run
from .errors import InputError, UsageError
from .inspect import inspect_file
from .io.addresses import ArrayAddress
from .io.readers import open_array
from .io.writers import (
    check_output,
    container_output,
    default_chunk_rows,
    output_address,
    same_path,
)
from .plan import RowPlan, plan_copy_rows
from .policy import check_at_least_one, check_choice

__all__ = ["ConvertResult", "convert", "prepare_convert"]

_DTYPES = ("float32", "float64")
# attributes that describe the file rather than the data: rewritten, not copied
#: attributes of the source a copy does not keep: its own say otherwise, and a copy is
#: not the output of the source's run (its fingerprint would pass a --resume rerun)
_REWRITTEN = ("complete", "logmm_version", "command", "converted_from", "fingerprint")


@dataclass(kw_only=True)
class ConvertResult(RunResult):
    """What :func:`convert` wrote: the fields of :class:`logmm.engine.RunResult`, and these.

    Attributes
    ----------
    source : ArrayAddress
        The input, dataset part resolved.
    compression : str or None
        As requested (None: the output format's default).
    chunk_rows : int
        Rows per output storage chunk.
    """

    source: ArrayAddress
    compression: str | None
    chunk_rows: int


def convert(in_address: str | Path | ArrayAddress, out_address: str | Path | ArrayAddress, *,
            dtype: np.dtype | type | str | None = None, overwrite: bool = False,
            compression: str | None = None, chunk_rows: int | None = None,
            memory: int | None = None, block_rows: int | None = None,
            progress: bool = False, command: str = "", zarr_format: int = 3) -> ConvertResult:
    """Copy the array at ``in_address`` to ``out_address`` (format from its extension).

    Parameters
    ----------
    in_address : str, Path or ArrayAddress
        ``x.npy``, ``x.h5:/name``, ``x.zarr:name``: a numeric array (bool, integer, float
        or complex) with at least one dimension; rows are its first axis.
    out_address : str, Path or ArrayAddress
        ``OUT.npy``, ``OUT.h5[:/name]``, ``OUT.zarr[:name]`` (dataset ``data`` by default).
        Written under a temporary name and renamed into place when complete.
    dtype : {"float32", "float64"}, optional
        Cast to this dtype; default the input's (in native byte order), copied bit for bit.
    overwrite : bool
        Replace an existing output; otherwise :class:`OutputExistsError`, nothing touched.
    compression : {"gzip", "lzf", "zstd", "blosc", "none"}, optional
        Output compression, see :mod:`logmm.io.compression`.
    chunk_rows : int, optional
        Rows per output storage chunk; default the input's chunk rows when its chunks
        span whole rows, otherwise about 4 MiB per chunk.
    memory : int, optional
        Working-memory budget in bytes (default :func:`logmm.plan.default_memory`, a
        quarter of available memory, at most 4 GiB); ignored when ``block_rows`` is set.
    block_rows : int, optional
        Rows per copied block (default from ``memory``, whole output chunks).
    progress : bool
        Show a tqdm bar (rows) on stderr.
    command : str
        Recorded in the output's ``command`` attribute (the CLI passes its command line).
    zarr_format : {3, 2}
        Format of a new Zarr output: 3 (default), or 2 for readers on zarr-python 2.x.

    Returns
    -------
    ConvertResult

    Raises
    ------
    MissingInputError, FormatError
        The input file or dataset is missing or unreadable.
    InputError
        A scalar or non-numeric input, an unfinished logmm output as input, or values a
        float32 cast would turn into infinities.
    OutputExistsError
        The output exists and ``overwrite`` is false.
    UsageError
        Input and output in the same file, unknown dtype or compression, sizes below 1.
    LogmmError
        HDF5 zstd/blosc without the optional ``hdf5plugin`` package.

    Examples
    --------
    >>> convert("c.h5", "c.zarr", compression="zstd")  # doctest: +SKIP
    ConvertResult(source=..., output=..., shape=(200, 32), ...)
    """
    return run(prepare_convert(
        in_address, out_address, dtype=dtype,
        output=OutputOptions(overwrite=overwrite, compression=compression,
                             chunk_rows=chunk_rows, zarr_format=zarr_format),
        options=RunOptions(memory=memory, block_rows=block_rows, progress=progress,
                           command=command)))


def prepare_convert(in_address: str | Path | ArrayAddress,
                    out_address: str | Path | ArrayAddress, *,
                    dtype: np.dtype | type | str | None = None,
                    output: OutputOptions | None = None,
                    options: RunOptions | None = None) -> Job[ConvertResult]:
    """The :class:`logmm.engine.Job` of :func:`convert` (same parameters, grouped): a row
    job that keeps no resume record."""
    output, options = output or OutputOptions(), options or RunOptions()
    if dtype is not None:
        check_choice("dtype", str(np.dtype(dtype)), _DTYPES)
    check_at_least_one(block_rows=options.block_rows, chunk_rows=output.chunk_rows,
                       memory=options.memory)
    stack = ExitStack()
    try:
        reader = stack.enter_context(open_array(in_address))
        source = reader.address
        if reader.ndim == 0:
            raise InputError(f"{source} is a scalar; convert copies arrays by rows")
        if reader.dtype.kind not in "biufc":
            raise InputError(f"{source} has dtype {reader.dtype}; convert copies numeric "
                             "arrays (bool, integer, float, complex)")
        if dtype is not None and reader.dtype.kind == "c":
            raise InputError(f"{source} is complex ({reader.dtype}); it cannot be cast "
                             f"to {np.dtype(dtype)}")
        target = output_address(out_address)
        if same_path(source.path, target.path) and (
                source.dataset == target.dataset or not container_output(target)):
            raise UsageError(f"{source} is both input and output; write to another "
                             + ("dataset" if source.dataset == target.dataset else "file"))
        out = check_output(out_address, overwrite=output.overwrite,
                           compression=output.compression, inputs=[source])
        meta = inspect_file(source).arrays[0]
        if meta.status == "incomplete":
            raise InputError(f"{source} is an unfinished logmm output (no complete: true "
                             "attribute); finish the run with --resume or rerun it")
    except BaseException:
        stack.close()
        raise
    out_dtype = np.dtype(dtype) if dtype is not None else reader.dtype.newbyteorder("=")
    if output.chunk_rows is None and reader.chunks and \
            tuple(reader.chunks[1:]) == reader.shape[1:]:
        output = replace(output, chunk_rows=reader.chunk_rows)
    if not options.command:
        options = replace(options, command=_python_call(source, out, dtype,
                                                        output.compression))
    n = reader.shape[0]
    row_items = int(np.prod(reader.shape[1:], dtype=np.int64))
    chunk_rows = output.chunk_rows or default_chunk_rows(n, row_items * out_dtype.itemsize)

    def make_plan(options: RunOptions) -> RowPlan:
        block_rows = options.block_rows or plan_copy_rows(
            n, row_items * reader.dtype.itemsize, row_items * out_dtype.itemsize,
            memory=options.memory, align=chunk_rows)
        return RowPlan(n=n, block_rows=block_rows, chunk_rows=chunk_rows,
                       memory=options.memory or 0, estimate=0)

    def compute(block: Any, data: np.ndarray, out_: np.ndarray, advance: Any = None) -> None:
        out_[...] = _cast(data, out_dtype, source, block[1])

    return Job(operation="convert", inputs=[source], output=out, shape=tuple(reader.shape),
               dtype=out_dtype, output_options=replace(output, chunk_rows=chunk_rows),
               options=options, fingerprint=None, make_plan=make_plan,
               load=lambda block: reader.read_rows(block[1], block[2]), compute=compute,
               describe=lambda header, _, plan: _provenance(meta.attrs, source, out_dtype,
                                                            header, out.format),
               result=lambda base, _: ConvertResult(
                   **base, source=source, compression=output.compression,
                   chunk_rows=chunk_rows),
               stack=stack)


# ----------------------------------------------------------------------------- helpers


def _cast(block: np.ndarray, dtype: np.dtype, source: ArrayAddress, start: int) -> np.ndarray:
    """``block`` as ``dtype``; refuse a cast that turns finite values into infinities."""
    if block.dtype == dtype:
        return block
    with np.errstate(over="ignore", invalid="ignore"):
        cast = block.astype(dtype)
    if dtype.kind == "f" and block.dtype.kind in "fc":
        overflow = np.isinf(cast) & np.isfinite(block)
        if overflow.any():
            where = np.argwhere(overflow)[0]
            index = (int(where[0]) + start, *(int(i) for i in where[1:]))
            raise InputError(
                f"{source} holds {block[tuple(where)].item():.6g} at {list(index)}, beyond "
                f"{dtype}'s range; convert without --dtype {dtype} to keep it"
            )
    return cast


def _provenance(source_attrs: dict[str, Any], source: ArrayAddress, dtype: np.dtype,
                header: dict[str, Any], fmt: str) -> dict[str, Any]:
    attrs = {k: v for k, v in source_attrs.items() if k not in _REWRITTEN}
    if "command" in source_attrs and "source_command" not in attrs:
        attrs["source_command"] = source_attrs["command"]
    if "logmm_version" in source_attrs and "source_logmm_version" not in attrs:
        attrs["source_logmm_version"] = source_attrs["logmm_version"]
    if "dtype" in attrs:
        attrs["dtype"] = str(dtype)
    attrs.update(converted_from=str(source), **header)
    if fmt == "hdf5":
        attrs = {k: _hdf5_storable(v) for k, v in attrs.items()}
    return attrs


def _hdf5_storable(value: Any) -> Any:
    """Values HDF5 attributes cannot hold (mappings, nested or mixed lists) → JSON text."""
    import json

    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        flat = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or \
            all(isinstance(v, str) for v in value) or all(isinstance(v, bool) for v in value)
        return value if value and flat else json.dumps(value)
    return value


def _python_call(source: ArrayAddress, out: ArrayAddress, dtype: Any,
                 compression: str | None) -> str:
    extra = f", dtype={str(np.dtype(dtype))!r}" if dtype is not None else ""
    extra += f", compression={compression!r}" if compression is not None else ""
    return f"logmm.convert.convert({str(source)!r}, {str(out)!r}{extra})"
