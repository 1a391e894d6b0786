"""Rows of a partial HDF5 output written by other processes (``--scheduler dask`` tasks).

HDF5 allows one writing process per file. A dask task therefore writes its block into
the hidden partial file under a cluster-wide :class:`distributed.Lock` named after the
file: open ``r+``, write, close (the data are on disk when the lock is released), while
the process that runs the job holds the file closed (:meth:`ArrayWriter.lent
<logmm.io.base.ArrayWriter.lent>`). Only the task's block index and summary travel back.
A worker that dies holding the lock keeps it until its lease times out (5 s on logmm's own
LocalCluster, dask's 30 s elsewhere unless configured: see docs/scaling.md).

Measured against per-task part files joined by a virtual dataset (docs/scaling.md,
"Measured on this machine"): the lock costs a scheduler round trip and an open/close per
block and serialises the writes, which the filesystem serialises anyway; part files
would leave a virtual dataset over many files where the user asked for one file, or a
copy of all of C by this process to join them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LockedHDF5Rows"]


class LockedHDF5Rows:
    """``obj[rows, cols] = block`` into dataset ``dataset`` of the HDF5 file ``path``,
    under the cluster lock of that file; picklable (path and names only). Write from a
    dask task's own thread: the lock finds its worker (and scheduler) there."""

    #: a task writes its block in one piece: each write takes the lock and reopens the file
    pieces = 1

    def __init__(self, path: Path, dataset: str) -> None:
        self.path, self.dataset = Path(path), dataset

    @property
    def lock_name(self) -> str:
        """The cluster-wide lock of the file."""
        return f"logmm-hdf5-{self.path}"

    def __setitem__(self, key: Any, block: np.ndarray) -> None:
        import distributed
        import h5py

        with distributed.Lock(self.lock_name), \
                h5py.File(self.path, "r+", rdcc_nbytes=0) as f:
            f[self.dataset][key] = block
