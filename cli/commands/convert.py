"""``logmm convert IN OUT``: copy an array between .npy, HDF5 and Zarr, by row blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..options import (
    ADDRESS,
    block_rows_option,
    command_line,
    dtype_option,
    memory_option,
    overwrite_option,
    report_result,
    reporting_options,
    resolve_progress,
    storage_options,
    zarr_format,
)

if TYPE_CHECKING:
    from logmm.convert import ConvertResult

__all__ = ["convert", "summary_line"]

EPILOG = """\b
Examples:
  logmm convert c.h5 c.zarr
  logmm convert c.zarr:product c.h5:/results/c --compression gzip --chunk-rows 1024
  logmm convert big.npy big.h5 --compression zstd --memory 1GiB
  logmm convert c.h5:/data c32.npy --dtype float32

\b
Any of .npy, .h5/.hdf5, .zarr to any; arrays of any number of dimensions, copied in
blocks of rows (the first axis), bit for bit unless --dtype casts. The output is written
under a hidden temporary name and renamed into place when complete; it keeps the input's
attributes and adds converted_from, logmm_version and command. zstd and blosc for HDF5
need 'pip install logmm[hdf5plugin]'. Zarr outputs are format 3; --zarr-format 2 writes
a copy that zarr-python 2.x can read.
"""


@click.command(epilog=EPILOG, short_help="Copy an array between .npy, HDF5 and Zarr.")
@click.argument("source", metavar="IN", type=ADDRESS)
@click.argument("output", metavar="OUT", type=ADDRESS)
@overwrite_option
@dtype_option
@storage_options
@memory_option
@block_rows_option
@reporting_options
@click.pass_context
def convert(ctx: click.Context, source: str, output: str, overwrite: bool, dtype: str | None,
            compression: str | None, chunk_rows: int | None, memory: int | None,
            block_rows: int | None, quiet: bool,
            progress: bool | None) -> None:
    """Copy the array IN to OUT (format from OUT's extension), streaming row blocks."""
    from logmm.convert import convert as run_convert

    result = run_convert(
        source, output, dtype=dtype, overwrite=overwrite, compression=compression,
        chunk_rows=chunk_rows, memory=memory, block_rows=block_rows,
        progress=resolve_progress(progress, quiet), command=command_line(ctx),
        zarr_format=zarr_format(ctx),
    )
    report_result(result, summary_line, quiet)


def summary_line(result: ConvertResult) -> str:
    """``wrote c.zarr:data (200×32 float64, zstd) from c.h5:/data in 0.01 s``."""
    shape = "×".join(str(s) for s in result.shape)
    compression = f", {result.compression}" if result.compression else ""
    return (f"wrote {result.output} ({shape} {result.dtype}{compression}) from "
            f"{result.source} in {result.seconds:.2f} s")
