"""--shard I/N: shards into one Zarr store or HDF5 files + merge equal the unsharded result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from logmm.cli.main import cli
from logmm.errors import UsageError
from logmm.shards import Shard, parse_shard, shard_blocks

# 100 rows in blocks of 15: six full blocks and a short last one (10 rows)
PLAN = ["--block-rows", "15", "--chunk-rows", "5"]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def ab(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(100, 20)) * 30
    a[3, :] = -np.inf                                    # a row of log(0)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", rng.normal(size=(20, 9)) * 30)
    return str(tmp_path / "a.npy"), str(tmp_path / "b.npy")


def read(address: Path, name: str = "data") -> np.ndarray:
    if address.suffix == ".zarr":
        return zarr.open_array(str(address), path=name, mode="r")[...]
    with h5py.File(address, "r") as f:
        return f[name][...]


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()


def test_shard_blocks_are_contiguous_and_cover() -> None:
    blocks = [(i, i + 1) for i in range(7)]
    for count in (1, 3, 7, 10):
        got = [b for i in range(count) for b in shard_blocks(blocks, Shard(i, count))]
        assert [(s, e) for _, s, e in got] == blocks
    assert [len(shard_blocks(blocks, Shard(i, 3))) for i in range(3)] == [2, 2, 3]
    assert parse_shard(" 3/16 ") == Shard(3, 16)
    for bad in ("3/2", "0/0", "-1/4", "a/b", "1"):
        with pytest.raises(UsageError):
            parse_shard(bad)


@pytest.mark.parametrize("count", [1, 3, 7])
def test_zarr_shards_into_one_store_equal_unsharded(tmp_path: Path, ab, count: int) -> None:
    a, b = ab
    assert invoke("multiply", a, b, "-o", tmp_path / "full.zarr", *PLAN).exit_code == 0
    out = tmp_path / "sharded.zarr"
    for i in range(count):
        assert not out.exists()             # appears only when the last shard is done
        res = invoke("multiply", a, b, "-o", out, *PLAN, "--shard", f"{i}/{count}")
        assert res.exit_code == 0, res.output
        assert f"shard {i}/{count}" in res.stderr
    assert same_bits(read(out), read(tmp_path / "full.zarr"))
    arr = zarr.open_array(str(out), path="data", mode="r")
    assert arr.attrs["complete"] is True and arr.attrs["shards"] == count
    assert arr.chunks[0] == 5
    full = zarr.open_array(str(tmp_path / "full.zarr"), path="data", mode="r")
    assert arr.attrs["entries"] == full.attrs["entries"] == 900
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no work files
    info = json.loads(invoke("info", out, "--json").stdout)
    assert info["complete"] and info["shards"]["count"] == count


@pytest.mark.parametrize("count", [1, 3, 7])
def test_hdf5_shards_and_merge_equal_unsharded(tmp_path: Path, ab, count: int) -> None:
    a, b = ab
    assert invoke("multiply", a, b, "-o", tmp_path / "full.h5", *PLAN).exit_code == 0
    out = tmp_path / "sharded.h5"
    for i in range(count):
        assert invoke("multiply", a, b, "-o", out, *PLAN, "--shard", f"{i}/{count}").exit_code == 0
        part = tmp_path / f"sharded.shard-{i:04d}-of-{count:04d}.h5"
        with h5py.File(part, "r") as f:
            attrs = dict(f["data"].attrs)
            assert f["data"].shape[0] == attrs["row_stop"] - attrs["row_start"]
    assert not out.exists()
    res = invoke("merge", out)
    assert res.exit_code == 0, res.output
    assert same_bits(read(out), read(tmp_path / "full.h5"))
    with h5py.File(out, "r") as f:
        assert f["data"].is_virtual and f["data"].attrs["complete"]
    moved = tmp_path / "moved"                      # relative sources: the directory moves
    moved.mkdir()
    for p in tmp_path.glob("sharded*.h5"):
        p.rename(moved / p.name)
    assert same_bits(read(moved / "sharded.h5"), read(tmp_path / "full.h5"))
    # a shard file gone: reading the merged file is an error naming it, never fill values
    gone = moved / f"sharded.shard-{count - 1:04d}-of-{count:04d}.h5"
    gone.rename(tmp_path / gone.name)
    res = invoke("convert", moved / "sharded.h5", tmp_path / "copy.npy")
    assert res.exit_code == 1 and gone.name in res.output and "missing" in res.output
    assert not (tmp_path / "copy.npy").exists()


def test_missing_shard_is_reported_by_info_and_refused_by_merge(tmp_path: Path, ab) -> None:
    a, b = ab
    for i in (0, 2):
        for out in ("c.zarr", "c.h5"):
            res = invoke("multiply", a, b, "-o", tmp_path / out, *PLAN, "--shard", f"{i}/3")
            assert res.exit_code == 0, res.output
    for out in ("c.zarr", "c.h5"):
        info = invoke("info", tmp_path / out)
        assert info.exit_code == 0
        assert "2 of 3 complete (rows 0:30, 60:100); missing 1 (rows 30:60)" in info.stdout
        assert invoke("info", tmp_path / out, "--check").exit_code == 1
        doc = json.loads(invoke("info", tmp_path / out, "--json").stdout)
        assert [s["complete"] for s in doc["shards"]["shards"]] == [True, False, True]
        res = invoke("merge", tmp_path / out)
        assert res.exit_code == 1
        assert res.stderr.strip().splitlines() == [
            f"logmm: error: cannot merge {tmp_path / out}: missing or incomplete shards "
            "of 3: 1 (rows 30:60)"]
        assert not (tmp_path / out).exists()
    assert invoke("multiply", a, b, "-o", tmp_path / "c.zarr", *PLAN, "--shard", "1/3",
                  "-q").exit_code == 0
    assert invoke("info", tmp_path / "c.zarr", "--check").exit_code == 0


def test_more_shards_than_blocks_leave_empty_shards(tmp_path: Path, ab) -> None:
    a, b = ab
    invoke("multiply", a, b, "-o", tmp_path / "full.zarr", *PLAN)
    notes = [invoke("multiply", a, b, "-o", tmp_path / f"c.{ext}", *PLAN, "--shard",
                    f"{i}/9").stderr for i in range(9) for ext in ("zarr", "h5")]
    assert sum("holds no row blocks" in n for n in notes) == 4     # 7 blocks, 9 shards
    assert invoke("merge", tmp_path / "c.h5").exit_code == 0
    assert same_bits(read(tmp_path / "c.zarr"), read(tmp_path / "full.zarr"))
    assert same_bits(read(tmp_path / "c.h5"), read(tmp_path / "full.zarr"))


@pytest.mark.parametrize("bad", ["3/2", "0/0", "-1/4", "a/b"])
def test_bad_shard_is_a_usage_error(tmp_path: Path, ab, bad: str) -> None:
    a, b = ab
    res = invoke("multiply", a, b, "-o", tmp_path / "c.zarr", "--shard", bad)
    assert res.exit_code == 2
    assert "--shard" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy"]


def test_npy_output_is_refused_with_shard(tmp_path: Path, ab) -> None:
    a, b = ab
    res = invoke("multiply", a, b, "-o", tmp_path / "c.npy", "--shard", "0/2")
    assert res.exit_code == 2 and "needs a .zarr or .h5 output" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy"]


def test_later_shards_take_the_store_plan(tmp_path: Path, ab) -> None:
    """Shards with other budgets (another node) still write the blocks the store planned."""
    a, b = ab
    invoke("multiply", a, b, "-o", tmp_path / "full.zarr", *PLAN)
    out = tmp_path / "c.zarr"
    assert invoke("multiply", a, b, "-o", out, *PLAN, "--shard", "0/2").exit_code == 0
    res = invoke("multiply", a, b, "-o", out, "--block-rows", "40", "--shard", "1/2")
    assert res.exit_code == 0 and "rows 45:100" in res.stderr
    assert same_bits(read(out), read(tmp_path / "full.zarr"))


def test_store_of_another_run_is_refused(tmp_path: Path, ab) -> None:
    a, b = ab
    out = tmp_path / "c.zarr"
    assert invoke("multiply", a, b, "-o", out, *PLAN, "--shard", "0/2").exit_code == 0
    res = invoke("multiply", a, b, "-o", out, *PLAN, "--shard", "1/3")
    assert res.exit_code == 1 and "holds the shards of another run" in res.stderr
    res = invoke("multiply", a, b, "-o", out, *PLAN, "--method", "exact", "--shard", "1/2")
    assert res.exit_code == 1 and "holds the shards of another run" in res.stderr


def test_shard_resume_recomputes_only_missing_blocks(tmp_path: Path, ab, monkeypatch) -> None:
    import logmm.engine as engine
    from logmm.multiply import multiply

    a, b = ab
    multiply(a, b, tmp_path / "full.h5", block_rows=15, chunk_rows=5)
    real = engine.run_pipeline

    def interrupted(pending, load, compute, store, on_stored):
        def stop_after_one(block):
            on_stored(block)
            raise KeyboardInterrupt
        real(pending, load, compute, store, on_stored=stop_after_one)

    for out in ("c.h5", "c.zarr"):
        monkeypatch.setattr(engine, "run_pipeline", interrupted)
        with pytest.raises(KeyboardInterrupt):
            multiply(a, b, tmp_path / out, block_rows=15, chunk_rows=5, shard="1/2")
        monkeypatch.setattr(engine, "run_pipeline", real)
        done = multiply(a, b, tmp_path / out, block_rows=15, chunk_rows=5, shard="1/2",
                        resume=True)
        assert done.resumed_blocks == 1
        multiply(a, b, tmp_path / out, block_rows=15, chunk_rows=5, shard="0/2")
    assert invoke("merge", tmp_path / "c.h5").exit_code == 0
    for out in ("c.h5", "c.zarr"):
        assert same_bits(read(tmp_path / out), read(tmp_path / "full.h5"))


def test_two_shard_processes_at_once_into_one_store(tmp_path: Path, ab) -> None:
    a, b = ab
    invoke("multiply", a, b, "-o", tmp_path / "full.zarr", *PLAN)
    out = tmp_path / "c.zarr"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "logmm.cli.main", "multiply", a, b,
                               "-o", str(out), *PLAN, "--shard", f"{i}/2", "-q"], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert same_bits(read(out), read(tmp_path / "full.zarr"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_project_and_loglik_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.save(tmp_path / "x.npy", rng.normal(size=(50, 12)))
    np.save(tmp_path / "w.npy", rng.normal(size=(5, 4)))
    runs = {
        "project": ["project", tmp_path / "x.npy", tmp_path / "w.npy", "--blocks", "3"],
        "loglik": ["loglik", tmp_path / "x.npy", "--mu", "0.5", "--sigma", "2",
                   "--reduce", "row"],
    }
    for name, args in runs.items():
        for ext in ("zarr", "h5"):
            full = tmp_path / f"{name}-full.{ext}"
            assert invoke(*args, "-o", full, "--block-rows", "8").exit_code == 0
            out = tmp_path / f"{name}.{ext}"
            for i in range(3):
                res = invoke(*args, "-o", out, "--block-rows", "8", "--shard", f"{i}/3")
                assert res.exit_code == 0, res.output
            if ext == "h5":
                assert invoke("merge", out).exit_code == 0
            assert same_bits(read(out), read(full))
    res = invoke("loglik", tmp_path / "x.npy", "--mu", "0", "--sigma", "1", "--reduce", "sum",
                 "--shard", "0/2")
    assert res.exit_code == 2 and "--reduce sum" in res.stderr


def test_einsum_streams_and_shards_by_its_first_output_label(tmp_path: Path) -> None:
    from logmm import logeinsum

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(11, 6, 5)) * 30, rng.normal(size=(11, 5, 4)) * 30
    x[2] = -np.inf
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["x"], f["y"], f["sq"] = x, y, x[0, :5]
    args = ["einsum", "bij,bjk->bik", f"{tmp_path}/b.h5:/x", f"{tmp_path}/b.h5:/y"]
    assert invoke(*args, "-o", tmp_path / "full.zarr", "--block-rows", "3").exit_code == 0
    np.testing.assert_allclose(read(tmp_path / "full.zarr"), logeinsum("bij,bjk->bik", x, y),
                               rtol=1e-13)
    for ext in ("zarr", "h5"):
        for i in range(3):
            res = invoke(*args, "-o", tmp_path / f"s.{ext}", "--block-rows", "3", "--shard",
                         f"{i}/3")
            assert res.exit_code == 0, res.output
        if ext == "h5":
            assert invoke("merge", tmp_path / "s.h5").exit_code == 0
        assert same_bits(read(tmp_path / f"s.{ext}"), read(tmp_path / "full.zarr"))
    # streamed and whole give the same dtype: int and float16 operands compute in float
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int16).reshape(3, 4) - 20)
    np.save(tmp_path / "h.npy", np.zeros((4, 2), dtype=np.float16))
    for operands, want in (([tmp_path / "i.npy", tmp_path / "h.npy"], np.float64),
                           ([tmp_path / "h.npy"], np.float32)):
        subs = "ij,jk->ik" if len(operands) == 2 else "jk->jk"
        whole, streamed = tmp_path / "whole.h5", tmp_path / "streamed.h5"
        for out, extra in ((whole, []), (streamed, ["--block-rows", "2"])):
            assert invoke("einsum", subs, *operands, "-o", out, "--overwrite",
                          *extra).exit_code == 0
        assert read(whole).dtype == read(streamed).dtype == want
        assert same_bits(read(whole), read(streamed))
    # a label that occurs twice in an operand cannot be split into row blocks
    res = invoke("einsum", "ii->i", f"{tmp_path}/b.h5:/sq", "-o", tmp_path / "d.h5",
                 "--shard", "0/2")
    assert res.exit_code == 2 and "cannot stream by rows" in res.stderr


def test_plan_prints_shards_and_creates_the_shared_store(tmp_path: Path, ab) -> None:
    a, b = ab
    out = tmp_path / "c.zarr"
    res = invoke("plan", "--shards", "3", "multiply", a, b, "-o", out, *PLAN)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "blocks      7 of 15 rows (the last 10)" in lines
    assert [line.split()[0] for line in lines if line.startswith("  ")] == ["0/3", "1/3", "2/3"]
    assert "blocks 4-6, rows 60:100" in res.stdout
    assert (tmp_path / ".c.zarr.logmm-partial").is_dir() and not out.exists()
    for i in range(3):                # the shards take the store's plan whatever they ask
        assert invoke("multiply", a, b, "-o", out, "--shard", f"{i}/3").exit_code == 0
    invoke("multiply", a, b, "-o", tmp_path / "full.zarr", *PLAN)
    assert same_bits(read(out), read(tmp_path / "full.zarr"))
    assert invoke("plan", "chain", a, b, "-o", tmp_path / "x.h5").exit_code == 2
    assert invoke("plan", "multiply", a, b, "-o", tmp_path / "x.h5", "--shard",
                  "0/2").exit_code == 2
    res = invoke("plan", "multiply", a, b, "-o", tmp_path / "x.h5", *PLAN)
    assert res.exit_code == 0 and "\nshards " not in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "c.zarr",
                                                          "full.zarr"]


def test_merge_refuses_shards_that_do_not_belong_together(tmp_path: Path, ab) -> None:
    a, b = ab
    out = tmp_path / "c.h5"
    for rows, i in (("15", 0), ("40", 1)):     # planned differently: rows overlap
        res = invoke("multiply", a, b, "-o", out, "--block-rows", rows, "--shard", f"{i}/2")
        assert res.exit_code == 0
    res = invoke("merge", out)
    assert res.exit_code == 1
    assert "shard 1 holds rows 40:100, not from 45" in res.stderr
    assert "same --memory or --block-rows" in res.stderr
    assert invoke("multiply", a, b, "-o", out, "--block-rows", "15", "--shard", "1/2",
                  "--method", "exact", "--overwrite").exit_code == 0
    res = invoke("merge", out)
    assert res.exit_code == 1 and "come from different runs" in res.stderr
    assert not out.exists()


def test_unsharded_run_never_wipes_a_shared_store(tmp_path: Path, ab) -> None:
    a, b = ab
    out = tmp_path / "c.zarr"
    assert invoke("multiply", a, b, "-o", out, *PLAN, "--shard", "0/2").exit_code == 0
    res = invoke("multiply", a, b, "-o", out, *PLAN)
    assert res.exit_code == 1 and "is the shared store of --shard runs" in res.stderr
    assert "1 of 2 complete" in res.stderr
    assert invoke("multiply", a, b, "-o", out, *PLAN, "--shard", "1/2").exit_code == 0
    assert out.exists()


def test_rerun_with_overwrite_replaces_a_finished_store(tmp_path: Path,
                                                        ab: tuple[str, str]) -> None:
    """Shards run again on new inputs: refused without --overwrite; with it, the new
    store is reported while it fills and replaces the old one when its last shard ends."""
    a, b = ab
    out = tmp_path / "c.zarr"
    for i in range(2):
        assert invoke("multiply", a, b, "-o", out, *PLAN, "--shard", f"{i}/2").exit_code == 0
    old = read(out)
    a2 = tmp_path / "a2.npy"
    np.save(a2, np.load(a) - 5.0)
    refused = invoke("multiply", a2, b, "-o", out, *PLAN, "--shard", "0/2")
    assert refused.exit_code == 1 and "output exists" in refused.output
    assert same_bits(read(out), old)
    assert invoke("multiply", a2, b, "-o", out, *PLAN, "--shard", "0/2",
                  "--overwrite").exit_code == 0
    info = invoke("info", out, "--check")
    assert info.exit_code == 1 and "1 of 2" in info.output, info.output   # the new run's
    assert same_bits(read(out), old)                      # the old result stays till then
    assert invoke("multiply", a2, b, "-o", out, *PLAN, "--shard", "1/2",
                  "--overwrite").exit_code == 0
    assert invoke("multiply", a2, b, "-o", tmp_path / "ref.h5", *PLAN).exit_code == 0
    assert same_bits(read(out), read(tmp_path / "ref.h5"))
    assert not same_bits(read(out), old)
    assert not any(p.name.startswith(".c.zarr") for p in tmp_path.iterdir())
    assert invoke("info", out, "--check").exit_code == 0


def test_shards_refuse_chunking_that_no_block_divides(tmp_path: Path,
                                                      ab: tuple[str, str]) -> None:
    a, b = ab
    out = tmp_path / "c.zarr"
    bad = invoke("multiply", a, b, "-o", out, "--block-rows", "13", "--chunk-rows", "10",
                 "--shard", "0/2")
    assert bad.exit_code == 2 and "--block-rows" in bad.output and "--chunk-rows" in bad.output
    assert list(tmp_path.glob(".c.zarr*")) == [] and not out.exists()
    # a divisor at least half the chunk rows is taken: blocks of 15, chunks of 5 asked 6
    assert invoke("multiply", a, b, "-o", out, "--block-rows", "15", "--chunk-rows", "6",
                  "--shard", "0/1").exit_code == 0
    assert zarr.open_array(str(out), path="data", mode="r").chunks[0] == 5


def test_a_failed_shard_removes_a_store_nobody_else_uses(tmp_path: Path,
                                                         ab: tuple[str, str]) -> None:
    """+inf in the input: the failing shard leaves nothing when it is alone, but keeps the
    store when another shard has finished into it."""
    a, b = ab
    bad = tmp_path / "bad.npy"
    x = np.load(a)
    x[80, 0] = np.inf                                   # in shard 1/2's rows
    np.save(bad, x)
    out = tmp_path / "c.zarr"
    failed = invoke("multiply", bad, b, "-o", out, *PLAN, "--shard", "1/2")
    assert failed.exit_code == 1 and "+inf" in failed.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "bad.npy"]
    assert invoke("multiply", bad, b, "-o", out, *PLAN, "--shard", "0/2").exit_code == 0
    assert invoke("multiply", bad, b, "-o", out, *PLAN, "--shard", "1/2").exit_code == 1
    info = invoke("info", out, "--check")
    assert info.exit_code == 1 and "1 of 2" in info.output   # shard 0's rows are kept


@pytest.mark.parametrize("count", [16, 7])
def test_default_plan_gives_every_shard_rows(tmp_path: Path, count: int) -> None:
    # the array-job report: 200000 rows in 16 shards planned 2 blocks, 14 shards empty
    np.save(tmp_path / "a.npy", np.zeros((200_000, 4)))
    np.save(tmp_path / "b.npy", np.zeros((4, 3)))
    res = invoke("plan", "--shards", count, "multiply", tmp_path / "a.npy",
                 tmp_path / "b.npy", "-o", tmp_path / "c.h5")
    assert res.exit_code == 0, res.output
    rows = [line.split("rows ")[1] for line in res.output.splitlines() if "rows " in line
            and "/" in line.split()[0]]
    sizes = [int(r.split(":")[1]) - int(r.split(":")[0]) for r in rows]
    assert len(sizes) == count and min(sizes) > 0
    assert max(sizes) - min(sizes) <= 200_000 // count      # at most one block apart


@pytest.mark.parametrize("ext", ["zarr", "h5"])
def test_default_plan_shards_without_block_rows_equal_unsharded(tmp_path: Path, ab,
                                                               ext: str) -> None:
    a, b = ab
    assert invoke("multiply", a, b, "-o", tmp_path / "full.zarr").exit_code == 0
    notes = [invoke("multiply", a, b, "-o", tmp_path / f"c.{ext}", "--shard", f"{i}/6").stderr
             for i in range(6)]
    assert not any("holds no row blocks" in n for n in notes), notes
    if ext == "h5":
        assert invoke("merge", tmp_path / "c.h5").exit_code == 0
    assert same_bits(read(tmp_path / f"c.{ext}"), read(tmp_path / "full.zarr"))
