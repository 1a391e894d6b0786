"""What a file holds: the engine behind ``logmm info``.

:func:`inspect_file` reads only metadata (shapes, dtypes, chunking, codecs, attributes,
sizes on disk) and never array data, so it is quick on any file and needs no optional
compression plugin. For every array it reports whether it is a logmm output and whether
that output is complete (attribute ``complete: true``, which a writer stores only when
the last block is written), and it lists the hidden work files an unfinished (running or
interrupted) logmm run keeps beside its output: the partial output ``.NAME.logmm-partial``
(which ``--resume`` finishes), its resume record ``.NAME.logmm-partial.json``, the lock
``.NAME.logmm-lock`` and short-lived ``.NAME.logmm-TAG-PID`` files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AlreadyComplete, FormatError, LogmmError, MissingInputError, UsageError
from .io.addresses import EXTENSIONS, ArrayAddress, parse_address
from .io.base import jsonable, missing_message, one_line
from .io.compression import describe_hdf5_filters, describe_zarr_codecs
from .io.hdf5 import dataset_names, hdf5_open_error, missing_virtual_sources
from .io.hdf5_journal import interrupted_change
from .io.layout import (
    parse_partial_dataset,
    parse_side_file,
    parse_work_address,
    parse_work_file,
    partial_dataset,
    side_file_glob,
    work_file_glob,
)
from .io.readers import open_array
from .io.resume import ResumeRecord, process_alive
from .io.writers import existing_output_error, sidecar_path
from .io.zarr import array_names, open_root

__all__ = ["ArrayInfo", "FileInfo", "TemporaryInfo", "inspect_file", "logmm_status",
           "refuse_or_skip_existing"]

#: status of an array: a complete logmm output, an unfinished one, or not logmm's
STATUSES = ("complete", "incomplete", None)
_FORMAT_NAMES = {"npy": "NumPy .npy", "hdf5": "HDF5", "zarr": "Zarr"}
_MAX_WALK = 100_000  # directory entries counted for a Zarr store's size before giving up


@dataclass
class ArrayInfo:
    """One array's metadata (see :func:`inspect_file`).

    Attributes
    ----------
    name : str or None
        ``"/group/name"`` in HDF5, ``"group/name"`` in Zarr; None for a file that is a
        single array (``.npy``, a Zarr store with an array at its root).
    address : str
        An address logmm commands accept for this array.
    shape : list of int
    dtype : str
    chunks : list of int or None
        Storage chunk shape (None: contiguous).
    shards : list of int or None
        Zarr shard shape, when sharded.
    compression : str
        Short form of the codec pipeline: ``"gzip"``, ``"shuffle+gzip"``, ``"zstd"``,
        ``"none"``.
    codecs : list of dict
        Every filter or codec as ``{"name": ..., "configuration": {...}}``.
    nbytes : int
        Size in memory (uncompressed).
    stored_bytes : int or None
        Bytes the array takes on disk, when cheap to tell.
    status : {"complete", "incomplete"} or None
        A complete logmm output, an unfinished one, or None when not logmm's. A merged
        (virtual) HDF5 dataset with a source file missing is never "complete".
    attrs : dict
        Attributes (HDF5/Zarr), or the ``OUT.npy.json`` sidecar of a ``.npy`` file.
    missing_sources : list of str
        A virtual HDF5 dataset's source files that do not exist, as
        ``"OUT.shard-0001-of-0003.h5 (rows 50:100)"``: those rows read as the fill value.
    """

    name: str | None
    address: str
    shape: list[int]
    dtype: str
    chunks: list[int] | None
    shards: list[int] | None
    compression: str
    codecs: list[dict[str, Any]]
    nbytes: int
    stored_bytes: int | None
    status: str | None
    attrs: dict[str, Any]
    missing_sources: list[str] = field(default_factory=list)


@dataclass
class TemporaryInfo:
    """A hidden work file of an unfinished logmm run beside the inspected file.

    Attributes
    ----------
    path : str
    kind : str
        ``"partial"`` (the partial output, finished by ``--resume``), ``"record"`` (its
        resume record), ``"lock"``, or the tag of a short-lived ``.NAME.logmm-TAG-PID``
        file (``"tmp"``, ``"old"``).
    pid : int or None
        The process that wrote it (from the lock or the name), when known.
    process_running : bool or None
        Whether that process still runs (None: no process known).
    bytes : int or None
        Size on disk.
    blocks_done, blocks_total : int or None
        Row blocks already written, of how many (partial output with a resume record).
    """

    path: str
    kind: str
    pid: int | None
    process_running: bool | None
    bytes: int | None
    blocks_done: int | None = None
    blocks_total: int | None = None


@dataclass
class FileInfo:
    """What :func:`inspect_file` found; :meth:`to_dict` is the ``--json`` document."""

    path: str
    format: str
    file_bytes: int | None
    arrays: list[ArrayInfo]
    temporaries: list[TemporaryInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the shards of a ``--shard I/N`` output (:meth:`logmm.shards.ShardStatus.to_dict`)
    shards: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        """Every logmm array complete and no shard missing (what ``info --check`` asks)."""
        return (bool(self.arrays) and all(a.status != "incomplete" for a in self.arrays)
                and (self.shards is None or bool(self.shards["complete"])))

    @property
    def problems(self) -> list[str]:
        """Why :attr:`complete` is false, one reason each (empty when it is true)."""
        found = [] if self.arrays else [f"{self.path} holds no arrays"]
        for a in self.arrays:
            if a.missing_sources:
                found.append(f"{a.address} is a merged (virtual) dataset whose shard "
                             f"files are missing: {', '.join(a.missing_sources)}")
            elif a.status == "incomplete":
                found.append(f"{a.address} is incomplete (no 'complete: true' attribute)")
        if self.shards is not None and not self.shards["complete"]:
            found.append(self.shards["summary"])
        return found

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys (absent values are None, never missing)."""
        return asdict(self)


