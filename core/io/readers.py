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

import mmap
import os
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import FormatError, InputError, LogmmError, MissingInputError
from .addresses import ArrayAddress, parse_address
from .compression import ensure_hdf5_filters

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
    "require_matrix",
]

_MAX_LISTED = 20


class ArrayReader:
    """Common interface of the readers (use :func:`open_array` to get one).

    Attributes
    ----------
    address : ArrayAddress
        Where the array lives (with the dataset resolved when the file holds one array).
    shape : tuple of int
    dtype : numpy.dtype
        The stored dtype; reads return arrays of this dtype.
    chunks : tuple of int or None
        Storage chunk shape, None when stored contiguously.
    """

    address: ArrayAddress
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def chunk_rows(self) -> int | None:
        """Rows per storage chunk (the natural unit of row reads), or None."""
        if not self.chunks or self.ndim == 0:
            return None
        return int(self.chunks[0])

    @property
    def decodes_chunks(self) -> bool:
        """Reads go through per-chunk decode buffers (Zarr; filtered HDF5 datasets)."""
        return False

    @property
    def is_sparse(self) -> bool:
        """``read_rows`` returns a scipy.sparse CSR matrix (:class:`SparseReader`)."""
        return False

    @property
    def nbytes(self) -> int:
        """Size of the whole array in memory, in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read_rows(self, start: int, stop: int, *, allow_view: bool = False) -> np.ndarray:
        """Rows ``start:stop`` as an in-memory C-contiguous array of ``dtype``.

        With ``allow_view``, a reader that can (``.npy``) returns a read-only view of its
        memory map instead of a copy, after asking the OS to read those pages ahead.

        Raises
        ------
        FormatError
            The stored data cannot be read (corrupt or truncated file).
        """
        if self.ndim == 0:
            raise InputError(f"{self.address} is a scalar; it has no rows")
        start, stop = max(0, int(start)), min(self.shape[0], int(stop))
        stop = max(start, stop)
        if allow_view and (view := self._view_rows(start, stop)) is not None:
            return view
        try:
            block = self._read(slice(start, stop))
        except LogmmError:
            raise
        except Exception as exc:  # the storage libraries raise many kinds on bad data
            raise FormatError(
                f"{self.address}: cannot read rows {start}:{stop} ({_one_line(exc)}); "
                "the file may be corrupt or truncated"
            ) from exc
        return np.ascontiguousarray(block)

    def read_region(self, row_start: int, row_stop: int, col_start: int,
                    col_stop: int) -> np.ndarray:
        """Rows ``row_start:row_stop`` and columns ``col_start:col_stop`` of a 2-D array,
        in memory and C-contiguous."""
        if self.ndim != 2:
            raise InputError(f"{self.address} is {self.ndim}-D; a region needs a 2-D array")
        key = (slice(int(row_start), int(row_stop)), slice(int(col_start), int(col_stop)))
        try:
            block = self._read(key)
        except LogmmError:
            raise
        except Exception as exc:
            raise FormatError(
                f"{self.address}: cannot read rows {row_start}:{row_stop}, columns "
                f"{col_start}:{col_stop} ({_one_line(exc)}); the file may be corrupt or "
                "truncated"
            ) from exc
        return np.ascontiguousarray(block)

    def read_all(self) -> np.ndarray:
        """The whole array in memory."""
        if self.ndim == 0:
            try:
                return np.asarray(self._read(()))
            except Exception as exc:
                raise FormatError(f"{self.address}: cannot read ({_one_line(exc)})") from exc
        return self.read_rows(0, self.shape[0])

    def close(self) -> None:
        """Release the file handle (idempotent)."""

    def _view_rows(self, start: int, stop: int) -> np.ndarray | None:
        """A zero-copy view of rows ``start:stop``, or None where the format has none."""
        return None

    def _read(self, key: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> ArrayReader:
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the absolute address: another process (a dask worker) reopens the file
        there, once (see :func:`logmm.dask_backend.reopen_reader`)."""
        from ..dask_backend import reopen_reader

        addr = self.address
        absolute = ArrayAddress(Path(addr.path).resolve(), addr.format, addr.dataset)
        return reopen_reader, (absolute, isinstance(self, SparseReader))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} shape={self.shape} dtype={self.dtype}>"


