"""Outputs inside existing containers, through the real command line: kill -9 while a new
dataset is written into an HDF5 file or Zarr store that holds others (and, for HDF5, the
run's own input), two runs adding datasets to one container at once, ``logmm info`` on a
hidden partial dataset, and what ``--shard``/``merge`` say about such outputs.

After every kill the container opens, each of its other arrays reads back bit-identical,
and ``--resume`` finishes the new dataset bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from logmm.io import list_arrays, open_array, parse_address
from logmm.io.layout import journal_file, partial_dataset
from logmm.io.resume import lock_path, record_path

from cli_run import (
    ENTRY,
    kill_after_blocks,
    kill_at_seeded_point,
    listing,
    one_error_line,
    run_logmm,
    slow_flush,
    start_logmm,
)
from conftest import save_array

BLOCK_ROWS = 32
ROWS = 40 * BLOCK_ROWS
# 0.1 s per stored block (40 blocks): long enough for other runs to try meanwhile
SLOW_FLUSH = slow_flush(0.1)
# a run stopped (SIGSTOP) after its first stored block needs no slow blocks once it is
# continued: 0.5 s before each of its first 3 leaves >= 1 s to stop it in, and it then
# ends ~2.5 s sooner than under SLOW_FLUSH
SLOW_START = slow_flush(0.5, blocks=3)


def read(address: str | Path) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


def snapshot(path: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every array of the container but ``skip`` (names without their leading /)."""
    return {name: read(f"{path}:{name}").tobytes() for name in list_arrays(path)
            if name.strip("/") not in skip}


def make_container(d: Path, kind: str) -> Path:
    """A container holding the input A and two unrelated arrays (one compressed)."""
    rng = np.random.default_rng(16)
    path = d / ("c.h5" if kind == "h5" else "c.zarr")
    save_array(f"{path}:a", rng.standard_normal((ROWS, 24)))
    save_array(f"{path}:keep/x", rng.standard_normal((100, 7)).astype(np.float32))
    if kind == "h5":
        with h5py.File(path, "a") as f:
            f.create_dataset("keep/z", data=rng.standard_normal((300, 5)), compression="gzip",
                             chunks=(50, 5))
            f.attrs["owner"] = "another tool"
    else:
        save_array(f"{path}:keep/z", rng.standard_normal((300, 5)))
    np.save(d / "b.npy", make_b())
    return path


def make_b() -> np.ndarray:
    return np.random.default_rng(17).standard_normal((24, 16))


def product_args(container: Path, name: str = "new/product", source: str | None = None) -> list:
    return ["multiply", source or f"{container}:a", container.parent / "b.npy", "-o",
            f"{container}:{name}", "--block-rows", str(BLOCK_ROWS), "-q"]


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, float]:
    """The product written to a file of its own, and its wall time."""
    d = tmp_path_factory.mktemp("reference")
    container = make_container(d, "h5")
    started = time.monotonic()
    args = product_args(container)
    args[4] = d / "alone.h5"
    assert run_logmm(*args).returncode == 0
    return read(d / "alone.h5"), time.monotonic() - started


def kill_and_resume(d: Path, kind: str, expected: tuple, seed: int) -> str:
    """Kill -9 a run adding new/product to a fresh container in ``d`` at a point drawn from
    ``seed``, check the container, resume; return what happened."""
    result, wall = expected
    container = make_container(d, kind)
    before = snapshot(container)
    out = parse_address(f"{container}:new/product")
    rng = random.Random(seed)
    # every third seed compresses (HDF5: written in a side file, copied in at commit)
    args = [*product_args(container), *(["--compression", "gzip"] if seed % 3 == 1 else [])]
    proc = start_logmm(*args)
    point, alive = kill_at_seeded_point(proc, rng, record_path(out), ROWS // BLOCK_ROWS, wall,
                                        after_blocks=0.6)
    assert snapshot(container, skip=("new/product", "new/.product.logmm-partial")) == before, \
        point
    names = [n.strip("/") for n in list_arrays(container)]
    if "new/product" in names:      # killed after the commit's rename: it must be the result
        assert alive or proc.returncode == 0
        done = run_logmm(*args, "--resume")     # removes a record the kill left behind
        assert done.returncode == 0, (point, done.stderr)
        outcome = "complete before the kill"
    else:
        done = run_logmm(*args, "--resume")
        assert done.returncode == 0, (point, done.stderr)
        outcome = "resumed"
    np.testing.assert_array_equal(read(f"{container}:new/product"), result, err_msg=point)
    assert snapshot(container, skip=("new/product",)) == before, point
    assert not [p for p in listing(d) if "logmm-" in p], (point, listing(d))
    return f"{kind} seed {seed}: {point}: {outcome}"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_kill_9_while_adding_a_dataset_then_resume(tmp_path: Path, expected: tuple, kind: str,
                                                   seed: int) -> None:
    print(kill_and_resume(tmp_path, kind, expected, seed))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_kill_9_while_adding_a_dataset_many_seeds(tmp_path: Path, expected: tuple,
                                                  kind: str) -> None:
    for seed in range(100, 130):
        d = tmp_path / str(seed)
        d.mkdir()
        print(kill_and_resume(d, kind, expected, seed))


