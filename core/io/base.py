"""The two abstract bases of logmm's file I/O, and the helpers every format shares.

:class:`ArrayReader` (block reads) and :class:`ArrayWriter` (atomic chunked writes) set
all their state in ``__init__``; a format module (:mod:`logmm.io.npy`,
:mod:`logmm.io.hdf5`, :mod:`logmm.io.zarr`, :mod:`logmm.io.sparse`) subclasses them,
sets its own handles first and then calls the base ``__init__``. The helpers here know no
format: attribute values to JSON (:func:`jsonable`), one-line error texts, the "it holds:
…" listing of a file's arrays, removing and replacing files and directories.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import (
    FormatError,
    InputError,
    LogmmError,
    MissingInputError,
    OutputExistsError,
    UsageError,
)
from .addresses import ArrayAddress
from .layout import partial_path, temporary_path

__all__ = [
    "MAX_LISTED",
    "ArrayReader",
    "ArrayWriter",
    "DetachedWriter",
    "default_chunk_rows",
    "dtype_name",
    "holds",
    "is_os_failure",
    "jsonable",
    "missing_message",
    "one_line",
    "only_array",
    "reopen_reader",
    "os_error_reason",
    "remove_path",
    "replace_path",
    "shape_text",
    "write_failure",
]

#: arrays named in a "holds: …" listing before "(and N more)"
MAX_LISTED = 20
_TARGET_CHUNK_BYTES = 4 << 20


class ArrayReader:
    """Common interface of the readers (use :func:`open_array` to get one).

    Attributes
    ----------
    address : ArrayAddress
        Where the array lives (with the dataset resolved when the file holds one array).
    shape : tuple of int
    dtype : numpy.dtype
        The stored dtype; reads return arrays of this dtype.
    chunks : tuple of int or None
        Storage chunk shape, None when stored contiguously.
    """

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype,
                 chunks: tuple[int, ...] | None) -> None:
        self.address = address
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(int(c) for c in chunks) if chunks else None

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def chunk_rows(self) -> int | None:
        """Rows per storage chunk (the natural unit of row reads), or None."""
        if not self.chunks or self.ndim == 0:
            return None
        return int(self.chunks[0])

    @property
    def decodes_chunks(self) -> bool:
        """Reads go through per-chunk decode buffers (Zarr; filtered HDF5 datasets)."""
        return False

    @property
    def is_sparse(self) -> bool:
        """``read_rows`` returns a scipy.sparse CSR matrix
        (:class:`~logmm.io.sparse.SparseReader`)."""
        return False

    @property
    def nnz(self) -> int:
        """Stored entries: every entry of a dense array (a sparse reader counts its own)."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Size of the whole array in memory, in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read_rows(self, start: int, stop: int, *, allow_view: bool = False) -> np.ndarray:
        """Rows ``start:stop`` as an in-memory C-contiguous array of ``dtype``.

        With ``allow_view``, a reader that can (``.npy``) returns a read-only view of its
        memory map instead of a copy, after asking the OS to read those pages ahead.

        Raises
        ------
        FormatError
            The stored data cannot be read (corrupt or truncated file).
        """
        if self.ndim == 0:
            raise InputError(f"{self.address} is a scalar; it has no rows")
        start, stop = max(0, int(start)), min(self.shape[0], int(stop))
        stop = max(start, stop)
        if allow_view and (view := self._view_rows(start, stop)) is not None:
            return view
        try:
            block = self._read(slice(start, stop))
        except LogmmError:
            raise
        except Exception as exc:  # the storage libraries raise many kinds on bad data
            raise FormatError(
                f"{self.address}: cannot read rows {start}:{stop} ({one_line(exc)}); "
                "the file may be corrupt or truncated"
            ) from exc
        return np.ascontiguousarray(block)

    def read_region(self, row_start: int, row_stop: int, col_start: int,
                    col_stop: int) -> np.ndarray:
        """Rows ``row_start:row_stop`` and columns ``col_start:col_stop`` of a 2-D array,
        in memory and C-contiguous."""
        if self.ndim != 2:
            raise InputError(f"{self.address} is {self.ndim}-D; a region needs a 2-D array")
        key = (slice(int(row_start), int(row_stop)), slice(int(col_start), int(col_stop)))
        try:
            block = self._read(key)
        except LogmmError:
            raise
        except Exception as exc:
            raise FormatError(
                f"{self.address}: cannot read rows {row_start}:{row_stop}, columns "
                f"{col_start}:{col_stop} ({one_line(exc)}); the file may be corrupt or "
                "truncated"
            ) from exc
        return np.ascontiguousarray(block)

    def read_all(self) -> np.ndarray:
        """The whole array in memory."""
        if self.ndim == 0:
            try:
                return np.asarray(self._read(()))
            except Exception as exc:
                raise FormatError(f"{self.address}: cannot read ({one_line(exc)})") from exc
        return self.read_rows(0, self.shape[0])

    def close(self) -> None:
        """Release the file handle (idempotent)."""

    def _view_rows(self, start: int, stop: int) -> np.ndarray | None:
        """A zero-copy view of rows ``start:stop``, or None where the format has none."""
        return None

    def _read(self, key: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> ArrayReader:
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the reader's class and absolute address: another process (a dask
        worker) reopens the file there, once (see :func:`reopen_reader`)."""
        addr = self.address
        absolute = ArrayAddress(Path(addr.path).resolve(), addr.format, addr.dataset)
        return reopen_reader, (type(self), absolute)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} shape={self.shape} dtype={self.dtype}>"


def default_chunk_rows(n_rows: int, row_bytes: int) -> int:
    """Rows per output chunk: about 4 MiB per chunk, at least 1, at most ``n_rows``."""
    rows = _TARGET_CHUNK_BYTES // max(1, row_bytes)
    return max(1, min(max(1, n_rows), rows))


class ArrayWriter:
    """Base writer: temporary file, row-block writes, attributes, atomic commit.

    A format subclass sets its own handles, then calls this ``__init__``, which sets the
    common state and opens the storage (:meth:`_open`). The address is checked by
    :func:`logmm.io.writers.create_writer` before (:func:`~logmm.io.writers.check_output`).

    Parameters
    ----------
    address : ArrayAddress
        The final output, checked (dataset part filled in; see :func:`output_address`).
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
    zarr_format : {2, 3}
        The format of a new Zarr store.
    in_container : bool
        Written as one dataset inside an existing HDF5 file / Zarr store, under
        :func:`~logmm.io.layout.partial_dataset` until committed (see
        :func:`~logmm.io.writers.container_output`).
    row_offset : int
        Rows before this writer's first row in the whole result (a shard's file holds rows
        ``row_offset:row_offset + shape[0]``; blocks are addressed by their row in the whole).
    chunk_cols : int or None
        Columns per storage chunk of a 2-D Zarr output (default all): a dask run of a plan
        with column panels chunks by panel, so that each (block, panel) task writes whole
        chunks of its own.
    """

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype | type | str,
                 *, overwrite: bool = False, compression: str | None = None,
                 chunk_rows: int | None = None, resume: bool = False,
                 contiguous: bool = False, zarr_format: int = 3, in_container: bool = False,
                 row_offset: int = 0, chunk_cols: int | None = None) -> None:
        self.zarr_format = zarr_format
        self.chunk_cols = int(chunk_cols) if chunk_cols else None
        self.address = address
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
        self.in_container = in_container
        self.row_offset = int(row_offset)
        self.tmp_path = partial_path(self.path)
        self.contiguous = contiguous
        self.attrs: dict[str, Any] = {}
        self.committed = False
        self.aborted = False
        self.suspended = False
        self.resumed = False
        self._open(resume)

    @property
    def shares_file_with_inputs(self) -> bool:
        """Whether inputs of this run are read through this writer's open file (an HDF5
        file the output is added to): no other process can read them meanwhile."""
        return False

    def _open(self, resume: bool) -> None:
        """Open the storage: with ``resume``, the partial output of an interrupted run
        when it fits (``resumed`` is then true), else a new one."""
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
                if is_os_failure(exc):
                    raise write_failure(self.path, exc) from exc
                raise

    # -- subclass hooks
    def _partial_exists(self) -> bool:
        """Whether an interrupted run's partial output is there to resume."""
        return os.path.lexists(self.tmp_path)

    def _discard_partial(self) -> None:
        """Remove the partial output (never the final one, nor anything beside it)."""
        remove_path(self.tmp_path)

    def _output_exists(self) -> bool:
        return os.path.lexists(self.path)

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
            if not is_os_failure(exc):
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

    def write_all(self, values: np.ndarray) -> None:
        """Store the whole array (any rank; a 0-D output too)."""
        values = np.asarray(values)
        if values.ndim == 0:
            if values.shape != self.shape:
                raise ValueError(f"a scalar does not fit an output of shape {self.shape}")
            self._write((), values.astype(self.dtype, copy=False))
        elif values.size:
            self.write_rows(0, values)

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
            if not is_os_failure(exc):
                raise
            raise write_failure(self.path, exc) from exc

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add provenance attributes (JSON-like values); they are stored at :meth:`commit`."""
        self.attrs.update({str(k): jsonable(v) for k, v in attrs.items()})

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
            if is_os_failure(exc):
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
        if self.committed or self.suspended:
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
        replace_path(self.tmp_path, self.path)

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: S110 - best effort while cleaning up
            pass

    def __enter__(self) -> ArrayWriter:
        return self

    #: True only for a :class:`DetachedWriter` that writes its task's rows itself
    writes_in_task = False

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A writer does not travel to another process (a dask worker): it arrives as a
        :class:`DetachedWriter`, which offers no in-place view, so tasks compute into
        arrays of their own; a Zarr writer's detached copy writes them into the partial
        store itself (whole chunks, no lock), others' return them for this process to
        store."""
        return DetachedWriter, (self.address, self.shape, self.task_target())

    def task_target(self) -> Any:
        """What another process writes rows into: ``(array, row offset)`` of a partial
        output many processes may write whole chunks of (Zarr) or write one at a time
        (HDF5, :mod:`logmm.io.hdf5_locked`), or None."""
        return None

    @contextmanager
    def lent(self) -> Iterator[None]:
        """While other processes write into :meth:`task_target` (an HDF5 file is then
        closed here, as HDF5 lets one process write a file); reopened on exit."""
        yield

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None or not self.committed:
            self.abort()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} shape={self.shape} dtype={self.dtype}>"


