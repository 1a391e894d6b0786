"""A redo journal for the changes logmm makes to an existing HDF5 file's structure.

HDF5 has no atomic metadata commit: a flush writes metadata in address order and the
superblock last, so a ``kill -9`` inside a flush that rewrites an existing group (the
link of a new dataset, the delete of ``--overwrite``) can leave that group naming
half-written nodes. :class:`JournaledFile` is the file object h5py's ``fileobj`` driver
writes an existing container through. While :meth:`JournaledFile.journal` is active it
keeps HDF5's writes (and truncates) in memory, serving reads from them overlaid on the
file; at its end it writes them to the journal beside the file
(:func:`~logmm.io.layout.journal_file`: entries, then a trailer with their length and a
SHA-256), fsyncs it and its directory, applies them with ``pwrite``, fsyncs the file and
removes the journal. Outside it, writes go straight to the file (blocks of pre-allocated
storage: no metadata). :func:`replay_journal` (run before logmm opens a container for
writing) applies a journal with a valid trailer again (idempotent) and deletes an
incomplete one (the file was not touched yet).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .layout import journal_file

__all__ = ["JournaledFile", "interrupted_change", "journal_pending", "replay_journal"]

_MAGIC = b"LOGMMJ1\n"
_END = b"LOGMMEND"
_ENTRY = struct.Struct("<QQ")          # offset, length (then the bytes)
_SIZES = struct.Struct("<QQQ")         # floor, final size, body length
_TRAILER = _SIZES.size + 32 + len(_END)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _encode(writes: list[tuple[int, bytes]], floor: int, size: int) -> tuple[bytes, bytes]:
    """The journal's entries, and its trailer (written after them)."""
    body = _MAGIC + b"".join(_ENTRY.pack(off, len(data)) + data for off, data in writes)
    sizes = _SIZES.pack(floor, size, len(body) - len(_MAGIC))
    return body, sizes + hashlib.sha256(body + sizes).digest() + _END


def _decode(blob: bytes) -> tuple[list[tuple[int, bytes]], int, int] | None:
    """``(writes, floor, size)`` of a complete journal, None for a torn one."""
    if len(blob) < len(_MAGIC) + _TRAILER or not blob.startswith(_MAGIC) \
            or not blob.endswith(_END):
        return None
    floor, size, length = _SIZES.unpack_from(blob, len(blob) - _TRAILER)
    if len(_MAGIC) + length + _TRAILER != len(blob):
        return None
    head = blob[:len(blob) - 32 - len(_END)]
    if hashlib.sha256(head).digest() != blob[len(head):len(head) + 32]:
        return None
    writes, at, stop = [], len(_MAGIC), len(_MAGIC) + length
    while at < stop:
        off, n = _ENTRY.unpack_from(blob, at)
        at += _ENTRY.size
        writes.append((off, blob[at:at + n]))
        at += n
    return writes, floor, size


def _apply(fd: int, writes: list[tuple[int, bytes]], floor: int, size: int) -> None:
    """Make the file what the journal describes: its bytes below ``floor`` (the lowest
    size it was truncated to meanwhile), then the writes in order, ``size`` long."""
    if os.fstat(fd).st_size > floor:
        os.ftruncate(fd, floor)
    for off, data in writes:
        _pwrite_all(fd, data, off)
    os.ftruncate(fd, size)
    os.fsync(fd)


def journal_pending(path: str | Path) -> Path | None:
    """The journal beside the HDF5 file ``path`` when one is there (an interrupted
    change: the file may be torn until :func:`replay_journal`), else None."""
    journal = journal_file(path)
    return journal if journal.exists() else None


def interrupted_change(path: str | Path) -> str | None:
    """What to say of the HDF5 file ``path`` when a complete journal lies beside it: a
    run was killed while applying it, so the file may be torn until a logmm run writing
    into it applies it again (nothing is written here); None when there is none (a torn
    journal never reached the file)."""
    journal = journal_pending(path)
    try:
        if journal is None or _decode(journal.read_bytes()) is None:
            return None
    except OSError:
        return None
    return (f"{path}: a logmm run was killed while committing a change to it (the journal "
            f"{journal.name} beside it holds the change); rerun the same command with "
            "--resume to finish it (any logmm run writing into the file does)")


def _replay(fd: int, path: Path) -> bool:
    journal = journal_file(path)
    try:
        blob = journal.read_bytes()
    except FileNotFoundError:
        return False
    decoded = _decode(blob)
    if decoded is not None:
        _apply(fd, *decoded)
    journal.unlink(missing_ok=True)
    _fsync_dir(journal)
    return decoded is not None


