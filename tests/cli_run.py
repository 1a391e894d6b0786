"""Helpers for tests that run the real ``logmm`` command line in a subprocess.

``run_logmm`` runs ``python -m logmm.cli.main`` (the console script's code, without
depending on the script being installed); ``inject`` runs it after a few lines of Python
that patch the engine (fault injection); ``one_error_line`` checks the error contract:
exit status, nothing on stdout, exactly one ``logmm: error: …`` line on stderr, no
traceback. ``listing`` snapshots a directory (hidden files included) so a test can show
that a failed run left nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ENTRY", "inject", "kill_after_blocks", "kill_at_seeded_point", "listing",
           "one_error_line", "run_logmm", "slow_flush", "start_logmm"]

#: ``python -c ENTRY args...`` runs the logmm command line (sys.argv[1:] are its arguments)
ENTRY = "import sys\nfrom logmm.cli.main import main\nmain(sys.argv[1:])\n"


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200")
    env.pop("_LOGMM_COMPLETE", None)
    return env


def run_logmm(*args: str | os.PathLike, prelude: str = "", cwd: str | os.PathLike | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``logmm ARGS`` in a fresh interpreter (after ``prelude``, Python code)."""
    return subprocess.run([sys.executable, "-c", prelude + ENTRY, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env())


def start_logmm(*args: str | os.PathLike, prelude: str = "") -> subprocess.Popen:
    """Start ``logmm ARGS`` in a fresh interpreter (after ``prelude``); stdout and stderr
    are pipes."""
    return subprocess.Popen([sys.executable, "-c", prelude + ENTRY, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def inject(*args: str | os.PathLike, patch: str, **kwargs) -> subprocess.CompletedProcess:
    """``run_logmm`` with ``patch`` (Python source) executed first, in the same process."""
    return run_logmm(*args, prelude=patch + "\n", **kwargs)


def one_error_line(proc: subprocess.CompletedProcess, codes: Sequence[int] = (1, 2)) -> str:
    """Assert the error contract and return the message (after ``logmm: error: ``)."""
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("logmm: error: "), proc.stderr
    message = lines[0].removeprefix("logmm: error: ")
    assert message.strip(), proc.stderr
    return message


def listing(directory: Path) -> list[str]:
    """Every path under ``directory`` (recursively, hidden ones included), sorted."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def kill_after_blocks(proc: subprocess.Popen, record: Path, blocks: int,
                      timeout: float = 60) -> bool:
    """Wait until ``proc``'s resume record notes ``blocks`` stored row blocks; True if it
    is then still running (the caller kills it), False if it finished first."""
    from logmm.io.resume import ResumeRecord

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        loaded = ResumeRecord.load(record)
        if loaded is not None and len(loaded.done) >= blocks:
            break
        time.sleep(0.001)
    return proc.poll() is None


def kill_at_seeded_point(proc: subprocess.Popen, rng, record: Path, blocks: int, wall: float,
                         after_blocks: float = 0.5) -> tuple[str, bool]:
    """SIGKILL ``proc`` at a point drawn from ``rng``: after a random number of stored
    blocks (with probability ``after_blocks``), else after a random delay up to ``wall``
    seconds. Returns the point, in words, and whether the run was still alive then."""
    if rng.random() < after_blocks:
        point = f"after {rng.randrange(blocks)} stored blocks"
        alive = kill_after_blocks(proc, record, int(point.split()[1]))
    else:
        delay = rng.uniform(0, wall)
        point = f"after {delay:.3f} s"
        time.sleep(delay)
        alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return point, alive


def slow_flush(seconds: float, blocks: int | None = None) -> str:
    """A prelude (Python source) that makes every stored block (or only the first
    ``blocks``) take ``seconds`` longer, so that a run lasts long enough for others to
    meet it."""
    return f"""
import itertools, time
from logmm.io import writers
_flush = writers.ArrayWriter.flush
_count, _limit = itertools.count(), {blocks!r}
def _slow(self):
    if _limit is None or next(_count) < _limit:
        time.sleep({seconds})
    _flush(self)
writers.ArrayWriter.flush = _slow
"""
