"""Every output says when, where and from what it was made: UTC time, host, library
versions, and each input's address, size and modification time (real CLI, every
command that writes, every output format)."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_logmm

RNG = np.random.default_rng(5)


#: each command that writes, with its inputs; the output formats take turns
CASES = [
    (["multiply", "{d}/a.npy", "{d}/b.npy"], ["a.npy", "b.npy"]),
    (["project", "{d}/a.npy", "{d}/w.npy", "--blocks", "2"], ["a.npy", "w.npy"]),
    (["loglik", "{d}/a.npy", "--mu", "{d}/mu.npy", "--sigma", "1"], ["a.npy", "mu.npy"]),
    (["chain", "{d}/a.npy", "{d}/b.npy", "{d}/c.npy"], ["a.npy", "b.npy", "c.npy"]),
    (["power", "{d}/p.npy", "-n", "3"], ["p.npy"]),
    (["einsum", "ij,jk->ik", "{d}/a.npy", "{d}/b.npy"], ["a.npy", "b.npy"]),
    (["convert", "{d}/a.npy"], ["a.npy"]),
]


@pytest.mark.parametrize(("command", "inputs", "suffix"),
                         [(*case, ("h5", "zarr", "npy")[i % 3]) for i, case in enumerate(CASES)],
                         ids=[case[0][0] for case in CASES])
def test_every_output_records_when_where_and_from_what(tmp_path: Path, command: list[str],
                                                       inputs: list[str], suffix: str):
    arrays = {"a": (6, 4), "b": (4, 3), "c": (3, 2), "p": (3, 3), "w": (2, 2), "mu": (4,)}
    for name, shape in arrays.items():
        np.save(tmp_path / f"{name}.npy", RNG.standard_normal(shape))
    os.utime(tmp_path / inputs[0], (1_700_000_000, 1_700_000_000))     # a known time
    out = tmp_path / f"out.{suffix}"
    args = [part.format(d=tmp_path) for part in command]
    args += [str(out)] if command[0] == "convert" else ["-o", str(out)]
    before = datetime.now(timezone.utc).replace(microsecond=0)
    proc = run_logmm(*args, "-q")
    assert proc.returncode == 0, proc.stderr
    info = run_logmm("info", out, "--json")
    assert info.returncode == 0, info.stderr
    attrs = json.loads(info.stdout)["arrays"][0]["attrs"]
    assert attrs["inputs"] == [f"{tmp_path}/{name}" for name in inputs]
    assert attrs["input_bytes"] == [os.stat(tmp_path / n).st_size for n in inputs]
    assert attrs["input_modified"][0] == "2023-11-14T22:13:20+00:00"
    created = datetime.fromisoformat(attrs["created"])
    assert created.tzinfo is not None and before <= created <= datetime.now(timezone.utc)
    assert attrs["host"] == socket.gethostname()
    for library in ("numpy", "h5py", "zarr"):
        assert attrs[library] == metadata.version(library)
    assert attrs["logmm_version"] and attrs["command"].startswith("logmm ")
