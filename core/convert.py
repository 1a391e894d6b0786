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

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .inspect import inspect_file
from .io.addresses import ArrayAddress
from .io.readers import open_array
from .io.resume import OutputLock
from .io.writers import check_output, container_output, create_writer, output_address, same_path
from .plan import plan_copy_rows
from .stream import run_pipeline

__all__ = ["ConvertResult", "convert"]

_DTYPES = ("float32", "float64")
# attributes that describe the file rather than the data: rewritten, not copied
#: attributes of the source a copy does not keep: its own say otherwise, and a copy is
#: not the output of the source's run (its fingerprint would pass a --resume rerun)
_REWRITTEN = ("complete", "logmm_version", "command", "converted_from", "fingerprint")


@dataclass
class ConvertResult:
    """What :func:`convert` wrote.

    Attributes
    ----------
    source : ArrayAddress
        The input, dataset part resolved.
    output : ArrayAddress
        The output, dataset part filled in (``OUT.h5:/data``).
    shape : tuple of int
    dtype : numpy.dtype
        The output's dtype.
    compression : str or None
        As requested (None: the output format's default).
    chunk_rows : int
        Rows per output storage chunk.
    block_rows : int
        Rows copied per block.
    seconds : float
        Wall time from opening the input to the committed output.
    """

    source: ArrayAddress
    output: ArrayAddress
    shape: tuple[int, ...]
    dtype: np.dtype
    compression: str | None
    chunk_rows: int
    block_rows: int
    seconds: float

    @property
    def path(self) -> Path:
        """The output file or store on disk."""
        return self.output.path


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
    started = time.perf_counter()
    if dtype is not None and str(np.dtype(dtype)) not in _DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    for value, what in ((block_rows, "block rows"), (chunk_rows, "chunk rows"),
                        (memory, "memory budget")):
        if value is not None and value < 1:
            raise UsageError(f"{what} must be at least 1, got {value}")

    with open_array(in_address) as reader:
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
        out = check_output(out_address, overwrite=overwrite, compression=compression,
                           inputs=[source])
        meta = inspect_file(source).arrays[0]
        if meta.status == "incomplete":
            raise InputError(f"{source} is an unfinished logmm output (no complete: true "
                             "attribute); finish the run with --resume or rerun it")
        out_dtype = np.dtype(dtype) if dtype is not None else reader.dtype.newbyteorder("=")
        if chunk_rows is None and reader.chunks and tuple(reader.chunks[1:]) == reader.shape[1:]:
            chunk_rows = reader.chunk_rows
        if not command:
            command = _python_call(source, out, dtype, compression)
        attrs = _provenance(meta.attrs, source, out_dtype, command, out.format)

        with OutputLock(out), create_writer(
                out, reader.shape, out_dtype, overwrite=overwrite, compression=compression,
                chunk_rows=chunk_rows, zarr_format=zarr_format) as writer:
            n = reader.shape[0]
            row_items = int(np.prod(reader.shape[1:], dtype=np.int64))
            if block_rows is None:
                block_rows = plan_copy_rows(
                    n, row_items * reader.dtype.itemsize, row_items * out_dtype.itemsize,
                    memory=memory, align=writer.chunk_rows,
                )
            bar = _progress_bar(n, progress)
            blocks = [(start, min(n, start + block_rows)) for start in range(0, n, block_rows)]
            try:                                  # read ahead, cast, write behind
                run_pipeline(blocks, load=lambda b: reader.read_rows(*b),
                             compute=lambda b, data: _cast(data, out_dtype, source, b[0]),
                             store=lambda b, block: writer.write_rows(b[0], block),
                             on_stored=lambda b: bar.update(b[1] - b[0]))
            finally:
                bar.close()
            writer.set_attrs(attrs)
            writer.commit()
            written_chunk_rows = writer.chunk_rows
    return ConvertResult(
        source=source, output=out, shape=tuple(reader.shape), dtype=out_dtype,
        compression=compression, chunk_rows=written_chunk_rows, block_rows=block_rows,
        seconds=time.perf_counter() - started,
    )


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
                command: str, fmt: str) -> dict[str, Any]:
    from .provenance import run_provenance

    attrs = {k: v for k, v in source_attrs.items() if k not in _REWRITTEN}
    if "command" in source_attrs and "source_command" not in attrs:
        attrs["source_command"] = source_attrs["command"]
    if "logmm_version" in source_attrs and "source_logmm_version" not in attrs:
        attrs["source_logmm_version"] = source_attrs["logmm_version"]
    if "dtype" in attrs:
        attrs["dtype"] = str(dtype)
    attrs.update(converted_from=str(source), **run_provenance(command, [source]))
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


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", unit_scale=True, desc="convert", file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)
