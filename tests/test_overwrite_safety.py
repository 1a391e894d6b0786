"""``--overwrite`` replaces the output and nothing else: never an input, never the other
arrays of the HDF5 file or Zarr store the output lives in (the data-loss report of the
pipeline-grade issue). Every case runs the real command line and compares every array
of the file before and after, bit for bit."""

from __future__ import annotations

from pathlib import Path

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


def test_hdf5_output_beside_its_own_input_is_refused(tmp_path: Path, hdf5_results: Path):
    message = refused_unchanged(
        tmp_path, hdf5_results, "multiply", f"{hdf5_results}:/results/run1/logp",
        tmp_path / "b.npy", "-o", f"{hdf5_results}:/results/run1/product", "--overwrite")
    assert str(hdf5_results) in message and "input" in message


def test_zarr_output_beside_its_own_input_is_refused(tmp_path: Path, zarr_store: Path):
    message = refused_unchanged(
        tmp_path, zarr_store, "multiply", f"{zarr_store}:sub/A", tmp_path / "b.npy",
        "-o", f"{zarr_store}:sub/product", "--overwrite")
    assert str(zarr_store) in message


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
def test_overwrite_never_deletes_other_arrays(tmp_path: Path, kind: str):
    a, b = RNG.standard_normal((5, 4)), RNG.standard_normal((4, 3))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    container = tmp_path / ("keep.h5" if kind == "hdf5" else "keep.zarr")
    save_array(f"{container}:{'/' if kind == 'hdf5' else ''}precious", RNG.standard_normal(7))
    message = refused_unchanged(tmp_path, container, "multiply", tmp_path / "a.npy",
                                tmp_path / "b.npy", "-o", f"{container}:product",
                                "--overwrite")
    assert "precious" in message and "other arrays" in message


def test_npy_output_that_is_an_input_is_refused(tmp_path: Path):
    np.save(tmp_path / "a.npy", RNG.standard_normal((4, 4)))
    message = refused_unchanged(tmp_path, tmp_path / "a.npy", "multiply", tmp_path / "a.npy",
                                tmp_path / "a.npy", "-o", tmp_path / "a.npy", "--overwrite")
    assert "input" in message


@pytest.mark.parametrize("command", [
    ["chain", "{c}:/m", "{c}:/m", "-o", "{c}:/out"],
    ["power", "{c}:/m", "-n", "3", "-o", "{c}:/out"],
    ["einsum", "ij,jk->ik", "{c}:/m", "{c}:/m", "-o", "{c}:/out"],
    ["project", "{c}:/m", "{d}/w.npy", "--blocks", "2", "-o", "{c}:/out"],
    ["loglik", "{c}:/m", "--mu", "0", "--sigma", "1", "-o", "{c}:/out"],
    ["convert", "{c}:/m", "{c}:/out"],
], ids=lambda c: c[0])
def test_every_command_refuses_to_replace_its_inputs_file(tmp_path: Path, command: list[str]):
    container = tmp_path / "c.h5"
    save_array(f"{container}:/m", RNG.standard_normal((4, 4)))
    save_array(f"{container}:/out", RNG.standard_normal((2, 2)))
    np.save(tmp_path / "w.npy", RNG.standard_normal((2, 2)))
    args = [part.format(c=container, d=tmp_path) for part in command]
    # convert has refused input == output as a usage error (exit 2) from the start
    codes = (2,) if command[0] == "convert" else (1,)
    refused_unchanged(tmp_path, container, *args, "--overwrite", codes=codes)


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
