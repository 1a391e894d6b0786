"""Sparse CSR matrices: how logmm recognises one, and :class:`SparseReader`.

A scipy ``.npz`` (``scipy.sparse.save_npz``; loaded whole, other formats converted to
CSR), or an HDF5/Zarr group holding the CSR arrays ``data``, ``indices`` and ``indptr``
with a ``shape`` attribute of two ints (anndata's ``encoding-type: csr_matrix`` and
h5sparse's ``h5sparse_format``/``h5sparse_shape`` attributes are understood too).

:func:`sparse_group` is asked first, by :func:`logmm.io.readers.open_array`: it says
whether an address names such a group (or a file whose root is one), and which; only
then is a reader constructed, dense or sparse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError, LogmmError
from . import hdf5
from . import zarr as zarr_io
from .addresses import ArrayAddress
from .base import MAX_LISTED, ArrayReader, dtype_name, one_line, shape_text
from .compression import ensure_hdf5_filters

__all__ = ["SparseReader", "looks_sparse", "sparse_group"]

#: attributes that name a sparse group's format (logmm/scipy style, anndata, h5sparse)
_FORMAT_ATTRS = ("format", "encoding-type", "h5sparse_format")
_SHAPE_ATTRS = ("shape", "h5sparse_shape")
_CSR_ARRAYS = ("data", "indices", "indptr")


class SparseReader(ArrayReader):
    """A CSR sparse matrix: a scipy ``.npz`` or an HDF5/Zarr group (use :func:`open_array`
    with ``sparse=True``).

    ``read_rows(start, stop)`` returns a :class:`scipy.sparse.csr_matrix` of those rows.
    For HDF5 and Zarr it reads ``indptr[start:stop + 1]`` and then only the range of
    ``data`` and ``indices`` those rows use, checking on the way that ``indptr`` does not
    decrease and that the column indices lie in range (:class:`FormatError` otherwise), so
    no read touches the whole matrix. A ``.npz`` is loaded whole when opened (a zip
    archive has no partial reads); a CSC, COO, BSR or DIA ``.npz`` is converted to CSR
    then (``converted_from`` names the stored format).

    Attributes
    ----------
    shape : (int, int)
        From the group's ``shape`` attribute (or the ``.npz``).
    dtype : numpy.dtype
        Of the stored values (``data``).
    nnz : int
        Stored entries.
    chunks : None
        Sparse rows have no fixed storage chunks.
    """

    def __init__(self, address: ArrayAddress) -> None:
        self._file: Any = None
        self._closed = False
        self.converted_from: str | None = None
        self._names = _CSR_ARRAYS
        self._data: Any = None
        self._indices: Any = None
        self._indptr: Any = None
        self._decodes = False
        opener = self._OPENERS.get(address.format)
        if opener is None:
            raise InputError(f"{address}: a .{address.format} file cannot hold a sparse matrix")
        shape = opener(self, address)
        try:
            dtype = _check_layout(address, shape, self._data, self._indices, self._indptr)
        except BaseException:
            self.close()
            raise
        super().__init__(address, shape, dtype, None)

    # -- opening
    def _open_npz(self, address: ArrayAddress) -> tuple[int, int]:
        import scipy.sparse as sp

        try:
            matrix = sp.load_npz(address.path)
        except (ValueError, KeyError, OSError, EOFError) as exc:
            raise FormatError(_npz_problem(address.path, exc)) from None
        except Exception as exc:  # zipfile.BadZipFile and friends
            raise FormatError(f"{address.path}: not a readable .npz file "
                              f"({one_line(exc)})") from None
        if matrix.format != "csr":
            self.converted_from = matrix.format
            matrix = matrix.tocsr()
        self._data, self._indices, self._indptr = matrix.data, matrix.indices, matrix.indptr
        return (int(matrix.shape[0]), int(matrix.shape[1]))

    def _open_hdf5(self, address: ArrayAddress) -> tuple[int, int]:
        import h5py

        try:
            self._file = h5py.File(address.path, "r")
        except OSError as exc:
            raise hdf5.hdf5_open_error(address.path, exc) from None
        try:
            group = self._file[address.dataset] if address.dataset else self._file
            arrays = _csr_arrays(address, hdf5.members(group), dict(group.attrs))
            self._data, self._indices, self._indptr = (group[n] for n in arrays)
            self._names = arrays
            shape = _csr_shape(address, dict(group.attrs))
            ensure_hdf5_filters(self._data, f"{address} data")
            self._decodes = self._data.id.get_create_plist().get_nfilters() > 0
            hdf5.track_reader(self)
        except BaseException:
            self.close()
            raise
        return shape

    def release_handle(self) -> bool:
        """As :meth:`HDF5Reader.release_handle`, for a CSR group of an HDF5 file."""
        if self._file is None:
            return False
        self._file.close()
        self._file = None
        return True

    def rebind(self, file: Any | None) -> None:
        """As :meth:`HDF5Reader.rebind`, for a CSR group of an HDF5 file."""
        import h5py

        if self._closed:
            return
        if file is None:
            self._file = file = h5py.File(self.address.path, "r")
        group = file[self.address.dataset] if self.address.dataset else file
        self._data, self._indices, self._indptr = (group[n] for n in self._names)

    def _open_zarr(self, address: ArrayAddress) -> tuple[int, int]:
        root = zarr_io.open_root(address.path)
        try:
            group = root[address.dataset] if address.dataset else root
            members = zarr_io.members(group)
        except LogmmError:
            raise
        except Exception as exc:
            raise FormatError(f"{address}: not a readable Zarr group ({one_line(exc)})") from None
        arrays = _csr_arrays(address, members, dict(group.attrs))
        self._data, self._indices, self._indptr = (members[n] for n in arrays)
        self._decodes = True
        return _csr_shape(address, dict(group.attrs))

    _OPENERS: dict[str, Callable[[SparseReader, ArrayAddress], tuple[int, int]]] = {
        "npz": _open_npz, "hdf5": _open_hdf5, "zarr": _open_zarr}

    # -- interface
    @property
    def is_sparse(self) -> bool:
        """True: ``read_rows`` returns CSR row blocks."""
        return True

    @property
    def nnz(self) -> int:
        """Stored entries (explicit zeros included)."""
        return int(self._data.shape[0])

    @property
    def nbytes(self) -> int:
        """Size of the stored CSR arrays (data, indices, indptr) in bytes."""
        return sum(int(a.shape[0]) * np.dtype(a.dtype).itemsize
                   for a in (self._data, self._indices, self._indptr))

    @property
    def decodes_chunks(self) -> bool:
        """Reads decode HDF5/Zarr chunks of the CSR arrays."""
        return self._decodes

    def read_rows(self, start: int, stop: int, *, allow_view: bool = False) -> Any:
        """Rows ``start:stop`` as a :class:`scipy.sparse.csr_matrix` (``allow_view`` is
        ignored).

        Raises
        ------
        FormatError
            Unreadable storage, an ``indptr`` that decreases or leaves the data, or a
            column index out of range.
        """
        import scipy.sparse as sp

        n_rows, n_cols = self.shape
        start, stop = max(0, int(start)), min(n_rows, int(stop))
        stop = max(start, stop)
        where = f"{self.address}, rows {start}:{stop}"
        try:
            ptr = np.asarray(self._indptr[start:stop + 1]).astype(np.int64)
            lo, hi = int(ptr[0]), int(ptr[-1])
            if lo < 0 or hi > self.nnz or np.any(np.diff(ptr) < 0):
                raise FormatError(f"{where}: indptr decreases or points outside the "
                                  f"{self.nnz} stored entries; the CSR data is corrupt")
            data = np.asarray(self._data[lo:hi])
            indices = np.asarray(self._indices[lo:hi])
        except LogmmError:
            raise
        except Exception as exc:  # the storage libraries raise many kinds on bad data
            raise FormatError(f"{where}: cannot read ({one_line(exc)}); the file may be "
                              "corrupt or truncated") from exc
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_cols):
            raise FormatError(f"{where}: column indices run from {int(indices.min())} to "
                              f"{int(indices.max())}, outside 0:{n_cols}; the CSR data is "
                              "corrupt")
        index_dtype = np.int32 if max(n_cols, hi - lo) < 2**31 else np.int64
        return sp.csr_matrix((data, indices.astype(index_dtype, copy=False),
                              (ptr - lo).astype(index_dtype)), shape=(stop - start, n_cols))

    def read_region(self, row_start: int, row_stop: int, col_start: int,
                    col_stop: int) -> Any:
        """Rows and columns of the matrix, as a CSR matrix."""
        return self.read_rows(row_start, row_stop)[:, int(col_start):int(col_stop)]

    def read_all(self) -> Any:
        """The whole matrix, as a CSR matrix."""
        return self.read_rows(0, self.shape[0])

    def close(self) -> None:
        """Close the file holding the CSR arrays."""
        self._closed = True
        f, self._file = self._file, None
        if f is not None:
            f.close()

    def __repr__(self) -> str:
        return (f"<SparseReader {self.address} shape={self.shape} dtype={self.dtype} "
                f"nnz={self.nnz}>")


def _format_attr(attrs: dict[str, Any]) -> tuple[str, str] | None:
    """``(attribute, value)`` of the first sparse-format attribute, or None."""
    for key in _FORMAT_ATTRS:
        if key in attrs:
            value = attrs[key]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return key, str(value)
    return None


def looks_sparse(members: dict[str, Any], attrs: dict[str, Any], *, root: bool) -> bool:
    """Whether a group is meant as a sparse matrix. A named group is when it has
    ``indices`` or ``indptr``, a format or shape attribute; a file's root only when it
    has a format attribute or all three CSR arrays (a root holding ``data`` and other
    arrays is an ordinary file, e.g. a logmm output)."""
    if _format_attr(attrs) is not None:
        return True
    if root:
        return all(name in members for name in _CSR_ARRAYS)
    return bool({"indices", "indptr"} & set(members)) or any(k in attrs for k in _SHAPE_ATTRS)


def _csr_arrays(address: ArrayAddress, members: dict[str, Any],
                attrs: dict[str, Any]) -> tuple[str, str, str]:
    """The names of a CSR group's arrays, or an :class:`InputError` saying why it is not
    one."""
    fmt = _format_attr(attrs)
    if fmt is not None:
        kind = fmt[1].lower().removesuffix("_matrix").removesuffix("_array")
        if kind != "csr":
            raise InputError(f"{address} holds a sparse matrix in {fmt[1]!r} format "
                             f"(attribute {fmt[0]}); logmm reads CSR groups only (convert "
                             "with scipy: M.tocsr())")
    missing = [name for name in _CSR_ARRAYS if name not in members]
    if missing:
        raise InputError(f"{address} is not a CSR group: no {', '.join(missing)} array; a "
                         "CSR group holds data, indices and indptr arrays and a 'shape' "
                         "attribute")
    return _CSR_ARRAYS


def _csr_shape(address: ArrayAddress, attrs: dict[str, Any]) -> tuple[int, int]:
    """The ``shape`` attribute of a CSR group as two ints."""
    key = next((k for k in _SHAPE_ATTRS if k in attrs), None)
    if key is None:
        raise InputError(f"{address} is not a CSR group: no 'shape' attribute (rows, "
                         "columns)")
    value = attrs[key]
    try:
        shape = tuple(int(s) for s in np.asarray(value).ravel())
        if len(shape) != 2 or any(s < 0 for s in shape) or np.asarray(value).dtype.kind == "f":
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"{address}: the '{key}' attribute is {value!r}; a CSR group needs "
                         "two non-negative integers (rows, columns)") from None
    return shape  # type: ignore[return-value]


def _npz_problem(path: Path, exc: BaseException) -> str:
    """Why ``scipy.sparse.load_npz`` failed, as one line."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
    except Exception:
        return f"{path}: not a readable .npz file ({one_line(exc)})"
    if "format" not in names:
        shown = ", ".join(names[:MAX_LISTED]) or "nothing"
        return (f"{path} is not a scipy.sparse .npz (it holds {shown}); save sparse "
                "matrices with scipy.sparse.save_npz, dense arrays as .npy")
    return f"{path}: not a readable scipy.sparse .npz ({one_line(exc)})"


