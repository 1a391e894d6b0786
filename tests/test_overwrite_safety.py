"""``--overwrite`` replaces the output and nothing else: never an input, never the other
arrays of the HDF5 file or Zarr store the output lives in (the data-loss report of the
pipeline-grade issue). An output inside an existing file is one dataset of it, written
under a hidden name and renamed when complete. Every case runs the real command line and
compares every other array of the file before and after, bit for bit."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from logmm.io import list_arrays, open_array

from cli_run import listing, one_error_line, run_logmm
from conftest import save_array

RNG = np.random.default_rng(18)


def snapshot(path: Path) -> dict[str, bytes]:
    """Every array of an HDF5 file or Zarr store (or the one of a .npy file), as bytes."""
    arrays = {}
    for name in list_arrays(path):
        address = f"{path}:{name}" if name else str(path)
        with open_array(address) as reader:
            arrays[name] = reader.read_all().tobytes()
    return arrays


def read(address: str | Path) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


def log_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log(np.exp(a) @ np.exp(b))


@pytest.fixture
def hdf5_results(tmp_path: Path) -> Path:
    path = tmp_path / "results.h5"
    save_array(f"{path}:/results/run1/logp", RNG.standard_normal((6, 4)))
    save_array(f"{path}:/results/run1/other", RNG.standard_normal((3, 3)))
    save_array(f"{path}:/notes", RNG.standard_normal(5))
    np.save(tmp_path / "b.npy", RNG.standard_normal((4, 2)))
    return path


@pytest.fixture
def zarr_store(tmp_path: Path) -> Path:
    path = tmp_path / "store.zarr"
    save_array(f"{path}:sub/A", RNG.standard_normal((6, 4)))
    save_array(f"{path}:sub/other", RNG.standard_normal((2, 2)))
    np.save(tmp_path / "b.npy", RNG.standard_normal((4, 2)))
    return path


def refused_unchanged(tmp_path: Path, container: Path, *args: str | Path,
                      codes: tuple[int, ...] = (1,)) -> str:
    """Run ``logmm ARGS``; check it fails with one line and changes no file."""
    before_arrays, before_files = snapshot(container), listing(tmp_path)
    message = one_error_line(run_logmm(*args), codes=codes)
    assert snapshot(container) == before_arrays
    assert listing(tmp_path) == before_files
    return message


def added_beside(tmp_path: Path, container: Path, name: str, *args: str | Path) -> np.ndarray:
    """Run ``logmm ARGS`` adding ``name`` to ``container``; check that it succeeds, that
    every other array is bit-identical and no work file is left; return the new array."""
    before = snapshot(container)
    before.pop(name, None)
    proc = run_logmm(*args, "-q")
    assert proc.returncode == 0, proc.stderr
    after = snapshot(container)
    assert set(after) == set(before) | {name}
    assert {k: v for k, v in after.items() if k != name} == before
    assert not [p for p in listing(tmp_path) if "logmm-" in p], listing(tmp_path)
    return read(f"{container}:{name}")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["new", "overwrite"])
def test_hdf5_output_beside_its_own_input_is_added(tmp_path: Path, hdf5_results: Path,
                                                   overwrite: list[str]):
    # the exact command of the data-loss report: it deleted every other dataset
    a = read(f"{hdf5_results}:/results/run1/logp")
    b = np.load(tmp_path / "b.npy")
    result = added_beside(tmp_path, hdf5_results, "/results/run1/product", "multiply",
                          f"{hdf5_results}:/results/run1/logp", tmp_path / "b.npy", "-o",
                          f"{hdf5_results}:/results/run1/product", *overwrite)
    np.testing.assert_allclose(result, log_product(a, b), rtol=1e-13)
    with h5py.File(hdf5_results, "r") as f:   # the provenance names a dataset that exists
        source = f["/results/run1/product"].attrs["a"]
        assert source.endswith(":/results/run1/logp") and "/results/run1/logp" in f


def test_zarr_output_beside_its_own_input_is_added(tmp_path: Path, zarr_store: Path):
    a, b = read(f"{zarr_store}:sub/A"), np.load(tmp_path / "b.npy")
    result = added_beside(tmp_path, zarr_store, "sub/product", "multiply", f"{zarr_store}:sub/A",
                          tmp_path / "b.npy", "-o", f"{zarr_store}:sub/product", "--overwrite")
    np.testing.assert_allclose(result, log_product(a, b), rtol=1e-13)


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
def test_overwrite_replaces_only_the_named_dataset(tmp_path: Path, kind: str):
    a, b = RNG.standard_normal((5, 4)), RNG.standard_normal((4, 3))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    container = tmp_path / ("keep.h5" if kind == "hdf5" else "keep.zarr")
    name = "/product" if kind == "hdf5" else "product"
    save_array(f"{container}:precious", RNG.standard_normal(7))
    save_array(f"{container}:product", RNG.standard_normal((2, 2)))   # an older result
    args = ["multiply", tmp_path / "a.npy", tmp_path / "b.npy", "-o", f"{container}:product"]
    message = refused_unchanged(tmp_path, container, *args)
    assert message.startswith("output exists:") and "--overwrite" in message
    result = added_beside(tmp_path, container, name, *args, "--overwrite")
    np.testing.assert_allclose(result, log_product(a, b), rtol=1e-13)


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
def test_output_over_its_own_input_dataset_is_refused(tmp_path: Path, kind: str,
                                                      request: pytest.FixtureRequest):
    container = request.getfixturevalue("hdf5_results" if kind == "hdf5" else "zarr_store")
    source = f"{container}:/results/run1/logp" if kind == "hdf5" else f"{container}:sub/A"
    message = refused_unchanged(tmp_path, container, "multiply", source, tmp_path / "b.npy",
                                "-o", source, "--overwrite")
    assert source.split(":")[-1].strip("/") in message and "input" in message


def test_npy_output_that_is_an_input_is_refused(tmp_path: Path):
    np.save(tmp_path / "a.npy", RNG.standard_normal((4, 4)))
    message = refused_unchanged(tmp_path, tmp_path / "a.npy", "multiply", tmp_path / "a.npy",
                                tmp_path / "a.npy", "-o", tmp_path / "a.npy", "--overwrite")
    assert "input" in message


COMMANDS = {
    "chain": ["chain", "{c}:/m", "{c}:/m", "-o", "{o}"],
    "power": ["power", "{c}:/m", "-n", "3", "-o", "{o}"],
    "einsum": ["einsum", "ij,jk->ik", "{c}:/m", "{c}:/m", "-o", "{o}"],
    "project": ["project", "{c}:/m", "{d}/w.npy", "--blocks", "2", "-o", "{o}"],
    "loglik": ["loglik", "{c}:/m", "--mu", "0", "--sigma", "1", "-o", "{o}"],
    "convert": ["convert", "{c}:/m", "{o}"],
}


@pytest.fixture
def shared_file(tmp_path: Path) -> Path:
    container = tmp_path / "c.h5"
    save_array(f"{container}:/m", RNG.standard_normal((4, 4)))
    save_array(f"{container}:/out", RNG.standard_normal((2, 2)))
    np.save(tmp_path / "w.npy", RNG.standard_normal((2, 2)))
    return container


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_adds_beside_its_inputs(tmp_path: Path, shared_file: Path, command: str):
    """Every command reads /m from c.h5 and replaces /out in it: /m is untouched, and /out
    is bit for bit what the same command writes to a file of its own."""
    def args(out: str) -> list[str]:
        return [p.format(c=shared_file, d=tmp_path, o=out) for p in COMMANDS[command]]

    assert run_logmm(*args(str(tmp_path / "alone.h5")), "-q").returncode == 0
    result = added_beside(tmp_path, shared_file, "/out", *args(f"{shared_file}:/out"),
                          "--overwrite")
    assert result.tobytes() == read(tmp_path / "alone.h5").tobytes()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_to_replace_its_input(tmp_path: Path, shared_file: Path,
                                                    command: str):
    args = [part.format(c=shared_file, d=tmp_path, o=f"{shared_file}:/m")
            for part in COMMANDS[command]]
    # convert has refused input == output as a usage error (exit 2) from the start
    codes = (2,) if command == "convert" else (1,)
    refused_unchanged(tmp_path, shared_file, *args, "--overwrite", codes=codes)


@pytest.mark.parametrize("suffix", ["h5", "zarr", "npy"])
def test_overwrite_of_a_file_holding_only_the_output_still_replaces_it(tmp_path: Path,
                                                                        suffix: str):
    a, b = RNG.standard_normal((5, 4)), RNG.standard_normal((4, 3))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / f"out.{suffix}"
    args = ["multiply", tmp_path / "a.npy", tmp_path / "b.npy", "-o", out, "-q"]
    assert run_logmm(*args).returncode == 0
    np.save(tmp_path / "b.npy", b + 1.0)
    proc = run_logmm(*args, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    with open_array(out) as reader:
        result = reader.read_all()
    expected = np.log(np.exp(a) @ np.exp(b + 1.0))
    np.testing.assert_allclose(result, expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
@pytest.mark.parametrize("target", ["group", "under-array"])
def test_a_group_or_a_path_through_an_array_is_refused(tmp_path: Path, kind: str, target: str,
                                                       request: pytest.FixtureRequest):
    """-o naming a group with --overwrite would replace the group and every array in it
    (the inputs too): refused, as is a dataset path that runs through an array."""
    container = request.getfixturevalue("hdf5_results" if kind == "hdf5" else "zarr_store")
    source = f"{container}:/results/run1/logp" if kind == "hdf5" else f"{container}:sub/A"
    output = {"group": f"{container}:" + ("/results" if kind == "hdf5" else "sub"),
              "under-array": f"{source}/x"}[target]
    message = refused_unchanged(tmp_path, container, "multiply", source, tmp_path / "b.npy",
                                "-o", output, "--overwrite")
    assert ("is a group, not an array" if target == "group"
            else "is an array, so nothing can be stored under it") in message
