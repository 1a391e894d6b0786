""".npy files: a memory-mapped reader and a writer with a JSON provenance sidecar.

A ``.npy`` file has no room for attributes, so :class:`NpyWriter` writes them to the
sidecar ``OUT.npy.json`` (:func:`logmm.io.layout.sidecar_path`), under a temporary name
too, renamed into place just before the ``.npy`` itself.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from .addresses import ArrayAddress
from .base import ArrayReader, ArrayWriter, one_line, remove_path, replace_path
from .layout import partial_path, sidecar_path, temporary_path

__all__ = ["NpyReader", "NpyWriter", "sidecar_exists"]


class NpyReader(ArrayReader):
    """A ``.npy`` file, memory-mapped read-only (nothing is read until asked for)."""

    def __init__(self, address: ArrayAddress) -> None:
        path = address.path
        try:
            arr = np.lib.format.open_memmap(path, mode="r")
        except ValueError as exc:
            msg = str(exc)
            if "Python objects" in msg:
                raise InputError(
                    f"{path} holds Python objects, not numbers; logmm needs a numeric array"
                ) from None
            raise FormatError(f"{path}: not a valid .npy file ({one_line(exc)})") from None
        except OSError as exc:
            raise FormatError(f"{path}: cannot open as .npy ({one_line(exc)})") from None
        self._arr: np.ndarray | None = arr
        self._lent_views = False
        super().__init__(address, arr.shape, arr.dtype, None)

    def _read(self, key: Any) -> np.ndarray:
        assert self._arr is not None, "reader is closed"
        return np.array(self._arr[key])

    def _view_rows(self, start: int, stop: int) -> np.ndarray | None:
        arr = self._arr
        mm = getattr(arr, "_mmap", None)
        if arr is None or mm is None or not arr.flags.c_contiguous or stop <= start:
            return None
        row_bytes = arr.strides[0]
        first = arr.offset + start * row_bytes  # type: ignore[attr-defined]  # a memmap
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
        """Release the memory map."""
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


class NpyWriter(ArrayWriter):
    """``.npy`` output through a memory map; provenance in the ``OUT.npy.json`` sidecar.

    Takes the parameters of :class:`~logmm.io.base.ArrayWriter`.
    """

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...], dtype: Any,
                 **options: Any) -> None:
        self._mm: np.memmap | None = None
        super().__init__(address, shape, dtype, **options)

    def _create(self) -> None:
        self._mm = np.lib.format.open_memmap(
            self.tmp_path, mode="w+", dtype=self.dtype, shape=self.shape
        )
        _preallocate(self.tmp_path)

    def _reopen(self) -> None:
        self._mm = np.lib.format.open_memmap(self.tmp_path, mode="r+")
        self._check_reopened(self._mm.shape, self._mm.dtype)

    def _write(self, key: Any, block: np.ndarray) -> None:
        assert self._mm is not None
        self._mm[key] = block

    def region_view(self, row: int, col: int, shape: tuple[int, int]) -> np.ndarray | None:
        """A writable view of the memory map (results computed in place)."""
        if self._mm is None or self._mm.ndim != 2 or self.committed or self.aborted:
            return None
        row -= self.row_offset
        return self._mm[row:row + shape[0], col:col + shape[1]]

    # flush(): nothing to do. Stores into a shared memory map land in the page cache at
    # once, where they outlive a killed process; msync would only add a wait for the disk.

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        pass  # written beside the array in _publish

    def _close(self) -> None:
        # No msync: the pages are in the page cache, readable by every process (and by the
        # rename that publishes them) whether or not they have reached the disk yet; an
        # msync of a large output cost 35 ms per 80 MB, for no kill-safety gained.
        self._mm = None

    def _publish(self, attrs: dict[str, Any]) -> None:
        sidecar = sidecar_path(self.path)
        tmp_sidecar = temporary_path(sidecar)
        try:
            tmp_sidecar.write_text(json.dumps(attrs, indent=2) + "\n", encoding="utf-8")
            replace_path(tmp_sidecar, sidecar)
            replace_path(self.tmp_path, self.path)
        except BaseException:
            remove_path(tmp_sidecar)
            raise

    def _output_exists(self) -> bool:
        return super()._output_exists() or sidecar_exists(self.address)

    def abort(self) -> None:
        """Remove the partial ``.npy`` and its sidecar (see :meth:`ArrayWriter.abort`)."""
        super().abort()
        remove_path(temporary_path(sidecar_path(self.path)))


def sidecar_exists(addr: ArrayAddress) -> bool:
    """Whether a ``.npy`` output's sidecar exists, as an output of its own. A sidecar
    without its ``.npy`` but beside a partial output is a run killed between the two
    renames of its commit (sidecar first): that one belongs to ``--resume``."""
    if addr.format != "npy" or not os.path.lexists(sidecar_path(addr.path)):
        return False
    return os.path.lexists(addr.path) or not os.path.lexists(partial_path(addr.path))


def _preallocate(path: Path) -> None:
    """Reserve the disk blocks of a memory-mapped file now.

    ``open_memmap`` makes a sparse file; a store into a page the full filesystem cannot
    back kills the process with SIGBUS, with no error to report and the partial output
    left behind. Reserving the blocks up front turns that into ENOSPC here, before any
    work. Filesystems without ``fallocate`` get glibc's emulation, or nothing where even
    that is not offered.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)
