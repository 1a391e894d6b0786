"""What ``--resume`` needs: a record of finished blocks, an input fingerprint, a lock.

Beside a partial output ``.OUT.logmm-partial`` lives ``.OUT.logmm-partial.json``: the
fingerprint of the run (inputs' paths, shapes, dtypes, sizes and modification times, and
the options that change the result), the block plan, and the indices of the row blocks
already stored and flushed. Its first line, a JSON header with the fingerprint and plan,
is written atomically when the run starts; then each stored block appends one line, its
index, so a run writes O(blocks) bytes in all. A run killed at any moment leaves a record
that undercounts at worst: a last line without its newline (cut by the kill) does not
count, and the next run rewrites the record without it. A resumed run recomputes only
the missing blocks, with the recorded plan, so its result is bit-identical to an
uninterrupted run. A record of the older one-document format (version 1, rewritten
whole after every block) is read too, and rewritten in the new one.

``.OUT.logmm-lock`` (an ``flock``, holding the pid) keeps two runs from writing the
same output; a lock whose process is gone is taken over.

An output inside an existing container (:func:`logmm.io.writers.container_output`) has
its own record, ``.OUT#group%name.logmm-partial.json`` (the dataset path, ``/`` written
``%``), so runs adding different datasets keep theirs apart. Its lock is per dataset in a
Zarr store (runs adding different arrays to one store proceed together) and per file in
HDF5, where HDF5 allows one writer per file: a second run gets the one-line "another
logmm run … is writing" error at once instead of a failure, or worse, inside HDF5.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LogmmError
from .addresses import ArrayAddress
from .base import write_failure
from .hdf5 import dataset_identity, writes_into
from .layout import dataset_unit, lock_file, parse_work_file, record_file, temporary_path
from .writers import container_output

__all__ = [
    "OutputLock",
    "ResumeRecord",
    "input_fingerprint",
    "lock_path",
    "process_alive",
    "record_path",
]

_RECORD_VERSION = 2        # a header line, then one line per stored block
_WHOLE_RECORD_VERSION = 1  # one JSON document with a "done" list (read, rewritten as 2)


def _dataset_unit(output: str | Path | ArrayAddress, *, lock: bool = False) -> Path:
    """The path a record (or lock) is named after: the output file, or for a dataset inside
    an existing container ``dir/OUT#group%name`` (an HDF5 lock stays the file's)."""
    if not isinstance(output, ArrayAddress):
        return Path(output)
    if not container_output(output) or (lock and output.format == "hdf5"):
        return output.path
    return dataset_unit(output.path, output.dataset)


def record_path(output: str | Path | ArrayAddress) -> Path:
    """``dir/.OUT.logmm-partial.json`` (``dir/.OUT#group%name.logmm-partial.json`` for a
    dataset inside an existing container)."""
    return record_file(_dataset_unit(output))


def lock_path(output: str | Path | ArrayAddress) -> Path:
    """``dir/.OUT.logmm-lock`` (``dir/.OUT#group%name.logmm-lock`` for an array inside an
    existing Zarr store)."""
    return lock_file(_dataset_unit(output, lock=True))


