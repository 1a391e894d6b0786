"""``logmm power P -n STEPS -o OUT``: log-space matrix power by repeated squaring."""

from __future__ import annotations

import click

from logmm.typing import Method

from ..options import (
    ADDRESS,
    chain_summary_line,
    command_line,
    dtype_option,
    explain_option,
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

__all__ = ["power"]

EPILOG = """\b
Examples:
  logmm power trans.npy -n 16 -o trans16.npy
  logmm power trans.h5:/P -n 1000 -o p1000.h5 --method exact
  logmm power trans.npy -n 13 -o t13.zarr --explain

\b
C = log(exp(P)^STEPS) for a square log-valued matrix P, e.g. the STEPS-step
transition log-probabilities of a Markov chain: about log2(STEPS) squarings and one
product per further set bit of STEPS, each the stable kernel of 'logmm multiply'.
-inf (log 0) stays exactly -inf where no path of non-zero probability leads; -n 0
gives the log identity (0 on the diagonal, -inf elsewhere). P is read whole into
memory; the output is written under a hidden temporary name and renamed into place
when complete, with provenance attributes (steps, schedule, repaired entries).
"""


@click.command(epilog=EPILOG, short_help="Log-space matrix power by repeated squaring.")
@click.argument("p", metavar="P", type=ADDRESS)
@click.option("-n", "--steps", type=click.IntRange(min=0), required=True, metavar="STEPS",
              help="The power (number of steps), at least 0.")
@output_option
@explain_option("Print the squaring schedule and its cost on stderr.")
@overwrite_option
@method_option
@dtype_option
@storage_options
@threads_option
@reporting_options
@click.pass_context
def power(ctx: click.Context, p: str, steps: int, output: str, explain: bool, overwrite: bool,
          method: Method, dtype: str | None, compression: str | None, chunk_rows: int | None,
          quiet: bool, progress: bool | None) -> None:
    """C = log(exp(P)^STEPS) for a square log-valued P, by repeated squaring."""
    from logmm.chain_files import power_file

    result = power_file(
        p, steps, output, method=method, dtype=dtype, overwrite=overwrite,
        compression=compression, chunk_rows=chunk_rows,
        progress=resolve_progress(progress, quiet), command=command_line(ctx),
        explain=(lambda text: click.echo(text, err=True)) if explain else None,
        zarr_format=zarr_format(ctx),
    )
    report_result(result, chain_summary_line, quiet)
