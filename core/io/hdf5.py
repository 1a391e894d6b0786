"""HDF5 (h5py): the reader, the writer, and what logmm knows about HDF5 files.

- Open errors as one line (:func:`hdf5_open_error`): a file held by HDF5's own lock (a
  writer somewhere), or not a readable HDF5 file.
- Readers of a file the run also writes into share the writer's handle
  (:func:`release_hdf5_readers`): h5py cannot open one file twice with different modes
  in one process.
- Writing into an existing file (:func:`check_container`): storage of an uncompressed
  dataset is allocated when it is created, so writing blocks changes no HDF5 metadata
  and a ``kill -9`` while blocks are written leaves the file's structure as it was
  flushed after creation. A compressed dataset allocates file space chunk by chunk as
  blocks land (a kill inside such a flush once left space records behind the chunk
  index: "addr overflow" on ``--resume``), so it is written in a side file of its own
  (:func:`~logmm.io.layout.side_file`) and copied into the file at commit
  (:meth:`HDF5Writer._copy_in`): its chunks as stored (no recompression) into an
  anonymous dataset, inside anonymous groups for the missing ones of its path, flushed,
  then linked under its name and flushed. An ``H5Ocopy`` into the hidden name, tried
  first, linked the copy in the same flush that wrote it: HDF5 writes metadata in address
  order and the superblock (with the end of file) last, so a kill in between left the
  file's existing group naming objects past its end ("addr overflow"; 6 of 51 kill
  points). Now the flush of the copy writes new objects only. Killed before the link,
  the side file is there and ``--resume`` copies again (killed in the instant between
  removing it and the link's journal, ``--resume`` computes afresh).
- Every change to the existing file's structure (the hidden dataset's creation, its
  deletion, the ``--overwrite`` delete with the link or move, the close after them) goes
  through a redo journal (:mod:`~logmm.io.hdf5_journal`; the file is reopened through
  it for those steps, and plainly for the blocks): a flush that rewrites an existing
  group in place (a link, above all one that splits the group's full symbol-table node:
  a 9th link) tore that group when killed inside it (4-5 of ~51 exact-write kill points;
  1-3 of ~50 with ``--overwrite``; 4 of 53 in an uncompressed addition's creation). A
  kill while the journal is applied leaves it beside the file; the next logmm run that
  opens the file (``--resume``) applies it first, and ``logmm info`` reports it.
- A resumed chunked partial file (a side file, or a compressed or ``--chunk-rows``
  output file) is first rewritten from its recorded blocks' chunks
  (:meth:`HDF5Writer._salvage`): past HDF5's first metadata block, a kill inside a flush
  left files that failed with "addr overflow" when written again.
- Files in HDF5's newest format (superblock v3, ``libver="latest"``) are refused as
  containers: HDF5 marks them "open for writing" on disk, and after a kill no program
  opens them until ``h5clear -s``.
- Virtual datasets (``logmm merge``): a missing source file is refused when read
  (:func:`missing_virtual_sources`); :func:`merge_virtual` writes one over shard files,
  :func:`shard_files` lists the shard files beside an output.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    FormatError,
    InputError,
    LogmmError,
    MissingInputError,
    OutputExistsError,
)
from .addresses import ArrayAddress
from .base import (
    ArrayReader,
    ArrayWriter,
    holds,
    jsonable,
    missing_message,
    one_line,
    only_array,
    os_error_reason,
    remove_path,
    replace_path,
)
from .compression import ensure_hdf5_filters, hdf5_filter_kwargs
from .hdf5_journal import JournaledFile, interrupted_change, replay_journal
from .layout import (
    dataset_unit,
    lock_file,
    parse_shard_file,
    partial_dataset,
    partial_path,
    record_file,
    side_file,
    temporary_path,
)

__all__ = [
    "HDF5Reader",
    "HDF5Writer",
    "check_container",
    "container_holds",
    "container_node",
    "dataset_identity",
    "dataset_names",
    "hdf5_open_error",
    "list_arrays",
    "members",
    "merge_virtual",
    "missing_virtual_sources",
    "read_attrs",
    "refuse_locked",
    "release_hdf5_readers",
    "shard_files",
    "track_reader",
    "writes_into",
]


def hdf5_open_error(path: str | Path, exc: BaseException) -> LogmmError:
    """The one-line error for an HDF5 file h5py could not open: held locked by another
    process (HDF5's own file lock: a writer somewhere), or not a readable HDF5 file."""
    detail = one_line(exc)
    if "unable to lock file" in detail or "errno = 11" in detail:
        return LogmmError(f"{path} is locked by another process (an HDF5 writer has it "
                          "open); wait for it to finish, or, on a read-only shared filesystem "
                          "that does not support locks, set HDF5_USE_FILE_LOCKING=FALSE")
    return FormatError(f"{path}: not a readable HDF5 file ({detail})")


def missing_virtual_sources(ds: Any, path: Path) -> list[tuple[Path, tuple[int, int] | None]]:
    """The source files of a virtual HDF5 dataset ``ds`` (in file ``path``) that do not
    exist, each with the rows ``(start, stop)`` of ``ds`` it maps (None: not a row range).

    Relative source names are taken from the directory of ``path``, as ``logmm merge``
    writes them. Reading such a dataset gives its fill value in those rows, silently.
    """
    missing: list[tuple[Path, tuple[int, int] | None]] = []
    for source in ds.virtual_sources():
        name = source.file_name
        if name == ".":                    # the dataset's own file
            continue
        where = Path(name) if Path(name).is_absolute() else path.parent / name
        if where.exists():
            continue
        try:
            (r0, *_), (r1, *_) = source.vspace.get_select_bounds()
            rows: tuple[int, int] | None = (int(r0), int(r1) + 1)
        except Exception:  # noqa: BLE001 - an empty or unusual selection: no rows to name
            rows = None
        missing.append((where, rows))
    return missing


def _check_virtual_sources(ds: Any, path: Path, address: ArrayAddress) -> None:
    """A virtual dataset (``logmm merge``) reads a missing source file as its fill value,
    silently; refuse instead, naming the file."""
    for where, _ in missing_virtual_sources(ds, path)[:1]:
        raise MissingInputError(f"{address} is a virtual dataset whose source file "
                                f"{where} is missing (shard files must stay beside the "
                                "merged file)")


#: the HDF5 readers (dense, and sparse groups) open in this process (see
#: :func:`release_hdf5_readers`)
_OPEN_HDF5: weakref.WeakSet[Any] = weakref.WeakSet()


def release_hdf5_readers(path: str | Path) -> list[Any]:
    """Close the read-only handles this process's open readers hold on the HDF5 file
    ``path`` and return those readers, to be given a handle again with
    :meth:`HDF5Reader.rebind`.

    A writer that adds a dataset to a file the run also reads from needs this: HDF5
    refuses to open a file for writing while the same process has it open read-only,
    but readers may share the writer's handle.
    """
    target = Path(path).resolve()
    found = []
    for reader in list(_OPEN_HDF5):
        if Path(reader.address.path).resolve() == target and reader.release_handle():
            found.append(reader)
    return found


class HDF5Reader(ArrayReader):
    """A dataset in an HDF5 file, read with h5py."""

    def rebind(self, file: Any | None) -> None:
        """Read through ``file`` (an h5py File of the same path, held by a writer), or,
        with None, through a read-only handle of its own again."""
        import h5py

        if self._closed:
            return
        if file is None:
            try:
                self._file = h5py.File(self.address.path, "r")
            except OSError as exc:
                raise hdf5_open_error(self.address.path, exc) from None
            file = self._file
        self._ds = file[self.address.dataset]

    def release_handle(self) -> bool:
        """Close this reader's own file handle (see :func:`release_hdf5_readers`); False
        when it holds none."""
        if self._file is None:
            return False
        self._file.close()
        self._file = None
        return True

    def __init__(self, address: ArrayAddress) -> None:
        """Open the dataset ``address`` names (or the file's only one); a sparse group
        is found before (:func:`logmm.io.sparse.sparse_group`) and never reaches here."""
        import h5py

        path = address.path
        self._closed = False
        replay_journal(path)    # a killed run's change to the file, finished (as a writer would)
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise hdf5_open_error(path, exc) from None
        try:
            interrupted = interrupted_change(path)     # it could not be applied: read-only
            if interrupted is not None:
                raise LogmmError(interrupted)
            name = address.dataset
            if name is None:
                name = only_array(address, dataset_names(self._file), "/")
            try:
                node = self._file.get(name)
            except Exception:  # a path through a dataset, a broken link, ...
                node = None
            if node is None:
                names = dataset_names(self._file)
                raise MissingInputError(missing_message(address, names, "/"))
            if not isinstance(node, h5py.Dataset):
                names = dataset_names(node)
                raise MissingInputError(
                    f"{address} is a group, not an array; "
                    + holds(["/" + n for n in names] if names else [], prefix="it holds: ")
                )
            if node.shape is None:
                raise InputError(f"{address.with_dataset(name)} has an empty (null) dataspace")
            ensure_hdf5_filters(node, str(address.with_dataset(name)))  # zstd, blosc, ...
            if node.is_virtual:
                _check_virtual_sources(node, path, address.with_dataset(name))
            self._ds = node
            super().__init__(address.with_dataset(name), node.shape, node.dtype, node.chunks)
            track_reader(self)
        except BaseException:
            self._file.close()
            raise

    def _read(self, key: Any) -> np.ndarray:
        return np.asarray(self._ds[key])

    @property
    def decodes_chunks(self) -> bool:
        """Filtered (compressed) datasets decode whole chunks per read."""
        return self._ds.id.get_create_plist().get_nfilters() > 0

    def close(self) -> None:
        """Close the file (unless it is a writer's, shared with this reader)."""
        self._closed = True
        _OPEN_HDF5.discard(self)
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None


class HDF5Writer(ArrayWriter):
    """HDF5 output: a chunked dataset (gzip/lzf/zstd/blosc/none), provenance in its attributes.

    Inside an existing file (``in_container``) the dataset is written under its hidden
    name (:func:`partial_dataset`) and moved to its own name at commit; a compressed one
    is written in its side file first and copied in at commit. See the module notes.
    """

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...], dtype: Any,
                 **options: Any) -> None:
        """Takes the parameters of :class:`~logmm.io.base.ArrayWriter`."""
        self._file: Any = None
        self._journaled: JournaledFile | None = None    # the container's file object
        self._side: Any = None          # the side file (a compressed dataset added to a file)
        self._ds: Any = None
        self._shared_readers: list[Any] = []
        super().__init__(address, shape, dtype, **options)

    @property
    def side_path(self) -> Path | None:
        """The side file this writer writes in (see the module notes), or None."""
        if not self.in_container or self.compression in (None, "none"):
            return None
        return side_file(self.path, self.address.dataset)

    @property
    def shares_file_with_inputs(self) -> bool:
        """Inputs of this run are read through this writer's open file."""
        return bool(self._shared_readers)

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
            if self.side_path is not None:
                # the container stays open (one writer per file, as for an uncompressed
                # dataset) and unchanged until commit copies the dataset in
                self._side = h5py.File(self.side_path, "w", rdcc_nbytes=0)
                self._ds = self._side.create_dataset(self.address.dataset, shape=self.shape,
                                                     dtype=self.dtype, chunks=chunks,
                                                     **filters)
                self._ds.attrs["complete"] = False
                self._side.flush()
                return
            dcpl = None
            if not filters:
                # storage reserved now: writing blocks then changes no HDF5 metadata, so a
                # kill while blocks are written cannot touch the file's structure
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)   # every block is written
            with self._journal():
                self._ds = self._file.create_dataset(
                    partial_dataset(self.address.dataset_name), shape=self.shape,
                    dtype=self.dtype, chunks=chunks, dcpl=dcpl, **filters)
                self._ds.attrs["complete"] = False  # `logmm info` lists it as incomplete
                self._file.flush()
            self._switch(journaled=False)       # blocks: straight to the file
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

        readers = release_hdf5_readers(self.path)
        try:
            replay_journal(self.path)       # an interrupted change, finished first
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
        if self.side_path is not None:
            return self.side_path.exists()
        return container_holds(self.address, partial_dataset(self.address.dataset_name))

    def _discard_partial(self) -> None:
        if not self.in_container:
            super()._discard_partial()
            return
        if self.side_path is not None:
            self._close_side()
            remove_path(self.side_path)
        if self._file is None:
            self._file = self._open_container()
        self._drop_hidden()

    def _drop_hidden(self) -> None:
        """Delete the hidden dataset from the container (an abandoned partial one, or one a
        killed commit copied in part or whole) and flush."""
        hidden = partial_dataset(self.address.dataset_name)
        if hidden in self._file:
            with self._journal():
                del self._file[hidden]
                self._file.flush()

    def _journal(self) -> Any:
        """Around a change to the container's structure: the container is reopened
        through a :class:`~logmm.io.hdf5_journal.JournaledFile` (if it is not already),
        and the change's writes go through its redo journal (see the module notes)."""
        if self._journaled is None:
            self._switch(journaled=True)
        assert self._journaled is not None
        return self._journaled.journal()

    def _switch(self, *, journaled: bool) -> None:
        """Close the container's handle and open it again, through a journaled file
        object or plainly (h5py's own driver: blocks of data are written faster, and
        this process's other opens of the file share it); readers sharing the handle,
        and the hidden dataset being written, follow."""
        import h5py

        old, self._file = self._file, None
        name = self._ds.name if self._ds is not None and self._side is None else None
        self._close_container(old)
        try:
            if journaled:
                wrapper = JournaledFile(self.path)
                try:
                    f = h5py.File(wrapper, "r+", rdcc_nbytes=0)
                except BaseException:
                    wrapper.close()
                    raise
                self._journaled = wrapper
            else:
                f = h5py.File(self.path, "r+", rdcc_nbytes=0)
        except OSError as exc:
            raise _container_unwritable(self.path, exc) from None
        self._file = f
        for reader in self._shared_readers:
            reader.rebind(f)
        if name is not None:
            self._ds = f[name]

    def _close_container(self, f: Any) -> None:
        """Close the container's handle ``f`` (its last writes journaled when it is
        opened through the journal)."""
        journaled, self._journaled = self._journaled, None
        try:
            if f is not None:
                if journaled is not None:
                    with journaled.journal():   # the close's last writes (superblock)
                        f.close()
                else:
                    f.close()
        finally:
            if journaled is not None:
                journaled.close()

    def _output_exists(self) -> bool:
        if not self.in_container:
            return super()._output_exists()
        if self._file is not None:
            return self.address.dataset in self._file
        return container_holds(self.address, self.address.dataset)

    def _reopen(self) -> None:
        import h5py

        dataset = self.address.dataset or ""
        if self.in_container:
            self._file = self._open_container()
            if self.side_path is not None:
                self._salvage(self.side_path, dataset,
                              record_file(dataset_unit(self.path, dataset)))
                self._side = h5py.File(self.side_path, "r+", rdcc_nbytes=0)
                self._ds = self._side[dataset]
            else:
                self._ds = self._file[partial_dataset(self.address.dataset_name)]
        else:
            if self._layout()[0] is not None:
                self._salvage(self.tmp_path, dataset, record_file(self.path))
            self._file = h5py.File(self.tmp_path, "r+", rdcc_nbytes=0)
            self._ds = self._file[dataset]
        self._check_reopened(self._ds.shape, self._ds.dtype)

    def _salvage(self, path: Path, dataset: str, record: Path) -> None:
        """Rewrite the chunked partial file ``path`` of an interrupted run as a new file
        holding, as stored, the chunks of the blocks its resume ``record`` counts as
        stored (every indexed chunk when the record does not say which rows those are);
        raise when one cannot be read.

        A kill inside a flush can leave the file's chunk index ahead of the end of file
        its superblock records (HDF5 writes the superblock last), for the block that was
        being stored: written into again, such a file fails with "addr overflow", or
        places new chunks over ones the index still names. The stored blocks' chunks were
        flushed whole before the record counted them; the new file is consistent.
        """
        import h5py

        fresh = temporary_path(path, "new")
        try:
            with h5py.File(path, "r") as old, h5py.File(fresh, "w", rdcc_nbytes=0) as new:
                source = old[dataset]
                self._check_reopened(source.shape, source.dtype)
                chunks, filters = self._layout()
                if chunks is None or source.chunks != chunks:
                    raise ValueError(f"partial output has chunks {source.chunks}, not {chunks}")
                copy = new.create_dataset(dataset, shape=self.shape, dtype=self.dtype,
                                          chunks=chunks, **filters)
                copy.attrs["complete"] = False

                def one(offset: tuple[int, ...]) -> None:
                    mask, data = source.id.read_direct_chunk(offset)
                    copy.id.write_direct_chunk(offset, data, mask)

                starts = _recorded_chunks(_record_blocks(record), chunks[0], self.shape,
                                          self.row_offset)
                if starts is None:
                    source.id.chunk_iter(lambda info: one(info.chunk_offset))
                for start in starts or ():
                    one((start,) + (0,) * (len(self.shape) - 1))
            os.replace(fresh, path)
        finally:
            remove_path(fresh)

    def _write(self, key: Any, block: np.ndarray) -> None:
        self._ds[key] = block

    def task_target(self) -> Any:
        """The partial file's dataset, written by dask tasks one at a time under a
        cluster lock (:mod:`logmm.io.hdf5_locked`); None inside an existing file (its
        other datasets stay with this process)."""
        if self.in_container:
            return None
        from .hdf5_locked import LockedHDF5Rows

        return LockedHDF5Rows(self.tmp_path, str(self.address.dataset)), self.row_offset

    @contextmanager
    def lent(self) -> Iterator[None]:
        """The partial file closed here while tasks write it (see :meth:`task_target`)."""
        if self.in_container or self._file is None:
            yield
            return
        self._close()
        try:
            yield
        except BaseException:
            try:
                self._reopen()
            except Exception:  # noqa: S110 - torn by a killed task: --resume starts afresh
                pass
            raise
        self._reopen()

    def _flush(self) -> None:
        if self._side is not None:
            self._side.flush()
        elif self._file is not None:
            self._file.flush()

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        if self.in_container and self._side is None and self._journaled is None:
            return      # the container's structure changes only in _publish's journal
        for key, value in attrs.items():
            if value is not None:  # HDF5 has no null attribute
                self._ds.attrs[key] = value

    def _publish(self, attrs: dict[str, Any]) -> None:
        if not self.in_container:
            super()._publish(attrs)
            return
        import h5py

        self._switch(journaled=True)        # the copy and the link share one handle
        f, final = self._file, self.address.dataset_name
        link = self._copy_in(attrs) if self._side is not None else None
        with self._journal():               # the delete and the link: one journaled flush
            if link is None:                # the attributes stored by commit, here
                self._store_attrs(attrs)
            if final in f:                  # --overwrite (checked by commit)
                if not isinstance(f[final], h5py.Dataset):
                    raise OutputExistsError(f"{self.address} became a group while logmm "
                                            "ran; a group is never replaced")
                del f[final]
            if link is None:
                f.move(partial_dataset(final), final)
            else:
                parent, name, node = link
                parent[name] = node         # the file's one change to what it held
                # before the flush that publishes it: a kill between the two leaves the
                # file as flushed after the copy, which --resume computes afresh, rather
                # than a finished dataset beside a side file nothing would remove
                self._close_side()
                remove_path(side_file(self.path, self.address.dataset))
            f.flush()
        self._close()

    def _copy_in(self, attrs: dict[str, Any]) -> tuple[Any, str, Any]:
        """Copy the side file's finished dataset into the container, unlinked, and flush:
        ``(group, name, node)`` such that ``group[name] = node`` then publishes it.

        The copy is an anonymous dataset (the compressed chunks as stored, and ``attrs``)
        inside anonymous groups for the missing ones of its path: new objects only, which
        nothing the file held references, so a kill before the flush has ended leaves at
        most unreachable bytes, and once it has ended the superblock covers all of them
        (HDF5 writes the superblock last). Linking then rewrites one existing group in
        place (see the module notes).
        """
        import h5py

        f, source = self._file, self._ds
        self._side.flush()
        self._drop_hidden()                 # a partial dataset of an older run of it
        *groups, name = (self.address.dataset or "").strip("/").split("/")
        parent = f
        while groups and groups[0] in parent:
            parent = parent[groups.pop(0)]  # a group: check_output refused anything else
        chunks, filters = self._layout()
        node = f.create_dataset(None, shape=self.shape, dtype=self.dtype, chunks=chunks,
                                **filters)
        if chunks is None:                  # empty or 0-D: nothing compressed to copy
            node[...] = source[...]
        else:
            def one(info: Any) -> None:
                mask, data = source.id.read_direct_chunk(info.chunk_offset)
                node.id.write_direct_chunk(info.chunk_offset, data, mask)
            source.id.chunk_iter(one)
        for key, value in attrs.items():
            if value is not None:
                node.attrs[key] = value
        for group_name in reversed(groups):  # the missing groups, innermost first
            group = h5py.Group(h5py.h5g.create(f.id, None))
            group[name] = node
            node, name = group, group_name
        f.flush()
        return parent, name, node

    def _close_side(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            side.close()

    def _close(self) -> None:
        f, self._file = self._file, None
        try:
            self._close_side()
            self._close_container(f)
        finally:
            readers, self._shared_readers = self._shared_readers, []
            for reader in readers:
                try:
                    reader.rebind(None)
                except Exception:  # noqa: S110 - its file is gone or busy: it reads no more
                    pass

    def abort(self) -> None:
        """Remove the partial dataset or file (see :meth:`ArrayWriter.abort`)."""
        # After a failed write (disk full) HDF5 2.0 still holds dirty metadata; closing
        # the file then fails, and the library crashes (SIGSEGV) when it frees the file
        # at exit. The partial output is being discarded anyway: empty it first, and the
        # close's last writes land in freed space and succeed. (Never an existing file:
        # there the hidden dataset is deleted and the file kept; a side file is emptied.)
        side = self.side_path if self._side is not None else None
        if not self.committed and not self.suspended and (
                side is not None or (self._file is not None and not self.in_container)):
            try:
                os.truncate(side or self.tmp_path, 0)     # the side file is discarded too
            except OSError:
                pass
        super().abort()


def _record_blocks(path: Path) -> tuple[dict[str, Any], set[int]] | None:
    """``(plan, stored block indices)`` of the resume record at ``path``, as
    :meth:`logmm.io.resume.ResumeRecord.load` reads it (a header line, then one index per
    line; a last line without its newline does not count); None when unreadable. Read
    here because that module imports this one."""
    try:
        head, newline, rest = path.read_text(encoding="utf-8").partition("\n")
        data = json.loads(head)
        if data.get("version") == 1:                # one document, rewritten whole
            return data["plan"], {int(i) for i in data["done"]}
        if data.get("version") == 2 and newline:
            return data["plan"], {int(line) for line in rest.split("\n")[:-1]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _recorded_chunks(record: tuple[dict[str, Any], set[int]] | None, step: int,
                     shape: tuple[int, ...], row_offset: int) -> list[int] | None:
    """The first rows of the storage chunks (``step`` rows each) that the blocks a resume
    ``record`` (:func:`_record_blocks`) counts as stored overlap, or None when it does not
    say which rows those blocks are."""
    if record is None or not shape:
        return None
    plan, done = record
    try:
        n, rows = int(plan["n"]), int(plan["block_rows"])
    except (KeyError, TypeError, ValueError):
        return None
    if n < row_offset + shape[0] or (row_offset == 0 and n != shape[0]):
        return None                     # the blocks' rows are not the output's rows
    starts: set[int] = set()
    for index in done:
        r0 = max(0, index * rows - row_offset)
        r1 = min(shape[0], min(n, (index + 1) * rows) - row_offset)
        starts.update(range(r0 - r0 % step, r1, step))
    return sorted(starts)


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


def dataset_names(group: Any) -> list[str]:
    """Dataset paths under an h5py group, relative to it, in visit order."""
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            names.append(name)

    group.visititems(visit)
    return names


def members(group: Any) -> dict[str, Any]:
    """Direct children of an h5py group that are datasets, by name."""
    import h5py

    members = {}
    for name in group:
        try:
            node = group.get(name)
        except Exception:  # a broken link
            continue
        if isinstance(node, h5py.Dataset):
            members[name] = node
    return members


def refuse_locked(path: Path) -> None:
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


def _refuse_newest_format(path: Path) -> None:
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


def track_reader(reader: Any) -> None:
    """Note an open reader of an HDF5 file (``address``, ``release_handle``, ``rebind``),
    for :func:`release_hdf5_readers`."""
    _OPEN_HDF5.add(reader)


def list_arrays(path: Path) -> list[str]:
    """``["/g/a", ...]``: the datasets of the HDF5 file ``path``, in visit order."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return ["/" + n for n in dataset_names(f)]
    except OSError as exc:
        raise hdf5_open_error(path, exc) from None


# ----------------------------------------------------------------------------- containers

#: HDF5 files this process adds a dataset to (see :func:`writes_into`)
_WRITTEN_CONTAINERS: set[Path] = set()


def writes_into(path: str | Path) -> bool:
    """Whether this process adds a dataset to the existing HDF5 file ``path`` (checked by
    :func:`check_container`): the file's size and modification time then change under the
    run's own writes, so a resume record must identify inputs in it otherwise."""
    try:
        return Path(path).resolve() in _WRITTEN_CONTAINERS
    except OSError:
        return False


def check_container(addr: ArrayAddress, compression: str | None) -> None:
    """Refuse adding ``addr`` to its existing file when that cannot be made kill-safe
    (the newest file format); else note that this process writes into it
    (:func:`writes_into`). A compressed dataset is written in a side file first (see the
    module notes)."""
    path = addr.path
    _refuse_newest_format(path)
    _WRITTEN_CONTAINERS.add(path.resolve())


def dataset_identity(path: Path, dataset: str) -> dict[str, Any]:
    """An input inside the HDF5 file the run adds its output to: that file's size and
    modification time change under the run's own writes, so the dataset is identified by
    where it lives in the file instead (object header, data offset, stored bytes). A
    dataset replaced since moves; one rewritten in place is not noticed."""
    import h5py

    def identity(node: Any) -> dict[str, Any]:
        found: dict[str, Any] = {"object": int(h5py.h5o.get_info(node.id).addr)}
        if isinstance(node, h5py.Dataset):
            found.update(offset=node.id.get_offset(), size=int(node.id.get_storage_size()))
        else:                                 # a sparse matrix: its data, indices, indptr
            found["members"] = {name: identity(child) for name, child in node.items()
                                if isinstance(child, h5py.Dataset)}
        return found

    with h5py.File(path, "r") as f:
        return identity(f[dataset])


def container_node(addr: ArrayAddress) -> tuple[str | None, str | None]:
    """What the existing file ``addr.path`` has at ``addr.dataset`` (see
    :func:`logmm.io.writers.container_output`): ``("array", name)``, ``("group",
    name)``, ``("inside-array", ancestor)``, or ``(None, None)``."""
    import h5py

    parts = (addr.dataset or "").split("/")
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


def container_holds(addr: ArrayAddress, dataset: str | None) -> bool:
    """Whether the existing file ``addr.path`` has a node named ``dataset``."""
    if not dataset:
        return False
    import h5py

    try:
        with h5py.File(addr.path, "r") as f:
            return dataset in f
    except (OSError, KeyError, ValueError):
        return False


# ----------------------------------------------------------------------------- shard files


def shard_files(path: Path) -> dict[int, dict[int, Path]]:
    """``{count: {index: path}}`` of the ``--shard`` files beside the output ``path``: the
    complete file, or else the hidden partial file of an unfinished shard."""
    found: dict[int, dict[int, Path]] = {}
    try:
        names = sorted(os.listdir(path.parent))
    except OSError:
        return found
    for name in names:
        parsed = parse_shard_file(path, name)
        if parsed is None:
            continue
        index, count, partial = parsed
        shards = found.setdefault(count, {})
        if not partial or index not in shards:
            shards[index] = path.parent / name
    return found


def read_attrs(path: str | Path, dataset: str) -> dict[str, Any]:
    """The attributes of ``dataset`` in the HDF5 file ``path``, as JSON values."""
    import h5py

    with h5py.File(path, "r") as f:
        return {k: jsonable(v) for k, v in f[dataset].attrs.items()}


def merge_virtual(out: ArrayAddress, sources: list[tuple[str, int, int]],
                  shape: tuple[int, ...], attrs: dict[str, Any], *, overwrite: bool) -> None:
    """Write ``out`` as a virtual dataset of ``shape`` whose rows ``r0:r1`` are the dataset
    of the same name in each ``(file, r0, r1)`` of ``sources`` (named relative to the
    output's directory, so the directory can move with them), with ``attrs``; under the
    partial name, then renamed into place.

    Raises
    ------
    OutputExistsError
        ``out`` appeared meanwhile and ``overwrite`` is false.
    """
    import h5py

    with h5py.File(sources[0][0], "r") as f:
        dtype = f[out.dataset].dtype
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    for where, r0, r1 in sources:
        if r1 > r0:
            source = h5py.VirtualSource(os.path.relpath(where, out.path.parent),
                                        out.dataset, shape=(r1 - r0, *shape[1:]))
            layout[r0:r1] = source
    tmp = partial_path(out.path)
    remove_path(tmp)
    try:
        with h5py.File(tmp, "w") as f:
            ds = f.create_virtual_dataset(out.dataset, layout, fillvalue=np.nan)
            for key, value in attrs.items():
                if value is not None:
                    ds.attrs[key] = jsonable(value)
        if not overwrite and os.path.lexists(out.path):
            raise OutputExistsError(f"output exists: {out.path} (use --overwrite to replace it)")
        replace_path(tmp, out.path)
    except BaseException:
        remove_path(tmp)
        raise
