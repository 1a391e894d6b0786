"""Readers for npy / HDF5 / Zarr arrays behind one block-read interface.

Every reader has ``shape``, ``dtype``, ``ndim``, ``chunks`` (the storage chunk shape, or
None for contiguous storage), ``chunk_rows`` (rows per storage chunk, or None),
``is_sparse``, ``read_rows(start, stop)``, ``read_all()`` and ``close()``, and is a context
manager. Opening validates the file and reads only metadata; data is read only when asked
for.

Sparse matrices (:class:`SparseReader`, from ``open_array(address, sparse=True)``): a
scipy ``.npz`` (``scipy.sparse.save_npz``; loaded whole, other formats converted to CSR),
or an HDF5/Zarr group holding the CSR arrays ``data``, ``indices`` and ``indptr`` with a
``shape`` attribute of two ints (anndata's ``encoding-type: csr_matrix`` and h5sparse's
``h5sparse_format``/``h5sparse_shape`` attributes are understood too). Their
``read_rows`` returns a :class:`scipy.sparse.csr_matrix` of those rows, reading only the
slice of ``indptr`` and then the range of ``data`` and ``indices`` the rows use.

Problems come out as one-line :class:`~logmm.errors.LogmmError` subclasses:
a missing file or dataset is :class:`MissingInputError` (the message lists the arrays the
file holds), a file that is not what its name promises is :class:`FormatError`, and
:func:`require_matrix` raises :class:`InputError` for non-numeric or non-2-D arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import FormatError, InputError, LogmmError, MissingInputError
from . import hdf5
from . import zarr as zarr_io
from .addresses import ArrayAddress, parse_address
from .base import ArrayReader, dtype_name, shape_text
from .hdf5 import HDF5Reader, hdf5_open_error, missing_virtual_sources, release_hdf5_readers
from .npy import NpyReader
from .sparse import SparseReader, sparse_group
from .zarr import ZarrReader
from .zarr import open_root as open_zarr_root

__all__ = [
    "ArrayReader",
    "HDF5Reader",
    "NpyReader",
    "SparseReader",
    "ZarrReader",
    "hdf5_open_error",
    "list_arrays",
    "missing_virtual_sources",
    "open_array",
    "open_zarr_root",
    "release_hdf5_readers",
    "require_matrix",
]

#: the dense reader of each format (``.npz`` holds sparse matrices only)
_READERS: dict[str, Callable[[ArrayAddress], ArrayReader]] = {
    "npy": NpyReader,
    "hdf5": HDF5Reader,
    "zarr": ZarrReader,
}

#: ``list_arrays`` of each container format (``.npy`` and ``.npz`` hold one array)
_LISTERS: dict[str, Callable[[Path], list[str]]] = {
    "hdf5": hdf5.list_arrays,
    "zarr": zarr_io.list_arrays,
}


def open_array(address: str | Path | ArrayAddress, *, sparse: bool = False) -> ArrayReader:
    """Open the array at ``address`` for block reads (metadata only is read here).

    Parameters
    ----------
    address : str, Path or ArrayAddress
        ``x.npy``, ``x.h5:/group/name`` or ``x.zarr:group/name``; without a dataset part
        a file holding exactly one array uses it. With ``sparse``, also ``x.npz``
        (``scipy.sparse.save_npz``) and an HDF5/Zarr group (or a file whose root is one)
        holding CSR ``data``, ``indices``, ``indptr`` and a ``shape`` attribute.
    sparse : bool
        Accept sparse matrices (a :class:`SparseReader`, whose ``read_rows`` returns
        CSR matrices). Without it a sparse input is an :class:`InputError`, so engines
        that read dense blocks never meet one.

    Raises
    ------
    MissingInputError
        No such file, or no such dataset (the message lists the arrays the file holds).
    FormatError
        The file is not a valid file of the format its extension names, or its CSR
        arrays are inconsistent.
    InputError
        A sparse input without ``sparse``; a group that looks sparse but is not CSR
        (another format, or ``indptr``, ``indices``, ``data`` or ``shape`` missing).
    UsageError
        The address has an unknown extension.
    """
    addr = parse_address(address)
    path = addr.path
    if not path.exists():
        raise MissingInputError(f"no such file: {path}")
    if addr.format == "zarr":
        if not path.is_dir():
            raise FormatError(f"{path}: a .zarr store must be a directory")
    elif path.is_dir():
        raise FormatError(f"{path} is a directory, not a .{path.suffix.lstrip('.')} file")
    if not os.access(path, os.R_OK):
        raise LogmmError(f"permission denied: {path}")
    target = sparse_group(addr)          # detect first, then construct
    if target is None:
        return _READERS[addr.format](addr)
    addr = target
    if not sparse:
        raise InputError(f"{addr} holds a sparse matrix; this command needs a dense array "
                         "(logmm project reads sparse inputs)")
    return SparseReader(addr)


def list_arrays(path: str | Path | ArrayAddress) -> list[str]:
    """Names of the arrays a file holds (``["/g/a", ...]`` for HDF5, ``["g/a"]`` for Zarr).

    Raises
    ------
    MissingInputError, FormatError
        As :func:`open_array`.
    """
    addr = parse_address(path).with_dataset(None)
    if not addr.path.exists():
        raise MissingInputError(f"no such file: {addr.path}")
    lister = _LISTERS.get(addr.format)
    return lister(addr.path) if lister is not None else [""]


def require_matrix(reader: ArrayReader, role: str) -> None:
    """Check that ``reader`` holds a 2-D real numeric array (``role`` names it: "A", "B").

    Integers and booleans are accepted (they are converted to float64); complex, strings,
    objects and structured dtypes are not.

    Raises
    ------
    InputError
        Wrong number of dimensions or a non-numeric dtype.
    """
    dtype = reader.dtype
    if dtype.kind not in "biuf":
        raise InputError(
            f"{role} ({reader.address}) has dtype {dtype_name(dtype)}; "
            "logmm needs real numbers (float32 or float64; integers are converted)"
        )
    if reader.ndim != 2:
        raise InputError(
            f"{role} ({reader.address}) is {reader.ndim}-D with shape {shape_text(reader.shape)}; "
            "a 2-D matrix is needed"
        )