def _check_layout(address: ArrayAddress, shape: tuple[int, int], data: Any, indices: Any,
                  indptr: Any) -> np.dtype:
    """Metadata checks of a CSR group, plus the first and last entries of ``indptr`` (two
    reads); the dtype of its values."""
    where = str(address)
    for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
        if len(arr.shape) != 1:
            raise FormatError(f"{where}: CSR {name} must be 1-D, not shape "
                              f"{shape_text(tuple(arr.shape))}")
    try:
        dtype = np.dtype(data.dtype)
    except TypeError as exc:
        raise InputError(f"{where}: unsupported data type ({one_line(exc)})") from None
    for name, arr in (("indices", indices), ("indptr", indptr)):
        if np.dtype(arr.dtype).kind not in "iu":
            raise FormatError(f"{where}: CSR {name} must hold integers, not "
                              f"{dtype_name(np.dtype(arr.dtype))}")
    n_rows = shape[0]
    if indptr.shape[0] != n_rows + 1:
        raise FormatError(f"{where}: indptr has {indptr.shape[0]} entries; a CSR matrix "
                          f"with {n_rows} rows needs {n_rows + 1}")
    if data.shape[0] != indices.shape[0]:
        raise FormatError(f"{where}: data has {data.shape[0]} entries but indices has "
                          f"{indices.shape[0]}; they must match")
    try:
        first, last = int(indptr[0]), int(indptr[n_rows])
    except Exception as exc:
        raise FormatError(f"{where}: cannot read indptr ({one_line(exc)})") from None
    if first != 0 or last != data.shape[0]:
        raise FormatError(f"{where}: indptr runs from {first} to {last}; a CSR matrix "
                          f"with {data.shape[0]} stored entries needs 0 to "
                          f"{data.shape[0]}")
    return dtype