def paused_after_first_block(args: list, record: Path) -> subprocess.Popen:
    """Start ``logmm ARGS`` and stop it (SIGSTOP) once it has stored one block: it holds
    its locks and open files, mid-write, for as long as the test needs."""
    proc = start_logmm(*args, prelude=SLOW_START)
    assert kill_after_blocks(proc, record, 1), "the run ended too soon"
    proc.send_signal(signal.SIGSTOP)
    return proc


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_two_runs_adding_to_one_hdf5_file(tmp_path: Path, expected: tuple,
                                          compression: str) -> None:
    """HDF5 has one writer per file: a second run fails at once with one line, the file
    and the first run's dataset are intact, and the second succeeds when rerun. A second
    run reading its input from the file being written is stopped by HDF5's own file lock
    (one line too). A compressed first run (writing its side file) holds the file too."""
    container = make_container(tmp_path, "h5")
    np.save(tmp_path / "a.npy", read(f"{container}:a"))
    before = snapshot(container)
    extra = ["--compression", compression]
    first = paused_after_first_block([*product_args(container, "p1"), *extra],
                                     record_path(parse_address(f"{container}:p1")))
    try:
        second = [*product_args(container, "p2", source=str(tmp_path / "a.npy")), *extra]
        message = one_error_line(run_logmm(*second), codes=(1,))
        assert f"another logmm run (pid {first.pid}) is writing into {container}" in message
        assert "one writer per file" in message
        message = one_error_line(run_logmm(*product_args(container, "p2"), *extra), codes=(1,))
        assert str(container) in message and "lock" in message, message
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0 and err == "", err
    assert snapshot(container, skip=("p1",)) == before
    assert run_logmm(*product_args(container, "p2"), *extra).returncode == 0
    for name in ("p1", "p2"):
        np.testing.assert_array_equal(read(f"{container}:{name}"), expected[0])
    assert snapshot(container, skip=("p1", "p2")) == before
    assert listing(tmp_path) == ["a.npy", "b.npy", "c.h5"]


def test_two_runs_adding_to_one_zarr_store(tmp_path: Path, expected: tuple) -> None:
    """Zarr arrays are directories of their own: a second run adds its array while the
    first is stopped mid-write, and both succeed."""
    container = make_container(tmp_path, "zarr")
    before = snapshot(container)
    first = paused_after_first_block(product_args(container, "sub/p1"),
                                     record_path(parse_address(f"{container}:sub/p1")))
    try:
        second = run_logmm(*product_args(container, "sub/p2"))
        assert second.returncode == 0, second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    for name in ("sub/p1", "sub/p2"):
        np.testing.assert_array_equal(read(f"{container}:{name}"), expected[0])
    assert snapshot(container, skip=("sub/p1", "sub/p2")) == before
    assert not [p for p in listing(tmp_path) if "logmm-" in p], listing(tmp_path)


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_info_lists_a_hidden_partial_dataset_as_incomplete(tmp_path: Path, kind: str) -> None:
    container = make_container(tmp_path, kind)
    out = parse_address(f"{container}:new/product")
    proc = start_logmm(*product_args(container), prelude=SLOW_FLUSH)
    assert kill_after_blocks(proc, record_path(out), 2), "the run ended too soon"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    hidden = ("/" if kind == "h5" else "") + "new/.product.logmm-partial"
    info = run_logmm("info", container)
    assert info.returncode == 0, info.stderr
    row = next(line for line in info.stdout.splitlines() if line.startswith(hidden + " "))
    assert row.split()[-1] == "incomplete", info.stdout
    assert f"note: {hidden} is the partial dataset of an unfinished logmm run" in info.stdout
    check = run_logmm("info", "--check", container)
    assert check.returncode == 1
    assert run_logmm(*product_args(container), "--resume").returncode == 0
    assert run_logmm("info", "--check", container).returncode == 0
    assert not lock_path(out).exists() and not record_path(out).exists()


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_shard_into_an_existing_container_is_refused(tmp_path: Path, kind: str) -> None:
    container = make_container(tmp_path, kind)
    before, files = snapshot(container), listing(tmp_path)
    message = one_error_line(run_logmm(*product_args(container), "--shard", "0/2"), codes=(2,))
    assert "--shard cannot add new/product" in message and "logmm convert" in message
    assert snapshot(container) == before and listing(tmp_path) == files


