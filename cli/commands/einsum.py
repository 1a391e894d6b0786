"""``logmm einsum SUBSCRIPTS OP… -o OUT``: einsum in the log, max or real semiring."""

from __future__ import annotations

from typing import Any, get_args

import click

from logmm.typing import Method, Semiring

from ..options import (
    ADDRESS,
    chain_summary_line,
    dtype_option,
    explain_option,
    job_options,
    method_option,
    output_option,
    overwrite_option,
    planning,
    report_result,
    reporting_options,
    row_streaming_options,
    run_job,
    storage_options,
)

__all__ = ["einsum"]

EPILOG = """\b
Examples:
  logmm einsum 'bij,bjk->bik' batch.h5:/x batch.h5:/y -o out.h5
  logmm einsum 'ij,jk,kl->il' m1.npy m2.npy m3.npy -o out.npy --explain
  logmm einsum 'ij,jk->ik' trans.npy trans.npy -o best2.npy --semiring max
  logmm einsum 'ii->i' p.npy -o diag.npy
  logmm einsum '...ij->...i' scores.zarr:s -o lse.zarr

\b
numpy einsum subscripts: '->' for the output (without it, the indices that occur
once, in alphabetical order), '...' for broadcast dimensions, any number of operands.
Quote the subscripts in the shell ('>' redirects).
--semiring log (default): operands are log-values; every sum is a stable log-sum-exp
(each pairwise contraction a batched 'logmm multiply' product). max: max of sums
(Viterbi). real: ordinary einsum. The contraction order comes from opt_einsum;
--explain prints it with its cost on stderr. The operands are read whole into memory
(unless streamed: see below); the output is written under a hidden temporary name and
renamed into place when complete, with provenance attributes. A scalar result needs a
.npy or .h5 output.
--block-rows, --memory, --resume, --shard and --scheduler stream the result by row blocks
of its first output label (i in 'ij,jk->ik', b in 'bij,bjk->bik'; it must occur at most
once per operand): operands with that label first are then read block by block.
"""


@click.command(epilog=EPILOG, short_help="Einsum in the log, max or real semiring.")
@click.argument("subscripts", metavar="SUBSCRIPTS")
@click.argument("operands", metavar="OP...", nargs=-1, required=True, type=ADDRESS)
@output_option
@click.option("--semiring", type=click.Choice(get_args(Semiring)), default="log",
              show_default=True,
              help="log: operands are log-values, sums are stable log-sum-exps; max: max "
                   "of sums; real: ordinary sums.")
@explain_option("Print the contraction order and its cost (opt_einsum) on stderr.")
@overwrite_option
@method_option
@dtype_option
@row_streaming_options
@storage_options
@reporting_options
@click.pass_context
def einsum(ctx: click.Context, subscripts: str, operands: tuple[str, ...], output: str,
           semiring: Semiring, explain: bool, overwrite: bool, method: Method, dtype: str | None,
           memory: int | None, block_rows: int | None, resume: bool, shard: Any,
           scheduler: str, dask_address: str | None, compression: str | None,
           chunk_rows: int | None, quiet: bool, progress: bool | None) -> None:
    """einsum over arrays in files: log-sum-exp (default), max or ordinary sums."""
    from logmm.einsum_files import prepare_einsum

    out_options, run_options = job_options(
        ctx, overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
        memory=memory, block_rows=block_rows, resume=resume, shard=shard, scheduler=scheduler,
        dask_address=dask_address, progress=progress, quiet=quiet)
    result = run_job(ctx, prepare_einsum(
        subscripts, operands, output, semiring=semiring, method=method, dtype=dtype,
        output=out_options, options=run_options,
        explain=(lambda text: click.echo(text, err=True)) if explain else None,
        stream=True if planning(ctx) else None))
    if result is not None:
        report_result(result, chain_summary_line, quiet)
