"""Messages about formats that a user reads when a file is not what logmm can use: an
HDF5 file held locked by a writer elsewhere, and ``.npz`` as an output. Real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_run import listing, one_error_line, run_logmm

HOLD = """
import sys, time, h5py
f = h5py.File(sys.argv[1], "a")        # a writer: HDF5 locks the file against readers
print("holding", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("command", ["multiply", "info"])
def test_an_hdf5_file_locked_by_a_writer_is_named_as_locked(tmp_path: Path, command: str):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["a"] = np.zeros((3, 3))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "a.h5")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        args = (["multiply", f"{tmp_path}/a.h5:/a", f"{tmp_path}/a.h5:/a", "-o",
                 tmp_path / "c.npy"] if command == "multiply" else ["info", tmp_path / "a.h5"])
        before = listing(tmp_path)
        message = one_error_line(run_logmm(*args), codes=(1,))
        assert listing(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
    assert message.startswith(f"{tmp_path}/a.h5 is locked by another process")
    assert "HDF5_USE_FILE_LOCKING=FALSE" in message


def test_npz_is_read_only_in_both_messages(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    unknown = one_error_line(run_logmm("multiply", tmp_path / "a.npy", tmp_path / "a.npy",
                                       "-o", tmp_path / "c.txt"), codes=(2,))
    npz = one_error_line(run_logmm("multiply", tmp_path / "a.npy", tmp_path / "a.npy",
                                   "-o", tmp_path / "c.npz"), codes=(2,))
    written = unknown.split("end in one of ")[1].split(" (")[0]
    assert ".npz" not in written and "npz: sparse matrices, read only" in unknown
    assert "does not write .npz" in npz and "sparse inputs only" in npz
