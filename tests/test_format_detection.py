"""Files whose names do not say their format (AnnData ``.h5ad``, loom, netCDF-4 ``.nc``,
HDF-EOS ``.he5``, no extension, a Zarr store not named ``.zarr``) are recognised by their
content. Real CLI; each result is compared with the same input under a known name."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from logmm.io import open_array, parse_address

from cli_run import one_error_line, run_logmm

RNG = np.random.default_rng(77)
A, B = RNG.standard_normal((9, 4)), RNG.standard_normal((4, 3))


def result(path: Path) -> bytes:
    with open_array(path) as reader:
        return reader.read_all().tobytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The product of A and B read from a file named .h5 (one CLI run for the module)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    with h5py.File(tmp_path / "known.h5", "w") as f:
        f["x/a"], f["x/b"] = A, B
    proc = run_logmm("multiply", f"{tmp_path}/known.h5:/x/a", f"{tmp_path}/known.h5:/x/b",
                     "-o", tmp_path / "known.npy", "-q")
    assert proc.returncode == 0, proc.stderr
    return result(tmp_path / "known.npy")


@pytest.mark.parametrize("name", ["cells.h5ad", "data.loom", "model.nc", "swath.he5",
                                  "noextension", "blocked.h5ad"])
def test_hdf5_by_its_signature(tmp_path: Path, reference: bytes, name: str):
    # blocked.h5ad has a 512-byte user block before the signature, as some tools write
    with h5py.File(tmp_path / name, "w", userblock_size=512 if "blocked" in name else 0) as f:
        f["x/a"], f["x/b"] = A, B
    proc = run_logmm("multiply", f"{tmp_path / name}:/x/a", f"{tmp_path / name}:/x/b",
                     "-o", tmp_path / "c.npy", "-q")
    assert proc.returncode == 0, proc.stderr
    assert result(tmp_path / "c.npy") == reference
    info = run_logmm("info", tmp_path / name)
    assert info.returncode == 0 and "(HDF5," in info.stdout and "/x/a" in info.stdout
    assert parse_address(f"{tmp_path / name}:/x/a").format == "hdf5"


def test_npy_and_zarr_by_content(tmp_path: Path, reference: bytes):
    np.save(tmp_path / "a.npy", A)
    shutil.move(tmp_path / "a.npy", tmp_path / "a.bin")
    store = zarr.open_group(str(tmp_path / "b.store"), mode="w")
    store.create_array("b", shape=B.shape, dtype=B.dtype)[...] = B
    proc = run_logmm("multiply", tmp_path / "a.bin", f"{tmp_path}/b.store:b", "-o",
                     tmp_path / "c.npy", "-q")
    assert proc.returncode == 0, proc.stderr
    assert result(tmp_path / "c.npy") == reference


def test_an_output_added_to_an_h5ad_file(tmp_path: Path, reference: bytes):
    with h5py.File(tmp_path / "cells.h5ad", "w") as f:
        f["X"], f["varm/B"] = A, B
    proc = run_logmm("multiply", f"{tmp_path}/cells.h5ad:/X", f"{tmp_path}/cells.h5ad:/varm/B",
                     "-o", f"{tmp_path}/cells.h5ad:/obsm/C", "-q")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "cells.h5ad", "r") as f:
        assert f["obsm/C"][...].tobytes() == reference
        assert f["X"][...].tobytes() == A.tobytes()


@pytest.mark.parametrize("case", ["text file", "missing file"])
def test_what_is_not_recognised_still_needs_an_extension(tmp_path: Path, case: str):
    np.save(tmp_path / "b.npy", B)
    if case == "text file":
        (tmp_path / "a.txt").write_text("not an array\n")
    message = one_error_line(run_logmm("multiply", tmp_path / "a.txt", tmp_path / "b.npy",
                                       "-o", tmp_path / "c.npy"), codes=(2,))
    assert message.startswith(f"{tmp_path}/a.txt: cannot tell the format")
