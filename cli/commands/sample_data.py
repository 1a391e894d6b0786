"""``logmm sample-data DIR``: write the small, seeded sample inputs into DIR."""

from __future__ import annotations

from pathlib import Path

import click

from ..options import debug_option, is_quiet, quiet_option

__all__ = ["sample_data"]

EPILOG = """\b
Examples:
  logmm sample-data /tmp/logmm-samples
  logmm multiply /tmp/logmm-samples/a.h5 /tmp/logmm-samples/b.h5 -o /tmp/ab.h5
"""


@click.command("sample-data", epilog=EPILOG,
               short_help="Write the small sample inputs (npy, HDF5, Zarr, sparse).")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@quiet_option
@debug_option
def sample_data(directory: Path, quiet: bool) -> None:
    """Write logmm's seeded sample inputs into DIR (created if needed; files replaced)."""
    from logmm.samples import write_sample_data

    paths = write_sample_data(directory)
    if not is_quiet(quiet):
        click.echo(f"wrote {len(paths)} sample files into {directory}", err=True)
