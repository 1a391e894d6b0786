"""``--zarr-format 2`` on every command that writes an array (not only ``convert``):
zarr-python 2.x readers get a format-2 array holding the same bytes as the format-3 one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from logmm.cli.main import cli

from cli_run import one_error_line, run_logmm


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("zf")
    rng = np.random.default_rng(11)
    np.save(d / "a.npy", rng.normal(size=(300, 12)))
    np.save(d / "b.npy", rng.normal(size=(12, 7)))
    np.save(d / "f.npy", rng.normal(size=(7, 12)))
    np.save(d / "p.npy", np.log(rng.dirichlet(np.ones(5), size=5)))
    return d


def _commands(d: Path) -> dict[str, list[object]]:
    return {
        "multiply": ["multiply", d / "a.npy", d / "b.npy", "--block-rows", "64"],
        "project": ["project", d / "a.npy", "--factor", d / "f.npy"],
        "loglik": ["loglik", d / "a.npy", "--mu", "0", "--sigma", "2", "--reduce", "row"],
        "einsum": ["einsum", "ij,jk->ik", d / "a.npy", d / "b.npy"],
        "chain": ["chain", d / "a.npy", d / "b.npy"],
        "power": ["power", d / "p.npy", "-n", "5"],
    }


@pytest.mark.parametrize("command", ["multiply", "project", "loglik", "einsum", "chain",
                                     "power"])
def test_zarr_format_2_holds_the_format_3_bytes(data: Path, tmp_path: Path,
                                                command: str) -> None:
    args = _commands(data)[command]
    for fmt in ("3", "2"):          # in-process: only the stores are compared (~0.5 s a run)
        res = CliRunner().invoke(cli, [*map(str, args), "-o", str(tmp_path / f"v{fmt}.zarr"),
                                       "--zarr-format", fmt])
        assert res.exit_code == 0, (res.output, res.exception)
    v2 = zarr.open_array(str(tmp_path / "v2.zarr"), path="data", mode="r")
    v3 = zarr.open_array(str(tmp_path / "v3.zarr"), path="data", mode="r")
    assert (v2.metadata.zarr_format, v3.metadata.zarr_format) == (2, 3)
    assert v2[...].tobytes() == v3[...].tobytes()
    assert v2.attrs["complete"] is True


def test_zarr_format_2_is_refused_for_zarr_shards(data: Path, tmp_path: Path) -> None:
    proc = run_logmm("multiply", data / "a.npy", data / "b.npy", "-o", tmp_path / "c.zarr",
                     "--shard", "0/2", "--zarr-format", "2")
    assert "--zarr-format 2 is not for --shard" in one_error_line(proc, codes=(2,))
    assert not list(tmp_path.iterdir())


def test_resume_does_not_take_a_partial_of_the_other_format(data: Path,
                                                            tmp_path: Path) -> None:
    """The Zarr format is part of the run's fingerprint (when it is not the default)."""
    out = tmp_path / "c.zarr"
    args = ("multiply", data / "a.npy", data / "b.npy", "-o", out, "--block-rows", "64")
    assert run_logmm(*args, "--zarr-format", "2").returncode == 0
    proc = run_logmm(*args, "--resume")          # complete, but made as format 2
    assert "made from other inputs or options" in one_error_line(proc, codes=(1,))
    assert run_logmm(*args, "--zarr-format", "2", "--resume").returncode == 0   # complete


def test_every_public_file_engine_takes_zarr_format(data: Path, tmp_path: Path) -> None:
    """The Python API offers what the command line offers: ``zarr_format=2``."""
    from logmm.chain_files import chain_files, power_file
    from logmm.convert import convert
    from logmm.einsum_files import einsum_files
    from logmm.loglik import loglik
    from logmm.multiply import multiply
    from logmm.project import project

    d = data
    calls = {
        "multiply": lambda out: multiply(d / "a.npy", d / "b.npy", out, zarr_format=2),
        "project": lambda out: project(d / "a.npy", out, factors=[d / "f.npy"],
                                       zarr_format=2),
        "loglik": lambda out: loglik(d / "a.npy", out, mu=0.0, sigma=2.0, reduce="row",
                                     zarr_format=2),
        "einsum": lambda out: einsum_files("ij,jk->ik", [d / "a.npy", d / "b.npy"], out,
                                           zarr_format=2),
        "chain": lambda out: chain_files([d / "a.npy", d / "b.npy"], out, zarr_format=2),
        "power": lambda out: power_file(d / "p.npy", 5, out, zarr_format=2),
        "convert": lambda out: convert(d / "a.npy", out, zarr_format=2),
    }
    for name, call in calls.items():
        call(tmp_path / f"{name}.zarr")
        made = zarr.open_array(str(tmp_path / f"{name}.zarr"), path="data", mode="r")
        assert made.metadata.zarr_format == 2, name
        assert made.attrs["complete"] is True, name
