"""Pipelines requeue finished jobs: ``--resume`` on a complete output made by the same
inputs and options is nothing to do (exit 0, one line, the output untouched); anything
else that exists stays refused. Every case runs the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from logmm.io.addresses import parse_address
from logmm.io.resume import lock_path, record_path

from cli_run import listing, one_error_line, run_logmm
from conftest import save_array

RNG = np.random.default_rng(1818)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    np.save(tmp_path / "a.npy", RNG.standard_normal((40, 6)))
    np.save(tmp_path / "b.npy", RNG.standard_normal((6, 3)))
    np.save(tmp_path / "w.npy", RNG.standard_normal((3, 2)))
    return tmp_path


def stamps(directory: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``directory``."""
    return {p: (os.stat(directory / p).st_size, os.stat(directory / p).st_mtime_ns)
            for p in listing(directory) if (directory / p).is_file()}


def assert_already_complete(directory: Path, *args: str | Path) -> None:
    """``logmm ARGS --resume`` exits 0 with one line and changes no file; with ``-q``,
    silently."""
    before = stamps(directory)
    proc = run_logmm(*args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "already complete" in lines[0], proc.stderr
    quiet = run_logmm(*args, "--resume", "-q")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert stamps(directory) == before


@pytest.mark.parametrize("out", ["c.npy", "c.h5", "c.zarr", "c.h5:/g/c"])
def test_rerun_of_a_finished_multiply_is_nothing_to_do(inputs: Path, out: str):
    args = ["multiply", inputs / "a.npy", inputs / "b.npy", "-o", f"{inputs}/{out}"]
    assert run_logmm(*args, "-q").returncode == 0
    assert_already_complete(inputs, *args)


@pytest.mark.parametrize("command", [
    ["project", "{d}/a.npy", "{d}/w.npy", "--blocks", "3", "-o", "{d}/p.h5"],
    ["loglik", "{d}/a.npy", "--mu", "0", "--sigma", "1", "-o", "{d}/l.zarr"],
    ["loglik", "{d}/a.npy", "--mu", "0", "--sigma", "1", "--reduce", "row", "-o",
     "{d}/l.npy"],
    ["einsum", "ij,jk->ik", "{d}/a.npy", "{d}/b.npy", "-o", "{d}/e.h5"],
], ids=lambda c: c[0] + "-" + c[-1].rsplit(".", 1)[-1])
def test_rerun_of_every_streamed_command_is_nothing_to_do(inputs: Path, command: list[str]):
    args = [part.format(d=inputs) for part in command]
    first = run_logmm(*args, "-q", "--resume")       # --resume with nothing yet: a run
    assert first.returncode == 0, first.stderr
    assert_already_complete(inputs, *args)


@pytest.mark.parametrize("suffix", ["h5", "zarr"])
def test_rerun_of_a_finished_shard_is_nothing_to_do(inputs: Path, suffix: str):
    args = ["multiply", inputs / "a.npy", inputs / "b.npy", "-o", inputs / f"s.{suffix}",
            "--block-rows", "10"]
    for index in range(3):
        assert run_logmm(*args, "--shard", f"{index}/3", "-q").returncode == 0
    assert_already_complete(inputs, *args, "--shard", "1/3")


@pytest.mark.parametrize("change", ["option", "input"])
def test_a_complete_output_of_another_run_is_still_refused(inputs: Path, change: str):
    args = ["multiply", inputs / "a.npy", inputs / "b.npy", "-o", inputs / "c.h5"]
    assert run_logmm(*args, "-q").returncode == 0
    if change == "option":
        args += ["--method", "exact"]
    else:
        np.save(inputs / "b.npy", RNG.standard_normal((6, 3)))
    before = stamps(inputs)
    message = one_error_line(run_logmm(*args, "--resume"), codes=(1,))
    assert message.startswith("output exists: ") and "other inputs or options" in message
    assert stamps(inputs) == before


def test_an_output_logmm_did_not_make_is_refused_on_resume(inputs: Path):
    save_array(f"{inputs}/c.h5:/data", RNG.standard_normal((40, 3)))
    message = one_error_line(run_logmm("multiply", inputs / "a.npy", inputs / "b.npy", "-o",
                                       inputs / "c.h5", "--resume"), codes=(1,))
    assert message == f"output exists: {inputs}/c.h5 (use --overwrite to replace it)"


def test_rerun_without_resume_is_still_output_exists(inputs: Path):
    args = ["multiply", inputs / "a.npy", inputs / "b.npy", "-o", inputs / "c.npy"]
    assert run_logmm(*args, "-q").returncode == 0
    message = one_error_line(run_logmm(*args), codes=(1,))
    assert message == f"output exists: {inputs}/c.npy (use --overwrite to replace it)"


@pytest.mark.parametrize("out", ["c.h5", "c.zarr", "c.h5:/g/c"])
def test_a_rerun_sweeps_what_a_run_killed_after_its_commit_left(inputs: Path, out: str):
    """Killed between the commit's rename and its clean-up, a run leaves its resume record
    and lock file beside a complete output; ``--resume`` says "already complete" and
    removes them (the lock's holder is dead)."""
    args = ["multiply", inputs / "a.npy", inputs / "b.npy", "-o", f"{inputs}/{out}"]
    assert run_logmm(*args, "-q").returncode == 0
    address = parse_address(f"{inputs}/{out}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    record_path(address).write_text('{"left": "by a killed run"}')
    lock_path(address).write_text(dead)
    proc = run_logmm(*args, "--resume")
    assert proc.returncode == 0 and "already complete" in proc.stderr, proc.stderr
    assert not [p for p in listing(inputs) if "logmm-" in p], listing(inputs)
