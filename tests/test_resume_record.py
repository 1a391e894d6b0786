"""The append-only resume record (:class:`logmm.io.resume.ResumeRecord`): a header line
written once, then one line per stored block; a torn last line is ignored; a record of the
older one-document format is read, and ``--resume`` finishes from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from logmm.io.resume import ResumeRecord, record_path
from logmm.io.writers import partial_path

FINGERPRINT = {"a": {"address": "/x/a.npy", "shape": [10, 4]}, "method": "auto"}
PLAN = {"n": 5000, "block_rows": 1}


def test_each_block_appends_one_line(tmp_path: Path) -> None:
    """Bytes grow linearly: each mark_done adds exactly its line, the rest unchanged
    (the old record rewrote every index after every block: O(blocks^2) bytes)."""
    record = ResumeRecord(tmp_path / ".c.h5.logmm-partial.json", FINGERPRINT, PLAN)
    record.save()
    header = record.path.read_bytes()
    assert header.count(b"\n") == 1 and json.loads(header)["plan"] == PLAN
    before = header
    written = len(header)
    for index in np.random.default_rng(0).permutation(5000).tolist():
        record.mark_done(index)
        after = record.path.read_bytes()
        line = f"{index}\n".encode()
        assert after == before + line       # appended, nothing before it rewritten
        written += len(line)
        before = after
    assert len(before) == written <= len(header) + 5000 * 5
    loaded = ResumeRecord.load(record.path)
    assert loaded is not None and loaded.done == set(range(5000))
    assert loaded.fingerprint == FINGERPRINT and loaded.plan == PLAN


def test_a_torn_last_line_is_ignored_and_never_extended(tmp_path: Path) -> None:
    record = ResumeRecord(tmp_path / ".c.h5.logmm-partial.json", FINGERPRINT, PLAN)
    record.save()
    for index in (3, 0, 12):
        record.mark_done(index)
    with open(record.path, "ab") as f:         # a kill inside the write of "17\n"
        f.write(b"1")
    loaded = ResumeRecord.load(record.path)
    assert loaded is not None and loaded.done == {0, 3, 12}
    # the resumed run's first save drops the torn bytes, so "7\n" cannot become "17\n"
    loaded.save()
    loaded.mark_done(7)
    again = ResumeRecord.load(record.path)
    assert again is not None and again.done == {0, 3, 7, 12}
    # a loaded record marked done before any save rewrites the file first, too
    with open(record.path, "ab") as f:
        f.write(b"2")
    third = ResumeRecord.load(record.path)
    assert third is not None
    third.mark_done(5)
    final = ResumeRecord.load(record.path)
    assert final is not None and final.done == {0, 3, 5, 7, 12}


@pytest.mark.parametrize("text", ["", "{", '{"version": 2}\n', "[1, 2]\n",
                                  '{"version": 3, "fingerprint": {}, "plan": {}}\n',
                                  '{"version": 2, "fingerprint": {}, "plan": {}}\n1\nx\n',
                                  '{"version": 2, "fingerprint": {}, "plan": {}}'])
def test_unreadable_records_load_as_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / ".c.h5.logmm-partial.json"
    path.write_text(text)
    assert ResumeRecord.load(path) is None


def test_a_version_1_record_is_read_and_resume_finishes(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial output left by a logmm whose record was one JSON document: ``logmm
    info`` counts its blocks, and ``--resume`` computes only the missing ones, to the
    same bytes as an uninterrupted run."""
    import h5py
    from click.testing import CliRunner

    import logmm.multiply as engine
    from logmm.cli.main import cli
    from logmm.multiply import multiply

    rng = np.random.default_rng(5)
    np.save(tmp_path / "a.npy", np.log(rng.dirichlet(np.ones(8), size=60)))
    np.save(tmp_path / "b.npy", np.log(rng.dirichlet(np.ones(5), size=8)))
    a, b, out = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.h5"
    multiply(a, b, tmp_path / "ref.h5", block_rows=10)
    real, calls = engine.logmatmulexp_report, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "logmatmulexp_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        multiply(a, b, out, block_rows=10)
    monkeypatch.undo()
    current = ResumeRecord.load(record_path(out))
    assert current is not None and partial_path(out).exists()
    lines = record_path(out).read_text().splitlines()
    assert json.loads(lines[0])["version"] == 2 and len(lines) == 1 + len(current.done)
    done = sorted(current.done)
    assert done                      # blocks were stored before the interruption
    record_path(out).write_text(json.dumps({"version": 1, "fingerprint": current.fingerprint,
                                            "plan": current.plan, "done": done}))

    # logmm info lists the partial output beside an output of that name, with progress
    with h5py.File(out, "w") as f:
        f["data"] = np.zeros((60, 5))
    info = CliRunner().invoke(cli, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    part = json.loads(info.stdout)["temporaries"][0]
    assert part["kind"] == "partial"
    assert (part["blocks_done"], part["blocks_total"]) == (len(done), 6)
    out.unlink()

    result = multiply(a, b, out, block_rows=10, resume=True)
    assert result.resumed_blocks == len(done)
    with h5py.File(out) as f, h5py.File(tmp_path / "ref.h5") as g:
        assert f["data"][...].tobytes() == g["data"][...].tobytes()
    assert not record_path(out).exists() and not partial_path(out).exists()