def test_merge_into_an_existing_hdf5_file_is_refused(tmp_path: Path) -> None:
    source = make_container(tmp_path, "h5")
    target = tmp_path / "m.h5"
    args = product_args(source)
    args[4] = f"{target}:x"
    for i in range(2):
        assert run_logmm(*args, "--shard", f"{i}/2").returncode == 0
    save_array(f"{target}:other", np.arange(3.0))      # m.h5 appears after the shards
    before = snapshot(target)
    message = one_error_line(run_logmm("merge", f"{target}:x"), codes=(2,))
    assert "--shard cannot add x" in message
    assert snapshot(target) == before


def test_hdf5_file_in_the_newest_format_is_refused(tmp_path: Path) -> None:
    """Superblock v3: HDF5 marks the file 'open for write' on disk, and after a kill -9 no
    program opens it until h5clear -s. Refused with one line; the file is left as it was."""
    container = tmp_path / "latest.h5"
    with h5py.File(container, "w", libver="latest") as f:
        f["a"] = np.random.default_rng(1).standard_normal((8, 24))
    np.save(tmp_path / "b.npy", np.random.default_rng(2).standard_normal((24, 16)))
    before, files = container.read_bytes(), listing(tmp_path)
    message = one_error_line(run_logmm(*product_args(container)), codes=(1,))
    assert "superblock v3" in message and "h5clear" in message and str(container) in message
    assert container.read_bytes() == before and listing(tmp_path) == files


@pytest.mark.parametrize("compression", ["default", "gzip", "zstd", "blosc", "none"])
def test_array_added_to_a_zarr_v2_store_is_v2(tmp_path: Path, expected: tuple,
                                              compression: str) -> None:
    """An array joins a Zarr v2 store in v2 (zarr 2.x readers keep reading the whole store),
    with each compression logmm offers."""
    import zarr

    rng = np.random.default_rng(16)            # the same A as make_container's
    store = tmp_path / "v2.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    group.create_array("a", shape=(ROWS, 24), dtype="f8")[:] = rng.standard_normal((ROWS, 24))
    group.create_array("keep", shape=(3,), dtype="f4")[:] = [1, 2, 3]
    np.save(tmp_path / "b.npy", make_b())
    before = snapshot(store)
    extra = [] if compression == "default" else ["--compression", compression]
    assert run_logmm(*product_args(store), *extra).returncode == 0
    assert (store / "new" / "product" / ".zarray").exists()
    assert not (store / "new" / "product" / "zarr.json").exists()
    np.testing.assert_array_equal(read(f"{store}:new/product"), expected[0])
    assert snapshot(store, skip=("new/product",)) == before


def test_sparse_input_in_the_output_file(tmp_path: Path) -> None:
    """A CSR group read from the file the output is added to shares the writer's handle
    too: the result is bit for bit the one written to a file of its own."""
    import scipy.sparse as sp

    container = tmp_path / "c.h5"
    x = sp.random(300, 12, density=0.2, format="csr", random_state=0)
    with h5py.File(container, "w") as f:
        group = f.create_group("x")
        for name in ("data", "indices", "indptr"):
            group[name] = getattr(x, name)
        group.attrs.update(format="csr", shape=x.shape)
        f["keep"] = np.arange(5.0)
    np.save(tmp_path / "w.npy", np.random.default_rng(3).standard_normal((4, 3)))
    before = snapshot(container)
    args = ["project", f"{container}:/x", tmp_path / "w.npy", "--blocks", "4",
            "--block-rows", "32", "-q", "-o"]
    assert run_logmm(*args, tmp_path / "alone.h5").returncode == 0
    done = run_logmm(*args, f"{container}:/y")
    assert done.returncode == 0, done.stderr
    assert read(f"{container}:/y").tobytes() == read(tmp_path / "alone.h5").tobytes()
    assert snapshot(container, skip=("y",)) == before


