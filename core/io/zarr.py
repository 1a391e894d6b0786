"""Zarr (zarr-python 3; stores of format 3, or 2): the reader, the writer, the shared
store of ``--shard`` runs, and what logmm knows about Zarr directory stores.

- :func:`open_root` opens a store read-only, with one-line errors.
- An array added to an existing store (:class:`ZarrWriter` with ``in_container``) is
  written as a hidden directory beside its final name and renamed at commit; it takes its
  store's format (numcodecs compressors for a v2 store).
- ``--shard`` into ``OUT.zarr``: every shard writes its own chunks into one shared store,
  the partial output ``.OUT.zarr.logmm-partial`` (:func:`ensure_shared_store`,
  :func:`open_shared_array`; the run's count, plan and fingerprint in the array attribute
  ``logmm_shards``); :class:`SharedZarrWriter` writes one shard's rows and leaves its
  marker ``DATASET/.logmm-shards/IIII-of-NNNN.json`` (:func:`read_markers`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    FormatError,
    InputError,
    LogmmError,
    MissingInputError,
    OutputExistsError,
    UsageError,
)
from .addresses import ArrayAddress
from .base import (
    ArrayReader,
    ArrayWriter,
    holds,
    missing_message,
    one_line,
    only_array,
    remove_path,
    replace_path,
)
from .compression import zarr_compressors
from .layout import (
    MARKER_DIR,
    marker_path,
    parse_marker,
    partial_dataset,
    partial_path,
    temporary_path,
    unique_temporary_path,
)

__all__ = [
    "SHARED_STORE_KEY",
    "SharedZarrWriter",
    "ZarrReader",
    "ZarrWriter",
    "array_names",
    "check_container",
    "container_holds",
    "container_node",
    "ensure_shared_store",
    "finish_shared_store",
    "list_arrays",
    "members",
    "node_kind",
    "open_root",
    "open_shared_array",
    "read_markers",
    "read_shared_store",
    "refuse_locked",
]

#: array attribute of a shared ``--shard`` store: its shard count, plan and fingerprint
SHARED_STORE_KEY = "logmm_shards"
_MARKER_VERSION = 1


def open_root(path: str | Path) -> Any:
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
        raise FormatError(f"{path}: not a readable Zarr store ({one_line(exc)})") from None




class ZarrReader(ArrayReader):
    """An array in a Zarr directory store (v3; v2 readable)."""

    def __init__(self, address: ArrayAddress) -> None:
        """Open the array ``address`` names (or the store's only one); a sparse group is
        found before (:func:`logmm.io.sparse.sparse_group`) and never reaches here."""
        import zarr

        path = address.path
        root = open_root(path)
        try:
            node = root
            name = address.dataset
            if isinstance(root, zarr.Group):
                if name is None:
                    name = only_array(address, array_names(root), "")
                try:
                    node = root[name]
                except KeyError:
                    raise MissingInputError(
                        missing_message(address, array_names(root), "")
                    ) from None
                if isinstance(node, zarr.Group):
                    raise MissingInputError(
                        f"{address} is a group, not an array; "
                        + holds([f"{name}/{n}" for n in array_names(node)], prefix="it holds: ")
                    )
            elif name is not None:
                raise MissingInputError(
                    f"{address}: the store is a single array at its root; "
                    f"use {path} without ':{name}'"
                )
        except LogmmError:
            raise
        except Exception as exc:
            raise FormatError(f"{address}: not a readable Zarr array ({one_line(exc)})") from None
        self._arr = node
        try:
            dtype = np.dtype(node.dtype)
        except TypeError as exc:
            raise InputError(f"{address}: unsupported Zarr data type ({one_line(exc)})") from None
        shards = getattr(node, "shards", None)
        super().__init__(address.with_dataset(name), node.shape, dtype,
                         shards if shards else node.chunks)

    def _read(self, key: Any) -> np.ndarray:
        return np.asarray(self._arr[key])

    @property
    def decodes_chunks(self) -> bool:
        """True: every read decodes whole Zarr chunks."""
        return True


class ZarrWriter(ArrayWriter):
    """Zarr output (format 3, or 2 with ``zarr_format=2``): an array chunked by
    ``chunk_rows`` rows, provenance in its attributes.

    Inside an existing store (``in_container``) the array is written as the hidden
    directory :func:`partial_dataset` beside its final name, and renamed at commit.
    """

    def __init__(self, address: ArrayAddress, shape: tuple[int, ...], dtype: Any,
                 **options: Any) -> None:
        """Takes the parameters of :class:`~logmm.io.base.ArrayWriter`."""
        self._arr: Any = None
        super().__init__(address, shape, dtype, **options)

    def _create(self) -> None:
        import zarr

        compressors: Any = zarr_compressors(self.compression)
        chunks = (max(1, min(self.chunk_rows, self.shape[0] if self.shape else 1)),) + tuple(
            max(1, s) for s in self.shape[1:]
        )
        if self.chunk_cols and len(chunks) == 2:     # chunked by column panel too
            chunks = (chunks[0], max(1, min(self.chunk_cols, chunks[1])))
        if self.in_container:
            group = zarr.open_group(str(self.path), mode="r+")
            if group.metadata.zarr_format == 2:     # the array joins in its store's format
                compressors = _zarr_v2_compressor(self.compression)
            head, _, name = partial_dataset(self.address.dataset_name).rpartition("/")
            for part in head.split("/") if head else ():
                group = group.require_group(part)
            self._arr = group.create_array(name, shape=self.shape, dtype=self.dtype,
                                                chunks=chunks, compressors=compressors)
            self._arr.attrs["complete"] = False     # `logmm info` lists it as incomplete
            return
        if self.zarr_format == 2:
            compressors = _zarr_v2_compressor(self.compression)
        group = zarr.open_group(str(self.tmp_path), mode="w",
                                zarr_format=self.zarr_format)  # type: ignore[arg-type]
        self._arr = group.create_array(
            self.address.dataset_name, shape=self.shape, dtype=self.dtype, chunks=chunks,
            compressors=compressors,
        )

    def _hidden_dir(self) -> Path:
        return self.path / partial_dataset(self.address.dataset_name)

    def _partial_exists(self) -> bool:
        if not self.in_container:
            return super()._partial_exists()
        return self._hidden_dir().is_dir()

    def _discard_partial(self) -> None:
        """Remove the partial array or store, once zarr's last chunk writes have landed."""
        remove_path(self._hidden_dir() if self.in_container else self.tmp_path, settle=True)

    def _output_exists(self) -> bool:
        if not self.in_container:
            return super()._output_exists()
        return container_holds(self.address, self.address.dataset)

    def _reopen(self) -> None:
        import zarr

        if self.in_container:
            self._arr = zarr.open_array(str(self.path),
                                        path=partial_dataset(self.address.dataset_name), mode="r+")
        else:
            self._arr = zarr.open_array(str(self.tmp_path), path=self.address.dataset_name,
                                        mode="r+")
        self._check_reopened(self._arr.shape, self._arr.dtype)
        cols = self._arr.chunks[1] if self._arr.ndim == 2 else 0
        self.chunk_cols = cols if 0 < cols < self._arr.shape[1] else None   # as it was made

    def _write(self, key: Any, block: np.ndarray) -> None:
        self._arr[key] = block     # each chunk is its own file, written when this returns

    def task_target(self) -> Any:
        """The partial array (it pickles as its store and path), rows offset by ours."""
        return (self._arr, self.row_offset) if self._arr is not None else None

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        self._arr.update_attributes(attrs)      # one metadata write, not one per key

    def _publish(self, attrs: dict[str, Any]) -> None:
        if not self.in_container:
            super()._publish(attrs)
            return
        self._close()
        final = self.path / self.address.dataset_name
        if node_kind(final) == "group":
            raise OutputExistsError(f"{self.address} became a group while logmm ran; a group "
                                    "is never replaced")
        replace_path(self._hidden_dir(), final)

    def _close(self) -> None:
        self._arr = None


def _zarr_v2_compressor(compression: str | None) -> Any:
    """``compressors`` for an array added to a Zarr v2 store (numcodecs codecs, with the
    levels :func:`logmm.io.compression.zarr_compressors` uses for v3)."""
    if compression is None:
        return "auto"
    if compression == "none":
        return None
    import numcodecs

    codecs = {"gzip": lambda: numcodecs.GZip(level=5), "zstd": lambda: numcodecs.Zstd(level=3),
              "blosc": lambda: numcodecs.Blosc(cname="lz4", clevel=5,
                                               shuffle=numcodecs.Blosc.SHUFFLE)}
    if compression not in codecs:
        raise UsageError(f"{compression} compression is not available for Zarr")
    return [codecs[compression]()]


def array_names(group: Any) -> list[str]:
    """Array paths under a zarr group, relative to it, sorted."""
    import zarr

    return sorted(name for name, node in group.members(max_depth=None)
                  if isinstance(node, zarr.Array))


def members(group: Any) -> dict[str, Any]:
    """Direct children of a zarr group that are arrays, by name."""
    import zarr

    return {name: node for name, node in group.members() if isinstance(node, zarr.Array)}


def node_kind(node: Path) -> str | None:
    """``"array"``, ``"group"`` or None for a directory of a Zarr store (v3 or v2)."""
    if (node / ".zarray").exists():
        return "array"
    if (node / ".zgroup").exists():
        return "group"
    try:
        meta = json.loads((node / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return "array" if meta.get("node_type") == "array" else "group"


class SharedZarrWriter(ArrayWriter):
    """Writes one shard's rows into the shared store; :meth:`commit` leaves its marker and,
    when every shard is done, finishes the store. :meth:`abort` never removes the store
    (other shards' chunks live in it).

    Parameters
    ----------
    address : ArrayAddress
        The final output ``OUT.zarr:DATASET``.
    arr : zarr.Array
        The shared store's array (:func:`open_shared_array`), opened for writing.
    rows : (int, int)
        The shard's rows; writes elsewhere are refused.
    shard : logmm.shards.Shard
        Which shard (``index``, ``count``; its text names it in messages).
    overwrite : bool
        The finished store may replace an existing ``OUT.zarr``.
    resumed : bool
        A resumed run (the store keeps the rows it stored before).
    finish : callable () -> bool
        Run after the marker is written: renames the store into place when every shard is
        done, and says whether it did (``finished``).
    discard : callable () -> None
        Run by :meth:`abort` (not after :meth:`suspend`): removes the store when nothing of
        value is in it.
    """

    def __init__(self, address: ArrayAddress, arr: Any, rows: tuple[int, int], shard: Any,
                 *, overwrite: bool, resumed: bool, finish: Callable[[], bool],
                 discard: Callable[[], None]) -> None:
        self._arr: Any = arr
        self.rows = rows
        self.shard = shard
        self.finished = False
        self._finish, self._discard = finish, discard
        super().__init__(address, arr.shape, arr.dtype, overwrite=overwrite,
                         chunk_rows=int(arr.chunks[0]), resume=resumed)

    def _open(self, resume: bool) -> None:
        self.resumed = resume           # the store is open; its rows stay either way

    def _write(self, key: Any, block: np.ndarray) -> None:
        rows = key[0] if isinstance(key, tuple) else key
        if not self.rows[0] <= rows.start <= rows.stop <= self.rows[1]:
            raise ValueError(f"rows {rows.start}:{rows.stop} are not shard {self.shard}'s "
                             f"({self.rows[0]}:{self.rows[1]})")
        self._arr[key] = block

    def task_target(self) -> Any:
        """The shared store's array (rows addressed in the whole output)."""
        return (self._arr, 0) if self._arr is not None else None

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        pass                                # in the marker, summed at the end

    def _close(self) -> None:
        self._arr = None

    def commit(self) -> Path:
        """Leave this shard's marker; finish the store if it was the last one missing."""
        if self.committed:
            return self.path
        marker = marker_path(partial_path(self.path) / self.address.dataset_name,
                             self.shard.index, self.shard.count)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(marker)
        tmp.write_text(json.dumps({
            "version": _MARKER_VERSION, "shard": [self.shard.index, self.shard.count],
            "rows": list(self.rows), "fingerprint": self.attrs.get("fingerprint"),
            "host": socket.gethostname(), "pid": os.getpid(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "attrs": dict(self.attrs, complete=True)}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, marker)
        self._close()
        self.committed = True
        self.finished = self._finish()
        return self.path

    def suspend(self) -> None:
        """Interrupted: keep the store, for ``--resume`` and the other shards."""
        if not self.committed:
            self.suspended = True
            self._close()

    def abort(self) -> None:
        """Failed: keep the store if any other shard finished, is running or was
        interrupted (their rows live in it); otherwise nothing of value is in it, and it
        goes. After :meth:`suspend` (an interruption) the store always stays."""
        if self.committed or self.aborted:
            return
        self.aborted = True
        self._close()
        if not self.suspended:
            self._discard()


def list_arrays(path: Path) -> list[str]:
    """``["g/a", ...]`` for a store whose root is a group, ``[""]`` for a single array."""
    import zarr

    try:
        root = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise FormatError(f"{path}: not a readable Zarr store ({one_line(exc)})") from None
    if isinstance(root, zarr.Group):
        return array_names(root)
    return [""]


# ----------------------------------------------------------------------------- containers


def check_container(addr: ArrayAddress, compression: str | None) -> None:
    """Nothing refuses adding an array to an existing store (each chunk is a file)."""


def container_node(addr: ArrayAddress) -> tuple[str | None, str | None]:
    """What the existing store ``addr.path`` has at ``addr.dataset`` (see
    :func:`logmm.io.writers.container_output`): ``("array", name)``, ``("group",
    name)``, ``("inside-array", ancestor)``, or ``(None, None)``."""
    parts = (addr.dataset or "").split("/")
    for i in range(len(parts)):
        name = "/".join(parts[:i + 1])
        kind = node_kind(addr.path / name)
        if kind == "array":
            return ("array", name) if i == len(parts) - 1 else ("inside-array", name)
        if kind is None:
            return None, None
    return "group", addr.dataset


def container_holds(addr: ArrayAddress, dataset: str | None) -> bool:
    """Whether the existing store ``addr.path`` has a node named ``dataset``."""
    if not dataset:
        return False
    node = addr.path / dataset
    return any((node / doc).exists() for doc in ("zarr.json", ".zarray", ".zgroup"))


# ----------------------------------------------------------------------------- shared store


def ensure_shared_store(out: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype, *,
                        compression: str | None,
                        describe: Callable[[], tuple[int, dict[str, Any]]]) -> None:
    """Create the shared partial store of ``out`` (format 3) unless it exists.

    ``describe()`` gives its chunk rows and the :data:`SHARED_STORE_KEY` attribute; it is
    called only when the store is made. The store is built under a name unique to this
    process, then renamed: exactly one creator wins, the others keep the winner's.
    """
    import zarr

    store = partial_path(out.path)
    if store.exists():
        return
    chunk_rows, meta = describe()
    tmp = unique_temporary_path(out.path, "new")      # pids repeat across a cluster's nodes
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        chunks = (max(1, min(chunk_rows, shape[0] if shape else 1)),) + tuple(
            max(1, s) for s in shape[1:])
        arr = group.create_array(out.dataset_name, shape=shape, dtype=dtype, chunks=chunks,
                                 compressors=zarr_compressors(compression))
        arr.attrs.update({"complete": False, SHARED_STORE_KEY: meta})
        try:
            os.rename(tmp, store)           # atomic; fails if another shard won
        except OSError:
            if not store.exists():
                raise
    finally:
        remove_path(tmp)


def open_shared_array(out: ArrayAddress) -> tuple[Any, dict[str, Any]]:
    """The shared store's array, opened for writing, and its :data:`SHARED_STORE_KEY`.

    Raises
    ------
    FormatError
        The partial store is not one a ``--shard`` run made.
    """
    import zarr

    store = partial_path(out.path)
    try:
        arr = zarr.open_array(str(store), path=out.dataset_name, mode="r+")
        meta: dict[str, Any] = dict(arr.attrs.get(SHARED_STORE_KEY) or {})  # type: ignore[arg-type]
    except Exception as exc:
        raise FormatError(f"{store} is not a logmm shard store ({exc}); delete it") from None
    return arr, meta


def read_shared_store(out: ArrayAddress) -> tuple[Path, bool, dict[str, Any], int] | None:
    """``(store, merged, meta, rows)`` of the shared store behind ``out``: the partial
    store while a run is under way (perhaps one replacing a finished ``OUT`` with
    ``--overwrite``: it is the one to report and to finish), else the finished ``OUT``
    (``merged``); None when neither is a shared store."""
    import zarr

    partial = partial_path(out.path)
    merged = not partial.exists() and out.path.exists()
    store = out.path if merged else partial
    if not (store / out.dataset_name).is_dir():
        return None
    try:
        arr = zarr.open_array(str(store), path=out.dataset_name, mode="r")
        meta: dict[str, Any] = dict(arr.attrs.get(SHARED_STORE_KEY) or {})  # type: ignore[arg-type]
    except Exception:
        return None
    if not meta:
        return None
    return store, merged, meta, int(arr.shape[0])


def read_markers(array_dir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(index, count): marker}`` of the finished shards whose markers lie in the array
    directory ``array_dir`` (unreadable markers are left out)."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    directory = array_dir / MARKER_DIR
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        key = parse_marker(name)
        if key is None:
            continue
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found[key] = data
    return found


def finish_shared_store(out: ArrayAddress, attrs: dict[str, Any], *, overwrite: bool) -> bool:
    """Store ``attrs`` on the shared store's array and rename the store into place as
    ``OUT`` (the caller holds the output's lock); False when there was no store to finish
    and no ``OUT`` either.

    Raises
    ------
    OutputExistsError
        ``OUT`` exists and ``overwrite`` is false.
    """
    import zarr

    store = partial_path(out.path)
    if not store.exists():
        return out.path.exists()
    arr = zarr.open_array(str(store), path=out.dataset_name, mode="r+")
    arr.attrs.update({k: v for k, v in attrs.items() if v is not None})
    if not overwrite and os.path.lexists(out.path):
        raise OutputExistsError(f"output exists: {out.path} (created while the shards "
                                "ran; use --overwrite to replace it)")
    replace_path(store, out.path)
    return True


def refuse_locked(path: Path) -> None:
    """Nothing to refuse: a Zarr store has no file lock of its own."""