# ----------------------------------------------------------------------------- detection


def sparse_group(address: ArrayAddress) -> ArrayAddress | None:
    """The sparse matrix ``address`` names, or None when it names none (a dense array, or
    a file that cannot be read: the dense reader then says what is wrong).

    A ``.npz`` is always one. In HDF5 and Zarr: a named group that looks sparse
    (:func:`looks_sparse`); with no dataset named, a root that looks sparse, or else a
    file whose only arrays are one group's ``data``, ``indices`` and ``indptr``.
    """
    if address.format == "npz":
        return address
    detect = _DETECTORS.get(address.format)
    if detect is None:
        return None
    try:
        return detect(address)
    except Exception:  # noqa: BLE001 - unreadable: the dense reader reports it
        return None


def _hdf5_group(address: ArrayAddress) -> ArrayAddress | None:
    import h5py

    with h5py.File(address.path, "r") as f:
        if address.dataset is None:
            return _root_group(address, hdf5.members(f), dict(f.attrs),
                               hdf5.dataset_names(f))
        try:
            node = f.get(address.dataset)
        except Exception:  # a path through a dataset, a broken link, ...
            return None
        if node is None or isinstance(node, h5py.Dataset):
            return None
        return address if looks_sparse(hdf5.members(node), dict(node.attrs), root=False) else None


