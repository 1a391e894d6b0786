"""Chunked writers that never leave a partial result under the output's name.

A writer creates its output under a hidden temporary name in the output's own directory
(``.OUT.logmm-partial``, so the final rename stays on one filesystem), takes row blocks
with :meth:`ArrayWriter.write_rows`, and :meth:`ArrayWriter.commit` stores the provenance
attributes (with ``complete: true``) and renames the result into place. :meth:`abort`
(also run when the ``with`` block raises, KeyboardInterrupt included) removes the
temporary. An existing output is refused before anything is created unless ``overwrite``.

Provenance: HDF5 dataset attributes and Zarr array attributes. A ``.npy`` file has no
room for attributes, so they go to a JSON sidecar ``OUT.npy.json``, written under a
temporary name too and renamed into place just before the ``.npy`` itself.

Output addresses: ``OUT.npy``; ``OUT.h5`` (dataset ``/data``) or ``OUT.h5:/group/name``;
``OUT.zarr`` (array ``data``) or ``OUT.zarr:group/name``.

Outputs inside existing containers (:func:`container_output`): when ``OUT.h5`` or
``OUT.zarr`` already exists and holds anything besides the output itself, the output is
one dataset *inside* it: written under the hidden name ``group/.name.logmm-partial`` in
the same file or group (:func:`partial_dataset`), then renamed (an HDF5 link move; a
Zarr directory rename) at commit. ``--overwrite`` then replaces only that dataset; the
file's other datasets are never rewritten. A new file, or one that holds nothing but the
output, is written whole under ``.OUT.logmm-partial`` and renamed, as before. An input
that *is* the output dataset is refused, as is an output file replaced whole that an
input lives in.

HDF5 inside an existing file: the dataset's storage is allocated when it is created
(unfiltered outputs), so writing blocks changes no HDF5 metadata and a ``kill -9`` while
blocks are written leaves the file's structure as it was flushed after creation; the
metadata changes (create, attributes and link move at commit) are each flushed at once,
so only a kill inside those few milliseconds can leave the file needing repair. A
compressed dataset is written in a side file and copied in at commit (see
:mod:`logmm.io.hdf5`). Files in
HDF5's newest format (superblock v3, ``libver="latest"``) are refused: HDF5 marks them
"open for writing" on disk, and after a kill no program opens them until ``h5clear -s``.
Inputs read from the same HDF5 file are read through the writer's own handle (h5py
cannot open one file twice with different modes in one process).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import LogmmError, MissingInputError, OutputExistsError, UsageError
from . import hdf5
from . import zarr as zarr_io
from .addresses import INPUT_ONLY_FORMATS, ArrayAddress, parse_address
from .base import ArrayWriter, DetachedWriter, default_chunk_rows, os_error_reason, write_failure
from .compression import COMPRESSIONS, check_compression
from .hdf5 import HDF5Writer, writes_into
from .hdf5_journal import replay_journal
from .layout import partial_dataset, partial_path, sidecar_path, temporary_path
from .npy import NpyWriter, sidecar_exists
from .zarr import ZarrWriter

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_DATASET",
    "ArrayWriter",
    "DetachedWriter",
    "HDF5Writer",
    "NpyWriter",
    "ZarrWriter",
    "check_output",
    "container_output",
    "existing_output_error",
    "output_exists",
    "create_writer",
    "os_error_reason",
    "write_failure",
    "writes_into",
    "default_chunk_rows",
    "output_address",
    "partial_dataset",
    "partial_path",
    "same_path",
    "sidecar_path",
    "temporary_path",
]

DEFAULT_DATASET = "data"

#: the writer of each format
_WRITERS: dict[str, type[ArrayWriter]] = {
    "npy": NpyWriter,
    "hdf5": HDF5Writer,
    "zarr": ZarrWriter,
}

#: the formats that hold several arrays, each module with ``list_arrays``,
#: ``refuse_locked``, ``check_container``, ``container_node`` and ``container_holds``
_CONTAINERS: dict[str, ModuleType] = {
    "hdf5": hdf5,
    "zarr": zarr_io,
}


def output_address(address: str | Path | ArrayAddress) -> ArrayAddress:
    """Parse an output address, naming the dataset ``data`` when none is given."""
    addr = parse_address(address)
    if addr.format != "npy" and addr.dataset is None:
        addr = addr.with_dataset(DEFAULT_DATASET)
    return addr


def container_output(address: str | Path | ArrayAddress) -> bool:
    """Whether ``address`` is written as one dataset inside an existing container.

    True for an HDF5 file or a Zarr store (whose root is a group) that exists and holds
    anything besides the output dataset itself (other arrays, or none at all); False for a
    new file, ``.npy``, a container holding only the output (that one is replaced whole,
    which also frees its space), or a path that is not a readable container.
    """
    addr = output_address(address)
    container = _CONTAINERS.get(addr.format)
    if container is None or not os.path.lexists(addr.path):
        return False
    try:
        names = [name.strip("/") for name in container.list_arrays(addr.path)]
    except LogmmError:      # not a readable HDF5 file or Zarr store
        container.refuse_locked(addr.path)
        return False
    if names == [""]:       # a Zarr store that is one array: nothing can live beside it
        return False
    return names != [addr.dataset]


def check_output(address: str | Path | ArrayAddress, *, overwrite: bool = False,
                 compression: str | None = None,
                 inputs: Iterable[str | Path | ArrayAddress] = (),
                 resume: bool = False) -> ArrayAddress:
    """Validate an output address before any work; return it with its dataset filled in.

    With ``resume``, an existing output is not refused here: the engine compares it with
    the run (:func:`logmm.engine.open_output`), since a complete output of the same run
    is nothing to do rather than an error.

    ``inputs`` are the run's input addresses. An output written whole must not replace
    the file of one of them; an output inside an existing container
    (:func:`container_output`) must not be one of them.

    Raises
    ------
    OutputExistsError
        The output (file, or dataset inside an existing container) exists and
        ``overwrite`` is false (nothing is touched); or it would replace an input.
    LogmmError
        An HDF5 container in HDF5's newest file format (see the module notes).
    MissingInputError
        The output's directory does not exist.
    UsageError
        Unknown extension, an input-only format (``.npz``), or a compression the format
        does not offer.
    """
    addr = output_address(address)
    if addr.format in INPUT_ONLY_FORMATS:
        raise UsageError(f"{addr.path}: logmm does not write .{addr.format} files (it reads "
                         "them as sparse inputs only); write the result as .npy, .h5 or .zarr")
    _check_compression(addr, compression)
    path = addr.path
    parent = path.parent
    if not parent.is_dir():
        if os.path.lexists(parent):
            raise LogmmError(f"cannot write in {parent}: it is a file, not a directory")
        raise MissingInputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LogmmError(f"cannot write in {parent}: {_unwritable_reason(parent)}")
    sources = [parse_address(given) for given in inputs]
    if addr.format == "hdf5":
        replay_journal(path)    # an interrupted change to the file's structure, finished
    if container_output(addr):
        _CONTAINERS[addr.format].check_container(addr, compression)
        if not os.access(path, os.W_OK):
            raise LogmmError(f"cannot write into {path}: {os.strerror(errno.EACCES)}")
        kind, where = _CONTAINERS[addr.format].container_node(addr)
        if kind == "group":
            raise LogmmError(f"{addr} is a group, not an array: logmm writes one dataset and "
                             "never replaces a group and what it holds; name a dataset in it")
        if kind == "inside-array":
            raise LogmmError(f"cannot write {addr}: {addr.with_dataset(where)} is an array, "
                             "so nothing can be stored under it")
        if kind == "array":
            if not overwrite:
                if resume:
                    return addr
                raise existing_output_error(addr)
            for source in sources:
                if same_path(source.path, path) and source.dataset == addr.dataset:
                    raise OutputExistsError(
                        f"{addr} is an input of this run; --overwrite would replace it while "
                        "it is read: write the output to another dataset")
        return addr
    exists = os.path.lexists(path) or sidecar_exists(addr)
    if exists and not overwrite:
        if resume:
            return addr
        raise existing_output_error(addr)
    if exists:
        for source in sources:
            if same_path(source.path, path):
                raise OutputExistsError(
                    f"{path} holds an input of this run ({source}); --overwrite would replace "
                    "the whole file: write the output to another file")
    return addr


def output_exists(address: str | Path | ArrayAddress) -> bool:
    """Whether the output ``address`` names exists: its file (or ``.npy`` sidecar), or
    its dataset inside an existing container."""
    addr = output_address(address)
    if container_output(addr):
        return _CONTAINERS[addr.format].container_node(addr)[0] == "array"
    return os.path.lexists(addr.path) or sidecar_exists(addr)


def existing_output_error(address: ArrayAddress, why: str = "") -> OutputExistsError:
    """``output exists: OUT (use --overwrite to replace it)``, naming the dataset for an
    output inside an existing container; ``why`` comes before the advice."""
    where = address if container_output(address) else address.path
    return OutputExistsError(f"output exists: {where} ({why + '; ' if why else ''}"
                             "use --overwrite to replace it)")


def same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or directory (links followed)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _unwritable_reason(directory: Path) -> str:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
    except (OSError, AttributeError):
        pass
    return os.strerror(errno.EACCES)


def _check_compression(addr: ArrayAddress, compression: str | None) -> None:
    check_compression(addr.format, addr.path, compression)  # see logmm.io.compression


def create_writer(address: str | Path | ArrayAddress, shape: tuple[int, ...],
                  dtype: np.dtype | type | str, *, overwrite: bool = False,
                  compression: str | None = None, chunk_rows: int | None = None,
                  resume: bool = False, contiguous: bool = False,
                  zarr_format: int = 3, row_offset: int = 0,
                  chunk_cols: int | None = None) -> ArrayWriter:
    """A writer for ``address`` (format from its extension); see :class:`ArrayWriter`.

    ``zarr_format`` 2 writes a new Zarr store in format 2 (readable by zarr-python 2.x);
    the default is 3. An array added to an existing store takes that store's format.
    ``row_offset``: the rows before this output's first in a whole result (a ``--shard``
    file); blocks are then addressed by their row in the whole. ``chunk_cols``: columns
    per chunk of a 2-D Zarr output (default all; others ignore it).

    >>> with create_writer("out.h5", (4, 3), "float64") as w:  # doctest: +SKIP
    ...     w.write_rows(0, block)
    ...     w.set_attrs({"method": "auto"})
    ...     w.commit()

    Raises
    ------
    OutputExistsError, MissingInputError, UsageError
        As :func:`check_output`.
    """
    if zarr_format not in (2, 3):
        raise UsageError(f"Zarr format {zarr_format} is not one logmm writes; use 2 or 3")
    addr = check_output(address, overwrite=overwrite, compression=compression)
    return _WRITERS[addr.format](addr, shape, dtype, overwrite=overwrite,
                                 compression=compression, chunk_rows=chunk_rows, resume=resume,
                                 contiguous=contiguous, zarr_format=zarr_format,
                                 in_container=container_output(addr), row_offset=row_offset,
                                 chunk_cols=chunk_cols)
