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
so only a kill inside those few milliseconds can leave the file needing repair. Files in
HDF5's newest format (superblock v3, ``libver="latest"``) are refused: HDF5 marks them
"open for writing" on disk, and after a kill no program opens them until ``h5clear -s``.
Inputs read from the same HDF5 file are read through the writer's own handle (h5py
cannot open one file twice with different modes in one process).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import LogmmError, MissingInputError, OutputExistsError, UsageError
from .addresses import INPUT_ONLY_FORMATS, ArrayAddress, parse_address
from .compression import COMPRESSIONS, check_compression, hdf5_filter_kwargs, zarr_compressors
from .layout import lock_file, partial_dataset, partial_path, sidecar_path, temporary_path

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_DATASET",
    "ArrayWriter",
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
_TARGET_CHUNK_BYTES = 4 << 20


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
    if addr.format not in ("hdf5", "zarr") or not os.path.lexists(addr.path):
        return False
    from .readers import list_arrays

    try:
        names = [name.strip("/") for name in list_arrays(addr.path)]
    except LogmmError:      # not a readable HDF5 file or Zarr store
        if addr.format == "hdf5":
            _refuse_hdf5_locked(addr.path)
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
    if container_output(addr):
        if addr.format == "hdf5":
            _refuse_hdf5_newest_format(path)
            if compression not in (None, "none"):
                # A compressed dataset allocates file space chunk by chunk as blocks land;
                # a kill -9 inside a flush then left HDF5's space records behind its chunk
                # index, and --resume failed with "addr overflow" (seen under load in CI).
                # Uncompressed storage is allocated whole at creation: block writes touch
                # no metadata, so only those are added to a file that holds other data.
                raise UsageError(
                    f"{addr}: --compression {compression} cannot add to an existing HDF5 "
                    "file (compressed chunks change the file's space records while blocks "
                    "are written, which a killed run can leave inconsistent); add it "
                    "uncompressed, or write a new compressed file")
            _WRITTEN_CONTAINERS.add(path.resolve())
        if not os.access(path, os.W_OK):
            raise LogmmError(f"cannot write into {path}: {os.strerror(errno.EACCES)}")
        kind, where = _container_node(addr)
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
    exists = os.path.lexists(path) or _sidecar_exists(addr)
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
        return _container_node(addr)[0] == "array"
    return os.path.lexists(addr.path) or _sidecar_exists(addr)


def existing_output_error(address: ArrayAddress, why: str = "") -> OutputExistsError:
    """``output exists: OUT (use --overwrite to replace it)``, naming the dataset for an
    output inside an existing container; ``why`` comes before the advice."""
    where = address if container_output(address) else address.path
    return OutputExistsError(f"output exists: {where} ({why + '; ' if why else ''}"
                             "use --overwrite to replace it)")


#: HDF5 files this process adds a dataset to (see :func:`writes_into`)
_WRITTEN_CONTAINERS: set[Path] = set()


def writes_into(path: str | Path) -> bool:
    """Whether this process adds a dataset to the existing HDF5 file ``path`` (checked by
    :func:`check_output`): the file's size and modification time then change under the
    run's own writes, so a resume record must identify inputs in it otherwise."""
    try:
        return Path(path).resolve() in _WRITTEN_CONTAINERS
    except OSError:
        return False


def _container_node(addr: ArrayAddress) -> tuple[str | None, str | None]:
    """What the existing container ``addr.path`` has at ``addr.dataset``: ``("array",
    name)``, ``("group", name)``, ``("inside-array", ancestor)`` when the path runs through
    an array, or ``(None, None)`` when nothing is there yet."""
    parts = (addr.dataset or "").split("/")
    if addr.format == "zarr":
        for i in range(len(parts)):
            name = "/".join(parts[:i + 1])
            kind = _zarr_node_kind(addr.path / name)
            if kind == "array":
                return ("array", name) if i == len(parts) - 1 else ("inside-array", name)
            if kind is None:
                return None, None
        return "group", addr.dataset
    import h5py

    try:
        with h5py.File(addr.path, "r") as f:
            node: Any = f
            for i, part in enumerate(parts):
                name = "/".join(parts[:i + 1])
                if part not in node:
                    return None, None
                node = node[part]
                if isinstance(node, h5py.Dataset):
                    return ("array", name) if i == len(parts) - 1 else ("inside-array", name)
            return "group", addr.dataset
    except (OSError, KeyError, ValueError):   # unreadable, or a broken link: the writer says
        return None, None


