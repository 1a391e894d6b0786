"""``logmm info`` and its engine :func:`logmm.inspect.inspect_file`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from logmm.cli.main import cli
from logmm.errors import FormatError, MissingInputError
from logmm.inspect import inspect_file, logmm_status
from logmm.multiply import multiply

LOGMM = Path(sys.executable).with_name("logmm")
ARRAY_KEYS = ["name", "address", "shape", "dtype", "chunks", "shards", "compression", "codecs",
              "nbytes", "stored_bytes", "status", "attrs", "missing_sources"]
FILE_KEYS = ["path", "format", "file_bytes", "arrays", "temporaries", "notes", "shards",
             "complete"]


def _run(*args: str | Path):
    return CliRunner().invoke(cli, ["info", *(str(a) for a in args)])


def _json(*args: str | Path) -> dict:
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logmm: error: "), result.stderr
    return lines[0]


@pytest.fixture
def product(tmp_path: Path) -> Path:
    """A complete logmm output, c.h5:/data (5×5), gzip-compressed."""
    a = np.log(np.random.default_rng(0).dirichlet(np.ones(5), size=5))
    np.save(tmp_path / "a.npy", a)
    multiply(tmp_path / "a.npy", tmp_path / "a.npy", tmp_path / "c.h5", compression="gzip",
             chunk_rows=2, command="logmm multiply a.npy a.npy -o c.h5")
    return tmp_path / "c.h5"


def test_complete_output_table_and_json(product: Path) -> None:
    result = _run(product)
    assert result.exit_code == 0 and result.stderr == ""
    out = result.stdout
    assert out.startswith(f"{product} (HDF5, ")
    header = next(line for line in out.splitlines() if line.startswith("NAME"))
    assert header.split() == ["NAME", "SHAPE", "DTYPE", "CHUNKS", "COMPRESSION", "STORED",
                              "LOGMM"]
    row = next(line for line in out.splitlines() if line.startswith("/data"))
    assert row.split()[:5] == ["/data", "5×5", "float64", "2×5", "gzip"]
    assert row.split()[-1] == "complete"
    assert "/data: complete logmm output" in out
    assert re.search(r"^  command +logmm multiply a\.npy a\.npy -o c\.h5$", out, re.MULTILINE)

    doc = _json(product)
    assert list(doc) == FILE_KEYS and doc["format"] == "hdf5"
    (arr,) = doc["arrays"]
    assert list(arr) == ARRAY_KEYS
    assert arr["name"] == "/data" and arr["address"] == f"{product}:/data"
    assert arr["shape"] == [5, 5] and arr["chunks"] == [2, 5] and arr["dtype"] == "float64"
    assert arr["compression"] == "gzip" and arr["codecs"][0]["name"] == "gzip"
    assert arr["nbytes"] == 200 and arr["stored_bytes"] > 0
    assert arr["status"] == "complete" and arr["attrs"]["complete"] is True
    assert arr["attrs"]["method"] == "auto" and arr["attrs"]["a_shape"] == [5, 5]
    assert doc["temporaries"] == [] and doc["notes"] == []
    assert _json(f"{product}:/data") == doc  # the only array, named


def test_incomplete_and_foreign_arrays(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("g/part", data=np.zeros((3, 2)))
        f["g/part"].attrs["logmm_version"] = "0.1.0"
        f.create_dataset("g/done", data=np.zeros(4), chunks=(2,), compression="lzf",
                         shuffle=True)
        f["g/done"].attrs.update({"logmm_version": "0.1.0", "complete": True})
        f.create_dataset("plain", data=np.arange(3))
        f["plain"].attrs.update({"units": b"nats", "scale": np.float32(2.0)})
    doc = _json(tmp_path / "f.h5")
    by_name = {a["name"]: a for a in doc["arrays"]}
    assert set(by_name) == {"/g/part", "/g/done", "/plain"}
    assert by_name["/g/part"]["status"] == "incomplete"
    assert by_name["/g/done"]["status"] == "complete"
    assert by_name["/g/done"]["compression"] == "shuffle+lzf"
    assert by_name["/plain"]["status"] is None
    assert by_name["/plain"]["attrs"] == {"units": "nats", "scale": 2.0}
    assert by_name["/plain"]["chunks"] is None and by_name["/plain"]["compression"] == "none"
    out = _run(tmp_path / "f.h5").stdout
    assert "/g/part: INCOMPLETE logmm output" in out
    assert "/plain: attributes" in out
    # naming a group lists the arrays under it
    assert [a["name"] for a in _json(f"{tmp_path}/f.h5:/g")["arrays"]] == ["/g/done", "/g/part"]
    assert logmm_status({}) is None and logmm_status({"complete": False}) == "incomplete"


def test_npy_with_and_without_sidecar(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 3), dtype=np.float32))
    doc = _json(tmp_path / "x.npy")
    (arr,) = doc["arrays"]
    assert arr["name"] is None and arr["shape"] == [4, 3] and arr["dtype"] == "float32"
    assert arr["status"] is None and arr["attrs"] == {} and arr["compression"] == "none"
    assert arr["stored_bytes"] == os.path.getsize(tmp_path / "x.npy")
    (tmp_path / "x.npy.json").write_text(json.dumps({"logmm_version": "0.1.0", "a": "a.h5"}))
    assert _json(tmp_path / "x.npy")["arrays"][0]["status"] == "incomplete"
    (tmp_path / "x.npy.json").write_text("{broken")
    doc = _json(tmp_path / "x.npy")
    assert doc["arrays"][0]["attrs"] == {} and "sidecar" in doc["notes"][0]
    assert "note: cannot read the provenance sidecar" in _run(tmp_path / "x.npy").stdout


def test_zarr_group_root_array_and_codecs(tmp_path: Path) -> None:
    from zarr.codecs import GzipCodec

    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    a = group.create_array("sub/a", shape=(6, 2), dtype="f8", chunks=(3, 2),
                           compressors=[GzipCodec(level=1)])
    a.attrs.update({"logmm_version": "0.1.0", "complete": True})
    group.create_array("b", shape=(2,), dtype="i4", compressors=None)
    doc = _json(tmp_path / "g.zarr")
    by_name = {x["name"]: x for x in doc["arrays"]}
    assert set(by_name) == {"sub/a", "b"}
    assert by_name["sub/a"]["compression"] == "gzip" and by_name["sub/a"]["chunks"] == [3, 2]
    assert by_name["sub/a"]["codecs"][-1] == {"name": "gzip", "configuration": {"level": 1}}
    assert by_name["sub/a"]["status"] == "complete"
    assert by_name["sub/a"]["address"] == f"{tmp_path}/g.zarr:sub/a"
    assert by_name["b"]["compression"] == "none" and by_name["b"]["dtype"] == "int32"
    assert _json(f"{tmp_path}/g.zarr:sub/a")["arrays"] == [by_name["sub/a"]]
    assert [x["name"] for x in _json(f"{tmp_path}/g.zarr:sub")["arrays"]] == ["sub/a"]
    root = zarr.create_array(tmp_path / "r.zarr", shape=(4,), dtype="f4")
    root[...] = 1
    (arr,) = _json(tmp_path / "r.zarr")["arrays"]
    assert arr["name"] is None and arr["compression"] == "zstd" and arr["stored_bytes"] > 0
    v2 = zarr.create_array(tmp_path / "v2.zarr", shape=(4,), dtype="f8", zarr_format=2)
    v2[...] = 0
    assert _json(tmp_path / "v2.zarr")["arrays"][0]["compression"] == "zstd"


def test_partial_output_of_an_interrupted_run(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import logmm.multiply as engine

    a = np.log(np.random.default_rng(2).dirichlet(np.ones(8), size=60))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a[:8])
    out = tmp_path / "c.h5"
    real, calls = engine.logmatmulexp_report, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "logmatmulexp_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        multiply(tmp_path / "a.npy", tmp_path / "b.npy", out, block_rows=10)
    monkeypatch.undo()
    partial = out.with_name(f".{out.name}.logmm-partial")
    assert partial.exists() and not out.exists()

    # the output is missing, and the error says where the unfinished work is
    result = _run(out)
    assert result.exit_code == 1
    assert f"but {partial.name} beside it is the partial output" in _one_line_error(result)
    # the partial output itself: its arrays are incomplete
    (arr,) = _json(partial)["arrays"]
    assert arr["status"] == "incomplete" and arr["shape"] == [60, 8]
    row = next(line for line in _run(partial).stdout.splitlines() if line.startswith("/data"))
    assert row.split()[-1] == "incomplete"

    # beside an output of that name (an older result, say), the partial output is listed
    np.save(tmp_path / "c.npy", a)
    assert _json(tmp_path / "c.npy")["temporaries"] == []  # c.h5's work files are not its
    with h5py.File(out, "w") as f:
        f["data"] = np.zeros((60, 8))
    doc = _json(out)
    kinds = [t["kind"] for t in doc["temporaries"]]
    assert kinds[:2] == ["partial", "record"]
    part = doc["temporaries"][0]
    assert part["blocks_total"] == 6 and 0 <= part["blocks_done"] < 6
    assert part["process_running"] is False and part["bytes"] > 0
    out_text = _run(out).stdout
    assert f"note: {partial.name} (" in out_text
    assert f"{part['blocks_done']} of 6 row blocks written" in out_text
    assert "--resume to finish it" in out_text
    # a lock held by a live process says the run is still going
    out.with_name(f".{out.name}.logmm-lock").write_text(str(os.getpid()))
    doc = _json(out)
    assert doc["temporaries"][0]["pid"] == os.getpid()
    assert doc["temporaries"][0]["process_running"] is True
    assert f"pid {os.getpid()} is still writing it" in _run(out).stdout
    # short-lived .NAME.logmm-TAG-PID files are listed too
    out.with_name(f".{out.name}.logmm-tmp-999999999").write_bytes(b"x")
    doc = _json(out)
    (tmp,) = [t for t in doc["temporaries"] if t["kind"] == "tmp"]
    assert tmp["pid"] == 999999999 and tmp["process_running"] is False and tmp["bytes"] == 1
    assert "logmm-tmp-999999999 (1 B) beside it is a temporary file" in _run(out).stdout


def test_errors_are_one_line(tmp_path: Path, product: Path) -> None:
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{")
    cases = [
        (tmp_path / "missing.h5", 1, "no such file"),
        (f"{product}:/nope", 1, "no dataset /nope in"),
        (tmp_path / "bad.h5", 1, "not a readable HDF5 file"),
        (tmp_path / "bad.npy", 1, "not a valid .npy file"),
        (tmp_path / "bad.zarr", 1, "bad.zarr"),
        (tmp_path / "empty.zarr", 1, "not a Zarr store"),
        (tmp_path / "x.txt", 2, "cannot tell the format"),
    ]
    for address, code, text in cases:
        result = _run(address)
        assert result.exit_code == code, (address, result.output)
        assert text in _one_line_error(result), address
        assert result.stdout == ""
    assert "it holds: /data" in _run(f"{product}:/nope").stderr
    with pytest.raises(MissingInputError):
        inspect_file(tmp_path / "missing.npy")
    with pytest.raises(FormatError):
        inspect_file(tmp_path / "bad.h5")


def test_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["info", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output
    assert "logmm info out.h5:/data" in result.output


def test_cli_subprocess(product: Path) -> None:
    proc = subprocess.run([str(LOGMM), "info", str(product), "--json"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout)["arrays"][0]["status"] == "complete"
    proc = subprocess.run([str(LOGMM), "info", f"{product}:/x"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"logmm: error: no dataset /x in {product}; it holds: /data"
    ]
