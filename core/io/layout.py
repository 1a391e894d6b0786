"""Every on-disk name of logmm's work files, built and parsed in one place.

Beside an output ``dir/NAME`` (``NAME`` is ``out.h5``, ``out.zarr``, ``out.npy``):

- ``.NAME.logmm-partial``: the output being written (:func:`partial_path`); inside an
  existing HDF5 file or Zarr store, the dataset ``group/.name.logmm-partial``
  (:func:`partial_dataset`);
- ``.NAME.logmm-partial.json``: its resume record (:func:`record_file`);
- ``.NAME.logmm-lock``: the lock a run holds while it writes (:func:`lock_file`);
- ``.NAME.logmm-TAG-PID``: short-lived files (``tmp``, ``old``, ``new``;
  :func:`temporary_path`);
- ``NAME.json``: the provenance sidecar of a ``.npy`` output (:func:`sidecar_path`);
- ``NAME#group%name``: the unit a dataset inside an existing container names its record
  and lock after (:func:`dataset_unit`);
- ``.NAME#group%name.logmm-partial``: the side file a compressed dataset added to an
  existing HDF5 file is written in before it is copied into that file (:func:`side_file`);
- ``STEM.shard-IIII-of-NNNN.SUFFIX``: one ``--shard`` file of an HDF5 output, or the unit a
  Zarr shard names its lock and record after (:func:`shard_path`);
- ``DATASET/.logmm-shards/IIII-of-NNNN.json`` inside a shared Zarr store: the marker of a
  finished shard (:func:`marker_path`).

Each ``parse_*`` function reads a name back (None when the name is not of that kind).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MARKER_DIR",
    "WorkFile",
    "dataset_unit",
    "journal_file",
    "lock_file",
    "marker_path",
    "parse_marker",
    "parse_partial_dataset",
    "parse_shard_file",
    "parse_work_address",
    "parse_work_file",
    "partial_dataset",
    "partial_path",
    "record_file",
    "shard_path",
    "parse_side_file",
    "shard_tag",
    "side_file",
    "side_file_glob",
    "sidecar_path",
    "temporary_path",
    "unique_temporary_path",
    "work_file_glob",
]

_PREFIX = ".logmm-"
#: directory inside a Zarr array (beside its chunks) holding one marker per finished shard
MARKER_DIR = ".logmm-shards"

# ".NAME.logmm-KIND" (KIND: partial, partial.json, lock, journal, or TAG-PID)
_WORK_RE = re.compile(r"^\.(?P<name>.+?)\.logmm-(?P<kind>partial\.json|partial|lock|journal|"
                      r"(?P<tag>[a-z]+)-(?P<pid>\d+))$", re.DOTALL)
# an address naming a work file that holds data, optionally followed by ":DATASET"
_WORK_ADDRESS_RE = re.compile(
    r"^(?P<path>(?:.*[/\\])?\.(?P<name>[^/\\]+?)\.logmm-(?:partial|[a-z]+-\d+))[/\\]?"
    r"(?::(?P<dataset>.*))?$",
    re.DOTALL,
)
_PARTIAL_DATASET_RE = re.compile(r"^\.(?P<name>.+)\.logmm-partial$", re.DOTALL)
_MARKER_RE = re.compile(r"^(\d+)-of-(\d+)\.json$")
_KIND_NAMES = {"partial.json": "record", "partial": "partial", "lock": "lock",
               "journal": "journal"}


# ----------------------------------------------------------------------------- outputs


def partial_path(path: str | Path) -> Path:
    """Hidden name beside ``path`` of an output being written: ``dir/.NAME.logmm-partial``.

    The name does not depend on the process, so an interrupted run's partial output can be
    found and finished by ``--resume``; :class:`logmm.io.resume.OutputLock` keeps two runs
    from writing it at once.
    """
    path = Path(path)
    return path.with_name(f".{path.name}{_PREFIX}partial")


def partial_dataset(dataset: str) -> str:
    """Hidden name, in the same group, of a dataset being written inside an existing
    container: ``"g/name"`` → ``"g/.name.logmm-partial"``."""
    head, _, name = dataset.strip("/").rpartition("/")
    return (head + "/" if head else "") + f".{name}{_PREFIX}partial"


def parse_partial_dataset(name: str | None) -> str | None:
    """``"g/.x.logmm-partial"`` → ``"x"``: the dataset a hidden partial dataset becomes
    (the inverse of :func:`partial_dataset`, last component only), else None."""
    match = _PARTIAL_DATASET_RE.match((name or "").rpartition("/")[2])
    return match["name"] if match else None


def sidecar_path(path: str | Path) -> Path:
    """The JSON provenance sidecar of a ``.npy`` output: ``OUT.npy`` → ``OUT.npy.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def temporary_path(path: str | Path, tag: str = "tmp") -> Path:
    """Hidden name beside ``path`` for short-lived files: ``dir/.NAME.logmm-TAG-PID``."""
    path = Path(path)
    return path.with_name(f".{path.name}{_PREFIX}{tag}-{os.getpid()}")


def unique_temporary_path(path: str | Path, tag: str) -> Path:
    """:func:`temporary_path` made unique across the nodes of a cluster (pids repeat):
    ``dir/.NAME.logmm-TAG-PID.HOST.RANDOM``."""
    tmp = temporary_path(path, tag)
    return tmp.with_name(f"{tmp.name}.{socket.gethostname()}.{os.urandom(4).hex()}")


# ----------------------------------------------------------------------------- records, locks