# SIGKILL inside an HDF5 commit: right after the link move, before anything is flushed
KILL_AFTER_MOVE = """
import os, signal, h5py
_move = h5py.Group.move
def _move_then_die(self, source, dest):
    _move(self, source, dest)
    os.kill(os.getpid(), signal.SIGKILL)
h5py.Group.move = _move_then_die
"""


def test_kill_inside_an_hdf5_commit_with_overwrite(tmp_path: Path, expected: tuple) -> None:
    """Killed between replacing the old dataset and the flush: the file opens, the other
    datasets are intact, and --resume --overwrite finishes the new dataset."""
    container = make_container(tmp_path, "h5")
    save_array(f"{container}:new/product", np.zeros((2, 2)))       # an older result
    before = snapshot(container, skip=("new/product",))
    args = [*product_args(container), "--overwrite"]
    proc = start_logmm(*args, prelude=KILL_AFTER_MOVE)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(container, skip=("new/product", "new/.product.logmm-partial")) == before
    done = run_logmm(*args, "--resume")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read(f"{container}:new/product"), expected[0])
    assert snapshot(container, skip=("new/product",)) == before
    assert listing(tmp_path) == ["b.npy", "c.h5"]


def test_dask_cannot_read_from_the_file_being_written(tmp_path: Path) -> None:
    """Dask workers are other processes, which HDF5 keeps from reading a file open for
    writing: refused with one line before any cluster starts; the file is unchanged."""
    pytest.importorskip("distributed")
    container = make_container(tmp_path, "h5")
    before, files = snapshot(container), listing(tmp_path)
    message = one_error_line(run_logmm(*product_args(container), "--scheduler", "dask"),
                             codes=(2,))
    assert "--scheduler dask cannot read inputs from" in message and str(container) in message
    assert snapshot(container) == before and listing(tmp_path) == files


def test_record_temporaries_of_killed_runs_are_swept(tmp_path: Path) -> None:
    """A kill -9 inside a resume record's atomic save leaves its temporary: the next save
    of that record removes it when its process is gone, and keeps a live one's."""
    from logmm.io.resume import ResumeRecord
    from logmm.io.writers import temporary_path

    record = ResumeRecord(tmp_path / ".c.h5.logmm-partial.json", {"x": 1}, {"n": 1})
    stem = temporary_path(record.path).name.rsplit("-", 1)[0]
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1    # no process has it
    dead, live = tmp_path / f"{stem}-{beyond}", tmp_path / f"{stem}-1"  # pid 1: init
    dead.write_text("{}")
    live.write_text("{}")
    record.save()
    assert not dead.exists() and live.exists() and record.path.exists()


COMPRESSIONS = ["gzip", "lzf", "zstd", "blosc"]


def compressions_here() -> list:
    """The HDF5 compressions this installation writes (zstd, blosc need hdf5plugin)."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return ["gzip", "lzf"]
    return COMPRESSIONS


def side_file(container: Path, name: str = "new/product") -> Path:
    return container.with_name(f".{container.name}#{name.replace('/', '%')}.logmm-partial")


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressed_dataset_added_to_an_existing_hdf5_file(tmp_path: Path, expected: tuple,
                                                           compression: str) -> None:
    """Written in a side file and copied in at commit: the dataset keeps the compression
    asked for, reads back bit-identical, and the file's other datasets are untouched."""
    if compression not in compressions_here():
        pytest.skip("needs hdf5plugin")
    container = make_container(tmp_path, "h5")
    before = snapshot(container)
    done = run_logmm(*product_args(container), "--compression", compression)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    with h5py.File(container, "r") as f:
        ds = f["new/product"]
        assert ds.attrs["complete"] and ds.id.get_create_plist().get_nfilters() >= 1
        assert ds.chunks == (BLOCK_ROWS, 16)
    info = run_logmm("info", container, "--json")
    assert info.returncode == 0, info.stderr
    row = next(a for a in json.loads(info.stdout)["arrays"] if a["name"] == "/new/product")
    assert row["compression"].endswith(compression) and row["status"] == "complete", row
    np.testing.assert_array_equal(read(f"{container}:new/product"), expected[0])
    assert snapshot(container, skip=("new/product",)) == before
    assert listing(tmp_path) == ["b.npy", "c.h5"]


