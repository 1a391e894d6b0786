"""``logmm loglik X --mu MU (--sigma S | --rho R) [-o OUT]``: a Gaussian log-likelihood."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import click

from logmm.typing import Reduce

from ..options import (
    ADDRESS,
    dtype_option,
    job_options,
    overwrite_option,
    report_result,
    reporting_options,
    row_streaming_options,
    run_job,
    storage_options,
)

if TYPE_CHECKING:
    from logmm.loglik import LoglikResult

__all__ = ["loglik"]

EPILOG = """\b
Examples:
  logmm loglik x.h5:/x --mu 0 --sigma 1 -o ll.h5
  logmm loglik x.npy --mu mu.npy --rho rho.npy --reduce row -o per_sample.npy
  logmm loglik x.zarr:x --mu mu.npy --sigma s.npy --reduce sum      # prints the total

\b
MU, S and R are numbers or array addresses: a row of X's width (per column), or an array
of X's shape (streamed with X). --rho gives sigma = softplus(rho) = log(1 + exp(rho)),
computed without overflow. X is read in row blocks (--memory, --block-rows, --resume).
"""


@click.command(epilog=EPILOG, short_help="Diagonal-Gaussian log-likelihood of X.")
@click.argument("x", metavar="X", type=ADDRESS)
@click.option("--mu", required=True, metavar="MU", type=ADDRESS,
              help="Mean: a number or an array address.")
@click.option("--sigma", default=None, metavar="S", type=ADDRESS,
              help="Standard deviation (> 0): a number or an array address.")
@click.option("--rho", default=None, metavar="R", type=ADDRESS,
              help="sigma = softplus(rho): a number or an array address.")
@click.option("--reduce", type=click.Choice(get_args(Reduce)), default="none", show_default=True,
              help="none: elementwise; row: one value per row; sum: the total, printed on "
                   "stdout (and written when -o is given).")
@click.option("-o", "--output", default=None, metavar="ADDR",
              help="Output address (required unless --reduce sum).")
@overwrite_option
@dtype_option
@row_streaming_options
@storage_options
@reporting_options
@click.pass_context
def loglik(ctx: click.Context, x: str, mu: str, sigma: str | None, rho: str | None,
           reduce: Reduce, output: str | None, overwrite: bool, dtype: str | None,
           memory: int | None, block_rows: int | None, resume: bool, shard: Any, scheduler: str,
           dask_address: str | None,
           compression: str | None, chunk_rows: int | None, quiet: bool,
           progress: bool | None) -> None:
    """log N(X; MU, diag(S²)) elementwise, per row, or in total."""
    from logmm.loglik import prepare_loglik

    out_options, run_options = job_options(
        ctx, overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
        memory=memory, block_rows=block_rows, resume=resume, shard=shard, scheduler=scheduler,
        dask_address=dask_address, progress=progress, quiet=quiet)
    result = run_job(ctx, prepare_loglik(x, output, mu=mu, sigma=sigma, rho=rho,
                                         reduce=reduce, dtype=dtype, output=out_options,
                                         options=run_options))
    if result is None:
        return
    if result.total is not None:
        click.echo(repr(result.total))
    if result.output is not None or result.shard_note is not None:
        report_result(result, summary_line, quiet)


def summary_line(result: LoglikResult) -> str:
    """``wrote ll.npy (60×48 float32, reduce none) in 0.01 s``."""
    shape = "×".join(str(s) for s in result.shape)
    return (f"wrote {result.output} ({shape} {result.dtype}, reduce {result.reduce}) in "
            f"{result.seconds:.2f} s")
