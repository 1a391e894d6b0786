"""``logmm multiply A B -o OUT``: C = log(exp(A) @ exp(B)), streamed from file to file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from logmm.typing import Method

from ..options import (
    ADDRESS,
    dtype_option,
    job_options,
    method_option,
    output_option,
    overwrite_option,
    report_result,
    reporting_options,
    row_streaming_options,
    run_job,
    storage_options,
)

if TYPE_CHECKING:
    from logmm.multiply import MultiplyResult

__all__ = ["multiply", "summary_line"]

EPILOG = """\b
Examples:
  logmm multiply a.h5:/a b.h5:/b -o c.h5
  logmm multiply a.npy b.npy -o c.zarr:product --method exact
  logmm multiply a.zarr:a b.npy -o c.h5 --dtype float32 --block-rows 4096 --compression lzf

\b
A (n×k) is read in row blocks, B (k×m) once; C (n×m) is written under a hidden
temporary name and renamed into place when complete. The output carries provenance
attributes (a .npy output gets them in OUT.npy.json).
"""


@click.command(epilog=EPILOG, short_help="C = log(exp(A) @ exp(B)) for arrays in files.")
@click.argument("a", metavar="A", type=ADDRESS)
@click.argument("b", metavar="B", type=ADDRESS)
@output_option
@overwrite_option
@method_option
@dtype_option
@row_streaming_options
@storage_options
@reporting_options
@click.pass_context
def multiply(ctx: click.Context, a: str, b: str, output: str, overwrite: bool, method: Method,
             dtype: str | None, memory: int | None, block_rows: int | None,
             resume: bool, shard: Any, scheduler: str,
             dask_address: str | None, compression: str | None, chunk_rows: int | None,
             quiet: bool, progress: bool | None) -> None:
    """C = log(exp(A) @ exp(B)), stable, for A (n×k) and B (k×m) in files."""
    from logmm.multiply import prepare_multiply

    out_options, run_options = job_options(
        ctx, overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
        memory=memory, block_rows=block_rows, resume=resume, shard=shard, scheduler=scheduler,
        dask_address=dask_address, progress=progress, quiet=quiet)
    result = run_job(ctx, prepare_multiply(a, b, output, method=method, dtype=dtype,
                                           output=out_options, options=run_options))
    if result is not None:
        report_result(result, summary_line, quiet)


def summary_line(result: MultiplyResult) -> str:
    """``wrote c.h5:/data (200×32 float64, method auto, 0 entries repaired) in 0.01 s``."""
    n, m = result.shape
    if result.method == "exact":
        detail = "every entry by exact logsumexp"
    else:
        count, what = ((result.report.unchecked, "unchecked") if result.method == "fast"
                       else (result.report.repaired, "repaired"))
        detail = f"{count} {'entry' if count == 1 else 'entries'} {what}"
    return (f"wrote {result.output} ({n}×{m} {result.dtype}, method {result.method}, "
            f"{detail}) in {result.seconds:.2f} s")