class NpyReader(ArrayReader):
    """A ``.npy`` file, memory-mapped read-only (nothing is read until asked for)."""

    def __init__(self, address: ArrayAddress) -> None:
        self.address = address
        path = address.path
        try:
            arr = np.lib.format.open_memmap(path, mode="r")
        except ValueError as exc:
            msg = str(exc)
            if "Python objects" in msg:
                raise InputError(
                    f"{path} holds Python objects, not numbers; logmm needs a numeric array"
                ) from None
            raise FormatError(f"{path}: not a valid .npy file ({_one_line(exc)})") from None
        except OSError as exc:
            raise FormatError(f"{path}: cannot open as .npy ({_one_line(exc)})") from None
        self._arr: np.ndarray | None = arr
        self._lent_views = False
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = arr.dtype
        self.chunks = None

    def _read(self, key: Any) -> np.ndarray:
        assert self._arr is not None, "reader is closed"
        return np.array(self._arr[key])

    def _view_rows(self, start: int, stop: int) -> np.ndarray | None:
        arr = self._arr
        mm = getattr(arr, "_mmap", None)
        if arr is None or mm is None or not arr.flags.c_contiguous or stop <= start:
            return None
        row_bytes = arr.strides[0]
        first = arr.offset + start * row_bytes
        page = mmap.PAGESIZE
        begin = first - first % page
        try:
            mm.madvise(mmap.MADV_WILLNEED, begin, first + (stop - start) * row_bytes - begin)
        except (AttributeError, OSError, ValueError):  # no madvise here: reads still work
            pass
        view = arr[start:stop]
        view.flags.writeable = False
        self._lent_views = True
        return view

    def close(self) -> None:
        arr, self._arr = self._arr, None
        mm = getattr(arr, "_mmap", None)
        # numpy's views keep the mmap object alive but not open: closing it under a view
        # handed out by read_rows(allow_view=True) would make reading that view crash the
        # process, so then the map is left for the garbage collector to close.
        if mm is not None and not self._lent_views:
            try:
                mm.close()
            except (BufferError, ValueError):  # views still alive elsewhere; GC will do it
                pass


def missing_virtual_sources(ds: Any, path: Path) -> list[tuple[Path, tuple[int, int] | None]]:
    """The source files of a virtual HDF5 dataset ``ds`` (in file ``path``) that do not
    exist, each with the rows ``(start, stop)`` of ``ds`` it maps (None: not a row range).

    Relative source names are taken from the directory of ``path``, as ``logmm merge``
    writes them. Reading such a dataset gives its fill value in those rows, silently.
    """
    missing: list[tuple[Path, tuple[int, int] | None]] = []
    for source in ds.virtual_sources():
        name = source.file_name
        if name == ".":                    # the dataset's own file
            continue
        where = Path(name) if Path(name).is_absolute() else path.parent / name
        if where.exists():
            continue
        try:
            (r0, *_), (r1, *_) = source.vspace.get_select_bounds()
            rows: tuple[int, int] | None = (int(r0), int(r1) + 1)
        except Exception:  # noqa: BLE001 - an empty or unusual selection: no rows to name
            rows = None
        missing.append((where, rows))
    return missing


def _check_virtual_sources(ds: Any, path: Path, address: ArrayAddress) -> None:
    """A virtual dataset (``logmm merge``) reads a missing source file as its fill value,
    silently; refuse instead, naming the file."""
    for where, _ in missing_virtual_sources(ds, path)[:1]:
        raise MissingInputError(f"{address} is a virtual dataset whose source file "
                                f"{where} is missing (shard files must stay beside the "
                                "merged file)")


#: the HDF5 readers (dense, and sparse groups) open in this process (see
#: :func:`release_hdf5_readers`)
_OPEN_HDF5: weakref.WeakSet[HDF5Reader | SparseReader] = weakref.WeakSet()


def release_hdf5_readers(path: str | Path) -> list[HDF5Reader | SparseReader]:
    """Close the read-only handles this process's open readers hold on the HDF5 file
    ``path`` and return those readers, to be given a handle again with
    :meth:`HDF5Reader.rebind`.

    A writer that adds a dataset to a file the run also reads from needs this: HDF5
    refuses to open a file for writing while the same process has it open read-only,
    but readers may share the writer's handle.
    """
    target = Path(path).resolve()
    found = []
    for reader in list(_OPEN_HDF5):
        if reader._file is not None and Path(reader.address.path).resolve() == target:
            reader._file.close()
            reader._file = None
            found.append(reader)
    return found