def test_overwrite_a_compressed_dataset_in_a_file_with_others(tmp_path: Path,
                                                              expected: tuple) -> None:
    """--overwrite replaces only that dataset, with the new compression; twice, to show
    the replaced dataset's space is not what the others read."""
    container = make_container(tmp_path, "h5")
    with h5py.File(container, "a") as f:
        f.create_dataset("new/product", data=np.ones((7, 3)), compression="lzf", chunks=(2, 3))
        f["new/sibling"] = np.arange(4.0)
    before = snapshot(container, skip=("new/product",))
    refused = one_error_line(run_logmm(*product_args(container), "--compression", "gzip"),
                             codes=(1,))
    assert refused.startswith(f"output exists: {container}:/new/product"), refused
    for compression in ("gzip", "gzip"):
        args = [*product_args(container), "--compression", compression, "--overwrite"]
        done = run_logmm(*args)
        assert done.returncode == 0, done.stderr
        with h5py.File(container, "r") as f:
            assert f["new/product"].compression == compression
        np.testing.assert_array_equal(read(f"{container}:new/product"), expected[0])
        assert snapshot(container, skip=("new/product",)) == before
    assert listing(tmp_path) == ["b.npy", "c.h5"]


def test_info_and_resume_after_a_kill_in_the_side_file_phase(tmp_path: Path,
                                                             expected: tuple) -> None:
    """Killed while blocks land in the side file: the container holds nothing new, `logmm
    info` lists the dataset under its hidden name as incomplete (read from the side file),
    and --resume finishes it from the side file's stored blocks."""
    container = make_container(tmp_path, "h5")
    before = snapshot(container)
    out = parse_address(f"{container}:new/product")
    args = [*product_args(container), "--compression", "gzip"]
    proc = start_logmm(*args, prelude=SLOW_FLUSH)
    assert kill_after_blocks(proc, record_path(out), 5), "the run ended too soon"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert side_file(container).exists()
    assert snapshot(container) == before           # nothing new in the file itself
    info = run_logmm("info", container)
    assert info.returncode == 0, info.stderr
    hidden = "/new/.product.logmm-partial"
    row = next(line for line in info.stdout.splitlines() if line.startswith(hidden + " "))
    assert row.split()[-1] == "incomplete" and "gzip" in row, info.stdout
    assert (f"note: {hidden} is the partial dataset of an unfinished logmm run writing "
            f"/new/product, held in the side file {side_file(container).name}") in info.stdout
    assert run_logmm("info", "--check", container).returncode == 1
    side = run_logmm("info", side_file(container))     # the side file itself is readable
    assert side.returncode == 0 and "incomplete" in side.stdout, side.stderr
    done = run_logmm(*args, "--resume", "-v")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read(f"{container}:new/product"), expected[0])
    assert snapshot(container, skip=("new/product",)) == before
    assert run_logmm("info", "--check", container).returncode == 0
    assert listing(tmp_path) == ["b.npy", "c.h5"]


# ----------------------------------------------------------------------------- kill at a write
# A kill -9 between two of HDF5's writes to a file, exactly: strace delivers SIGKILL as the
# process enters its N-th pwrite64 to that file (which then never happens). The commit of a
# compressed dataset added to a file is a few dozen writes: the copy's chunks, one flush,
# the link, a flush; every point between two of them is a point the seeds draw from.

ENV = dict(os.environ, COLUMNS="200")


def strace_kills() -> bool:
    """strace can run a program and inject signals here (installed, ptrace allowed)."""
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=none",
                            sys.executable, "-c", "pass"], capture_output=True)
    return probe.returncode == 0


needs_strace = pytest.mark.skipif(not strace_kills(), reason="needs strace (and ptrace)")