def input_fingerprint(address: ArrayAddress, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    """Identity of an input as far as a resumed run must trust it: the resolved address,
    shape, dtype, and size and modification time of the file (or of a Zarr array's
    metadata document; or, for an input inside the HDF5 file the run adds its output to,
    where the dataset lives in it)."""
    path = Path(address.path).resolve()
    probe = path
    if address.format == "zarr":
        node = path / (address.dataset or "")
        probe = next((node / name for name in ("zarr.json", ".zarray") if (node / name).exists()),
                     path)
    identity: dict[str, Any]
    if address.format == "hdf5" and address.dataset and writes_into(path):
        identity = dataset_identity(path, address.dataset)
    else:
        stat = probe.stat()
        identity = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {
        "address": f"{path}" + (f":{address.dataset}" if address.dataset else ""),
        "shape": list(shape),
        "dtype": str(dtype),
        **identity,
    }


@dataclass
class ResumeRecord:
    """The finished row blocks of one run, with the fingerprint and plan they belong to."""

    path: Path
    fingerprint: dict[str, Any]
    plan: dict[str, Any]
    done: set[int] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> ResumeRecord | None:
        """The record at ``path``, or None if there is none (or it cannot be parsed).

        The header line, then one block index per line; a last line without its newline
        (a kill cut it) is ignored. A version-1 record (one document) is read as well.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
            head, newline, rest = text.partition("\n")
            data = json.loads(head)
            if data.get("version") == _WHOLE_RECORD_VERSION:
                done = {int(i) for i in data["done"]}
            elif data.get("version") == _RECORD_VERSION and newline:
                done = {int(line) for line in rest.split("\n")[:-1]}   # [-1]: torn or ""
            else:
                return None
            return cls(path=Path(path), fingerprint=data["fingerprint"], plan=data["plan"],
                       done=done)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self) -> None:
        """Write the header and every done block atomically (temporary file, then
        rename); :meth:`mark_done` appends to it. The first save also removes the
        temporaries a killed run left while saving this record (their pid is gone)."""
        if not getattr(self, "_swept", False):
            self._swept = True
            _sweep_temporaries(self.path)
        tmp = temporary_path(self.path)
        header = json.dumps({"version": _RECORD_VERSION, "fingerprint": self.fingerprint,
                             "plan": self.plan})
        try:
            tmp.write_text(header + "\n" + "".join(f"{i}\n" for i in sorted(self.done)),
                           encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:     # disk full: no half-written record left behind
            tmp.unlink(missing_ok=True)
            raise write_failure(self.path, exc) from exc
        self._saved = True

    def mark_done(self, index: int) -> None:
        """Note block ``index`` as stored: one line appended (one ``write``), after a
        :meth:`save` if this record has not written its file yet (a loaded record may
        end in a torn line that the append must not extend)."""
        self.done.add(int(index))
        if not getattr(self, "_saved", False):
            self.save()
            return
        line = f"{int(index)}\n".encode("ascii")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:  # removed under the run: write it whole again
            self.save()
            return
        except OSError as exc:
            raise write_failure(self.path, exc) from exc
        try:
            while line:
                line = line[os.write(fd, line):]
        except OSError as exc:     # disk full: the run fails and removes the record
            raise write_failure(self.path, exc) from exc
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Delete the record (the run committed, or failed)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def mismatch(self, fingerprint: dict[str, Any]) -> str | None:
        """A one-line description of what differs from ``fingerprint``, or None."""
        for key in sorted(set(self.fingerprint) | set(fingerprint)):
            old, new = self.fingerprint.get(key), fingerprint.get(key)
            if old != new:
                return f"{key} was {_short(old)}, now {_short(new)}"
        return None


def _sweep_temporaries(path: Path) -> None:
    """Remove ``.NAME.logmm-tmp-PID`` files beside ``path`` whose process has exited (a
    ``kill -9`` between writing a temporary and renaming it)."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        work = parse_work_file(name)
        if (work is not None and work.output == path.name and work.kind == "tmp"
                and work.pid is not None and not process_alive(work.pid)):
            (path.parent / name).unlink(missing_ok=True)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


class OutputLock:
    """An exclusive lock file beside an output, held while a run writes it.

    The lock is an ``flock`` on ``.OUT.logmm-lock`` (which also holds the pid, for the
    message a second run prints): the kernel drops it when the holder exits, however it
    exits (``kill -9`` included), so a lock left by a dead run is simply taken over, and
    two runs racing for the same output cannot both win. A lock file naming a live
    process that holds no ``flock`` (written by hand, or by an older logmm) is respected.
    """

    def __init__(self, output: str | Path | ArrayAddress) -> None:
        self.path = lock_path(output)
        #: what the lock guards, as messages name it: the file, or the array in a store
        self.output: Path | ArrayAddress
        inside = isinstance(output, ArrayAddress) and container_output(output)
        if isinstance(output, ArrayAddress):
            self.output = output if inside and output.format == "zarr" else output.path
        else:
            self.output = Path(output)
        #: one HDF5 file that runs add datasets to: the lock is the file's
        self.per_file = isinstance(output, ArrayAddress) and inside and output.format == "hdf5"
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LogmmError` naming the run that holds it."""
        import fcntl

        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as exc:                       # read-only, disk full, ...
                raise write_failure(str(self.output), exc) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise self._busy(self._holder()) from None
                # no flock on this filesystem (ENOLCK, EOPNOTSUPP): the pid check below
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:          # the previous holder removed it as we opened it: again
                os.close(fd)
                continue
            pid = self._holder()
            if pid is not None and pid != os.getpid() and process_alive(pid):
                os.close(fd)
                raise self._busy(pid)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode("ascii"))
            except OSError as exc:   # disk full: an empty lock would confuse the next run
                self.path.unlink(missing_ok=True)
                os.close(fd)
                raise write_failure(str(self.output), exc) from exc
            self._fd = fd
            self.held = True
            return
        raise LogmmError(f"cannot take the lock {self.path}")

    def _busy(self, pid: int | None) -> LogmmError:
        who = f"another logmm run (pid {pid})" if pid is not None else "another logmm run"
        if self.per_file:
            return LogmmError(f"{who} is writing into {self.output} (HDF5 allows one "
                              f"writer per file); wait for it, or remove {self.path} if it "
                              "is gone")
        return LogmmError(f"{who} is writing {self.output}; wait for it, or remove "
                          f"{self.path} if it is gone")

    def release(self) -> None:
        """Release the lock and remove its file."""
        if self.held:
            self.path.unlink(missing_ok=True)     # before unlocking: see acquire's check
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.held = False

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one owned by another user counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
