"""``logmm info`` on a merged HDF5 output whose shard files are not all there.

``logmm merge OUT.h5`` writes a virtual dataset over the shard files; with one of them
gone HDF5 reads its rows as the fill value. ``info`` must then not call the output
complete (LOGMM column, ``--json``), must say so on stderr, and ``info --check`` must exit
1 with the reason; ``convert`` makes the self-contained copy that needs no shard files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_run import one_error_line, run_logmm

SHARD1 = "c.shard-0001-of-0003.h5"


@pytest.fixture(scope="module")
def merged_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs, 3 shard files and their merge (4 CLI runs, ~2 s), made once."""
    d = tmp_path_factory.mktemp("merged")
    rng = np.random.default_rng(18)
    np.save(d / "a.npy", rng.normal(size=(200, 6)))
    np.save(d / "b.npy", rng.normal(size=(6, 4)))
    out = d / "c.h5"
    for i in range(3):
        done = run_logmm("multiply", d / "a.npy", d / "b.npy", "-o", out,
                         "--block-rows", "50", "--shard", f"{i}/3", "-q")
        assert done.returncode == 0, done.stderr
    assert run_logmm("merge", out, "-q").returncode == 0
    return d


@pytest.fixture()
def merged(merged_once: Path, tmp_path: Path) -> Path:
    """A copy in ``tmp_path`` (the merge names its shard files relative to itself), for
    a test to take shard files away from."""
    for path in merged_once.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    return tmp_path / "c.h5"


def _logmm_column(stdout: str) -> str:
    row = next(line for line in stdout.splitlines() if line.startswith("/data "))
    return row.split()[-1]


def test_info_of_a_merged_file_with_a_shard_gone(merged: Path, tmp_path: Path) -> None:
    whole = run_logmm("info", merged, "--check")
    assert whole.returncode == 0 and whole.stderr == "", whole.stderr
    assert _logmm_column(whole.stdout) == "complete"

    (tmp_path / SHARD1).rename(tmp_path / "elsewhere.h5")
    shown = run_logmm("info", merged)
    assert shown.returncode == 0
    assert _logmm_column(shown.stdout) == "incomplete"
    warning = shown.stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith("logmm: warning: "), shown.stderr
    assert f"{SHARD1} (rows 50:100)" in warning[0] and "missing" in warning[0]

    doc = json.loads(run_logmm("info", merged, "--json").stdout)
    assert doc["complete"] is False
    assert doc["arrays"][0]["status"] == "incomplete"
    assert doc["arrays"][0]["missing_sources"] == [f"{SHARD1} (rows 50:100)"]

    check = run_logmm("info", merged, "--check")
    assert check.returncode == 1 and "Traceback" not in check.stderr
    lines = check.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"logmm: error: {merged} is not complete: ")
    assert SHARD1 in lines[0] and "rows 50:100" in lines[0]

    (tmp_path / "elsewhere.h5").rename(tmp_path / SHARD1)          # back: complete again
    again = run_logmm("info", merged, "--check")
    assert again.returncode == 0 and again.stderr == ""


def test_every_shard_gone_is_still_not_complete(merged: Path, tmp_path: Path) -> None:
    """With no shard file left nothing beside the merged file names the shards: the
    virtual dataset's own sources are what tells."""
    for part in tmp_path.glob("c.shard-*.h5"):
        part.unlink()
    check = run_logmm("info", merged, "--check")
    assert check.returncode == 1
    assert "c.shard-0000-of-0003.h5 (rows 0:50)" in check.stderr
    assert "c.shard-0002-of-0003.h5 (rows 100:200)" in check.stderr


def test_convert_makes_a_copy_that_needs_no_shard_files(merged: Path, tmp_path: Path) -> None:
    """README: merge makes a virtual dataset, convert a self-contained copy."""
    copy = tmp_path / "copy.h5"
    assert run_logmm("convert", merged, copy, "-q").returncode == 0
    expected = run_logmm("convert", merged, tmp_path / "ref.npy", "-q")
    assert expected.returncode == 0
    for part in tmp_path.glob("c.shard-*.h5"):
        part.unlink()
    assert run_logmm("info", copy, "--check").returncode == 0
    assert run_logmm("convert", copy, tmp_path / "back.npy", "-q").returncode == 0
    assert np.array_equal(np.load(tmp_path / "back.npy"), np.load(tmp_path / "ref.npy"))
    refused = one_error_line(run_logmm("convert", merged, tmp_path / "x.npy"), codes=(1,))
    assert SHARD1 in refused or "c.shard-0000-of-0003.h5" in refused