def dataset_unit(path: str | Path, dataset: str | None) -> Path:
    """What the record and lock of a dataset inside an existing container are named after:
    ``dir/OUT#group%name`` (the dataset path, ``/`` written ``%``)."""
    path = Path(path)
    key = (dataset or "").replace("/", "%")
    return path.with_name(f"{path.name}#{key}")


def side_file(path: str | Path, dataset: str | None) -> Path:
    """The side file of a compressed dataset added to the existing HDF5 file ``path``:
    ``dir/.OUT#group%name.logmm-partial`` (the partial output of its
    :func:`dataset_unit`, whose record is ``….logmm-partial.json``)."""
    return partial_path(dataset_unit(path, dataset))


def parse_side_file(path: str | Path, name: str) -> str | None:
    """``"group/name"`` when ``name`` is a :func:`side_file` of the file ``path``, else None."""
    prefix, suffix = f".{Path(path).name}#", f"{_PREFIX}partial"
    if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix + suffix):
        return None
    return name[len(prefix):-len(suffix)].replace("%", "/")


def side_file_glob(name: str) -> str:
    """A glob pattern matching the side files beside the output ``name`` (and perhaps
    others: check each with :func:`parse_side_file`)."""
    escaped = re.sub(r"([*?\[])", r"[\1]", name)
    return f".{escaped}#*{_PREFIX}partial"


def record_file(unit: str | Path) -> Path:
    """The resume record of ``unit``: ``dir/.NAME.logmm-partial.json``."""
    partial = partial_path(unit)
    return partial.with_name(partial.name + ".json")


def journal_file(path: str | Path) -> Path:
    """The redo journal of a change to the existing HDF5 file ``path``:
    ``dir/.NAME.logmm-journal`` (see :mod:`logmm.io.hdf5_journal`)."""
    path = Path(path)
    return path.with_name(f".{path.name}{_PREFIX}journal")


def lock_file(unit: str | Path) -> Path:
    """The lock of ``unit``: ``dir/.NAME.logmm-lock``."""
    unit = Path(unit)
    return unit.with_name(f".{unit.name}{_PREFIX}lock")


@dataclass(frozen=True)
class WorkFile:
    """A work file's name read back by :func:`parse_work_file`.

    Attributes
    ----------
    output : str
        The name of the output it belongs to (``NAME``).
    kind : str
        ``"partial"``, ``"record"``, ``"lock"``, or the tag of a short-lived file
        (``"tmp"``, ``"old"``, ``"new"``).
    pid : int or None
        The process named in a short-lived file's name.
    """

    output: str
    kind: str
    pid: int | None


def parse_work_file(name: str) -> WorkFile | None:
    """``".x.h5.logmm-tmp-42"`` → ``WorkFile("x.h5", "tmp", 42)``; None for other names."""
    match = _WORK_RE.match(name)
    if match is None:
        return None
    kind = match["tag"] or _KIND_NAMES[match["kind"]]
    return WorkFile(match["name"], kind, int(match["pid"]) if match["pid"] else None)


def work_file_glob(name: str) -> str:
    """A glob pattern matching every work file beside the output ``name`` (and perhaps
    others: check each with :func:`parse_work_file`)."""
    escaped = re.sub(r"([*?\[])", r"[\1]", name)
    return f".{escaped}{_PREFIX}*"


def parse_work_address(text: str) -> tuple[Path, str, str | None] | None:
    """An address naming a work file that holds data (a partial output or a short-lived
    copy), optionally with ``:DATASET``: ``(work file path, output name, dataset)``, or
    None when ``text`` names no work file."""
    match = _WORK_ADDRESS_RE.match(text)
    if match is None:
        return None
    return Path(match["path"]), match["name"], match["dataset"]


# ----------------------------------------------------------------------------- shards


def shard_tag(index: int, count: int) -> str:
    """``0003-of-0016``: the name part of shard ``index`` of ``count``'s files."""
    return f"{index:04d}-of-{count:04d}"


def shard_path(path: str | Path, index: int, count: int) -> Path:
    """``dir/out.h5`` → ``dir/out.shard-0003-of-0016.h5`` (its file, or for a Zarr store
    the name its lock and resume record take)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{shard_tag(index, count)}{path.suffix}")


def parse_shard_file(path: str | Path, name: str) -> tuple[int, int, bool] | None:
    """``(index, count, partial)`` when ``name`` is a shard file of the output ``path``:
    ``STEM.shard-IIII-of-NNNN.SUFFIX`` (``partial`` False) or its partial output
    ``.STEM.shard-IIII-of-NNNN.SUFFIX.logmm-partial`` (True); else None."""
    path = Path(path)
    stem = re.escape(path.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(path.suffix)
    for partial, pattern in ((False, f"^{stem}$"), (True, f"^\\.{stem}\\.logmm-partial$")):
        match = re.match(pattern, name, re.DOTALL)
        if match is not None:
            return int(match[1]), int(match[2]), partial
    return None


def marker_path(array_dir: str | Path, index: int, count: int) -> Path:
    """``DATASET/.logmm-shards/IIII-of-NNNN.json``: the marker of a finished shard inside
    the Zarr array directory ``array_dir``."""
    return Path(array_dir) / MARKER_DIR / f"{shard_tag(index, count)}.json"


def parse_marker(name: str) -> tuple[int, int] | None:
    """``"0003-of-0016.json"`` → ``(3, 16)``; None for other names."""
    match = _MARKER_RE.match(name)
    return (int(match[1]), int(match[2])) if match else None