def _zarr_group(address: ArrayAddress) -> ArrayAddress | None:
    import zarr

    root = zarr_io.open_root(address.path)
    if not isinstance(root, zarr.Group):
        return None
    if address.dataset is None:
        return _root_group(address, zarr_io.members(root), dict(root.attrs),
                           zarr_io.array_names(root))
    try:
        node = root[address.dataset]
    except KeyError:
        return None
    if not isinstance(node, zarr.Group):
        return None
    return address if looks_sparse(zarr_io.members(node), dict(node.attrs), root=False) else None


def _root_group(address: ArrayAddress, members: dict[str, Any], attrs: dict[str, Any],
                names: list[str]) -> ArrayAddress | None:
    """A file named without a dataset: its root when that looks sparse, or the one group
    whose ``data``, ``indices`` and ``indptr`` are the file's only arrays."""
    if looks_sparse(members, attrs, root=True):
        return address.with_dataset(None)
    parents = {name.rpartition("/")[0] for name in names}
    if (len(parents) == 1 and len(names) == 3
            and {name.rpartition("/")[2] for name in names} == set(_CSR_ARRAYS)):
        return address.with_dataset(parents.pop() or None)
    return None


_DETECTORS: dict[str, Callable[[ArrayAddress], ArrayAddress | None]] = {
    "hdf5": _hdf5_group, "zarr": _zarr_group}