def logmm_status(attrs: dict[str, Any], *, temporary: bool = False) -> str | None:
    """``"complete"``, ``"incomplete"`` or None (not a logmm output) for an array's attributes.

    Complete means ``complete`` is true. Incomplete: logmm's attributes (``logmm_version``
    or ``complete``) without it, or any array inside a logmm temporary.
    """
    if attrs.get("complete") is True:
        return "complete"
    if temporary or "logmm_version" in attrs or "complete" in attrs:
        return "incomplete"
    return None


def inspect_file(address: str | Path | ArrayAddress) -> FileInfo:
    """Describe the arrays in a file (or only the one ``address`` names), metadata only.

    Parameters
    ----------
    address : str, Path or ArrayAddress
        ``x.npy``, ``x.h5``, ``x.h5:/group/name``, ``x.zarr``, ``x.zarr:name``. A hidden
        partial output ``.x.h5.logmm-partial`` is accepted too. Naming a group lists the arrays
        under it.

    Returns
    -------
    FileInfo

    Raises
    ------
    MissingInputError
        No such file, or no such dataset (the message lists the arrays the file holds).
    FormatError
        The file is not a readable file of its format.
    UsageError
        The address has an unknown extension.

    Examples
    --------
    >>> info = inspect_file("out.h5")  # doctest: +SKIP
    >>> [(a.name, a.shape, a.status) for a in info.arrays]  # doctest: +SKIP
    [('/data', [200, 32], 'complete')]
    """
    addr, temporary = _parse(address)
    path = addr.path
    shards = _shards(addr) if not temporary else None
    if not os.path.lexists(path) and shards is not None:     # shards still being written
        return FileInfo(path=str(path), format=addr.format, file_bytes=None, arrays=[],
                        temporaries=_temporaries(path), shards=shards.to_dict(),
                        notes=[f"{path.name} does not exist yet: {shards.summary()}"])
    if not os.path.lexists(path):
        raise MissingInputError(f"no such file: {path}" + _temporaries_hint(path))
    if not path.exists():
        raise MissingInputError(f"{path} is a broken symbolic link")
    if addr.format == "zarr" and not path.is_dir():
        raise FormatError(f"{path}: a .zarr store must be a directory")
    if addr.format != "zarr" and path.is_dir():
        raise FormatError(f"{path} is a directory, not a .{path.suffix.lstrip('.')} file")
    if not os.access(path, os.R_OK):
        raise LogmmError(f"permission denied: {path}")

    interrupted = interrupted_change(path) if addr.format == "hdf5" else None
    if interrupted is not None:     # the file may be torn until the journal is applied
        raise LogmmError(interrupted)
    inspect = {"npy": _inspect_npy, "hdf5": _inspect_hdf5, "zarr": _inspect_zarr,
               "npz": _inspect_npz}[addr.format]
    arrays, notes = inspect(addr, temporary)
    info = FileInfo(
        path=str(path), format=addr.format, file_bytes=_disk_bytes(path),
        arrays=arrays, temporaries=[] if temporary else _temporaries(path), notes=notes,
        shards=shards.to_dict() if shards is not None else None,
    )
    if shards is not None:
        info.notes.append(shards.summary())
    for array in arrays:          # datasets of unfinished runs inside an existing container
        final = parse_partial_dataset(array.name)
        if final is not None and array.name:
            head = array.name[:array.name.rfind("/") + 1]
            info.notes.append(
                f"{array.name} is the partial dataset of an unfinished logmm run writing "
                f"{head}{final}: rerun the same command with --resume to finish it, or "
                "delete it")
    if addr.format == "hdf5" and not temporary and addr.dataset is None:
        _side_files(path, info)
    if addr.format == "npy" and not temporary:
        sidecar = sidecar_path(path)
        if sidecar.exists() and info.file_bytes is not None:
            info.file_bytes += _disk_bytes(sidecar) or 0
    return info


