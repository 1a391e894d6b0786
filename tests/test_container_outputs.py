"""Outputs inside existing containers, through the real command line: kill -9 while a new
dataset is written into an HDF5 file or Zarr store that holds others (and, for HDF5, the
run's own input), two runs adding datasets to one container at once, ``logmm info`` on a
hidden partial dataset, and what ``--shard``/``merge`` say about such outputs.

After every kill the container opens, each of its other arrays reads back bit-identical,
and ``--resume`` finishes the new dataset bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from logmm.io import list_arrays, open_array, parse_address
from logmm.io.resume import lock_path, record_path

from cli_run import (
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
    # every third seed compresses a Zarr output (HDF5 refuses compression when adding to an
    # existing file: test_compressed_dataset_into_an_existing_hdf5_file_is_refused)
    compress = seed % 3 == 1 and kind == "zarr"
    args = [*product_args(container), *(["--compression", "gzip"] if compress else [])]
    proc = start_logmm(*args)
    point, alive = kill_at_seeded_point(proc, rng, record_path(out), ROWS // BLOCK_ROWS, wall,
                                        after_blocks=0.6)
    assert snapshot(container, skip=("new/product", "new/.product.logmm-partial")) == before, \
        point
    names = [n.strip("/") for n in list_arrays(container)]
    if "new/product" in names:      # killed after the commit's rename: it must be the result
        assert alive or proc.returncode == 0
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
    proc = start_logmm(*args, prelude=SLOW_FLUSH)
    assert kill_after_blocks(proc, record, 1), "the run ended too soon"
    proc.send_signal(signal.SIGSTOP)
    return proc


def test_two_runs_adding_to_one_hdf5_file(tmp_path: Path, expected: tuple) -> None:
    """HDF5 has one writer per file: a second run fails at once with one line, the file
    and the first run's dataset are intact, and the second succeeds when rerun. A second
    run reading its input from the file being written is stopped by HDF5's own file lock
    (one line too)."""
    container = make_container(tmp_path, "h5")
    np.save(tmp_path / "a.npy", read(f"{container}:a"))
    before = snapshot(container)
    first = paused_after_first_block(product_args(container, "p1"),
                                     record_path(parse_address(f"{container}:p1")))
    try:
        second = product_args(container, "p2", source=str(tmp_path / "a.npy"))
        message = one_error_line(run_logmm(*second), codes=(1,))
        assert f"another logmm run (pid {first.pid}) is writing into {container}" in message
        assert "one writer per file" in message
        message = one_error_line(run_logmm(*product_args(container, "p2")), codes=(1,))
        assert str(container) in message and "lock" in message, message
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0 and err == "", err
    assert snapshot(container, skip=("p1",)) == before
    assert run_logmm(*product_args(container, "p2")).returncode == 0
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


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compressed_dataset_into_an_existing_hdf5_file_is_refused(tmp_path: Path,
                                                                  compression: str) -> None:
    # a kill -9 inside a flush of a compressed dataset left HDF5's space records behind its
    # chunk index, and --resume then failed with "addr overflow" (seen under CI load)
    container = make_container(tmp_path, "h5")
    before, files = snapshot(container), listing(tmp_path)
    message = one_error_line(run_logmm(*product_args(container), "--compression", compression),
                             codes=(2,))
    assert f"--compression {compression} cannot add to an existing HDF5 file" in message
    assert snapshot(container) == before and listing(tmp_path) == files
    assert run_logmm(*product_args(container), "--compression", "none").returncode == 0
