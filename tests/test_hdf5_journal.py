"""The redo journal under an existing HDF5 file's structural changes (logmm.io.hdf5_journal):
writes kept while journaling (the file untouched, reads see them), committed whole; a
journal replayed twice gives the same bytes; a torn or corrupted one is discarded."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from logmm.io import hdf5_journal
from logmm.io.hdf5_journal import JournaledFile, interrupted_change, replay_journal
from logmm.io.layout import journal_file


def test_writes_are_kept_until_the_journal_ends(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    f = JournaledFile(path)
    with f.journal():
        f.seek(8)
        f.write(b"abcd")                       # past the end
        f.truncate(11)                         # cut again
        f.seek(2)
        f.write(b"XY")
        assert path.read_bytes() == b"0123456789"       # the file untouched meanwhile
        buf = bytearray(20)
        f.seek(0)
        assert f.readinto(buf) == 11 and bytes(buf[:11]) == b"01XY4567abc"
    assert path.read_bytes() == b"01XY4567abc" and not journal_file(path).exists()
    f.close()


def test_an_h5py_file_through_it_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f["keep"] = np.arange(5.0)
    wrapper = JournaledFile(path)
    with h5py.File(wrapper, "r+") as f:
        with wrapper.journal():
            f["g/new"] = np.ones((3, 2))
            f.flush()
            np.testing.assert_array_equal(f["g/new"][...], np.ones((3, 2)))
        with wrapper.journal():
            pass
    wrapper.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["keep"][...], np.arange(5.0))
        np.testing.assert_array_equal(f["g/new"][...], np.ones((3, 2)))


class _Killed(Exception):
    """Stands for a kill -9 between the journal's fsync and its first write to the file."""


@pytest.mark.parametrize("damage", ["none", "cut", "flipped"])
def test_a_journal_is_replayed_or_discarded(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"A" * 100)
    f = JournaledFile(path)
    with f.journal():
        f.seek(10)
        f.write(b"B" * 20)
        f.seek(120)
        f.write(b"C" * 5)
    f.close()
    after = path.read_bytes()
    assert after == b"A" * 10 + b"B" * 20 + b"A" * 70 + bytes(20) + b"C" * 5
    # a journal as a kill before applying it leaves it: the apply never happens
    path.write_bytes(b"A" * 100)
    g = JournaledFile(path)

    def killed(*args: object) -> None:
        raise _Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hdf5_journal, "_apply", killed)
        with pytest.raises(_Killed), g.journal():
            g.seek(10)
            g.write(b"B" * 20)
            g.seek(120)
            g.write(b"C" * 5)
    g.close()
    assert path.read_bytes() == b"A" * 100
    journal = journal_file(path)
    blob = journal.read_bytes()
    if damage == "cut":
        journal.write_bytes(blob[:-10])
    elif damage == "flipped":
        journal.write_bytes(blob[:20] + bytes([blob[20] ^ 1]) + blob[21:])
    assert (interrupted_change(path) is not None) == (damage == "none")
    assert replay_journal(path) == (damage == "none")
    assert not journal.exists()
    assert path.read_bytes() == (after if damage == "none" else b"A" * 100)
    if damage == "none":                  # applied again (a kill while replaying): same bytes
        journal.write_bytes(blob)
        assert replay_journal(path) and path.read_bytes() == after