def replay_journal(path: str | Path) -> bool:
    """Finish (or discard) an interrupted change to the HDF5 file ``path``: a journal
    beside it with a valid trailer is applied again and removed, a torn one (the kill
    came while it was written; the file is untouched) is removed. True when one was
    applied. Nothing is done while another process holds the file's lock (a writer:
    the journal is its own, and it finishes it)."""
    path = Path(path)
    if journal_pending(path) is None:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return _replay(fd, path)
    finally:
        os.close(fd)


class JournaledFile(io.RawIOBase):
    """The HDF5 file ``path`` opened for h5py's ``fileobj`` driver, locked as HDF5 locks
    a file it writes (``flock``), an interrupted change replayed first; see the module
    notes for :meth:`journal`.

    Raises
    ------
    OSError
        The file cannot be opened, or another process holds its lock (the message
        names HDF5's "unable to lock file, errno = 11").
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise OSError(f"unable to lock file, errno = 11: {self.path}") from None
        _replay(self._fd, self.path)
        self._pos = 0
        self._writes: list[tuple[int, bytes]] | None = None   # None: not journaling
        self._size = self._floor = 0

    # -- io.RawIOBase
    def readable(self) -> bool:
        """True."""
        return True

    def writable(self) -> bool:
        """True."""
        return True

    def seekable(self) -> bool:
        """True."""
        return True

    def _file_size(self) -> int:
        return self._size if self._writes is not None else os.fstat(self._fd).st_size

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` (from the start, the position, or the end: ``whence``)."""
        base = {0: 0, 1: self._pos, 2: self._file_size()}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The position."""
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read at the position into ``buffer`` (the kept writes over the file's bytes
        while journaling); the count read (short at the end of file)."""
        want = len(buffer)
        pos = self._pos
        if self._writes is None:            # straight into HDF5's buffer
            n = os.preadv(self._fd, [buffer], pos)
            self._pos = pos + n
            return n
        else:
            end = min(pos + want, self._size)
            if end <= pos:
                return 0
            below = os.pread(self._fd, max(0, min(end, self._floor) - pos), pos) \
                if pos < self._floor else b""
            out = bytearray(below) + bytes(end - pos - len(below))
            for off, chunk in self._writes:
                lo, hi = max(off, pos), min(off + len(chunk), end)
                if lo < hi:
                    out[lo - pos:hi - pos] = chunk[lo - off:hi - off]
            data = bytes(out)
        memoryview(buffer)[:len(data)] = data
        self._pos = pos + len(data)
        return len(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        """Write ``data`` at the position (kept while journaling); its length."""
        if self._writes is None:            # straight from HDF5's buffer
            n = len(memoryview(data))
            _pwrite_all(self._fd, data, self._pos)
        else:
            chunk = bytes(data)
            n = len(chunk)
            self._writes.append((self._pos, chunk))
            self._size = max(self._size, self._pos + n)
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        """Make the file ``size`` bytes long (kept while journaling)."""
        size = self._pos if size is None else size
        if self._writes is None:
            os.ftruncate(self._fd, size)
        else:
            self._size = size
            self._floor = min(self._floor, size)
            self._writes = [(off, chunk[:size - off]) for off, chunk in self._writes
                            if off < size]
        return size

    def flush(self) -> None:
        """Nothing to do: writes are ``pwrite`` calls (made durable at a journal's end)."""

    def close(self) -> None:
        """Close the file, which drops its lock."""
        if not self.closed:
            os.close(self._fd)      # drops the lock
        super().close()

    @contextmanager
    def journal(self) -> Iterator[None]:
        """Keep the file's writes meanwhile, then commit them through the journal (also
        when the body raises: what HDF5 wrote is what it believes the file holds)."""
        if self._writes is not None:        # nested: the outer one commits
            yield
            return
        self._size = self._floor = os.fstat(self._fd).st_size
        self._writes = []
        try:
            yield
        finally:
            writes, self._writes = self._writes, None
            if writes or self._size != self._floor or self._floor != os.fstat(self._fd).st_size:
                self._commit(writes, self._floor, self._size)

    def _commit(self, writes: list[tuple[int, bytes]], floor: int, size: int) -> None:
        journal = journal_file(self.path)
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            body, trailer = _encode(writes, floor, size)
            _pwrite_all(fd, body, 0)
            _pwrite_all(fd, trailer, len(body))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(journal)
        _apply(self._fd, writes, floor, size)
        journal.unlink()
        _fsync_dir(journal)