class HDF5Reader(ArrayReader):
    """A dataset in an HDF5 file, read with h5py."""

    def rebind(self, file: Any | None) -> None:
        """Read through ``file`` (an h5py File of the same path, held by a writer), or,
        with None, through a read-only handle of its own again."""
        import h5py

        if getattr(self, "_closed", False):
            return
        if file is None:
            try:
                self._file = h5py.File(self.address.path, "r")
            except OSError as exc:
                raise hdf5_open_error(self.address.path, exc) from None
            file = self._file
        self._ds = file[self.address.dataset]

    def __init__(self, address: ArrayAddress) -> None:
        import h5py

        path = address.path
        try:
            self._file: Any = h5py.File(path, "r")
        except OSError as exc:
            raise hdf5_open_error(path, exc) from None
        try:
            name = address.dataset
            if name is None:
                _signal_sparse_root(address, _hdf5_members(self._file), dict(self._file.attrs))
                names = _hdf5_arrays(self._file)
                _signal_single_csr_group(address, names)
                name = _only_array(address, names, "/")
            try:
                node = self._file.get(name)
            except Exception:  # a path through a dataset, a broken link, ...
                node = None
            if node is None:
                names = _hdf5_arrays(self._file)
                raise MissingInputError(_missing_message(address, names, "/"))
            if not isinstance(node, h5py.Dataset):
                _signal_sparse_group(address.with_dataset(name), _hdf5_members(node),
                                     dict(node.attrs))
                names = _hdf5_arrays(node)
                raise MissingInputError(
                    f"{address} is a group, not an array; "
                    + _holds(["/" + n for n in names] if names else [], prefix="it holds: ")
                )
            if node.shape is None:
                raise InputError(f"{address.with_dataset(name)} has an empty (null) dataspace")
            ensure_hdf5_filters(node, str(address.with_dataset(name)))  # zstd, blosc, ...
            if node.is_virtual:
                _check_virtual_sources(node, path, address.with_dataset(name))
            self._ds = node
            self.address = address.with_dataset(name)
            _OPEN_HDF5.add(self)
            self.shape = tuple(int(s) for s in node.shape)
            self.dtype = np.dtype(node.dtype)
            self.chunks = tuple(int(c) for c in node.chunks) if node.chunks else None
        except BaseException:
            self._file.close()
            raise

    def _read(self, key: Any) -> np.ndarray:
        return np.asarray(self._ds[key])

    @property
    def decodes_chunks(self) -> bool:
        return self._ds.id.get_create_plist().get_nfilters() > 0

    def close(self) -> None:
        self._closed = True
        _OPEN_HDF5.discard(self)
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None


