"""Sparse CSR inputs: scipy .npz and HDF5/Zarr CSR groups behind SparseReader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from logmm.errors import FormatError, InputError, MissingInputError, UsageError
from logmm.inspect import inspect_file
from logmm.io import check_output, list_arrays, open_array, require_matrix
from logmm.io.readers import SparseReader

RNG = np.random.default_rng(5)
KINDS = ["npz", "h5", "zarr"]


def random_csr(n: int = 17, m: int = 11, density: float = 0.2,
               dtype: Any = np.float64) -> sp.csr_matrix:
    """A random CSR matrix with a few empty rows (rows 0 and 7) and integer-friendly values."""
    dense = np.where(RNG.random((n, m)) < density, RNG.integers(1, 50, (n, m)), 0)
    dense[[0, 7]] = 0
    return sp.csr_matrix(dense.astype(dtype))


def write_group(group: Any, matrix: sp.csr_matrix, *, skip: tuple[str, ...] = (),
                attrs: dict[str, Any] | None = None, shape: Any = "auto") -> None:
    """CSR arrays into an h5py or zarr group, with a ``shape`` attribute."""
    for name in ("data", "indices", "indptr"):
        if name in skip:
            continue
        arr = getattr(matrix, name)
        if isinstance(group, (h5py.Group, h5py.File)):
            group.create_dataset(name, data=arr)
        else:
            group.create_array(name, data=arr)
    if shape is not None:
        group.attrs["shape"] = list(matrix.shape) if shape == "auto" else shape
    for key, value in (attrs or {}).items():
        group.attrs[key] = value


def save_sparse(directory: Path, kind: str, matrix: sp.spmatrix, **kwargs: Any) -> str:
    """Write ``matrix`` as ``m.npz``, ``m.h5:/g/m`` or ``m.zarr:g/m``; return the address."""
    if kind == "npz":
        sp.save_npz(directory / "m.npz", matrix)
        return str(directory / "m.npz")
    if kind == "h5":
        with h5py.File(directory / "m.h5", "a") as f:
            write_group(f.require_group("g").create_group("m"), matrix, **kwargs)
        return f"{directory}/m.h5:/g/m"
    root = zarr.open_group(str(directory / "m.zarr"), mode="a")
    write_group(root.require_group("g").create_group("m"), matrix, **kwargs)
    return f"{directory}/m.zarr:g/m"


class Recorder:
    """Wraps a stored 1-D array and records the slices read from it."""

    def __init__(self, arr: Any) -> None:
        self.arr, self.keys = arr, []
        self.shape, self.dtype = arr.shape, arr.dtype

    def __getitem__(self, key: Any) -> Any:
        self.keys.append(key)
        return self.arr[key]


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_round_trip_and_row_slices(tmp_path: Path, kind: str, dtype: Any) -> None:
    M = random_csr(dtype=dtype)
    address = save_sparse(tmp_path, kind, M)
    with open_array(address, sparse=True) as r:
        assert isinstance(r, SparseReader) and r.is_sparse
        assert r.shape == M.shape and r.dtype == np.dtype(dtype) and r.nnz == M.nnz
        assert r.chunks is None and r.chunk_rows is None and r.ndim == 2
        require_matrix(r, "X")
        for start, stop in [(0, 17), (0, 1), (3, 9), (7, 8), (16, 17), (5, 5), (10, 40)]:
            block = r.read_rows(start, stop)
            assert isinstance(block, sp.csr_matrix) and block.dtype == np.dtype(dtype)
            expected = M[start:stop]
            assert block.shape == expected.shape
            np.testing.assert_array_equal(block.toarray(), expected.toarray())
        np.testing.assert_array_equal(r.read_all().toarray(), M.toarray())
        np.testing.assert_array_equal(r.read_region(2, 9, 3, 8).toarray(),
                                      M[2:9, 3:8].toarray())


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_row_reads_touch_only_their_range(tmp_path: Path, kind: str) -> None:
    M = random_csr(n=40, m=9)
    with open_array(save_sparse(tmp_path, kind, M), sparse=True) as r:
        data, indices, indptr = (Recorder(a) for a in (r._data, r._indices, r._indptr))
        r._data, r._indices, r._indptr = data, indices, indptr
        r.read_rows(10, 14)
    lo, hi = int(M.indptr[10]), int(M.indptr[14])
    assert indptr.keys == [slice(10, 15)]
    assert data.keys == [slice(lo, hi)] and indices.keys == [slice(lo, hi)]


def test_dense_readers_are_not_sparse(tmp_path: Path, save) -> None:
    for fmt in ("npy", "h5", "zarr"):
        with open_array(save(tmp_path / f"d.{fmt}", np.zeros((2, 3)))) as r:
            assert r.is_sparse is False


@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_npz_other_formats_become_csr(tmp_path: Path, fmt: str) -> None:
    M = random_csr()
    sp.save_npz(tmp_path / "m.npz", M.asformat(fmt))
    with open_array(tmp_path / "m.npz", sparse=True) as r:
        assert r.converted_from == fmt
        np.testing.assert_array_equal(r.read_rows(2, 12).toarray(), M[2:12].toarray())


def test_file_root_and_single_group(tmp_path: Path) -> None:
    M = random_csr()
    with h5py.File(tmp_path / "root.h5", "w") as f:
        write_group(f, M)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        write_group(f.create_group("x"), M)
    group = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    write_group(group.create_group("x"), M)
    for address in (tmp_path / "root.h5", tmp_path / "one.h5", tmp_path / "one.zarr"):
        with open_array(address, sparse=True) as r:
            assert r.shape == M.shape
            np.testing.assert_array_equal(r.read_all().toarray(), M.toarray())
    with open_array(tmp_path / "one.h5", sparse=True) as r:
        assert str(r.address).endswith("one.h5:/x")


def test_anndata_and_h5sparse_attributes(tmp_path: Path) -> None:
    M = random_csr()
    with h5py.File(tmp_path / "ad.h5", "w") as f:
        write_group(f.create_group("X"), M, shape=None,
                    attrs={"encoding-type": "csr_matrix", "h5sparse_shape": list(M.shape)})
        write_group(f.create_group("C"), M, attrs={"encoding-type": "csc_matrix"})
    with open_array(f"{tmp_path}/ad.h5:/X", sparse=True) as r:
        np.testing.assert_array_equal(r.read_all().toarray(), M.toarray())
    with pytest.raises(InputError, match=r"'csc_matrix' format.*CSR"):
        open_array(f"{tmp_path}/ad.h5:/C", sparse=True)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_needs_opting_in(tmp_path: Path, kind: str) -> None:
    address = save_sparse(tmp_path, kind, random_csr())
    with pytest.raises(InputError, match="holds a sparse matrix; this command needs a dense"):
        open_array(address)


@pytest.mark.parametrize("kind", ["h5", "zarr"])
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"skip": ("indptr",)}, InputError, "not a CSR group: no indptr array"),
    ({"skip": ("data", "indices")}, InputError, "no data, indices array"),
    ({"attrs": {"format": "csc"}}, InputError, "'csc' format"),
    ({"shape": None}, InputError, "no 'shape' attribute"),
    ({"shape": [3]}, InputError, "two non-negative integers"),
    ({"shape": [17, -1]}, InputError, "two non-negative integers"),
    ({"shape": [16, 11]}, FormatError, "indptr has 18 entries.*needs 17"),
])
def test_bad_groups(tmp_path: Path, kind: str, kwargs: dict, error: type, match: str) -> None:
    address = save_sparse(tmp_path, kind, random_csr(), **kwargs)
    with pytest.raises(error, match=match) as info:
        open_array(address, sparse=True)
    assert "\n" not in str(info.value)


def test_ordinary_group_is_still_not_an_array(tmp_path: Path, save) -> None:
    save(f"{tmp_path}/x.h5:g/data", np.zeros((2, 2)))
    save(f"{tmp_path}/x.h5:g/other", np.zeros((2, 2)))
    with pytest.raises(MissingInputError, match="is a group"):
        open_array(f"{tmp_path}/x.h5:g", sparse=True)


def _corrupt(tmp_path: Path, M: sp.csr_matrix, **arrays: np.ndarray) -> str:
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        g = f.create_group("m")
        for name in ("data", "indices", "indptr"):
            g.create_dataset(name, data=arrays.get(name, getattr(M, name)))
        g.attrs["shape"] = list(M.shape)
    return f"{tmp_path}/bad.h5:/m"


def test_corrupt_arrays(tmp_path: Path) -> None:
    M = random_csr()
    ptr = M.indptr.copy()
    ptr[5], ptr[6] = ptr[6] + 1, ptr[5]                      # decreases between rows 5 and 6
    with open_array(_corrupt(tmp_path, M, indptr=ptr), sparse=True) as r:
        r.read_rows(0, 4)                                    # rows before the damage read fine
        with pytest.raises(FormatError, match="indptr decreases"):
            r.read_rows(3, 9)
    idx = M.indices.copy()
    idx[-1] = 11
    with open_array(_corrupt(tmp_path, M, indices=idx), sparse=True) as r:
        with pytest.raises(FormatError, match="outside 0:11"):
            r.read_rows(0, 17)
    with pytest.raises(FormatError, match="indptr runs from 0 to"):
        open_array(_corrupt(tmp_path, M, indptr=np.append(M.indptr[:-1], M.nnz - 1)), sparse=True)
    with pytest.raises(FormatError, match="data has .* entries but indices has"):
        open_array(_corrupt(tmp_path, M, data=M.data[:-1]), sparse=True)
    with pytest.raises(FormatError, match="indices must hold integers"):
        open_array(_corrupt(tmp_path, M, indices=M.indices.astype(np.float64)), sparse=True)


def test_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "dense.npz", a=np.zeros(3))
    with pytest.raises(FormatError, match="not a scipy.sparse .npz.*holds a"):
        open_array(tmp_path / "dense.npz", sparse=True)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="not a readable"):
        open_array(tmp_path / "junk.npz", sparse=True)
    with pytest.raises(MissingInputError, match="no such file"):
        open_array(tmp_path / "nope.npz", sparse=True)


def test_npz_is_input_only_and_listed(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not write .npz"):
        check_output(tmp_path / "out.npz")
    sp.save_npz(tmp_path / "m.npz", random_csr())
    assert list_arrays(tmp_path / "m.npz") == [""]
    M = random_csr(dtype=np.float32)
    sp.save_npz(tmp_path / "m.npz", M)
    (array,) = inspect_file(tmp_path / "m.npz").arrays
    assert array.shape == [17, 11] and array.dtype == "float32"
    assert array.attrs == {"sparse_format": "csr", "nnz": M.nnz}