def _zarr_node_kind(node: Path) -> str | None:
    """``"array"``, ``"group"`` or None for a directory of a Zarr store (v3 or v2)."""
    if (node / ".zarray").exists():
        return "array"
    if (node / ".zgroup").exists():
        return "group"
    try:
        meta = json.loads((node / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return "array" if meta.get("node_type") == "array" else "group"


def _container_holds(addr: ArrayAddress, dataset: str | None) -> bool:
    """Whether the existing container ``addr.path`` has a node named ``dataset``."""
    if not dataset:
        return False
    if addr.format == "zarr":
        node = addr.path / dataset
        return any((node / doc).exists() for doc in ("zarr.json", ".zarray", ".zgroup"))
    import h5py

    try:
        with h5py.File(addr.path, "r") as f:
            return dataset in f
    except (OSError, KeyError, ValueError):
        return False


def _refuse_hdf5_locked(path: Path) -> None:
    """Raise if HDF5's own file lock keeps ``path`` from being read: another process is
    writing it, and nothing can be said about what it holds."""
    import h5py

    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        if "lock" not in str(exc).lower():
            return
        lock = lock_file(path)                                # logmm.io.resume.lock_path
        try:
            who = f"another logmm run (pid {int(lock.read_text(encoding='ascii'))})"
        except (OSError, ValueError):
            who = "another process"
        raise LogmmError(f"{who} is writing into {path} (HDF5 allows one writer per file, "
                         "and no reader meanwhile); wait for it") from None


def _refuse_hdf5_newest_format(path: Path) -> None:
    """Refuse writing into an HDF5 file with a version-3 superblock (see module notes)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            version = f.id.get_create_plist().get_version()[0]
    except OSError:
        return                   # the writer's own open reports what is wrong
    if version >= 3:
        raise LogmmError(
            f"cannot add a dataset to {path}: it uses HDF5's newest file format (superblock "
            f"v{version}), which a killed run would leave unopenable until 'h5clear -s'; "
            "write the output to a new file")


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


def write_failure(path: str | Path, exc: BaseException) -> LogmmError:
    """A one-line :class:`LogmmError` for an operating-system failure while writing
    ``path``: ``cannot write OUT: No space left on device``.

    h5py and the Zarr stores report ``errno`` in different ways (an ``OSError`` with
    ``errno`` set, or HDF5's message holding ``errno = 28``); both become the system's
    text for that error.
    """
    return LogmmError(f"cannot write {path}: {os_error_reason(exc)}")


def _os_failure(exc: BaseException) -> bool:
    """An operating-system failure from the system or a storage library: an OSError that
    is not one of logmm's own errors (``OutputExistsError`` is a ``FileExistsError`` too),
    or h5py's RuntimeError carrying HDF5's ``errno = N`` (a failed flush)."""
    if isinstance(exc, LogmmError):
        return False
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError)
                                        and re.search(r"errno = \d+", str(exc)) is not None)


def os_error_reason(exc: BaseException) -> str:
    """``strerror`` of an OSError (or of the ``errno = N`` in an HDF5 message), else its
    text on one line."""
    code = getattr(exc, "errno", None)
    if not isinstance(code, int):
        match = re.search(r"errno = (\d+)", str(exc))
        code = int(match[1]) if match else None
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return " ".join(str(exc).split()) or type(exc).__name__


def _sidecar_exists(addr: ArrayAddress) -> bool:
    """Whether a ``.npy`` output's sidecar exists, as an output of its own. A sidecar
    without its ``.npy`` but beside a partial output is a run killed between the two
    renames of its commit (sidecar first): that one belongs to ``--resume``."""
    if addr.format != "npy" or not os.path.lexists(sidecar_path(addr.path)):
        return False
    return os.path.lexists(addr.path) or not os.path.lexists(partial_path(addr.path))


def _check_compression(addr: ArrayAddress, compression: str | None) -> None:
    check_compression(addr.format, addr.path, compression)  # see logmm.io.compression


def default_chunk_rows(n_rows: int, row_bytes: int) -> int:
    """Rows per output chunk: about 4 MiB per chunk, at least 1, at most ``n_rows``."""
    rows = _TARGET_CHUNK_BYTES // max(1, row_bytes)
    return max(1, min(max(1, n_rows), rows))


class ArrayWriter:
    """Base writer: temporary file, row-block writes, attributes, atomic commit.

    Parameters
    ----------
    address : ArrayAddress
        The final output (dataset part filled in; see :func:`output_address`).
    shape : tuple of int
        Shape of the whole result.
    dtype : numpy.dtype
        Stored dtype; blocks are cast to it.
    overwrite : bool
        Replace an existing output at commit.
    compression : {"gzip", "lzf", "zstd", "blosc", "none"} or None
        HDF5: None means none (zstd, blosc need hdf5plugin); Zarr: None means zarr's
        default (zstd), lzf is refused. See :mod:`logmm.io.compression`.
    chunk_rows : int or None
        Rows per storage chunk (HDF5, Zarr); default about 4 MiB per chunk.
    resume : bool
        Reopen the partial output of an interrupted run (same shape and dtype) instead of
        starting afresh; ``resumed`` tells which happened.
    contiguous : bool
        Store unchunked where the format allows it and no compression is asked (HDF5:
        about twice as fast to write, and as fast to read by rows).
    """

    #: rows before this writer's first row in the whole result (a shard's file holds rows
    #: ``row_offset:row_offset + shape[0]``; blocks are addressed by their row in the whole)
    row_offset: int = 0
    #: one dataset inside an existing container (set by ``__init__``; see the module notes)
    in_container: bool = False

    @property
    def shares_file_with_inputs(self) -> bool:
        """Whether inputs of this run are read through this writer's open file (an HDF5
        file the output is added to): no other process can read them meanwhile."""
        return bool(getattr(self, "_shared_readers", ()))

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype | type | str,
                 *, overwrite: bool = False, compression: str | None = None,
                 chunk_rows: int | None = None, resume: bool = False,
                 contiguous: bool = False, zarr_format: int = 3) -> None:
        if zarr_format not in (2, 3):
            raise UsageError(f"Zarr format {zarr_format} is not one logmm writes; use 2 or 3")
        self.zarr_format = zarr_format
        self.address = check_output(address, overwrite=overwrite, compression=compression)
        self.path = self.address.path
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.overwrite = overwrite
        self.compression = compression
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        n_rows = self.shape[0] if self.shape else 1
        if chunk_rows is not None and chunk_rows < 1:
            raise UsageError(f"chunk rows must be at least 1, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows) if chunk_rows else default_chunk_rows(n_rows, row_bytes)
        #: written as one dataset inside an existing HDF5 file / Zarr store (see the
        #: module notes), under :func:`partial_dataset` until committed
        self.in_container = container_output(self.address)
        self.tmp_path = partial_path(self.path)
        self.contiguous = contiguous
        self.attrs: dict[str, Any] = {}
        self.committed = False
        self.aborted = False
        self.resumed = False
        if resume and self._partial_exists():
            try:
                self._reopen()
                self.resumed = True
            except Exception as exc:  # torn by a kill mid-write, or another layout: afresh
                self._close_quietly()
                if isinstance(exc, LogmmError):      # the container cannot be opened
                    raise
        if not self.resumed:
            try:
                self._discard_partial()  # an abandoned partial output
                self._create()
            except BaseException as exc:
                if not self.in_container:
                    self._close_quietly()
                try:
                    self._discard_partial()
                except Exception:  # noqa: S110 - the container could not be opened at all
                    pass
                self._close_quietly()
                if _os_failure(exc):
                    raise write_failure(self.path, exc) from exc
                raise

    # -- subclass hooks
    def _partial_exists(self) -> bool:
        """Whether an interrupted run's partial output is there to resume."""
        return os.path.lexists(self.tmp_path)

    def _discard_partial(self) -> None:
        """Remove the partial output (never the final one, nor anything beside it)."""
        _remove(self.tmp_path)

    def _output_exists(self) -> bool:
        return os.path.lexists(self.path) or _sidecar_exists(self.address)

    def _create(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reopen(self) -> None:  # pragma: no cover - abstract
        """Open the existing partial output for writing; raise if it does not fit."""
        raise NotImplementedError

    def _check_reopened(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if tuple(shape) != self.shape or np.dtype(dtype) != self.dtype:
            raise ValueError(f"partial output holds {shape} {dtype}, not {self.shape} "
                             f"{self.dtype}")

    def flush(self) -> None:
        """Hand everything written so far to the operating system (survives a kill -9).

        Raises
        ------
        LogmmError
            The operating system refused (disk full, ...), naming the output.
        """
        try:
            self._flush()
        except Exception as exc:
            if not _os_failure(exc):
                raise
            raise write_failure(self.path, exc) from exc

    def _flush(self) -> None:
        pass

    def region_view(self, row: int, col: int, shape: tuple[int, int]) -> np.ndarray | None:
        """A writable view of the output at ``(row, col)`` of ``shape``, for results to be
        computed in place, or None where the format has none (then use write_region)."""
        return None

    def _write(self, key: Any, block: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _store_attrs(self, attrs: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public interface
    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Store ``block`` (shape ``(r, *shape[1:])``) as rows ``start:start + r``."""
        self.write_region(start, 0, block)

    def write_region(self, row: int, col: int, block: np.ndarray) -> None:
        """Store a 2-D ``block`` at rows ``row:row + r`` and columns ``col:col + c``
        (``col`` must be 0 for outputs of other ranks)."""
        if self.committed or self.aborted:
            raise LogmmError(f"{self.address}: writer is already closed")
        row -= self.row_offset
        block = np.asarray(block)
        fits = 0 <= row <= row + len(block) <= self.shape[0]
        if len(self.shape) == 2 and block.ndim == 2:
            fits = fits and 0 <= col <= col + block.shape[1] <= self.shape[1]
            key: Any = (slice(row, row + len(block)), slice(col, col + block.shape[1]))
        else:
            fits = fits and col == 0 and block.shape[1:] == self.shape[1:]
            key = slice(row, row + len(block))
        if not fits:
            raise ValueError(
                f"block of shape {block.shape} at ({row}, {col}) does not fit an output of "
                f"shape {self.shape}"
            )
        try:
            self._write(key, block.astype(self.dtype, copy=False))
        except Exception as exc:    # disk full, quota, I/O error: name the output
            if not _os_failure(exc):
                raise
            raise write_failure(self.path, exc) from exc

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add provenance attributes (JSON-like values); they are stored at :meth:`commit`."""
        self.attrs.update({str(k): _jsonable(v) for k, v in attrs.items()})

    def commit(self) -> Path:
        """Store the attributes with ``complete: true`` and rename the result into place.

        Raises
        ------
        OutputExistsError
            The output appeared meanwhile and ``overwrite`` is false (the temporary is removed).
        """
        if self.committed:
            return self.path
        try:
            attrs = dict(self.attrs, complete=True)
            self._store_attrs(attrs)
            if not self.in_container:
                self._close()
            if not self.overwrite and self._output_exists():
                where = self.address if self.in_container else self.path
                raise OutputExistsError(
                    f"output exists: {where} (created while logmm ran; "
                    "use --overwrite to replace it)"
                )
            self._publish(attrs)
        except BaseException as exc:
            self.abort()
            if _os_failure(exc):
                raise write_failure(self.path, exc) from exc
            raise
        self.committed = True
        return self.path

    def suspend(self) -> None:
        """Close, keeping the partial output for a later ``resume`` (an interrupted run)."""
        if self.committed or self.aborted:
            return
        self._close_quietly()
        self.suspended = True

    def abort(self) -> None:
        """Remove the temporary output (idempotent; the final output is never touched;
        a suspended partial output is kept)."""
        if self.committed or getattr(self, "suspended", False):
            return
        self.aborted = True
        if not self.in_container:
            self._close_quietly()
        try:
            self._discard_partial()
        except Exception:  # noqa: S110 - best effort: a container we cannot open keeps it
            pass
        self._close_quietly()

    def _publish(self, attrs: dict[str, Any]) -> None:
        _replace(self.tmp_path, self.path)

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: S110 - best effort while cleaning up
            pass

    def __enter__(self) -> ArrayWriter:
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A writer does not travel to another process (a dask worker): it arrives as a
        :class:`DetachedWriter`, which offers no in-place view, so tasks compute into
        arrays of their own and this process stores them."""
        return DetachedWriter, (self.address, self.shape)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None or not self.committed:
            self.abort()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} shape={self.shape} dtype={self.dtype}>"


class NpyWriter(ArrayWriter):
    """``.npy`` output through a memory map; provenance in the ``OUT.npy.json`` sidecar."""

    def _create(self) -> None:
        self._mm: np.memmap | None = np.lib.format.open_memmap(
            self.tmp_path, mode="w+", dtype=self.dtype, shape=self.shape
        )
        _preallocate(self.tmp_path)

    def _reopen(self) -> None:
        self._mm = np.lib.format.open_memmap(self.tmp_path, mode="r+")
        self._check_reopened(self._mm.shape, self._mm.dtype)

    def _write(self, key: Any, block: np.ndarray) -> None:
        assert self._mm is not None
        self._mm[key] = block

    def region_view(self, row: int, col: int, shape: tuple[int, int]) -> np.ndarray | None:
        if self._mm is None or self._mm.ndim != 2 or self.committed or self.aborted:
            return None
        row -= self.row_offset
        return self._mm[row:row + shape[0], col:col + shape[1]]

    # flush(): nothing to do. Stores into a shared memory map land in the page cache at
    # once, where they outlive a killed process; msync would only add a wait for the disk.

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        pass  # written beside the array in _publish

    def _close(self) -> None:
        # No msync: the pages are in the page cache, readable by every process (and by the
        # rename that publishes them) whether or not they have reached the disk yet; an
        # msync of a large output cost 35 ms per 80 MB, for no kill-safety gained.
        self._mm = None

    def _publish(self, attrs: dict[str, Any]) -> None:
        sidecar = sidecar_path(self.path)
        tmp_sidecar = temporary_path(sidecar)
        try:
            tmp_sidecar.write_text(json.dumps(attrs, indent=2) + "\n", encoding="utf-8")
            _replace(tmp_sidecar, sidecar)
            _replace(self.tmp_path, self.path)
        except BaseException:
            _remove(tmp_sidecar)
            raise

    def abort(self) -> None:
        super().abort()
        _remove(temporary_path(sidecar_path(self.path)))


class HDF5Writer(ArrayWriter):
    """HDF5 output: a chunked dataset (gzip/lzf/zstd/blosc/none), provenance in its attributes.

    Inside an existing file (``in_container``) the dataset is written under its hidden
    name (:func:`partial_dataset`) and moved to its own name at commit; see the module notes.
    """

    _file: Any = None
    _shared_readers: Any = ()

    def _layout(self) -> tuple[tuple[int, ...] | None, dict[str, Any]]:
        chunks = None
        plain = self.compression in (None, "none")
        if self.shape and all(self.shape) and not (self.contiguous and plain):
            chunks = (min(self.chunk_rows, self.shape[0]),) + self.shape[1:]
        # HDF5 filters need chunked storage; empty arrays have none
        filters = hdf5_filter_kwargs(self.compression) if chunks is not None else {}
        return chunks, filters

    def _create(self) -> None:
        import h5py

        chunks, filters = self._layout()
        if self.in_container:
            f = self._file if self._file is not None else self._open_container()
            self._file = f
            dcpl = None
            if not filters:
                # storage reserved now: writing blocks then changes no HDF5 metadata, so a
                # kill while blocks are written cannot touch the file's structure
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)   # every block is written
            self._ds = f.create_dataset(partial_dataset(self.address.dataset),
                                        shape=self.shape, dtype=self.dtype, chunks=chunks,
                                        dcpl=dcpl, **filters)
            self._ds.attrs["complete"] = False      # `logmm info` lists it as incomplete
            f.flush()
            return
        # No chunk cache: blocks are whole chunks, so caching gains nothing, and a dirty
        # cached chunk that cannot be flushed (disk full) makes HDF5 fail the close and
        # crash when it frees the file at exit.
        self._file = h5py.File(self.tmp_path, "w", rdcc_nbytes=0)
        self._ds = self._file.create_dataset(
            self.address.dataset, shape=self.shape, dtype=self.dtype, chunks=chunks,
            **filters,
        )

    def _open_container(self) -> Any:
        """The existing output file, opened for writing; this process's readers of it are
        moved onto the same handle (HDF5 refuses a second, writable open of a file that
        is open read-only) and back to their own read-only handles at close."""
        import h5py

        from .readers import release_hdf5_readers

        readers = release_hdf5_readers(self.path)
        try:
            f = h5py.File(self.path, "r+", rdcc_nbytes=0)
        except OSError as exc:
            for reader in readers:
                reader.rebind(None)
            raise _container_unwritable(self.path, exc) from None
        for reader in readers:
            reader.rebind(f)
        self._shared_readers = readers
        return f

    def _partial_exists(self) -> bool:
        if not self.in_container:
            return super()._partial_exists()
        return _container_holds(self.address, partial_dataset(self.address.dataset))

    def _discard_partial(self) -> None:
        if not self.in_container:
            super()._discard_partial()
            return
        if self._file is None:
            self._file = self._open_container()
        hidden = partial_dataset(self.address.dataset)
        if hidden in self._file:
            del self._file[hidden]
            self._file.flush()

    def _output_exists(self) -> bool:
        if not self.in_container:
            return super()._output_exists()
        if self._file is not None:
            return self.address.dataset in self._file
        return _container_holds(self.address, self.address.dataset)

    def _reopen(self) -> None:
        import h5py

        if self.in_container:
            self._file = self._open_container()
            self._ds = self._file[partial_dataset(self.address.dataset)]
        else:
            self._file = h5py.File(self.tmp_path, "r+", rdcc_nbytes=0)
            self._ds = self._file[self.address.dataset]
        self._check_reopened(self._ds.shape, self._ds.dtype)

    def _write(self, key: Any, block: np.ndarray) -> None:
        self._ds[key] = block

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            if value is not None:  # HDF5 has no null attribute
                self._ds.attrs[key] = value

    def _publish(self, attrs: dict[str, Any]) -> None:
        if not self.in_container:
            super()._publish(attrs)
            return
        import h5py

        f, final = self._file, self.address.dataset
        if final in f:                      # --overwrite (checked by commit)
            if not isinstance(f[final], h5py.Dataset):
                raise OutputExistsError(f"{self.address} became a group while logmm ran; "
                                        "a group is never replaced")
            del f[final]
        f.move(partial_dataset(final), final)
        f.flush()
        self._close()

    def _close(self) -> None:
        f, self._file = self._file, None
        try:
            if f is not None:
                f.close()
        finally:
            readers, self._shared_readers = self._shared_readers, []
            for reader in readers:
                try:
                    reader.rebind(None)
                except Exception:  # noqa: S110 - its file is gone or busy: it reads no more
                    pass

    def abort(self) -> None:
        # After a failed write (disk full) HDF5 2.0 still holds dirty metadata; closing
        # the file then fails, and the library crashes (SIGSEGV) when it frees the file
        # at exit. The partial output is being discarded anyway: empty it first, and the
        # close's last writes land in freed space and succeed. (Never inside an existing
        # file: there the hidden dataset is deleted and the file kept.)
        if (self._file is not None and not self.committed and not self.in_container
                and not getattr(self, "suspended", False)):
            try:
                os.truncate(self.tmp_path, 0)
            except OSError:
                pass
        super().abort()


def _container_unwritable(path: Path, exc: BaseException) -> LogmmError:
    """One line for an existing HDF5 file that cannot be opened for writing."""
    text = str(exc)
    if "lock" in text or "errno = 11" in text:
        return LogmmError(f"cannot write into {path}: another process has it open (HDF5 "
                          "allows one writer per file, and no reader while it writes); "
                          "retry when it is done")
    if "already open for read-only" in text:
        return LogmmError(f"cannot write into {path}: this run also reads it in a way that "
                          "keeps it open read-only; write the output to another file")
    return LogmmError(f"cannot write into {path}: {os_error_reason(exc)}")


class ZarrWriter(ArrayWriter):
    """Zarr output (format 3, or 2 with ``zarr_format=2``): an array chunked by
    ``chunk_rows`` rows, provenance in its attributes.

    Inside an existing store (``in_container``) the array is written as the hidden
    directory :func:`partial_dataset` beside its final name, and renamed at commit.
    """

    def _create(self) -> None:
        import zarr

        compressors: Any = zarr_compressors(self.compression)
        chunks = (max(1, min(self.chunk_rows, self.shape[0] if self.shape else 1)),) + tuple(
            max(1, s) for s in self.shape[1:]
        )
        if self.in_container:
            group = zarr.open_group(str(self.path), mode="r+")
            if group.metadata.zarr_format == 2:     # the array joins in its store's format
                compressors = _zarr_v2_compressor(self.compression)
            head, _, name = partial_dataset(self.address.dataset).rpartition("/")
            for part in head.split("/") if head else ():
                group = group.require_group(part)
            self._arr: Any = group.create_array(name, shape=self.shape, dtype=self.dtype,
                                                chunks=chunks, compressors=compressors)
            self._arr.attrs["complete"] = False     # `logmm info` lists it as incomplete
            return
        if self.zarr_format == 2:
            compressors = _zarr_v2_compressor(self.compression)
        group = zarr.open_group(str(self.tmp_path), mode="w", zarr_format=self.zarr_format)
        self._arr = group.create_array(
            self.address.dataset, shape=self.shape, dtype=self.dtype, chunks=chunks,
            compressors=compressors,
        )

    def _hidden_dir(self) -> Path:
        return self.path / partial_dataset(self.address.dataset)

    def _partial_exists(self) -> bool:
        if not self.in_container:
            return super()._partial_exists()
        return self._hidden_dir().is_dir()

    def _discard_partial(self) -> None:
        if not self.in_container:
            super()._discard_partial()
            return
        _remove(self._hidden_dir())

    def _output_exists(self) -> bool:
        if not self.in_container:
            return super()._output_exists()
        return _container_holds(self.address, self.address.dataset)

    def _reopen(self) -> None:
        import zarr

        if self.in_container:
            self._arr = zarr.open_array(str(self.path),
                                        path=partial_dataset(self.address.dataset), mode="r+")
        else:
            self._arr = zarr.open_array(str(self.tmp_path), path=self.address.dataset,
                                        mode="r+")
        self._check_reopened(self._arr.shape, self._arr.dtype)

    def _write(self, key: Any, block: np.ndarray) -> None:
        self._arr[key] = block     # each chunk is its own file, written when this returns

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        self._arr.attrs.update(attrs)

    def _publish(self, attrs: dict[str, Any]) -> None:
        if not self.in_container:
            super()._publish(attrs)
            return
        self._close()
        final = self.path / self.address.dataset
        if _zarr_node_kind(final) == "group":
            raise OutputExistsError(f"{self.address} became a group while logmm ran; a group "
                                    "is never replaced")
        _replace(self._hidden_dir(), final)

    def _close(self) -> None:
        self._arr = None


def _zarr_v2_compressor(compression: str | None) -> Any:
    """``compressors`` for an array added to a Zarr v2 store (numcodecs codecs, with the
    levels :func:`logmm.io.compression.zarr_compressors` uses for v3)."""
    if compression is None:
        return "auto"
    if compression == "none":
        return None
    import numcodecs

    codecs = {"gzip": lambda: numcodecs.GZip(level=5), "zstd": lambda: numcodecs.Zstd(level=3),
              "blosc": lambda: numcodecs.Blosc(cname="lz4", clevel=5,
                                               shuffle=numcodecs.Blosc.SHUFFLE)}
    if compression not in codecs:
        raise UsageError(f"{compression} compression is not available for Zarr")
    return [codecs[compression]()]


class DetachedWriter:
    """What a writer becomes in another process: it has no view to compute into."""

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...]) -> None:
        self.address, self.shape = address, shape

    def region_view(self, row: int, col: int, shape: tuple[int, int]) -> None:
        return None


_WRITERS: dict[str, type[ArrayWriter]] = {
    "npy": NpyWriter,
    "hdf5": HDF5Writer,
    "zarr": ZarrWriter,
}


def create_writer(address: str | Path | ArrayAddress, shape: tuple[int, ...],
                  dtype: np.dtype | type | str, *, overwrite: bool = False,
                  compression: str | None = None, chunk_rows: int | None = None,
                  resume: bool = False, contiguous: bool = False,
                  zarr_format: int = 3) -> ArrayWriter:
    """A writer for ``address`` (format from its extension); see :class:`ArrayWriter`.

    ``zarr_format`` 2 writes a new Zarr store in format 2 (readable by zarr-python 2.x);
    the default is 3. An array added to an existing store takes that store's format.

    >>> with create_writer("out.h5", (4, 3), "float64") as w:  # doctest: +SKIP
    ...     w.write_rows(0, block)
    ...     w.set_attrs({"method": "auto"})
    ...     w.commit()

    Raises
    ------
    OutputExistsError, MissingInputError, UsageError
        As :func:`check_output`.
    """
    addr = output_address(address)
    return _WRITERS[addr.format](addr, shape, dtype, overwrite=overwrite,
                                 compression=compression, chunk_rows=chunk_rows, resume=resume,
                                 contiguous=contiguous, zarr_format=zarr_format)


# ----------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """Tuples → lists, NumPy scalars → Python scalars (HDF5 and JSON both accept the result)."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def _preallocate(path: Path) -> None:
    """Reserve the disk blocks of a memory-mapped file now.

    ``open_memmap`` makes a sparse file; a store into a page the full filesystem cannot
    back kills the process with SIGBUS, with no error to report and the partial output
    left behind. Reserving the blocks up front turns that into ENOSPC here, before any
    work. Filesystems without ``fallocate`` get glibc's emulation, or nothing where even
    that is not offered.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a file or directory tree if present."""
    try:
        if path.is_dir() and not path.is_symlink():
            # a failed Zarr write may still have chunk stores in flight on zarr's I/O
            # thread, recreating directories as rmtree removes them: try until it stays gone
            for attempt in range(50):
                shutil.rmtree(path, ignore_errors=True)
                if not os.path.lexists(path):
                    break
                time.sleep(0.01 * (attempt + 1))
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _replace(src: Path, dest: Path) -> None:
    """Move ``src`` onto ``dest`` (atomic for files; directories via a move-aside)."""
    dest_exists = os.path.lexists(dest)
    if dest_exists and (src.is_dir() or (dest.is_dir() and not dest.is_symlink())):
        old = temporary_path(dest, "old")
        _remove(old)
        os.replace(dest, old)
        try:
            os.replace(src, dest)
        except BaseException:
            os.replace(old, dest)
            raise
        _remove(old)
    else:
        os.replace(src, dest)