def run_traced(args: list, target: Path, *, kill_at: int | None = None,
               log: Path | None = None, threads: bool = True) -> subprocess.CompletedProcess:
    """``logmm ARGS`` under strace, tracing pwrite64 to ``target``: SIGKILL on entering
    the ``kill_at``-th (counted from 1, in each thread: strace counts per thread), the
    calls written to ``log``; ``threads=False``: the main thread's calls only (the
    commit's; the writer thread's block writes are neither counted nor killed)."""
    trace = ["strace", *(["-f"] if threads else []), "-qq", "-o", str(log or os.devnull),
             "-P", str(target), "-e", "trace=pwrite64"]
    if kill_at is not None:
        trace += ["-e", f"inject=pwrite64:signal=KILL:when={kill_at}"]
    return subprocess.run([*trace, sys.executable, "-c", ENTRY, *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=ENV)


#: where the writes are counted: the container (the commit; for an uncompressed dataset
#: also its creation and its blocks) or the side file (the blocks of a compressed one)
TARGETS = {"commit": lambda container, name: container,
           "side file": lambda container, name: side_file(container, name)}
#: outputs (name, --overwrite, datasets added to keep/ first, compressed): a new group
#: (copied in too); replacing a dataset beside others; a 9th link in a group (old-style
#: storage holds 8 per symbol-table node: the link splits it); uncompressed, the hidden
#: dataset is created in the file (its creation's flush) and moved at commit
LAYOUTS = {"new group": ("new/product", False, 0, True),
           "overwrite": ("keep/product", True, 0, True),
           "full group": ("keep/product", False, 6, True),
           "plain new group": ("new/product", False, 0, False),
           "plain overwrite": ("keep/product", True, 0, False),
           "plain full group": ("keep/product", False, 6, False)}
COMPRESSED = [layout for layout, spec in LAYOUTS.items() if spec[3]]


def layout_args(container: Path, layout: str) -> tuple[str, list]:
    name, overwrite, more, compressed = LAYOUTS[layout]
    with h5py.File(container, "a") as f:
        for i in range(more):
            f[f"keep/m{i}"] = np.arange(i + 3.0)
        if overwrite:
            f.create_dataset(name, data=np.ones((9, 3)), compression="gzip", chunks=(3, 3))
    args = [*product_args(container, name), *(["--compression", "gzip"] if compressed else [])]
    return name, [*args, "--overwrite"] if overwrite else args


def superblock_writes(trace: Path) -> list[int]:
    """The pwrite64 calls (counted from 1) at offset 0: HDF5's superblock, written at
    open, last in every flush, and at close."""
    calls = [line for line in trace.read_text().splitlines() if "pwrite64(" in line]
    return [i + 1 for i, line in enumerate(calls) if re.search(r", 0\) = \d+$", line.rstrip())]


class WriteCounts(dict):
    """``(writes, link)`` of a (phase, layout), traced on first use: the default tests
    need 6 of the 9 (each traced run ~1.5 s)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, key: tuple[str, str]) -> tuple[int, int | None]:
        phase, layout = key
        assert layout in (LAYOUTS if phase == "commit" else COMPRESSED), key
        d = self.tmp_path_factory.mktemp("count")
        container = make_container(d, "h5")
        name, args = layout_args(container, layout)
        done = run_traced(args, TARGETS[phase](container, name), log=d / "trace",
                          threads=phase != "commit")
        assert done.returncode == 0, done.stderr
        writes = (d / "trace").read_text().count("pwrite64(")
        # the superblock: at open, at the switch to the journaled handle, ending the
        # copy's flush; then the link's journal is applied
        link = superblock_writes(d / "trace")[2] + 1 if layout in COMPRESSED else None
        self[key] = (writes, None if phase == "side file" else link)
        return self[key]


@pytest.fixture(scope="module")
def write_counts(tmp_path_factory: pytest.TempPathFactory) -> WriteCounts:
    """``(writes, link)`` of each (phase, layout) in an uninterrupted run: how many pwrite64
    calls it makes (the commit: in the main thread, which creates, copies and links), and
    the first write applying the journal of the commit's link, after the superblock write
    ending the copy's flush (compressed layouts; else None; for the side file, None)."""
    return WriteCounts(tmp_path_factory)


def kill_at_write(d: Path, expected: tuple, phase: str, layout: str, n: int,
                  target: Callable[[Path, str], Path] | None = None) -> str:
    """Kill the run at its ``n``-th write of ``phase`` (to ``target``, when given: the
    journal), check the file, resume. A kill while a journal is applied leaves the file
    perhaps torn and the journal beside it: ``logmm info`` says so (and writes nothing),
    ``--resume`` applies it first. Anywhere else the file is intact at once. Either way,
    after ``--resume`` every other dataset is bit-identical and the output is right."""
    d.mkdir(parents=True, exist_ok=True)
    container = make_container(d, "h5")
    name, args = layout_args(container, layout)
    before = snapshot(container, skip=(name,))
    point = f"{phase}, {layout}, killed entering write {n}"
    where = (target or TARGETS[phase])(container, name)
    killed = run_traced(args, where, kill_at=n, threads=phase != "commit")
    if killed.returncode == 0:      # this run made fewer writes (flushes vary with timing)
        np.testing.assert_array_equal(read(f"{container}:{name}"), expected[0])
        return f"{point}: finished first"
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
    journal = journal_file(container)
    pending = journal.exists()
    copy = d / "copy.h5"
    shutil.copyfile(container, copy)
    info = run_logmm("info", container)
    complete = None
    if info.returncode == 1:        # a complete journal: the change is not all applied
        assert pending and "--resume to finish it" in one_error_line(info), (point, info)
        assert container.read_bytes() == copy.read_bytes(), point      # info wrote nothing
        outcome = "journal applied by --resume"
    else:
        assert info.returncode == 0, (point, info.stderr)
        hidden = partial_dataset(name)
        assert snapshot(container, skip=(name, hidden)) == before, point   # intact as it is
        complete = name in [n.strip("/") for n in list_arrays(container)] and \
            read(f"{container}:{name}").shape == expected[0].shape
        outcome = "torn journal discarded by --resume" if pending else "resumed"
        if pending:
            assert "never applied" in info.stdout, (point, info.stdout)
    copy.unlink()
    done = run_logmm(*args, "--resume")
    assert done.returncode == 0, (point, done.stderr)
    assert not journal.exists(), point
    np.testing.assert_array_equal(read(f"{container}:{name}"), expected[0], err_msg=point)
    assert snapshot(container, skip=(name,)) == before, point
    assert run_logmm("info", "--check", container).returncode == 0, point
    left = [p for p in listing(d) if "logmm-" in p]
    assert not side_file(container, name).exists(), (point, left)
    if complete or (complete is None and left):
        # published before the kill: "already complete" leaves record and lock
        assert len(left) == 2 and all(p.endswith(("-lock", "-partial.json")) for p in left), \
            (point, left)
        return f"{point}: complete before the kill" + (f" ({outcome})" if pending else "")
    assert not left, (point, left)
    return f"{point}: {outcome}"


def link_points(write_counts: dict, layout: str) -> list[int]:
    """Two writes applying the journal of the commit's link (and delete): its first and
    a middle one."""
    writes, link = write_counts["commit", layout]
    return [link, (link + writes) // 2]


# seed 0 kills each (phase, layout) at one point by default; seed 1 adds a second point
# under -m slow, where test_kill_9_at_every_write_of_the_commit and
# test_kill_9_at_many_writes_of_the_side_file sweep (nearly) every point
@needs_strace
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
@pytest.mark.parametrize(("phase", "layout"), [
    ("commit", "new group"), ("commit", "overwrite"), ("commit", "plain new group"),
    ("side file", "new group"), ("side file", "overwrite")])
def test_kill_9_at_a_seeded_write_then_resume(tmp_path: Path, expected: tuple, write_counts: dict,
                                              phase: str, layout: str, seed: int) -> None:
    writes, _ = write_counts[phase, layout]
    n = random.Random(f"{phase} {layout} {seed}").randint(1, writes)
    print(kill_at_write(tmp_path, expected, phase, layout, n))


@needs_strace
@pytest.mark.parametrize("layout", ["full group", "overwrite"])
def test_kill_9_inside_the_link_flush_then_resume(tmp_path: Path, expected: tuple,
                                                  write_counts: dict, layout: str) -> None:
    """Where HDF5 itself tore the group before the journal (4-5 of ~51 points in a full
    group, 1-3 with --overwrite): the kill leaves a journal, --resume applies it."""
    for n in link_points(write_counts, layout):
        print(kill_at_write(tmp_path / str(n), expected, "commit", layout, n))


@needs_strace
@pytest.mark.parametrize("layout", ["full group", "plain new group"])
def test_a_torn_journal_is_discarded(tmp_path: Path, expected: tuple, layout: str) -> None:
    """Killed entering the journal's second write (its trailer, after the entries): the
    journal is incomplete, the file untouched; --resume deletes it and finishes."""
    outcome = kill_at_write(tmp_path, expected, "commit", layout, 2,
                            target=lambda container, name: journal_file(container))
    assert "torn journal discarded" in outcome, outcome
    print(outcome)


@needs_strace
@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_kill_9_at_every_write_of_the_commit(tmp_path: Path, expected: tuple, write_counts: dict,
                                            layout: str) -> None:
    """Every point between two writes to the file (creation, blocks when uncompressed,
    copy, flushes, link, close): none leaves it torn once --resume has run."""
    writes, _ = write_counts["commit", layout]
    outcomes = [kill_at_write(tmp_path / str(n), expected, "commit", layout, n)
                for n in range(1, writes + 1)]
    print("\n".join(outcomes))
    applied = [o for o in outcomes if "journal applied" in o]
    print(f"{layout}: {writes} points, 0 torn, {len(applied)} left a journal --resume applied")


@needs_strace
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["new group", "overwrite"])
def test_kill_9_at_many_writes_of_the_side_file(tmp_path: Path, expected: tuple,
                                                write_counts: dict, layout: str) -> None:
    writes, _ = write_counts["side file", layout]
    for n in sorted(random.Random(layout).sample(range(1, writes + 1), min(writes, 30))):
        print(kill_at_write(tmp_path / str(n), expected, "side file", layout, n))


# A kill inside a flush of a chunked, compressed HDF5 file past its first metadata block
# (400 chunks), between a chunk's data and the chunk index's inner node: written into
# again, such a file failed with "addr overflow" at the new chunk (7 of 7 such points;
# 8 of 30 points drawn at random from all its writes). --resume now first rewrites the
# partial file from its recorded blocks' chunks. The side file of a compressed dataset
# added to a file is such a file, and so is a compressed output file of its own.
LARGE_ROWS = 400 * BLOCK_ROWS


def torn_points(trace: Path) -> list[int]:
    """The pwrite64 calls (counted from 1) that write the chunk index's inner node right
    after a chunk's (gzip) data."""
    calls = [line.split("pwrite64(", 1)[1] for line in trace.read_text().splitlines()
             if "pwrite64(" in line]
    return [i + 1 for i in range(1, len(calls))
            if '"TREE\\1\\1' in calls[i][:16] and '"x^' in calls[i - 1][:8]]


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    d = tmp_path_factory.mktemp("large")
    np.save(d / "a.npy", np.random.default_rng(18).standard_normal((LARGE_ROWS, 24)))
    np.save(d / "b.npy", make_b())
    assert run_logmm(*large_args(d, d / "alone.h5")).returncode == 0
    return d, read(d / "alone.h5")


def large_args(d: Path, out: str | Path) -> list:
    return ["multiply", d / "a.npy", d / "b.npy", "-o", out, "--block-rows", str(BLOCK_ROWS),
            "--compression", "gzip", "-q"]


def kill_inside_a_flush(d: Path, large: tuple, where: str, pick: int) -> str:
    """Kill a compressed run at one of its torn points (``pick`` chooses which), resume."""
    source, result = large
    if where == "side file":
        container = d / "c.h5"
        save_array(f"{container}:keep", np.arange(5.0))
        out, target = f"{container}:new/product", side_file(container)
    else:
        out, target = d / "out.h5", d / ".out.h5.logmm-partial"     # written, then renamed
    args = large_args(source, out)
    counted = run_traced(args, target, log=d / "trace")
    assert counted.returncode == 0, counted.stderr
    points = torn_points(d / "trace")
    assert points, "no flush wrote the index's inner node after a chunk"
    n = points[pick % len(points)]
    for path in (d / "out.h5", d / "c.h5"):
        path.unlink(missing_ok=True)
    if where == "side file":
        save_array(f"{container}:keep", np.arange(5.0))
    killed = run_traced(args, target, kill_at=n)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = run_logmm(*args, "--resume")
    assert done.returncode == 0, (where, n, done.stderr)
    np.testing.assert_array_equal(read(out), result)
    if where == "side file":
        np.testing.assert_array_equal(read(f"{container}:keep"), np.arange(5.0))
    assert not [p for p in listing(d) if "logmm-" in p], listing(d)
    return f"{where}: killed entering write {n} (torn point {pick % len(points)} of {len(points)})"


@needs_strace
@pytest.mark.parametrize(("where", "pick"), [("side file", 3), ("output file", 0)])
def test_resume_after_a_kill_inside_a_flush(tmp_path: Path, large: tuple, where: str,
                                            pick: int) -> None:
    # these two points failed before (addr overflow), without the salvage on resume
    print(kill_inside_a_flush(tmp_path, large, where, pick))


@needs_strace
@pytest.mark.slow
@pytest.mark.parametrize("where", ["side file", "output file"])
def test_resume_after_kills_inside_many_flushes(tmp_path: Path, large: tuple, where: str) -> None:
    for pick in range(0, 60, 6):
        d = tmp_path / str(pick)
        d.mkdir()
        print(kill_inside_a_flush(d, large, where, pick))