# ----------------------------------------------------------------------------- formats


def _inspect_npy(addr: ArrayAddress, temporary: bool) -> tuple[list[ArrayInfo], list[str]]:
    with open_array(addr) as reader:
        shape, dtype = reader.shape, reader.dtype
    notes: list[str] = []
    attrs: dict[str, Any] = {}
    sidecar = sidecar_path(addr.path)
    if sidecar.exists() and not temporary:
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            notes.append(f"cannot read the provenance sidecar {sidecar} ({one_line(exc)})")
        else:
            if isinstance(loaded, dict):
                attrs = loaded
            else:
                notes.append(f"the provenance sidecar {sidecar} is not a JSON object")
    array = ArrayInfo(
        name=None, address=str(addr.path), shape=list(shape), dtype=str(dtype), chunks=None,
        shards=None, compression="none", codecs=[], nbytes=_nbytes(shape, dtype),
        stored_bytes=_disk_bytes(addr.path), status=logmm_status(attrs, temporary=temporary),
        attrs=attrs,
    )
    return [array], notes


def _inspect_npz(addr: ArrayAddress, temporary: bool) -> tuple[list[ArrayInfo], list[str]]:
    """A scipy.sparse ``.npz``: shape and format from its small members, the stored
    arrays' dtypes and lengths from their ``.npy`` headers (no data is read)."""
    import zipfile

    path = addr.path
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(n).stem: n for n in archive.namelist()}
            if not {"format", "shape", "data"} <= set(members):
                raise FormatError(f"{path} is not a scipy.sparse .npz (it holds "
                                  f"{', '.join(sorted(members)) or 'nothing'}); dense arrays "
                                  "go in .npy")
            headers = {name: _npy_header(archive, member) for name, member in members.items()}
            compressed = any(i.compress_type != zipfile.ZIP_STORED for i in archive.infolist())
        with np.load(path, allow_pickle=False) as loaded:
            fmt = loaded["format"].item()
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            shape = [int(s) for s in loaded["shape"]]
    except LogmmError:
        raise
    except Exception as exc:
        raise FormatError(f"{path}: not a readable .npz file ({one_line(exc)})") from None
    data_shape, dtype = headers["data"]
    nnz = int(np.prod(data_shape)) if fmt != "dia" else int(np.count_nonzero(data_shape))
    stored = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in headers.values())
    array = ArrayInfo(
        name=None, address=str(path), shape=shape, dtype=str(dtype), chunks=None, shards=None,
        compression="zip-deflate" if compressed else "none",
        codecs=[{"name": "zip-deflate" if compressed else "zip-stored", "configuration": {}}],
        nbytes=stored, stored_bytes=_disk_bytes(path), status=None,
        attrs={"sparse_format": fmt, "nnz": nnz},
    )
    return [array], []


