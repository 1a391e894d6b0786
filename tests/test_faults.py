"""Fault injection through the real command line: kill -9 at random points, two writers.

For ``multiply``, ``project`` and ``loglik``, a run is killed with SIGKILL at a point drawn
from a seed: after a random number of stored row blocks (the resume record says how many),
or after a random delay from start (which may fall in the interpreter's start-up, the
planning, the middle of a block or the final commit). Afterwards

- nothing complete-looking is at the output path: either nothing, or (killed after the
  commit's rename) the finished result, bit-identical to an uninterrupted run;
- the same command with ``--resume`` finishes and gives a result bit-identical to the
  uninterrupted run, leaving no partial output, record or lock behind.

Two runs writing the same output at once: the second fails with one line naming the
first's pid, and the first's result is correct.

The default run tries a few seeds on small inputs; ``-m slow`` tries many on larger ones.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from logmm import adversarial
from logmm.io import open_array
from logmm.io.resume import lock_path, record_path
from logmm.io.writers import partial_path

from cli_run import (
    kill_after_blocks,
    kill_at_seeded_point,
    listing,
    one_error_line,
    run_logmm,
    slow_flush,
    start_logmm,
)
from exact_reference import error_bound, max_abs_error

BLOCK_ROWS = 64


def read(path: Path) -> np.ndarray:
    with open_array(path) as reader:
        return reader.read_all()


def make_inputs(d: Path, rows: int) -> Path:
    A, B = adversarial.banded(rows, 48, 40, fraction=0.2, seed=3)   # repairs happen too
    np.save(d / "a.npy", A)
    np.save(d / "b.npy", B)
    np.save(d / "x.npy", np.random.default_rng(4).standard_normal((rows, 48)))
    np.save(d / "w.npy", np.random.default_rng(5).standard_normal((5, 12)))
    np.save(d / "mu.npy", np.random.default_rng(6).standard_normal(48))
    return d


COMMANDS = {
    "multiply": lambda d, out: ["multiply", d / "a.npy", d / "b.npy", "-o", out],
    "project": lambda d, out: ["project", d / "x.npy", d / "w.npy", "--blocks", "4", "-o", out],
    "loglik": lambda d, out: ["loglik", d / "x.npy", "--mu", d / "mu.npy", "--rho", "0.3",
                              "-o", out],
}
FORMATS = ["npy", "h5", "zarr"]


def argv(command: str, d: Path, out: Path) -> list:
    return [*COMMANDS[command](d, out), "--block-rows", str(BLOCK_ROWS), "-q"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("faults"), rows=40 * BLOCK_ROWS)


@pytest.fixture(scope="module")
def references(small: Path) -> dict:
    """Uninterrupted runs of every command into every format, with their wall times."""
    refs = {}
    for command in COMMANDS:
        for fmt in FORMATS:
            out = small / f"ref-{command}.{fmt}"
            started = time.monotonic()
            proc = run_logmm(*argv(command, small, out))
            assert proc.returncode == 0, proc.stderr
            refs[command, fmt] = (read(out), time.monotonic() - started)
    return refs


def kill_and_resume(d: Path, out: Path, command: str, expected: np.ndarray,
                    wall: float, seed: int) -> str:
    """Kill a run at the seed's point, check what it left, resume it; return what happened."""
    rng = random.Random(seed)
    blocks = -(-len(expected) // BLOCK_ROWS)
    proc = start_logmm(*argv(command, d, out))
    point, alive = kill_at_seeded_point(proc, rng, record_path(out), blocks, wall)
    if out.exists():            # killed after the commit's rename: it must be the result
        assert alive or proc.returncode == 0
        np.testing.assert_array_equal(read(out), expected, err_msg=point)
        outcome = "complete before the kill"
    else:
        assert not list(out.parent.glob(f"{out.name}*")), (point, listing(out.parent))
        done = run_logmm(*argv(command, d, out), "--resume")
        assert done.returncode == 0, (point, done.stderr)
        np.testing.assert_array_equal(read(out), expected, err_msg=point)
        outcome = "resumed"
    assert not partial_path(out).exists() and not record_path(out).exists()
    assert not lock_path(out).exists(), point
    return f"{point}: {outcome}"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_kill_9_at_a_random_point_then_resume(small: Path, references: dict, tmp_path: Path,
                                              command: str, seed: int) -> None:
    fmt = FORMATS[seed % 3]
    expected, wall = references[command, fmt]
    kill_and_resume(small, tmp_path / f"c.{fmt}", command, expected, wall, seed)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_kill_9_many_seeds_larger_inputs(tmp_path: Path, command: str) -> None:
    d = make_inputs(tmp_path, rows=400 * BLOCK_ROWS)
    for fmt in FORMATS:
        ref = tmp_path / f"ref.{fmt}"
        started = time.monotonic()
        assert run_logmm(*argv(command, d, ref)).returncode == 0
        expected, wall = read(ref), time.monotonic() - started
        for seed in range(10):
            out = tmp_path / f"c{seed}.{fmt}"
            kill_and_resume(d, out, command, expected, wall, 100 + seed)


# SIGKILL between the two renames of a .npy commit: the sidecar is in place, the array not
KILL_MID_COMMIT = """
import os, signal
from logmm.io import npy
_replace = npy.replace_path
def _replace_then_die(src, dest):
    if str(dest).endswith(".npy"):
        os.kill(os.getpid(), signal.SIGKILL)
    _replace(src, dest)
npy.replace_path = _replace_then_die
"""


def test_kill_between_the_sidecar_and_the_npy_rename(small: Path, references: dict,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "c.npy"
    proc = start_logmm(*argv("multiply", small, out), prelude=KILL_MID_COMMIT)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / "c.npy.json").exists()   # not complete-looking
    done = run_logmm(*argv("multiply", small, out), "--resume")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read(out), references["multiply", "npy"][0])
    assert listing(tmp_path) == ["c.npy", "c.npy.json"]


# the first writer takes 20 ms per block (160 blocks), long enough for the others to try
SLOW_FLUSH = slow_flush(0.02)


def test_two_runs_writing_the_same_output(small: Path, references: dict, tmp_path: Path) -> None:
    """The second run (multiply, or convert onto the same path) fails cleanly with one line
    naming the first's pid; the first's result is correct."""
    out = tmp_path / "c.h5"
    first = start_logmm("multiply", small / "a.npy", small / "b.npy", "-o", out,
                        "--block-rows", "16", "-q", prelude=SLOW_FLUSH)
    try:
        assert kill_after_blocks(first, record_path(out), 1), "the first run ended too soon"
        for second in (["multiply", small / "a.npy", small / "b.npy", "-o", out],
                       ["multiply", small / "a.npy", small / "b.npy", "-o", out, "--overwrite",
                        "--resume"],
                       ["convert", small / "a.npy", out, "--overwrite"]):
            message = one_error_line(run_logmm(*second), codes=(1,))
            assert f"another logmm run (pid {first.pid}) is writing {out}" in message, message
        assert first.poll() is None, "the first run ended while the others tried"
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0 and err == "", err
    A, B = np.load(small / "a.npy"), np.load(small / "b.npy")     # other blocks: not bitwise
    assert max_abs_error(read(out), references["multiply", "h5"][0]) <= error_bound(A, B,
                                                                                    np.float64)
    assert listing(tmp_path) == ["c.h5"]
