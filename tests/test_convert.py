"""``logmm convert`` and its engine: chunked copies between npy, HDF5 and Zarr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from logmm.cli.main import cli
from logmm.convert import convert
from logmm.errors import InputError, OutputExistsError, UsageError
from logmm.inspect import inspect_file
from logmm.io import open_array
from logmm.multiply import multiply
from logmm.plan import plan_copy_rows

LOGMM = Path(sys.executable).with_name("logmm")
FORMATS = ["npy", "h5", "zarr"]


def awkward(shape: tuple[int, ...] = (23, 7), seed: int = 0) -> np.ndarray:
    """Random values with NaN, ±inf, -0.0 and subnormals, which a copy must keep exactly."""
    x = np.random.default_rng(seed).standard_normal(shape) * 100
    flat = x.reshape(-1)
    flat[:5] = [np.nan, -np.inf, np.inf, -0.0, 5e-324]
    return x


def _read(address: str | Path) -> np.ndarray:
    with open_array(address) as r:
        return r.read_all()


def _attrs(address: str | Path) -> dict:
    return inspect_file(address).arrays[0].attrs


def _run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logmm: error: "), result.stderr
    return lines[0]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".logmm-" in p.name)


@pytest.mark.parametrize("src", FORMATS)
@pytest.mark.parametrize("dst", FORMATS)
def test_round_trip_bit_identical(tmp_path: Path, save, src: str, dst: str) -> None:
    x = awkward()
    source = save(tmp_path / f"in.{src}", x, chunk_rows=None if src == "npy" else 5)
    out = tmp_path / f"out.{dst}"
    result = _run("convert", source, out, "--block-rows", "4", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    got = _read(out)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert got.tobytes() == x.tobytes()  # NaN, -0.0 and subnormals included
    assert _leftovers(tmp_path) == []
    back = tmp_path / f"back.{src}"
    assert _run("convert", out, back, "-q").exit_code == 0
    assert _read(back).tobytes() == x.tobytes()


@pytest.mark.parametrize("dst", FORMATS)
def test_nd_arrays_and_dtypes(tmp_path: Path, save, dst: str) -> None:
    x = awkward((9, 3, 4, 2))
    source = save(f"{tmp_path}/in.h5:/g/x", x, chunk_rows=2)
    result = convert(source, tmp_path / f"o.{dst}", block_rows=3)
    assert result.shape == (9, 3, 4, 2) and result.block_rows == 3
    assert _read(tmp_path / f"o.{dst}").tobytes() == x.tobytes()
    ints = np.arange(60, dtype=np.int16).reshape(5, 3, 4)
    convert(save(tmp_path / "ints.npy", ints), tmp_path / f"i.{dst}")
    got = _read(tmp_path / f"i.{dst}")
    assert got.dtype == np.int16 and np.array_equal(got, ints)


def test_big_endian_npy_is_stored_native(tmp_path: Path) -> None:
    x = awkward().astype(">f8")
    np.save(tmp_path / "be.npy", x)
    convert(tmp_path / "be.npy", tmp_path / "le.zarr")
    got = _read(tmp_path / "le.zarr")
    assert got.dtype == np.dtype("<f8") and got.tobytes() == x.astype("<f8").tobytes()


def test_chunking_follows_input_and_blocks_follow_chunks(tmp_path: Path, save) -> None:
    x = awkward((100, 6))
    source = save(f"{tmp_path}/in.h5:/x", x, chunk_rows=16)
    result = convert(source, tmp_path / "o.zarr")
    assert result.chunk_rows == 16 and result.block_rows == 100  # all of it fits
    assert inspect_file(tmp_path / "o.zarr").arrays[0].chunks == [16, 6]
    result = convert(source, tmp_path / "o.h5", chunk_rows=10, memory=10 * 6 * 8 * 4 * 3)
    assert result.chunk_rows == 10 and result.block_rows == 30
    assert inspect_file(tmp_path / "o.h5").arrays[0].chunks == [10, 6]
    assert _read(tmp_path / "o.h5").tobytes() == x.tobytes()


def test_plan_copy_rows() -> None:
    assert plan_copy_rows(1000, 80, 80, memory=320 * 100) == 100
    assert plan_copy_rows(1000, 80, 80, memory=320 * 100, align=30) == 90
    assert plan_copy_rows(1000, 80, 80, memory=320 * 10, align=30) == 10  # below one chunk
    assert plan_copy_rows(5, 80, 80, memory=1 << 30) == 5
    assert plan_copy_rows(0, 80, 80) == 1
    assert plan_copy_rows(10, 10**9, 10**9, memory=1) == 1


def test_provenance_carried_over(tmp_path: Path, save) -> None:
    a = np.log(np.random.default_rng(1).dirichlet(np.ones(4), size=4))
    save(tmp_path / "a.npy", a)
    multiply(tmp_path / "a.npy", tmp_path / "a.npy", tmp_path / "c.h5", method="exact",
             command="logmm multiply a.npy a.npy -o c.h5")
    result = _run("convert", tmp_path / "c.h5", tmp_path / "c.zarr", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "c.zarr:data" in result.stderr
    attrs = _attrs(tmp_path / "c.zarr")
    assert attrs["complete"] is True
    assert attrs["method"] == "exact" and attrs["operation"] == "multiply"
    assert attrs["a_shape"] == [4, 4]
    assert attrs["source_command"] == "logmm multiply a.npy a.npy -o c.h5"
    assert attrs["converted_from"] == f"{tmp_path / 'c.h5'}:/data"
    assert attrs["command"].startswith("logmm convert ") and "--dtype float32" in attrs["command"]
    assert attrs["dtype"] == "float32"
    assert "logmm_version" in attrs
    # a second conversion keeps the command that computed the data
    convert(tmp_path / "c.zarr", tmp_path / "c.npy")
    sidecar = json.loads((tmp_path / "c.npy.json").read_text())
    assert sidecar["source_command"] == "logmm multiply a.npy a.npy -o c.h5"
    assert sidecar["command"].startswith("logmm.convert.convert(")


def test_zarr_attributes_that_hdf5_cannot_hold(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "in.zarr", mode="w")
    arr = group.create_array("x", shape=(3, 2), dtype="f8")
    arr[...] = 1.0
    arr.attrs.update({"meta": {"a": 1}, "mixed": [1, "x"], "plain": [1, 2], "none": None})
    convert(f"{tmp_path}/in.zarr:x", tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5", "r") as f:
        attrs = f["data"].attrs
        assert json.loads(attrs["meta"]) == {"a": 1}
        assert json.loads(attrs["mixed"]) == [1, "x"]
        assert list(attrs["plain"]) == [1, 2]
        assert "none" not in attrs


def test_existing_output(tmp_path: Path, save) -> None:
    src = save(tmp_path / "a.npy", awkward())
    (tmp_path / "o.h5").write_bytes(b"keep")
    result = _run("convert", src, tmp_path / "o.h5")
    assert result.exit_code == 1
    assert "output exists" in _one_line_error(result)
    assert (tmp_path / "o.h5").read_bytes() == b"keep"
    with pytest.raises(OutputExistsError):
        convert(src, tmp_path / "o.h5")
    assert _run("convert", src, tmp_path / "o.h5", "--overwrite", "-q").exit_code == 0
    assert _read(tmp_path / "o.h5").tobytes() == awkward().tobytes()


def test_errors(tmp_path: Path, save) -> None:
    src = save(f"{tmp_path}/a.h5:/a", awkward())
    save(f"{tmp_path}/a.h5:/b", awkward())
    cases = [
        (["convert", tmp_path / "missing.npy", tmp_path / "o.h5"], 1, "no such file"),
        (["convert", f"{tmp_path}/a.h5:/zz", tmp_path / "o.h5"], 1, "it holds: /a, /b"),
        (["convert", tmp_path / "a.h5", tmp_path / "o.h5"], 1, "holds 2 arrays"),
        (["convert", src, f"{tmp_path}/a.h5:/a", "--overwrite"], 2, "both input and output"),
        (["convert", src, tmp_path / "o.txt"], 2, "cannot tell the format"),
        (["convert", src, tmp_path / "o.npy", "--compression", "gzip"], 2, "not compressed"),
    ]
    for args, code, text in cases:
        result = _run(*args)
        assert result.exit_code == code, (args, result.output)
        assert text in _one_line_error(result), args
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    result = _run("convert", tmp_path / "bad.zarr", tmp_path / "o.npy")
    assert result.exit_code == 1 and "bad.zarr" in _one_line_error(result)
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.npy").exists()
    assert _leftovers(tmp_path) == []


def test_data_errors_leave_nothing(tmp_path: Path, save) -> None:
    big = np.ones((10, 3))
    big[7, 1] = 1e300
    src = save(tmp_path / "big.npy", big)
    result = _run("convert", src, tmp_path / "o.h5", "--dtype", "float32", "--block-rows", "2")
    assert result.exit_code == 1
    assert "[7, 1]" in _one_line_error(result) and "float32" in result.stderr
    assert not (tmp_path / "o.h5").exists() and _leftovers(tmp_path) == []
    np.save(tmp_path / "scalar.npy", np.float64(3.0))
    with pytest.raises(InputError, match="scalar"):
        convert(tmp_path / "scalar.npy", tmp_path / "o.h5")
    np.save(tmp_path / "c.npy", np.ones(3, dtype=np.complex128))
    with pytest.raises(InputError, match="complex"):
        convert(tmp_path / "c.npy", tmp_path / "o.h5", dtype="float64")
    with pytest.raises(UsageError, match="dtype"):
        convert(src, tmp_path / "o.h5", dtype="int8")


def test_incomplete_input_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "part.h5", "w") as f:
        f.create_dataset("data", data=np.zeros((4, 2)))
        f["data"].attrs["logmm_version"] = "0.1.0"
    result = _run("convert", tmp_path / "part.h5", tmp_path / "o.zarr")
    assert result.exit_code == 1 and "unfinished logmm output" in _one_line_error(result)


def test_help_has_examples() -> None:
    result = _run("convert", "--help")
    assert result.exit_code == 0 and "Examples:" in result.output
    assert "logmm convert c.h5 c.zarr" in result.output
    assert "convert" in _run("--help").output


def test_cli_subprocess(tmp_path: Path) -> None:
    x = awkward((40, 5))
    np.save(tmp_path / "a.npy", x)
    proc = subprocess.run([str(LOGMM), "convert", str(tmp_path / "a.npy"),
                           f"{tmp_path}/b.zarr:g/x", "--no-progress"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr.startswith("wrote ")
    assert _read(f"{tmp_path}/b.zarr:g/x").tobytes() == x.tobytes()
    proc = subprocess.run([str(LOGMM), "convert", str(tmp_path / "nope.h5"),
                           str(tmp_path / "c.h5")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"logmm: error: no such file: {tmp_path}/nope.h5"]


def test_zarr_format_2_copy_is_readable_as_zarr_2(tmp_path: Path) -> None:
    # in-process, as the module's other CLI tests (4 interpreters cost ~3.5 s)
    values = np.random.default_rng(3).standard_normal((30, 4))
    np.save(tmp_path / "a.npy", values)
    for i, compression in enumerate([[], ["--compression", "gzip"], ["--compression", "none"]]):
        out = tmp_path / f"v2-{i}.zarr"
        res = _run("convert", tmp_path / "a.npy", out, "--zarr-format", "2", "-q",
                   *compression)
        assert res.exit_code == 0, (res.output, res.exception)
        meta = json.loads((out / "data" / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and not (out / "zarr.json").exists()
        arr = zarr.open_array(str(out), path="data", mode="r", zarr_format=2)
        assert arr[...].tobytes() == values.tobytes()
        assert arr.attrs["complete"] is True
    default = tmp_path / "v3.zarr"
    assert _run("convert", tmp_path / "a.npy", default, "-q").exit_code == 0
    assert json.loads((default / "zarr.json").read_text())["zarr_format"] == 3
