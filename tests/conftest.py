"""Shared test configuration: hypothesis profiles and a helper that writes arrays to files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, max_examples=50, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def save_array(address: str | Path, arr: np.ndarray, *, chunk_rows: int | None = None) -> str:
    """Write ``arr`` to ``path.npy``, ``path.h5[:/name]`` or ``path.zarr[:name]`` (test helper).

    HDF5 and Zarr files get the dataset named in the address (default ``x``), appended to
    the file or store when it exists. Returns the address as a string.
    """
    import h5py
    import zarr

    text = str(address)
    if ".npy" in text:
        np.save(text, arr)
        return text
    if ".h5" in text or ".hdf5" in text:
        path, _, name = text.partition(":")
        with h5py.File(path, "a") as f:
            chunks = (chunk_rows,) + arr.shape[1:] if chunk_rows else None
            f.create_dataset(name.strip("/") or "x", data=arr, chunks=chunks)
        return text
    path, _, name = text.partition(":")
    group = zarr.open_group(path, mode="a")
    chunks = (chunk_rows,) + arr.shape[1:] if chunk_rows else "auto"
    z = group.create_array(name or "x", shape=arr.shape, dtype=arr.dtype, chunks=chunks)
    z[...] = arr
    return text


@pytest.fixture
def save() -> Callable[..., str]:
    """The :func:`save_array` helper, as a fixture."""
    return save_array


@pytest.fixture(scope="session")
def process_cluster():
    """A ``distributed.LocalCluster`` of 2 single-threaded worker *processes*, started once
    for the session (~2 s a start): test_dask_api.py and test_dask_runner.py share it. A
    test that changes it (scales it, kills or slows workers) puts it back to 2 plain
    workers before it ends; a test that needs a fresh cluster starts its own."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50,
                                  scheduler_kwargs={"dashboard_address": ":0"}) as cluster:
        yield cluster
