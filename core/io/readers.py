"""Readers for npy / HDF5 / Zarr arrays behind one block-read interface.

Every reader has ``shape``, ``dtype``, ``ndim``, ``chunks`` (the storage chunk shape, or
None for contiguous storage), ``chunk_rows`` (rows per storage chunk, or None),
``read_rows(start, stop)``, ``read_all()`` and ``close()``, and is a context manager.
Opening validates the file and reads only metadata; data is read only when asked for.

Problems come out as one-line :class:`~logmm.errors.LogmmError` subclasses:
a missing file or dataset is :class:`MissingInputError` (the message lists the arrays the
file holds), a file that is not what its name promises is :class:`FormatError`, and
:func:`require_matrix` raises :class:`InputError` for non-numeric or non-2-D arrays.
"""

from __future__ import annotations

import mmap
import os
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
    "ZarrReader",
    "list_arrays",
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
        return view

    def close(self) -> None:
        arr, self._arr = self._arr, None
        mm = getattr(arr, "_mmap", None)
        if mm is not None:
            try:
                mm.close()
            except (BufferError, ValueError):  # views still alive elsewhere; GC will do it
                pass


class HDF5Reader(ArrayReader):
    """A dataset in an HDF5 file, read with h5py."""

    def __init__(self, address: ArrayAddress) -> None:
        import h5py

        path = address.path
        try:
            self._file: Any = h5py.File(path, "r")
        except OSError as exc:
            raise FormatError(f"{path}: not a readable HDF5 file ({_one_line(exc)})") from None
        try:
            name = address.dataset
            if name is None:
                names = _hdf5_arrays(self._file)
                name = _only_array(address, names, "/")
            try:
                node = self._file.get(name)
            except Exception:  # a path through a dataset, a broken link, ...
                node = None
            if node is None:
                names = _hdf5_arrays(self._file)
                raise MissingInputError(_missing_message(address, names, "/"))
            if not isinstance(node, h5py.Dataset):
                names = _hdf5_arrays(node)
                raise MissingInputError(
                    f"{address} is a group, not an array; "
                    + _holds(["/" + n for n in names] if names else [], prefix="it holds: ")
                )
            if node.shape is None:
                raise InputError(f"{address.with_dataset(name)} has an empty (null) dataspace")
            ensure_hdf5_filters(node, str(address.with_dataset(name)))  # zstd, blosc, ...
            self._ds = node
            self.address = address.with_dataset(name)
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
                    name = _only_array(address, _zarr_arrays(root), "")
                try:
                    node = root[name]
                except KeyError:
                    raise MissingInputError(
                        _missing_message(address, _zarr_arrays(root), "")
                    ) from None
                if isinstance(node, zarr.Group):
                    raise MissingInputError(
                        f"{address} is a group, not an array; "
                        + _holds([f"{name}/{n}" for n in _zarr_arrays(node)], prefix="it holds: ")
                    )
            elif name is not None:
                raise MissingInputError(
                    f"{address}: the store is a single array at its root; "
                    f"use {path} without ':{name}'"
                )
        except LogmmError:
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


def open_array(address: str | Path | ArrayAddress) -> ArrayReader:
    """Open the array at ``address`` for block reads (metadata only is read here).

    Parameters
    ----------
    address : str, Path or ArrayAddress
        ``x.npy``, ``x.h5:/group/name`` or ``x.zarr:group/name``; without a dataset part
        a file holding exactly one array uses it.

    Raises
    ------
    MissingInputError
        No such file, or no such dataset (the message lists the arrays the file holds).
    FormatError
        The file is not a valid file of the format its extension names.
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
    return _READERS[addr.format](addr)


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
    if addr.format == "npy":
        return [""]
    if addr.format == "hdf5":
        import h5py

        try:
            with h5py.File(addr.path, "r") as f:
                return ["/" + n for n in _hdf5_arrays(f)]
        except OSError as exc:
            raise FormatError(f"{addr.path}: not a readable HDF5 file ({_one_line(exc)})") from None
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