class ZarrReader(ArrayReader):
    """An array in a Zarr directory store (v3; v2 readable)."""

    def __init__(self, address: ArrayAddress) -> None:
        import zarr

        path = address.path
        root = open_zarr_root(path)
        try:
            node = root
            name = address.dataset
            if isinstance(root, zarr.Group):
                if name is None:
                    _signal_sparse_root(address, _zarr_members(root), dict(root.attrs))
                    _signal_single_csr_group(address, _zarr_arrays(root))
                    name = _only_array(address, _zarr_arrays(root), "")
                try:
                    node = root[name]
                except KeyError:
                    raise MissingInputError(
                        _missing_message(address, _zarr_arrays(root), "")
                    ) from None
                if isinstance(node, zarr.Group):
                    _signal_sparse_group(address.with_dataset(name), _zarr_members(node),
                                         dict(node.attrs))
                    raise MissingInputError(
                        f"{address} is a group, not an array; "
                        + _holds([f"{name}/{n}" for n in _zarr_arrays(node)], prefix="it holds: ")
                    )
            elif name is not None:
                raise MissingInputError(
                    f"{address}: the store is a single array at its root; "
                    f"use {path} without ':{name}'"
                )
        except (LogmmError, _SparseGroup):
            raise
        except Exception as exc:
            raise FormatError(f"{address}: not a readable Zarr array ({_one_line(exc)})") from None
        self._arr = node
        self.address = address.with_dataset(name)
        self.shape = tuple(int(s) for s in node.shape)
        try:
            self.dtype = np.dtype(node.dtype)
        except TypeError as exc:
            raise InputError(f"{address}: unsupported Zarr data type ({_one_line(exc)})") from None
        shards = getattr(node, "shards", None)
        chunks = shards if shards else node.chunks
        self.chunks = tuple(int(c) for c in chunks) if chunks else None

    def _read(self, key: Any) -> np.ndarray:
        return np.asarray(self._arr[key])

    @property
    def decodes_chunks(self) -> bool:
        return True


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

    chunks = None

    def __init__(self, address: ArrayAddress) -> None:
        self.address = address
        self._file: Any = None
        self.converted_from: str | None = None
        if address.format == "npz":
            self._open_npz(address)
        elif address.format == "hdf5":
            self._open_hdf5(address)
        elif address.format == "zarr":
            self._open_zarr(address)
        else:
            raise InputError(f"{address}: a .{address.format} file cannot hold a sparse matrix")
        try:
            self._check_layout()
        except BaseException:
            self.close()
            raise

    # -- opening
    def _open_npz(self, address: ArrayAddress) -> None:
        import scipy.sparse as sp

        try:
            matrix = sp.load_npz(address.path)
        except (ValueError, KeyError, OSError, EOFError) as exc:
            raise FormatError(_npz_problem(address.path, exc)) from None
        except Exception as exc:  # zipfile.BadZipFile and friends
            raise FormatError(f"{address.path}: not a readable .npz file "
                              f"({_one_line(exc)})") from None
        if matrix.format != "csr":
            self.converted_from = matrix.format
            matrix = matrix.tocsr()
        self._data, self._indices, self._indptr = matrix.data, matrix.indices, matrix.indptr
        self.shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        self._decodes = False

    def _open_hdf5(self, address: ArrayAddress) -> None:
        import h5py

        try:
            self._file = h5py.File(address.path, "r")
        except OSError as exc:
            raise hdf5_open_error(address.path, exc) from None
        try:
            group = self._file[address.dataset] if address.dataset else self._file
            arrays = _csr_arrays(address, _hdf5_members(group), dict(group.attrs))
            self._data, self._indices, self._indptr = (group[n] for n in arrays)
            self._names = arrays
            self.shape = _csr_shape(address, dict(group.attrs))
            ensure_hdf5_filters(self._data, f"{address} data")
            self._decodes = self._data.id.get_create_plist().get_nfilters() > 0
            _OPEN_HDF5.add(self)
        except BaseException:
            self.close()
            raise

    def rebind(self, file: Any | None) -> None:
        """As :meth:`HDF5Reader.rebind`, for a CSR group of an HDF5 file."""
        import h5py

        if getattr(self, "_closed", False):
            return
        if file is None:
            self._file = file = h5py.File(self.address.path, "r")
        group = file[self.address.dataset] if self.address.dataset else file
        self._data, self._indices, self._indptr = (group[n] for n in self._names)

    def _open_zarr(self, address: ArrayAddress) -> None:
        root = open_zarr_root(address.path)
        try:
            group = root[address.dataset] if address.dataset else root
            members = _zarr_members(group)
        except LogmmError:
            raise
        except Exception as exc:
            raise FormatError(f"{address}: not a readable Zarr group ({_one_line(exc)})") from None
        arrays = _csr_arrays(address, members, dict(group.attrs))
        self._data, self._indices, self._indptr = (members[n] for n in arrays)
        self.shape = _csr_shape(address, dict(group.attrs))
        self._decodes = True

    def _check_layout(self) -> None:
        """Metadata checks, plus the first and last entries of ``indptr`` (two reads)."""
        where = str(self.address)
        data, indices, indptr = self._data, self._indices, self._indptr
        for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
            if len(arr.shape) != 1:
                raise FormatError(f"{where}: CSR {name} must be 1-D, not shape "
                                  f"{_shape(tuple(arr.shape))}")
        try:
            self.dtype = np.dtype(data.dtype)
        except TypeError as exc:
            raise InputError(f"{where}: unsupported data type ({_one_line(exc)})") from None
        for name, arr in (("indices", indices), ("indptr", indptr)):
            if np.dtype(arr.dtype).kind not in "iu":
                raise FormatError(f"{where}: CSR {name} must hold integers, not "
                                  f"{_dtype_name(np.dtype(arr.dtype))}")
        n_rows = self.shape[0]
        if indptr.shape[0] != n_rows + 1:
            raise FormatError(f"{where}: indptr has {indptr.shape[0]} entries; a CSR matrix "
                              f"with {n_rows} rows needs {n_rows + 1}")
        if data.shape[0] != indices.shape[0]:
            raise FormatError(f"{where}: data has {data.shape[0]} entries but indices has "
                              f"{indices.shape[0]}; they must match")
        try:
            first, last = int(indptr[0]), int(indptr[n_rows])
        except Exception as exc:
            raise FormatError(f"{where}: cannot read indptr ({_one_line(exc)})") from None
        if first != 0 or last != data.shape[0]:
            raise FormatError(f"{where}: indptr runs from {first} to {last}; a CSR matrix "
                              f"with {data.shape[0]} stored entries needs 0 to "
                              f"{data.shape[0]}")

    # -- interface
    @property
    def is_sparse(self) -> bool:
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
            raise FormatError(f"{where}: cannot read ({_one_line(exc)}); the file may be "
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
        self._closed = True
        _OPEN_HDF5.discard(self)
        f, self._file = getattr(self, "_file", None), None
        if f is not None:
            f.close()

    def __repr__(self) -> str:
        return (f"<SparseReader {self.address} shape={self.shape} dtype={self.dtype} "
                f"nnz={self.nnz}>")


def open_zarr_root(path: str | Path) -> Any:
    """The Zarr group or array at the root of a directory store, opened read-only.

    Raises
    ------
    FormatError
        Not a Zarr store, or one zarr cannot read.
    """
    import zarr

    try:
        return zarr.open(str(path), mode="r")
    except FileNotFoundError:  # includes zarr's NodeNotFoundError
        raise FormatError(
            f"{path}: not a Zarr store (no zarr.json, .zarray or .zgroup at its root)"
        ) from None
    except Exception as exc:
        raise FormatError(f"{path}: not a readable Zarr store ({_one_line(exc)})") from None


_READERS: dict[str, type[ArrayReader]] = {
    "npy": NpyReader,
    "hdf5": HDF5Reader,
    "zarr": ZarrReader,
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
    try:
        if addr.format == "npz":
            raise _SparseGroup(addr)
        return _READERS[addr.format](addr)
    except _SparseGroup as group:
        addr = group.address
    if not sparse:
        raise InputError(f"{addr} holds a sparse matrix; this command needs a dense array "
                         "(logmm project reads sparse inputs)")
    return SparseReader(addr)


class _SparseGroup(Exception):
    """Raised by the dense readers when the address names a sparse matrix's group."""

    def __init__(self, address: ArrayAddress) -> None:
        super().__init__(str(address))
        self.address = address


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
    if addr.format in ("npy", "npz"):
        return [""]
    if addr.format == "hdf5":
        import h5py

        try:
            with h5py.File(addr.path, "r") as f:
                return ["/" + n for n in _hdf5_arrays(f)]
        except OSError as exc:
            raise hdf5_open_error(addr.path, exc) from None
    import zarr

    try:
        root = zarr.open(str(addr.path), mode="r")
    except Exception as exc:
        raise FormatError(f"{addr.path}: not a readable Zarr store ({_one_line(exc)})") from None
    if isinstance(root, zarr.Group):
        return _zarr_arrays(root)
    return [""]


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
            f"{role} ({reader.address}) has dtype {_dtype_name(dtype)}; "
            "logmm needs real numbers (float32 or float64; integers are converted)"
        )
    if reader.ndim != 2:
        raise InputError(
            f"{role} ({reader.address}) is {reader.ndim}-D with shape {_shape(reader.shape)}; "
            "a 2-D matrix is needed"
        )


# ----------------------------------------------------------------------------- helpers


def _hdf5_arrays(group: Any) -> list[str]:
    """Dataset paths under an h5py group, relative to it, in visit order."""
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            names.append(name)

    group.visititems(visit)
    return names


def _zarr_arrays(group: Any) -> list[str]:
    """Array paths under a zarr group, relative to it, sorted."""
    import zarr

    return sorted(name for name, node in group.members(max_depth=None)
                  if isinstance(node, zarr.Array))


#: attributes that name a sparse group's format (logmm/scipy style, anndata, h5sparse)
_FORMAT_ATTRS = ("format", "encoding-type", "h5sparse_format")
_SHAPE_ATTRS = ("shape", "h5sparse_shape")
_CSR_ARRAYS = ("data", "indices", "indptr")


def _hdf5_members(group: Any) -> dict[str, Any]:
    """Direct children of an h5py group that are datasets, by name."""
    import h5py

    members = {}
    for name in group:
        try:
            node = group.get(name)
        except Exception:  # a broken link
            continue
        if isinstance(node, h5py.Dataset):
            members[name] = node
    return members


def _zarr_members(group: Any) -> dict[str, Any]:
    """Direct children of a zarr group that are arrays, by name."""
    import zarr

    return {name: node for name, node in group.members() if isinstance(node, zarr.Array)}


def _format_attr(attrs: dict[str, Any]) -> tuple[str, str] | None:
    """``(attribute, value)`` of the first sparse-format attribute, or None."""
    for key in _FORMAT_ATTRS:
        if key in attrs:
            value = attrs[key]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return key, str(value)
    return None


def _looks_sparse(members: dict[str, Any], attrs: dict[str, Any], *, root: bool) -> bool:
    """Whether a group is meant as a sparse matrix. A named group is when it has
    ``indices`` or ``indptr``, a format or shape attribute; a file's root only when it
    has a format attribute or all three CSR arrays (a root holding ``data`` and other
    arrays is an ordinary file, e.g. a logmm output)."""
    if _format_attr(attrs) is not None:
        return True
    if root:
        return all(name in members for name in _CSR_ARRAYS)
    return bool({"indices", "indptr"} & set(members)) or any(k in attrs for k in _SHAPE_ATTRS)


def _signal_sparse_group(address: ArrayAddress, members: dict[str, Any],
                         attrs: dict[str, Any]) -> None:
    if _looks_sparse(members, attrs, root=False):
        raise _SparseGroup(address)


def _signal_sparse_root(address: ArrayAddress, members: dict[str, Any],
                        attrs: dict[str, Any]) -> None:
    if _looks_sparse(members, attrs, root=True):
        raise _SparseGroup(address.with_dataset(None))


def _signal_single_csr_group(address: ArrayAddress, names: list[str]) -> None:
    """A file whose only arrays are one group's ``data``, ``indices`` and ``indptr`` means
    that group when no dataset is named."""
    parents = {name.rpartition("/")[0] for name in names}
    if (len(parents) == 1 and len(names) == 3
            and {name.rpartition("/")[2] for name in names} == set(_CSR_ARRAYS)):
        raise _SparseGroup(address.with_dataset(parents.pop() or None))


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
        return f"{path}: not a readable .npz file ({_one_line(exc)})"
    if "format" not in names:
        shown = ", ".join(names[:_MAX_LISTED]) or "nothing"
        return (f"{path} is not a scipy.sparse .npz (it holds {shown}); save sparse "
                "matrices with scipy.sparse.save_npz, dense arrays as .npy")
    return f"{path}: not a readable scipy.sparse .npz ({_one_line(exc)})"


def _only_array(address: ArrayAddress, names: list[str], lead: str) -> str:
    if len(names) == 1:
        return names[0]
    if not names:
        raise MissingInputError(f"{address.path} holds no arrays")
    raise MissingInputError(
        f"{address.path} holds {len(names)} arrays; name one as "
        f"{address.path}:{lead}NAME; " + _holds([lead + n for n in names])
    )


def _missing_message(address: ArrayAddress, names: list[str], lead: str) -> str:
    return f"no dataset {lead}{address.dataset} in {address.path}; " + _holds(
        [lead + n for n in names]
    )


def _holds(names: list[str], prefix: str = "it holds: ") -> str:
    if not names:
        return prefix + "no arrays"
    shown = ", ".join(names[:_MAX_LISTED])
    more = f" (and {len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return prefix + shown + more


def hdf5_open_error(path: str | Path, exc: BaseException) -> LogmmError:
    """The one-line error for an HDF5 file h5py could not open: held locked by another
    process (HDF5's own file lock: a writer somewhere), or not a readable HDF5 file."""
    detail = _one_line(exc)
    if "unable to lock file" in detail or "errno = 11" in detail:
        return LogmmError(f"{path} is locked by another process (an HDF5 writer has it "
                          "open); wait for it to finish, or, on a read-only shared filesystem "
                          "that does not support locks, set HDF5_USE_FILE_LOCKING=FALSE")
    return FormatError(f"{path}: not a readable HDF5 file ({detail})")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.kind == "O":
        return "object (e.g. strings)"
    if dtype.kind in "SUa":
        return f"{dtype} (strings)"
    if dtype.kind == "c":
        return f"{dtype} (complex)"
    if dtype.kind == "V":
        return f"{dtype} (structured)"
    return str(dtype)


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape) if shape else "()"
