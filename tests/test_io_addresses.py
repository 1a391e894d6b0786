"""Address parsing: ``path.ext[:dataset]`` and format detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from logmm.errors import UsageError
from logmm.io.addresses import ArrayAddress, detect_format, parse_address


@pytest.mark.parametrize(
    ("text", "path", "fmt", "dataset"),
    [
        ("x.npy", "x.npy", "npy", None),
        ("./x.h5", "x.h5", "hdf5", None),
        ("x.h5:/a", "x.h5", "hdf5", "a"),
        ("x.h5:/group/name", "x.h5", "hdf5", "group/name"),
        ("x.h5:group/name", "x.h5", "hdf5", "group/name"),
        ("x.hdf5:/a", "x.hdf5", "hdf5", "a"),
        ("X.H5:/a", "X.H5", "hdf5", "a"),
        ("x.h5:", "x.h5", "hdf5", None),
        ("x.h5:/", "x.h5", "hdf5", None),
        ("x.zarr", "x.zarr", "zarr", None),
        ("x.zarr/", "x.zarr", "zarr", None),
        ("x.zarr:group/name", "x.zarr", "zarr", "group/name"),
        ("x.zarr/:a", "x.zarr", "zarr", "a"),
        ("C:/data/x.h5:/a", "C:/data/x.h5", "hdf5", "a"),
        ("run:3/x.npy", "run:3/x.npy", "npy", None),
        ("dir.h5files/x.npy", "dir.h5files/x.npy", "npy", None),
        ("store.zarr/sub.npy", "store.zarr/sub.npy", "npy", None),
        ("x.h5:/weird.h5", "x.h5", "hdf5", "weird.h5"),
        ("a b/x y.h5:/p q", "a b/x y.h5", "hdf5", "p q"),
    ],
)
def test_parse(text: str, path: str, fmt: str, dataset: str | None) -> None:
    addr = parse_address(text)
    assert addr == ArrayAddress(Path(path), fmt, dataset)


@pytest.mark.parametrize("text", ["x.csv", "x", "x.h5x", "", "x.npzz:/a", "x.txt:/a"])
def test_unknown_extension_is_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_address(text)
    assert info.value.exit_code == 2
    if text:
        assert ".npy" in str(info.value) and ".h5" in str(info.value)


def test_npy_takes_no_dataset() -> None:
    with pytest.raises(UsageError, match="single array"):
        parse_address("x.npy:a")


def test_npz_is_a_sparse_input_without_dataset() -> None:
    assert parse_address("d/x.NPZ") == ArrayAddress(Path("d/x.NPZ"), "npz", None)
    with pytest.raises(UsageError, match="single sparse matrix"):
        parse_address("x.npz:/a")


def test_str_round_trip() -> None:
    for text in ["x.npy", "d/x.h5:/g/a", "x.zarr:g/a", "x.h5"]:
        assert str(parse_address(text)) == text
        assert parse_address(str(parse_address(text))) == parse_address(text)


def test_path_and_address_inputs() -> None:
    addr = parse_address(Path("d") / "x.zarr")
    assert addr.format == "zarr" and addr.dataset is None
    assert parse_address(addr) is addr
    assert addr.with_dataset("/g/a/").dataset == "g/a"


def test_detect_format() -> None:
    assert detect_format("a/b.HDF5") == "hdf5"
    assert detect_format(Path("x.zarr/")) == "zarr"
    with pytest.raises(UsageError):
        detect_format("x.parquet")