def _npy_header(archive: Any, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` member of a zip archive, from its header alone."""
    with archive.open(member) as fp:
        version = np.lib.format.read_magic(fp)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(fp)
    return tuple(shape), np.dtype(dtype)


def _inspect_hdf5(addr: ArrayAddress, temporary: bool) -> tuple[list[ArrayInfo], list[str]]:
    import h5py

    try:
        f = h5py.File(addr.path, "r")
    except OSError as exc:
        raise hdf5_open_error(addr.path, exc) from None
    with f:
        try:
            if addr.dataset is None:
                node = f
            else:
                try:
                    node = f.get(addr.dataset)
                except Exception:  # a path through a dataset, a broken link, ...
                    node = None
                if node is None:
                    raise MissingInputError(missing_message(addr, dataset_names(f), "/"))
            if isinstance(node, h5py.Dataset):
                datasets = [(node.name, node)]
            else:
                datasets = [(node.name.rstrip("/") + "/" + n, node[n])
                            for n in dataset_names(node)]
            return [_hdf5_array(addr, name, ds, temporary) for name, ds in datasets], []
        except LogmmError:
            raise
        except Exception as exc:  # damaged metadata deep inside the file
            raise FormatError(f"{addr.path}: cannot read its metadata ({one_line(exc)}); "
                              "the file may be corrupt or truncated") from None


def _hdf5_array(addr: ArrayAddress, name: str, ds: Any, temporary: bool) -> ArrayInfo:
    attrs = {}
    for key in ds.attrs:
        try:
            attrs[str(key)] = jsonable(ds.attrs[key])
        except Exception as exc:  # an attribute of a type h5py cannot read
            attrs[str(key)] = f"<unreadable: {one_line(exc)}>"
    shape = tuple(ds.shape) if ds.shape is not None else ()
    compression, codecs = describe_hdf5_filters(ds)
    try:
        stored: int | None = int(ds.id.get_storage_size())
    except Exception:
        stored = None
    missing = missing_virtual_sources(ds, addr.path) if ds.is_virtual else []
    status = logmm_status(attrs, temporary=temporary or parse_partial_dataset(name) is not None)
    return ArrayInfo(
        name=name, address=str(addr.with_dataset(name)), shape=[int(s) for s in shape],
        dtype=str(ds.dtype), chunks=list(ds.chunks) if ds.chunks else None, shards=None,
        compression=compression, codecs=codecs, nbytes=_nbytes(shape, ds.dtype),
        stored_bytes=stored, attrs=attrs,
        status="incomplete" if missing and status == "complete" else status,
        missing_sources=[where.name + (f" (rows {rows[0]}:{rows[1]})" if rows else "")
                         for where, rows in missing],
    )


def _side_files(path: Path, info: FileInfo) -> None:
    """Add to ``info`` the datasets being written in side files beside the HDF5 file
    ``path`` (compressed datasets added to it: :func:`logmm.io.layout.side_file`), under
    the hidden name they have until copied in, as incomplete."""
    import h5py

    try:
        candidates = sorted(path.parent.glob(side_file_glob(path.name)))
    except OSError:
        return
    listed = {a.name for a in info.arrays}
    for side in candidates:
        dataset = parse_side_file(path, side.name)
        if dataset is None:
            continue
        hidden = "/" + partial_dataset(dataset)
        where = (f"{hidden} is the partial dataset of an unfinished logmm run writing "
                 f"/{dataset}, held in the side file {side.name} until it is complete")
        try:
            with h5py.File(side, "r") as f:
                array = _hdf5_array(ArrayAddress(side, "hdf5"), "/" + dataset, f[dataset],
                                    temporary=True)
        except Exception as exc:  # noqa: BLE001 - being written (locked), or cut by a kill
            info.notes.append(f"{where}; it cannot be read now ({one_line(exc)})")
            continue
        if hidden not in listed:
            array.name = hidden
            info.arrays.append(array)
        info.notes.append(f"{where}: rerun the same command with --resume to finish it, or "
                          "delete that file")


def _inspect_zarr(addr: ArrayAddress, temporary: bool) -> tuple[list[ArrayInfo], list[str]]:
    import zarr

    path = addr.path
    root = open_root(path)
    try:
        if isinstance(root, zarr.Array):
            if addr.dataset is not None:
                raise MissingInputError(
                    f"{addr}: the store is a single array at its root; "
                    f"use {path} without ':{addr.dataset}'"
                )
            return [_zarr_array(addr, None, root, temporary)], []
        node = root
        prefix = ""
        if addr.dataset is not None:
            try:
                node = root[addr.dataset]
            except KeyError:
                raise MissingInputError(
                    missing_message(addr, array_names(root), "")
                ) from None
            prefix = addr.dataset + "/"
        if isinstance(node, zarr.Array):
            return [_zarr_array(addr, addr.dataset, node, temporary)], []
        return [_zarr_array(addr, prefix + n, node[n], temporary)
                for n in array_names(node)], []
    except LogmmError:
        raise
    except Exception as exc:
        raise FormatError(f"{path}: cannot read its metadata ({one_line(exc)}); "
                          "the store may be corrupt or truncated") from None


def _zarr_array(addr: ArrayAddress, name: str | None, arr: Any, temporary: bool) -> ArrayInfo:
    attrs = {str(k): jsonable(v) for k, v in arr.attrs.asdict().items()}
    shape = tuple(int(s) for s in arr.shape)
    try:
        np_dtype = np.dtype(arr.dtype)
        dtype, nbytes = str(np_dtype), _nbytes(shape, np_dtype)
    except TypeError:  # a Zarr data type without a NumPy equivalent
        dtype, nbytes = str(arr.dtype), 0
    compression, codecs = describe_zarr_codecs(arr)
    shards = getattr(arr, "shards", None)
    array_dir = addr.path / name if name else addr.path
    return ArrayInfo(
        name=name, address=str(addr.with_dataset(name)), shape=list(shape), dtype=dtype,
        chunks=[int(c) for c in arr.chunks], shards=[int(s) for s in shards] if shards else None,
        compression=compression, codecs=codecs,
        nbytes=nbytes,
        stored_bytes=_disk_bytes(array_dir), attrs=attrs,
        status=logmm_status(attrs, temporary=temporary or parse_partial_dataset(name) is not None),
    )


# ----------------------------------------------------------------------------- helpers


def _shards(addr: ArrayAddress) -> Any:
    """The :class:`logmm.shards.ShardStatus` behind a .zarr or .h5 address, or None."""
    from .shards import shard_status

    if addr.format not in ("zarr", "hdf5"):
        return None
    try:
        return shard_status(addr)
    except Exception:  # noqa: BLE001 - shards are extra information; never fail info on them
        return None


def _parse(address: str | Path | ArrayAddress) -> tuple[ArrayAddress, bool]:
    """The address, and whether it names a logmm work file (``.x.h5.logmm-partial``).

    Work-file names come first: their content is HDF5, Zarr or ``.npy`` too, which
    :func:`parse_address` would recognise without saying they are unfinished."""
    work = None if isinstance(address, ArrayAddress) else parse_work_address(str(address))
    suffix = Path(work[1]).suffix.lower() if work is not None else ""
    if work is not None and suffix not in EXTENSIONS:  # a side file: .OUT.h5#g%name.logmm-partial
        suffix = Path(work[1].rpartition("#")[0]).suffix.lower()
    if work is None or suffix not in EXTENSIONS:
        return parse_address(address), False
    fmt = EXTENSIONS[suffix]
    addr = ArrayAddress(work[0], fmt).with_dataset(work[2])
    if fmt == "npy" and addr.dataset is not None:
        raise UsageError(f"{address}: a .npy file holds a single array") from None
    return addr, True


def _temporaries(path: Path) -> list[TemporaryInfo]:
    """The work files of unfinished logmm runs beside ``path`` (partial output first)."""
    try:
        candidates = sorted(path.parent.glob(work_file_glob(path.name)))
    except OSError:
        return []
    found: dict[str, TemporaryInfo] = {}
    for candidate in candidates:
        work = parse_work_file(candidate.name)
        if work is None or work.output != path.name:
            continue
        kind, pid = work.kind, work.pid
        if kind == "lock":
            pid = _lock_holder(candidate)
        found[kind if pid is None or kind == "lock" else f"{kind}-{pid}"] = TemporaryInfo(
            path=str(candidate), kind=kind, pid=pid,
            process_running=process_alive(pid) if pid is not None else None,
            bytes=_disk_bytes(candidate),
        )
    partial, lock, record = found.get("partial"), found.get("lock"), found.get("record")
    if partial is not None:
        partial.pid = lock.pid if lock is not None else None
        partial.process_running = lock.process_running if lock is not None else False
        if record is not None:
            partial.blocks_done, partial.blocks_total = _record_progress(Path(record.path))
    order = {"partial": 0, "record": 1, "lock": 2}
    return sorted(found.values(), key=lambda t: (order.get(t.kind, 3), t.path))


def _temporaries_hint(path: Path) -> str:
    temps = [t for t in _temporaries(path) if t.kind != "lock"]
    if not temps:
        return ""
    what = "partial output" if temps[0].kind == "partial" else "temporary"
    return f" (but {Path(temps[0].path).name} beside it is the {what} of an unfinished logmm run)"


def _lock_holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _record_progress(record: Path) -> tuple[int | None, int | None]:
    """``(blocks done, blocks in all)`` from a resume record; None where it does not say."""
    loaded = ResumeRecord.load(record)    # a header line, then a line per stored block
    if loaded is None:
        return None, None
    done, plan = len(loaded.done), loaded.plan
    try:
        n, rows = int(plan["n"]), int(plan["block_rows"])
        total = -(-n // rows) if rows > 0 else None
    except (KeyError, TypeError, ValueError):
        total = None
    return done, total


def _disk_bytes(path: Path) -> int | None:
    """Bytes a file (or a directory tree, up to ``_MAX_WALK`` entries) takes; None if unknown."""
    try:
        if not path.is_dir():
            return path.stat().st_size
        total, seen = 0, 0
        for root, dirs, files in os.walk(path):
            seen += len(dirs) + len(files)
            if seen > _MAX_WALK:
                return None
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total
    except OSError:
        return None


def _nbytes(shape: tuple[int, ...] | list[int], dtype: Any) -> int:
    return int(np.prod(shape, dtype=np.int64)) * int(np.dtype(dtype).itemsize)


def refuse_or_skip_existing(out: ArrayAddress, fingerprint: str, what: str = "") -> None:
    """An existing output met by ``--resume``: :class:`AlreadyComplete` when it is complete
    and its ``fingerprint`` attribute is ``fingerprint`` (the same inputs and options),
    else the usual "output exists" refusal. ``what`` names it in the message (default:
    the address)."""
    try:
        arrays = inspect_file(out).arrays
    except LogmmError:
        arrays = []
    stored = arrays[0] if len(arrays) == 1 else None
    if stored is not None and stored.status == "complete":
        made_by = (stored.attrs.get("fingerprint")            # a shared --shard store:
                   or (stored.attrs.get("logmm_shards") or {}).get("fingerprint"))
        if made_by == fingerprint:
            raise AlreadyComplete(f"{what or out} is already complete (same inputs and "
                                  "options): nothing to do")
        raise existing_output_error(out, "complete, but made from other inputs or options")
    raise existing_output_error(out)
