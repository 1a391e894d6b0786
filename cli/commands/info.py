"""``logmm info FILE[:DATASET]``: the arrays a file holds, their storage and provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from logmm.errors import LogmmError

from ..options import ADDRESS, debug_option

if TYPE_CHECKING:
    from logmm.inspect import ArrayInfo, FileInfo, TemporaryInfo

__all__ = ["format_info", "info"]

EPILOG = """\b
Examples:
  logmm info out.h5                 every array: shape, dtype, chunks, compression, status
  logmm info out.h5:/data           one array and its provenance attributes
  logmm info out.zarr --json        one JSON document on stdout (for scripts)
  logmm info out.npy                reads the OUT.npy.json provenance sidecar too

\b
LOGMM column: 'complete' for a finished logmm output (attribute complete: true),
'incomplete' for a logmm array without it or for a merged file (virtual dataset) whose
shard files are not all there (a warning on stderr names them), '-' for arrays logmm
did not write. With --check, an incomplete file exits 1 and says why on stderr.
The partial output of an unfinished run (.NAME.logmm-partial) beside the file is
listed, with how many row blocks it holds; one being added inside an existing HDF5 file
or Zarr group is the hidden dataset group/.NAME.logmm-partial, listed as 'incomplete'.
Only metadata is read, never the data.
For a --shard I/N output, the shards done and the row ranges still missing are listed,
also while OUT.zarr does not exist yet (its shards share a hidden partial store) and
for OUT.h5 before 'logmm merge' (from the OUT.shard-IIII-of-NNNN.h5 files).
"""

_MAX_VALUE = 160


@click.command(epilog=EPILOG,
               short_help="Arrays in a file: shape, dtype, chunks, compression, provenance.")
@click.argument("file", metavar="FILE[:DATASET]", type=ADDRESS)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (stable keys) instead of a table.")
@click.option("--check", is_flag=True,
              help="Exit with status 1 unless FILE exists, every logmm array in it is "
                   "complete and no shard is missing (for Make rules and job scripts).")
@debug_option
def info(file: str, as_json: bool, check: bool) -> None:
    """Describe the arrays in FILE (.npy, .h5/.hdf5, .zarr), or only DATASET."""
    from logmm.inspect import inspect_file

    result = inspect_file(file)
    if as_json:
        click.echo(json.dumps(result.to_dict() | {"complete": result.complete}, indent=2))
    else:
        click.echo(format_info(result))
    if check and not result.complete:
        raise LogmmError(f"{result.path} is not complete: {'; '.join(result.problems)}")
    for array in result.arrays:        # data that reads as fill values: never silently
        if array.missing_sources:
            hint = (" (put them back, or rerun those shards with the same command)"
                    if "shard_files" in array.attrs else "")
            click.echo(f"logmm: warning: {array.address} is a virtual dataset whose source "
                       f"files are missing: {', '.join(array.missing_sources)}; logmm "
                       f"refuses to read it until they are back{hint}", err=True)


def format_info(result: FileInfo) -> str:
    """The human-readable report: a header, a table of arrays, attributes, notes."""
    kind = {"npy": "NumPy .npy", "hdf5": "HDF5", "zarr": "Zarr",
            "npz": "scipy.sparse .npz"}[result.format]
    size = f", {_size(result.file_bytes)}" if result.file_bytes is not None else ""
    lines = [f"{result.path} ({kind}{size})", ""]
    if result.arrays:
        header = ("NAME", "SHAPE", "DTYPE", "CHUNKS", "COMPRESSION", "STORED", "LOGMM")
        rows = [header] + [_row(a) for a in result.arrays]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
    else:
        lines.append("no arrays")
    for array in result.arrays:
        if not array.attrs:
            continue
        what = {"complete": "complete logmm output", "incomplete": "INCOMPLETE logmm output",
                None: "attributes"}[array.status]
        lines += ["", f"{array.name or Path(result.path).name}: {what}"]
        width = max(len(k) for k in array.attrs)
        lines += [f"  {k.ljust(width)}  {_value(v)}" for k, v in array.attrs.items()]
    notes = list(result.notes)
    sharing = result.shards is not None and not result.shards["merged"]
    notes += [_temporary_note(t) for t in result.temporaries if t.kind not in ("lock", "record")
              and not (sharing and t.kind == "partial")]  # the shards' store: described above
    if notes:
        lines.append("")
        lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _temporary_note(temp: TemporaryInfo) -> str:
    size = f" ({_size(temp.bytes)})" if temp.bytes is not None else ""
    name = Path(temp.path).name
    if temp.kind == "partial":
        done = ""
        if temp.blocks_done is not None:
            of = f" of {temp.blocks_total}" if temp.blocks_total is not None else ""
            done = f", {temp.blocks_done}{of} row blocks written"
        state = (f"pid {temp.pid} is still writing it" if temp.process_running else
                 "rerun the same command with --resume to finish it, or delete it")
        return (f"{name}{size} beside it is the partial output of an unfinished logmm run"
                f"{done}; {state}")
    if temp.kind == "journal":      # torn (a complete one stops `info` before this)
        return (f"{name}{size} beside it is the unfinished journal of a killed logmm run, "
                "never applied (the file is as before it); the next logmm run writing "
                "into the file deletes it")
    state = (f"pid {temp.pid} is still running" if temp.process_running else
             f"pid {temp.pid} has exited; delete it")
    return f"{name}{size} beside it is a temporary file of a logmm run; {state}"


def _row(a: ArrayInfo) -> tuple[str, ...]:
    chunks = _shape(a.chunks) if a.chunks else "-"
    if a.shards:
        chunks += f" (shards {_shape(a.shards)})"
    stored = _size(a.stored_bytes) if a.stored_bytes is not None else "?"
    return (a.name or "-", _shape(a.shape), a.dtype, chunks, a.compression, stored,
            a.status or "-")


def _shape(shape: list[int]) -> str:
    return "×".join(str(s) for s in shape) if shape else "()"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 1] + "…"
