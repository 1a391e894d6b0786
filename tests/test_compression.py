"""Output compression: HDF5 gzip/lzf/zstd/blosc/none, Zarr gzip/zstd/blosc/none.

zstd and blosc for HDF5 come from the optional hdf5plugin package: the tests that write
them skip without it, and others check the one-line error that names the extra to install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from logmm.cli.main import cli
from logmm.errors import LogmmError, UsageError
from logmm.inspect import inspect_file
from logmm.io import COMPRESSIONS, check_output, create_writer, open_array
from logmm.io.compression import check_compression, hdf5_filter_kwargs, zarr_compressors

HINT = "pip install 'logmm[hdf5plugin]'"


def data(n: int = 64, m: int = 8) -> np.ndarray:
    """Log-probabilities, rows repeating every 4 (so that compression has work to do)."""
    x = np.tile(np.log(np.random.default_rng(3).dirichlet(np.ones(m), size=4)), (n // 4, 1))
    x[0, 0] = -np.inf
    return x


def _convert(src: Path, out: Path | str, *extra: str):
    return CliRunner().invoke(cli, ["convert", str(src), str(out), "--chunk-rows", "16",
                                    "-q", *extra])


def _read(address: Path | str) -> np.ndarray:
    with open_array(address) as r:
        return r.read_all()


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logmm: error: "), result.stderr
    return lines[0]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", data())
    return tmp_path / "x.npy"


@pytest.fixture
def no_hdf5plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import hdf5plugin`` fail and its filters look unregistered."""
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)
    builtin = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code < 32001 and builtin(code))


def test_choices() -> None:
    assert set(COMPRESSIONS) == {"gzip", "lzf", "zstd", "blosc", "none"}
    help_text = CliRunner().invoke(cli, ["convert", "--help"]).output
    assert "gzip|lzf|zstd|blosc|none" in help_text
    assert "zstd|blosc" in CliRunner().invoke(cli, ["multiply", "--help"]).output


@pytest.mark.parametrize(("compression", "expected"),
                         [("gzip", "gzip"), ("lzf", "lzf"), ("none", "none"), (None, "none")])
def test_hdf5_builtin(tmp_path: Path, src: Path, compression: str | None,
                      expected: str) -> None:
    args = ["--compression", compression] if compression else []
    assert _convert(src, tmp_path / "o.h5", *args).exit_code == 0
    (arr,) = inspect_file(tmp_path / "o.h5").arrays
    assert arr.compression == expected and arr.chunks == [16, 8]
    assert _read(tmp_path / "o.h5").tobytes() == data().tobytes()


@pytest.mark.parametrize(("compression", "expected"),
                         [("gzip", "gzip"), ("zstd", "zstd"), ("blosc", "blosc"),
                          ("none", "none"), (None, "zstd")])
def test_zarr(tmp_path: Path, src: Path, compression: str | None, expected: str) -> None:
    args = ["--compression", compression] if compression else []
    result = _convert(src, tmp_path / "o.zarr", *args)
    assert result.exit_code == 0, result.output
    (arr,) = inspect_file(tmp_path / "o.zarr").arrays
    assert arr.compression == expected and arr.chunks == [16, 8]
    assert _read(tmp_path / "o.zarr").tobytes() == data().tobytes()


