"""``logmm chain M1 M2 … -o OUT``: the log-space product of a chain, in the cheapest order."""

from __future__ import annotations

import click

from logmm.errors import UsageError
from logmm.typing import Method

from ..options import (
    ADDRESS,
    block_rows_option,
    chain_summary_line,
    command_line,
    dtype_option,
    explain_option,
    memory_option,
    method_option,
    output_option,
    overwrite_option,
    report_result,
    reporting_options,
    resolve_progress,
    storage_options,
    threads_option,
    zarr_format,
)

__all__ = ["chain"]

EPILOG = """\b
Examples:
  logmm chain m1.npy m2.npy m3.npy -o c.h5
  logmm chain chain.h5:/m1 chain.h5:/m2 chain.h5:/m3 -o c.zarr --explain
  logmm chain a.npy b.h5:/b -o c.npy --method exact --dtype float32

\b
C = log(exp(M1) @ exp(M2) @ … @ exp(Mn)) for log-valued 2-D matrices, each one's
columns equal to the next one's rows. The order of the pairwise products is the
cheapest one (matrix-chain dynamic programme on the shapes); --explain prints it, with
its cost in multiply-adds, on stderr. Every pairwise product is the stable kernel of
'logmm multiply'. chain streams M1's rows when it is the large one (more bytes than the
rest together) and the cheapest order is (M1 (M2 … Mn)): M2 … Mn is computed in memory
and M1 goes through the multiply engine (--memory, --block-rows; the output records
streamed: M1). Otherwise the inputs are read whole into memory. The output is written
under a hidden temporary name and renamed into place when complete, with provenance
attributes (order, cost, input shapes, repaired entries).
"""


@click.command(epilog=EPILOG, short_help="Log-space product of a chain, cheapest order.")
@click.argument("matrices", metavar="M1 M2 ...", nargs=-1, required=True, type=ADDRESS)
@output_option
@explain_option("Print the chosen order of the products and its cost on stderr.")
@overwrite_option
@method_option
@dtype_option
@memory_option
@block_rows_option
@storage_options
@threads_option
@reporting_options
@click.pass_context
def chain(ctx: click.Context, matrices: tuple[str, ...], output: str, explain: bool,
          overwrite: bool, method: Method, dtype: str | None, memory: int | None,
          block_rows: int | None, compression: str | None, chunk_rows: int | None,
          quiet: bool, progress: bool | None) -> None:
    """C = log(exp(M1) @ exp(M2) @ … @ exp(Mn)), parenthesised by the cheapest order."""
    if not matrices:
        raise UsageError("chain needs at least one matrix")
    from logmm.chain_files import chain_files

    result = chain_files(
        matrices, output, method=method, dtype=dtype, overwrite=overwrite,
        compression=compression, chunk_rows=chunk_rows, memory=memory, block_rows=block_rows,
        progress=resolve_progress(progress, quiet), command=command_line(ctx),
        explain=(lambda text: click.echo(text, err=True)) if explain else None,
        zarr_format=zarr_format(ctx),
    )
    report_result(result, chain_summary_line, quiet)

