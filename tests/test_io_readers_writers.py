"""Readers and writers: round trips, errors, atomic commit, overwrite, provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from logmm.errors import (
    FormatError,
    InputError,
    MissingInputError,
    OutputExistsError,
    UsageError,
)
from logmm.io import (
    check_output,
    create_writer,
    list_arrays,
    open_array,
    require_matrix,
    sidecar_path,
)
from logmm.io.writers import partial_path

FORMATS = ["npy", "h5", "zarr"]
RNG = np.random.default_rng(7)


def _read_attrs(address: str) -> dict:
    """Provenance attributes of a written output, as plain Python values."""
    path, _, name = address.partition(":")
    if path.endswith(".npy"):
        return json.loads(sidecar_path(path).read_text())
    if path.endswith(".h5"):
        with h5py.File(path, "r") as f:
            return {k: (v.tolist() if hasattr(v, "tolist") else v)
                    for k, v in f[name or "data"].attrs.items()}
    return dict(zarr.open_array(path, path=name or "data", mode="r").attrs)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".logmm-" in p.name)


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_reader_round_trip(tmp_path: Path, save, fmt: str, dtype: type) -> None:
    arr = (RNG.standard_normal((23, 5)) * 10).astype(dtype)
    address = save(tmp_path / f"x.{fmt}", arr, chunk_rows=None if fmt == "npy" else 4)
    with open_array(address) as r:
        assert r.shape == (23, 5) and r.dtype == np.dtype(dtype) and r.ndim == 2
        assert r.chunk_rows == (None if fmt == "npy" else 4)
        np.testing.assert_array_equal(r.read_all(), arr)
        np.testing.assert_array_equal(r.read_rows(3, 11), arr[3:11])
        np.testing.assert_array_equal(r.read_rows(20, 99), arr[20:])
        assert r.read_rows(5, 5).shape == (0, 5)
        assert r.read_rows(0, 4).flags.c_contiguous


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_single_array_is_used_without_dataset(tmp_path: Path, save, fmt: str) -> None:
    arr = RNG.standard_normal((4, 3))
    save(f"{tmp_path}/x.{fmt}:g/only", arr)
    with open_array(tmp_path / f"x.{fmt}") as r:
        np.testing.assert_array_equal(r.read_all(), arr)
        assert r.address.dataset == "g/only"


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_several_arrays_need_a_name(tmp_path: Path, save, fmt: str) -> None:
    save(f"{tmp_path}/x.{fmt}:a", np.zeros((2, 2)))
    save(f"{tmp_path}/x.{fmt}:g/b", np.ones((2, 2)))
    with pytest.raises(MissingInputError) as info:
        open_array(tmp_path / f"x.{fmt}")
    message = str(info.value)
    assert "holds 2 arrays" in message and "a" in message and "g/b" in message
    assert "\n" not in message
    with open_array(f"{tmp_path}/x.{fmt}:/g/b") as r:
        assert r.read_all().sum() == 4
    assert set(list_arrays(tmp_path / f"x.{fmt}")) in ({"/a", "/g/b"}, {"a", "g/b"})


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_missing_dataset_lists_what_is_there(tmp_path: Path, save, fmt: str) -> None:
    save(f"{tmp_path}/x.{fmt}:alpha", np.zeros((2, 2)))
    save(f"{tmp_path}/x.{fmt}:beta", np.zeros((2, 2)))
    with pytest.raises(MissingInputError, match=r"no dataset .*nope.*alpha.*beta"):
        open_array(f"{tmp_path}/x.{fmt}:nope")


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_group_is_not_an_array(tmp_path: Path, save, fmt: str) -> None:
    save(f"{tmp_path}/x.{fmt}:g/a", np.zeros((2, 2)))
    save(f"{tmp_path}/x.{fmt}:g/b", np.zeros((2, 2)))
    with pytest.raises(MissingInputError, match="is a group"):
        open_array(f"{tmp_path}/x.{fmt}:g")


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_file(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(MissingInputError, match="no such file"):
        open_array(tmp_path / f"nope.{fmt}")


@pytest.mark.parametrize("name", ["x.npy", "x.h5"])
def test_garbage_file_is_format_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not an array file\n" * 20)
    with pytest.raises(FormatError, match=name):
        open_array(tmp_path / name)


def test_truncated_files_are_format_errors(tmp_path: Path, save) -> None:
    arr = RNG.standard_normal((300, 40))
    for name in ("t.npy", "t.h5"):
        save(tmp_path / name, arr)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(FormatError, match=name):
            with open_array(tmp_path / name) as r:
                r.read_all()


def test_corrupt_zarr_is_format_error(tmp_path: Path) -> None:
    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(FormatError, match="x.zarr"):
        open_array(tmp_path / "x.zarr")
    (tmp_path / "y.zarr").mkdir()
    with pytest.raises(FormatError, match="not a Zarr store"):
        open_array(tmp_path / "y.zarr")


def test_zarr_v2_is_readable(tmp_path: Path) -> None:
    arr = RNG.standard_normal((6, 3))
    z = zarr.create_array(str(tmp_path / "v2.zarr"), shape=arr.shape, dtype=arr.dtype,
                          zarr_format=2)
    z[:] = arr
    with open_array(tmp_path / "v2.zarr") as r:
        np.testing.assert_array_equal(r.read_all(), arr)


@pytest.mark.parametrize(
    "arr",
    [np.array([["a", "b"]]), np.ones((2, 2), dtype=complex), np.array([[1, None]], dtype=object)],
    ids=["str", "complex", "object"],
)
def test_non_numeric_dtype_is_input_error(tmp_path: Path, arr: np.ndarray) -> None:
    np.save(tmp_path / "x.npy", arr, allow_pickle=True)
    with pytest.raises(InputError):
        with open_array(tmp_path / "x.npy") as r:
            require_matrix(r, "A")


def test_h5_strings_and_wrong_ndim(tmp_path: Path, save) -> None:
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["s"] = np.array([[b"ab", b"cd"]])
    with open_array(tmp_path / "s.h5") as r, pytest.raises(InputError, match="dtype"):
        require_matrix(r, "A")
    save(tmp_path / "v.npy", np.zeros(5))
    with open_array(tmp_path / "v.npy") as r, pytest.raises(InputError, match="1-D"):
        require_matrix(r, "B")


def test_open_does_not_read_data(tmp_path: Path, save, monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "x.h5:/a", np.zeros((10, 2)))
    with open_array(tmp_path / "x.h5") as r:
        monkeypatch.setattr(type(r), "_read", lambda self, key: pytest.fail("read at open"))
        require_matrix(r, "A")


# ----------------------------------------------------------------------------- writers


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("compression", [None, "none", "gzip", "lzf"])
def test_writer_round_trip(tmp_path: Path, fmt: str, compression: str | None) -> None:
    unsupported = (fmt == "npy" and compression not in (None, "none")) or (
        (fmt, compression) == ("zarr", "lzf"))
    if unsupported:
        with pytest.raises(UsageError):
            create_writer(tmp_path / f"out.{fmt}", (3, 2), "f8", compression=compression)
        assert not list(tmp_path.iterdir())
        return
    arr = RNG.standard_normal((11, 4))
    with create_writer(tmp_path / f"out.{fmt}", arr.shape, np.float64,
                       compression=compression, chunk_rows=3) as w:
        for start in range(0, 11, 5):
            w.write_rows(start, arr[start:start + 5])
        assert not (tmp_path / f"out.{fmt}").exists()
        w.set_attrs({"method": "auto", "a_shape": (11, 3), "n": np.int64(4)})
        w.commit()
    with open_array(tmp_path / f"out.{fmt}") as r:
        np.testing.assert_array_equal(r.read_all(), arr)
        assert r.chunk_rows == (None if fmt == "npy" else 3)
    attrs = _read_attrs(f"{tmp_path}/out.{fmt}")
    assert attrs["complete"] in (True, 1) and attrs["method"] == "auto"
    assert list(attrs["a_shape"]) == [11, 3] and attrs["n"] == 4
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["h5", "zarr"])
def test_writer_honours_dataset_name(tmp_path: Path, fmt: str) -> None:
    with create_writer(f"{tmp_path}/o.{fmt}:g/res", (2, 2), "float32") as w:
        w.write_rows(0, np.ones((2, 2)))
        w.commit()
    with open_array(f"{tmp_path}/o.{fmt}:g/res") as r:
        assert r.dtype == np.float32 and r.read_all().sum() == 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    with pytest.raises(KeyboardInterrupt):
        with create_writer(out, (4, 2), "f8") as w:
            w.write_rows(0, np.ones((2, 2)))
            assert partial_path(out).exists()
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_output_is_refused_and_untouched(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    if fmt == "zarr":
        out.mkdir()
        (out / "marker").write_text("keep me")
    else:
        out.write_bytes(b"keep me")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        create_writer(out, (2, 2), "f8")
    with pytest.raises(OutputExistsError):
        check_output(out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    marker = out / "marker" if fmt == "zarr" else out
    assert marker.read_bytes() == b"keep me"


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_replaces(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    for value in (1.0, 2.0):
        with create_writer(out, (3, 2), "f8", overwrite=True) as w:
            w.write_rows(0, np.full((3, 2), value))
            w.commit()
    with open_array(out) as r:
        assert (r.read_all() == 2.0).all()
    assert _leftovers(tmp_path) == []


def test_npy_sidecar_counts_as_existing_output(tmp_path: Path) -> None:
    sidecar_path(tmp_path / "o.npy").write_text("{}")
    with pytest.raises(OutputExistsError):
        check_output(tmp_path / "o.npy")


def test_missing_output_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="output directory does not exist"):
        create_writer(tmp_path / "no" / "such" / "o.h5", (2, 2), "f8")


def test_output_appearing_meanwhile_is_not_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    w = create_writer(out, (2, 2), "f8")
    w.write_rows(0, np.zeros((2, 2)))
    out.write_bytes(b"someone else's")
    with pytest.raises(OutputExistsError):
        w.commit()
    assert out.read_bytes() == b"someone else's"
    assert _leftovers(tmp_path) == []


def test_empty_array(tmp_path: Path) -> None:
    for fmt in FORMATS:
        with create_writer(tmp_path / f"e.{fmt}", (0, 3), "f8") as w:
            w.commit()
        with open_array(tmp_path / f"e.{fmt}") as r:
            assert r.shape == (0, 3) and r.read_all().shape == (0, 3)


def test_write_rows_checks_shape(tmp_path: Path) -> None:
    with create_writer(tmp_path / "o.npy", (3, 2), "f8") as w:
        with pytest.raises(ValueError, match="does not fit"):
            w.write_rows(2, np.zeros((2, 2)))
        with pytest.raises(ValueError, match="does not fit"):
            w.write_rows(0, np.zeros((1, 3)))
    assert os.listdir(tmp_path) == []
