"""What ``--resume`` needs: a record of finished blocks, an input fingerprint, a lock.

Beside a partial output ``.OUT.logmm-partial`` lives ``.OUT.logmm-partial.json``: the
fingerprint of the run (inputs' paths, shapes, dtypes, sizes and modification times, and
the options that change the result), the block plan, and the indices of the row blocks
already stored and flushed. It is rewritten atomically after every block, so a run killed
at any moment leaves a record that undercounts at worst. A resumed run recomputes only the
missing blocks, with the recorded plan, so its result is bit-identical to an
uninterrupted run.

``.OUT.logmm-lock`` (created exclusively, holding the pid) keeps two runs from writing
the same output; a lock whose process is gone is taken over.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LogmmError
from .addresses import ArrayAddress
from .writers import partial_path, temporary_path

__all__ = [
    "OutputLock",
    "ResumeRecord",
    "input_fingerprint",
    "lock_path",
    "process_alive",
    "record_path",
]

_RECORD_VERSION = 1


def record_path(output: str | Path) -> Path:
    """``dir/.OUT.logmm-partial.json``."""
    partial = partial_path(output)
    return partial.with_name(partial.name + ".json")


def lock_path(output: str | Path) -> Path:
    """``dir/.OUT.logmm-lock``."""
    output = Path(output)
    return output.with_name(f".{output.name}.logmm-lock")


def input_fingerprint(address: ArrayAddress, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    """Identity of an input as far as a resumed run must trust it: the resolved address,
    shape, dtype, and size and modification time of the file (or of a Zarr array's
    metadata document)."""
    path = Path(address.path).resolve()
    probe = path
    if address.format == "zarr":
        node = path / (address.dataset or "")
        probe = next((node / name for name in ("zarr.json", ".zarray") if (node / name).exists()),
                     path)
    stat = probe.stat()
    return {
        "address": f"{path}" + (f":{address.dataset}" if address.dataset else ""),
        "shape": list(shape),
        "dtype": str(dtype),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
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
        """The record at ``path``, or None if there is none (or it cannot be parsed)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("version") != _RECORD_VERSION:
                return None
            return cls(path=Path(path), fingerprint=data["fingerprint"], plan=data["plan"],
                       done={int(i) for i in data["done"]})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> None:
        """Write atomically (temporary file, then rename)."""
        tmp = temporary_path(self.path)
        tmp.write_text(json.dumps({"version": _RECORD_VERSION, "fingerprint": self.fingerprint,
                                   "plan": self.plan, "done": sorted(self.done)}),
                       encoding="utf-8")
        os.replace(tmp, self.path)

    def mark_done(self, index: int) -> None:
        self.done.add(int(index))
        self.save()

    def remove(self) -> None:
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


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


class OutputLock:
    """An exclusive lock file beside an output, held while a run writes it."""

    def __init__(self, output: str | Path) -> None:
        self.path = lock_path(output)
        self.output = Path(output)
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LogmmError` naming the run that holds it."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._holder()
                if pid is not None and process_alive(pid):
                    raise LogmmError(f"another logmm run (pid {pid}) is writing {self.output}; "
                                     f"wait for it, or remove {self.path} if it is gone") from None
                self.path.unlink(missing_ok=True)       # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise LogmmError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
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