@pytest.mark.parametrize("compression", ["zstd", "blosc"])
def test_hdf5_plugin_filters(tmp_path: Path, src: Path, compression: str) -> None:
    pytest.importorskip("hdf5plugin")
    result = _convert(src, tmp_path / "o.h5", "--compression", compression)
    assert result.exit_code == 0, result.output
    (arr,) = inspect_file(tmp_path / "o.h5").arrays
    assert arr.compression == compression
    assert _read(tmp_path / "o.h5").tobytes() == data().tobytes()
    assert arr.stored_bytes < arr.nbytes
    # a new process reads it back (logmm loads hdf5plugin when it meets the filter)
    code = ("import numpy as np, sys; from logmm.io import open_array; "
            f"r = open_array({str(tmp_path / 'o.h5')!r}); "
            f"sys.exit(0 if r.read_all().tobytes() == np.load({str(src)!r}).tobytes() else 3)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_multiply_writes_plugin_compression(tmp_path: Path, src: Path) -> None:
    pytest.importorskip("hdf5plugin")
    x = data(8, 8)
    np.save(tmp_path / "a.npy", x)
    result = CliRunner().invoke(cli, ["multiply", str(tmp_path / "a.npy"),
                                      str(tmp_path / "a.npy"), "-o", str(tmp_path / "c.h5"),
                                      "--compression", "zstd", "-q"])
    assert result.exit_code == 0, result.output
    assert inspect_file(tmp_path / "c.h5").arrays[0].compression == "zstd"


@pytest.mark.usefixtures("no_hdf5plugin")
@pytest.mark.parametrize("compression", ["zstd", "blosc"])
def test_missing_hdf5plugin_is_one_clear_line(tmp_path: Path, src: Path,
                                              compression: str) -> None:
    result = _convert(src, tmp_path / "o.h5", "--compression", compression)
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert f"HDF5 {compression} compression" in line and HINT in line
    assert not (tmp_path / "o.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
    np.save(tmp_path / "sq.npy", data(8, 8))
    sq = str(tmp_path / "sq.npy")
    result = CliRunner().invoke(cli, ["multiply", sq, sq, "-o", str(tmp_path / "c.h5"),
                                      "--compression", compression])
    assert result.exit_code == 1 and HINT in _one_line_error(result)
    with pytest.raises(LogmmError, match="hdf5plugin"):
        check_output(tmp_path / "o.h5", compression=compression)
    # Zarr has these codecs built in; no plugin needed
    assert _convert(src, tmp_path / "o.zarr", "--compression", compression).exit_code == 0


def test_reading_plugin_data_without_the_plugin(tmp_path: Path, src: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hdf5plugin")
    assert _convert(src, tmp_path / "o.h5", "--compression", "zstd").exit_code == 0
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != 32015)
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "o.h5"),
                                      str(tmp_path / "back.npy")])
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert "zstd (32015)" in line and HINT in line
    # info reads only metadata, so it still works
    assert inspect_file(tmp_path / "o.h5").arrays[0].compression == "zstd"


def test_missing_hdf5plugin_in_a_real_process(tmp_path: Path, src: Path) -> None:
    code = ("import sys; sys.modules['hdf5plugin'] = None; "
            "from logmm.cli.main import main; main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "convert", str(src),
                           str(tmp_path / "o.h5"), "--compression", "blosc"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"logmm: error: HDF5 blosc compression needs the optional hdf5plugin package: {HINT} "
        "(from a checkout: pip install -e '.[hdf5plugin]')"
    ]


def test_usage_errors(tmp_path: Path, src: Path) -> None:
    for out, compression, text in [("o.zarr", "lzf", "lzf is HDF5-only"),
                                   ("o.npy", "zstd", "not compressed")]:
        result = _convert(src, tmp_path / out, "--compression", compression)
        assert result.exit_code == 2 and text in _one_line_error(result)
    result = _convert(src, tmp_path / "o.h5", "--compression", "brotli")
    assert result.exit_code == 2 and "brotli" in result.stderr
    with pytest.raises(UsageError, match="unknown compression"):
        check_compression("hdf5", "o.h5", "brotli")
    check_compression("npy", "o.npy", "none")
    assert hdf5_filter_kwargs("none") == {} and hdf5_filter_kwargs("lzf") == {"compression": "lzf"}
    assert zarr_compressors(None) == "auto" and zarr_compressors("none") is None


def test_empty_arrays_are_stored_uncompressed(tmp_path: Path) -> None:
    with create_writer(tmp_path / "e.h5", (0, 3), "float64", compression="gzip") as w:
        w.commit()
    assert inspect_file(tmp_path / "e.h5").arrays[0].compression == "none"
