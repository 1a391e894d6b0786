"""``logmm merge OUT``: one output over the shards that ``--shard I/N`` runs wrote."""

from __future__ import annotations

import click

from ..options import ADDRESS, debug_option, is_quiet, overwrite_option, quiet_option

__all__ = ["merge"]

EPILOG = """\b
Examples:
  logmm merge out.h5        out.shard-0000-of-0016.h5 … → out.h5 (virtual dataset)
  logmm merge out.zarr      finish a shared store whose last shard was interrupted

\b
HDF5: checks that all N shard files beside OUT exist, are complete, come from the same
run and tile the rows, then writes OUT.h5 holding a virtual dataset over them (relative
paths: move the directory as a whole; the shard files must stay beside OUT.h5).
Zarr: the last shard to finish renames the shared store into place itself; merge only
checks it, or finishes it when that rename did not happen.
A missing or incomplete shard is refused (exit 1), naming the shards and their rows;
'logmm info OUT' lists them too.
"""


@click.command(epilog=EPILOG, short_help="Join the shards of a --shard I/N run.")
@click.argument("output", metavar="OUT", type=ADDRESS)
@overwrite_option
@quiet_option
@debug_option
def merge(output: str, overwrite: bool, quiet: bool) -> None:
    """Join the shards written by --shard I/N runs into OUT (.h5 or .zarr)."""
    from logmm.shards import merge as run_merge

    result = run_merge(output, overwrite=overwrite)
    if not is_quiet(quiet):
        verb = "wrote" if result.wrote else "already complete:"
        click.echo(f"{verb} {result.output} from {result.count} "
                   f"shard{'s' if result.count != 1 else ''}", err=True)