class DetachedWriter:
    """What a writer becomes in another process (a dask worker): no view to compute into;
    with a ``target`` (:meth:`ArrayWriter.task_target`) it writes whole row blocks into
    it, so the values never travel back."""

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...],
                 target: Any = None) -> None:
        self.address, self.shape, self.target = address, shape, target
        self.writes_in_task = target is not None
        #: pieces the target has a task write its block in (None: logmm.engine.TASK_PIECES)
        self.pieces: int | None = getattr(target[0], "pieces", None) if target else None

    def region_view(self, row: int, col: int, shape: tuple[int, int]) -> None:
        """None: another process has no view of the output to compute into."""
        return None

    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Store rows ``start:start + len(block)`` (of the whole output) in the target."""
        self.write_region(start, 0, block)

    def write_region(self, row: int, col: int, block: np.ndarray) -> None:
        """Store ``block`` at ``(row, col)`` of the whole output in the target (whole
        chunks: a tile of a (block, panel) task of a store chunked by panel)."""
        array, offset = self.target
        array[row - offset:row - offset + len(block), col:col + block.shape[1]] = block




#: readers reopened in this process (a dask worker), by class, address, size and mtime
_REOPENED: dict[tuple[str, str, int, int], ArrayReader] = {}


def reopen_reader(cls: Any, address: ArrayAddress) -> ArrayReader:
    """The ``cls`` reader of ``address`` in this process, opened once (keyed by the
    file's size and modification time, so a rewritten file is reopened): readers
    unpickle through this, so that a dask worker opens each input once, not per task."""
    try:
        stat = os.stat(address.path)
        key = (f"{cls.__module__}.{cls.__qualname__}", str(address), stat.st_mtime_ns,
               stat.st_size)
    except OSError:
        key = (f"{cls.__module__}.{cls.__qualname__}", str(address), 0, 0)
    reader = _REOPENED.get(key)
    if reader is None:
        reader = _REOPENED[key] = cls(address)
    return reader


# ----------------------------------------------------------------------------- helpers


def jsonable(value: Any) -> Any:
    """An attribute value as JSON (and HDF5) accepts it: bytes decoded, arrays and tuples
    to lists, NumPy scalars to Python scalars, paths and other objects to strings."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf" or value.dtype == np.bool_:
            return value.tolist()
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def holds(names: list[str], prefix: str = "it holds: ") -> str:
    """``it holds: a, b, c (and 4 more)``: what a file holds, for messages."""
    if not names:
        return prefix + "no arrays"
    shown = ", ".join(names[:MAX_LISTED])
    more = f" (and {len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return prefix + shown + more


def missing_message(address: ArrayAddress, names: list[str], lead: str) -> str:
    """``no dataset /x in f.h5; it holds: /a, /b``: a named dataset that is not there."""
    return f"no dataset {lead}{address.dataset} in {address.path}; " + holds(
        [lead + n for n in names]
    )


def only_array(address: ArrayAddress, names: list[str], lead: str) -> str:
    """The one array of a file whose address names none, or a
    :class:`MissingInputError` listing what it holds."""
    if len(names) == 1:
        return names[0]
    if not names:
        raise MissingInputError(f"{address.path} holds no arrays")
    raise MissingInputError(
        f"{address.path} holds {len(names)} arrays; name one as "
        f"{address.path}:{lead}NAME; " + holds([lead + n for n in names])
    )


def dtype_name(dtype: np.dtype) -> str:
    """A dtype as messages name it (``object (e.g. strings)``, ``complex128 (complex)``)."""
    if dtype.kind == "O":
        return "object (e.g. strings)"
    if dtype.kind in "SUa":
        return f"{dtype} (strings)"
    if dtype.kind == "c":
        return f"{dtype} (complex)"
    if dtype.kind == "V":
        return f"{dtype} (structured)"
    return str(dtype)


def shape_text(shape: tuple[int, ...]) -> str:
    """``200×32`` (``()`` for a scalar)."""
    return "×".join(str(s) for s in shape) if shape else "()"


def write_failure(path: str | Path, exc: BaseException) -> LogmmError:
    """A one-line :class:`LogmmError` for an operating-system failure while writing
    ``path``: ``cannot write OUT: No space left on device``.

    h5py and the Zarr stores report ``errno`` in different ways (an ``OSError`` with
    ``errno`` set, or HDF5's message holding ``errno = 28``); both become the system's
    text for that error.
    """
    return LogmmError(f"cannot write {path}: {os_error_reason(exc)}")


def is_os_failure(exc: BaseException) -> bool:
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


#: how long a removed Zarr store must stay gone before it counts as removed: when one
#: chunk write of a block fails (ENOSPC), zarr raises at once while its other chunk writes
#: of that block still run on its I/O thread and may recreate the directory afterwards
#: (seen in `test_disk_full_on_a_real_small_filesystem[convert-zarr]`, 3 runs in 6)
_SETTLE_SECONDS = 0.2


def remove_path(path: Path, *, settle: bool = False) -> None:
    """Remove a file or directory tree if present; with ``settle``, when there was one,
    check again after :data:`_SETTLE_SECONDS` and remove what late writes recreated
    (nothing to remove: nothing was being written, so no wait)."""
    if not os.path.lexists(path):
        return
    for attempt in range(50):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        if os.path.lexists(path):
            time.sleep(0.01 * (attempt + 1))       # recreated while rmtree ran: again
            continue
        if not settle:
            return
        time.sleep(_SETTLE_SECONDS)
        if not os.path.lexists(path):
            return


def replace_path(src: Path, dest: Path) -> None:
    """Move ``src`` onto ``dest`` (atomic for files; directories via a move-aside)."""
    dest_exists = os.path.lexists(dest)
    if dest_exists and (src.is_dir() or (dest.is_dir() and not dest.is_symlink())):
        old = temporary_path(dest, "old")
        remove_path(old)
        os.replace(dest, old)
        try:
            os.replace(src, dest)
        except BaseException:
            os.replace(old, dest)
            raise
        remove_path(old)
    else:
        os.replace(src, dest)
