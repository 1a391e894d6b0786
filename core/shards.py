"""``--shard I/N``: one of N array-job processes computes a contiguous run of row blocks.

One mechanism for every engine that streams rows through :mod:`logmm.engine`. The plan's
row blocks (whole output chunks each) are split into N contiguous runs: shard ``I`` gets
blocks ``⌊I·B/N⌋ … ⌊(I+1)·B/N⌋ - 1`` of the ``B`` blocks, so shards differ in size by at
most one block and a shard is empty when ``N > B`` (it then only records that it is done).
Each block is computed exactly as an unsharded run computes it, so the shards together
are bit for bit the unsharded result.

Where the shards go:

- **Zarr** (``OUT.zarr``): every shard writes its own chunks into one shared store, the
  hidden partial output ``.OUT.zarr.logmm-partial``. The first shard creates it (built
  under a private name, then renamed: exactly one creator wins, the others open the
  winner's store and take its plan, so all shards agree on blocks and chunks even when
  their memory budgets differ). Writers own disjoint chunks, so no lock is shared. A
  finished shard writes a marker ``DATASET/.logmm-shards/IIII-of-NNNN.json`` inside the
  store (one object per shard: concurrent writers never rewrite the same file); the
  shard that finds all N markers present stores the summed provenance with
  ``complete: true`` and renames the store into place as ``OUT.zarr``. So ``OUT.zarr``
  appears only when complete, like every other logmm output; ``logmm info OUT.zarr``
  reports which row ranges are done meanwhile, and ``logmm merge OUT.zarr`` finishes a
  store whose last shard was killed while renaming.
- **HDF5** (``OUT.h5``): each shard writes ``OUT.shard-IIII-of-NNNN.h5`` through the
  ordinary writer (temporary name, then rename: a shard file that exists is complete),
  holding its rows only, with its row range, the whole shape and the run's fingerprint
  as attributes. ``logmm merge OUT.h5`` (:func:`merge`) checks that the N files exist,
  agree and tile the rows, then writes ``OUT.h5`` with a virtual dataset over them
  (relative paths: the directory can move; the shard files must stay beside it).
- ``.npy`` outputs cannot be shared or merged: ``--shard`` refuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, LogmmError, OutputExistsError, UsageError
from .io import layout
from .io.addresses import ArrayAddress
from .io.layout import MARKER_DIR
from .io.resume import OutputLock, ResumeRecord, record_path
from .io.writers import (
    ArrayWriter,
    _jsonable,
    _remove,
    _replace,
    check_output,
    container_output,
    create_writer,
    output_address,
    partial_path,
    temporary_path,
)
from .plan import row_ranges

__all__ = [
    "MARKER_DIR",
    "PLAN_ONLY",
    "Planned",
    "MergeResult",
    "Shard",
    "ShardState",
    "ShardStatus",
    "merge",
    "open_shard_output",
    "parse_shard",
    "shard_blocks",
    "shard_path",
    "shard_status",
]

_MARKER_VERSION = 1
_STORE_KEY = "logmm_shards"         # array attribute of a shared store: count, plan, fingerprint


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): ``Shard(3, 16)`` is ``--shard 3/16``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count} does not exist; --shard I/N "
                             "needs N ≥ 1 and 0 ≤ I < N")

    @property
    def tag(self) -> str:
        """``0003-of-0016``: the name part of its files."""
        return layout.shard_tag(self.index, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | Shard | None) -> Shard | None:
    """``"3/16"`` → ``Shard(3, 16)``; None stays None.

    Raises
    ------
    UsageError
        Not ``I/N`` with integers ``0 ≤ I < N``.
    """
    if text is None or isinstance(text, Shard):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise UsageError(f"--shard {text!r} is not I/N (e.g. 3/16: the 4th of 16 row ranges)")
    return Shard(int(match[1]), int(match[2]))


def shard_blocks(blocks: list[tuple[int, int]], shard: Shard) -> list[tuple[int, int, int]]:
    """The ``(index, start, stop)`` blocks of ``blocks`` that ``shard`` computes."""
    count = len(blocks)
    first = shard.index * count // shard.count
    last = (shard.index + 1) * count // shard.count
    return [(i, *blocks[i]) for i in range(first, last)]


def shard_rows(blocks: list[tuple[int, int]], shard: Shard) -> tuple[int, int]:
    """``(start, stop)`` rows of ``shard`` (an empty shard: where it would start)."""
    own = shard_blocks(blocks, shard)
    if own:
        return own[0][1], own[-1][2]
    first = shard.index * len(blocks) // shard.count
    start = blocks[first][0] if first < len(blocks) else (blocks[-1][1] if blocks else 0)
    return start, start


def shard_path(path: str | Path, shard: Shard) -> Path:
    """``dir/out.h5`` → ``dir/out.shard-0003-of-0016.h5`` (its file, or for a Zarr store
    the name its lock and resume record take)."""
    return layout.shard_path(path, shard.index, shard.count)


def digest(fingerprint: Mapping[str, Any]) -> str:
    """A short hash of a run's fingerprint (inputs and the options that change results)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- planning

#: set by ``logmm plan``: engines stop at :func:`logmm.engine.open_output` with a
#: :class:`Planned` exception instead of computing
PLAN_ONLY: ContextVar[bool] = ContextVar("logmm_plan_only", default=False)


class Planned(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :func:`logmm.engine.open_output` under :data:`PLAN_ONLY`: the plan of the
    command, and the Zarr store it created for its shards (or None)."""

    def __init__(self, plan: Any, output: ArrayAddress, shape: tuple[int, ...],
                 dtype: np.dtype, store: Path | None) -> None:
        super().__init__("planned")
        self.plan, self.output, self.shape, self.dtype, self.store = (plan, output, shape,
                                                                     dtype, store)


def planned(out: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype, *,
            fingerprint: dict[str, Any], make_plan: Callable[[], Any],
            load_plan: Callable[[dict[str, Any]], Any], compression: str | None,
            shard: Shard | None) -> Planned:
    """The :class:`Planned` signal for a command; with a shard count and a Zarr output, the
    shared store is created first (empty, with the plan every shard will then use)."""
    if shard is not None and out.format == "zarr":
        _, plan = _open_shared_store(out, shape, dtype, fingerprint=digest(fingerprint),
                                     count=shard.count, make_plan=make_plan,
                                     load_plan=load_plan, compression=compression)
        return Planned(plan, out, shape, dtype, partial_path(out.path))
    return Planned(make_plan(), out, shape, dtype, None)


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def describe_plan(signal: Planned, count: int | None,
                  sources: dict[str, str] | None = None) -> str:
    """What ``logmm plan`` prints: the blocks, and each shard's blocks and rows;
    ``sources``: where the memory budget came from and the thread count, in words."""
    sources = sources or {}
    plan, blocks = signal.plan, signal.plan.row_blocks()
    shape = "×".join(str(s) for s in signal.shape)
    lines = [f"output      {signal.output} ({shape} {signal.dtype})",
             f"blocks      {len(blocks)} of {plan.block_rows} rows (the last "
             f"{blocks[-1][1] - blocks[-1][0] if blocks else 0})",
             f"chunk rows  {plan.chunk_rows}",
             f"memory      {_mib(plan.memory)} budget"
             + (f" ({sources['memory']})" if "memory" in sources else "")
             + f", {_mib(plan.estimate)} planned per process"]
    if "threads" in sources:
        lines.append(f"threads     {sources['threads']}")
    if signal.store is not None:
        lines.append(f"store       {signal.store} (created; renamed to {signal.output.path} "
                     "when every shard is done)")
    if count:
        lines.append(f"shards      {count}")
        for i in range(count):
            own = shard_blocks(blocks, Shard(i, count))
            r0, r1 = shard_rows(blocks, Shard(i, count))
            what = (f"blocks {own[0][0]}-{own[-1][0]}, rows {r0}:{r1}" if own
                    else "empty (more shards than blocks)")
            lines.append(f"  {i:>4}/{count}  {what}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- opening


def open_shard_output(stack: ExitStack, out: ArrayAddress, shape: tuple[int, ...],
                      dtype: np.dtype, *, fingerprint: dict[str, Any], resume: bool,
                      make_plan: Callable[[], Any], load_plan: Callable[[dict[str, Any]], Any],
                      overwrite: bool, compression: str | None, contiguous: bool,
                      shard: Shard) -> tuple[ArrayWriter, ResumeRecord, Any,
                                             list[tuple[int, int, int]]]:
    """What :func:`logmm.engine.open_output` does for one shard: ``(writer, record, plan,
    blocks of the shard)``; see the module docstring. The writer takes rows by their
    place in the whole output."""
    if out.format not in ("zarr", "hdf5"):
        raise UsageError(f"--shard needs a .zarr or .h5 output, not {out.path.name}: shards "
                         "share one Zarr store, or write HDF5 files that 'logmm merge' joins")
    _refuse_container(out)
    unit = shard_path(out.path, shard)
    whole = digest(fingerprint)
    if resume and not overwrite:        # a rerun of a finished shard (or whole store)
        from .inspect import refuse_or_skip_existing

        shard_file = out.__class__(unit, out.format).with_dataset(out.dataset)
        if out.format == "zarr" and os.path.lexists(out.path):
            refuse_or_skip_existing(out, whole, f"{out} (all {shard.count} shards)")
        elif out.format == "hdf5" and os.path.lexists(unit):
            refuse_or_skip_existing(shard_file, whole, f"shard {shard} of {out}")
    stack.enter_context(OutputLock(unit))
    record_fp = dict(fingerprint, shard=str(shard))
    record = ResumeRecord.load(record_path(unit)) if resume else None
    if record is not None and (why := record.mismatch(record_fp)):
        raise LogmmError(f"cannot resume shard {shard} of {out}: {why}; rerun without "
                         "--resume to start it afresh")
    writer: ArrayWriter
    if out.format == "zarr":
        if not overwrite and os.path.lexists(out.path):
            raise OutputExistsError(f"output exists: {out.path} (use --overwrite to replace "
                                    "it; every shard of the new run needs --overwrite)")
        arr, plan = _open_shared_store(out, shape, dtype, fingerprint=whole, count=shard.count,
                                       make_plan=make_plan, load_plan=load_plan,
                                       compression=compression)
        if record is not None and record.plan != plan.as_dict():
            record = None                   # the store was made afresh since: start over
        blocks = shard_blocks(plan.row_blocks(), shard)
        r0, r1 = shard_rows(plan.row_blocks(), shard)
        writer = stack.enter_context(SharedZarrWriter(out, arr, (r0, r1), shard,
                                                      overwrite=overwrite))
        writer.resumed = record is not None
    else:
        plan = load_plan(record.plan) if record is not None else make_plan()
        r0, r1 = shard_rows(plan.row_blocks(), shard)
        blocks = shard_blocks(plan.row_blocks(), shard)
        target = out.__class__(shard_path(out.path, shard), out.format).with_dataset(out.dataset)
        writer = stack.enter_context(create_writer(
            target, (r1 - r0, *shape[1:]), dtype, overwrite=overwrite, compression=compression,
            chunk_rows=min(plan.chunk_rows, max(r1 - r0, 1)), resume=record is not None,
            contiguous=contiguous))
        writer.row_offset = r0
    writer.set_attrs({"shard": str(shard), "shard_index": shard.index,
                      "shard_count": shard.count, "row_start": r0, "row_stop": r1,
                      "total_shape": list(shape), "fingerprint": whole,
                      "plan": json.dumps(plan.as_dict(), sort_keys=True)})
    if not writer.resumed or record is None:
        record = ResumeRecord(record_path(unit), record_fp, plan.as_dict())
    record.save()
    return writer, record, plan, blocks


def _refuse_container(out: ArrayAddress) -> None:
    """Shards are files (or a store) of their own, named after the output file, and are
    joined into a whole new file: they cannot add a dataset to an existing container."""
    if container_output(out):
        raise UsageError(
            f"--shard cannot add {out.dataset} to the existing {out.path} (shards and their "
            "merge write whole files named after it): shard into a new file, then copy the "
            "result in with 'logmm convert NEW OUT:DATASET'")


def _open_shared_store(out: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype, *,
                       fingerprint: str, count: int, make_plan: Callable[[], Any],
                       load_plan: Callable[[dict[str, Any]], Any],
                       compression: str | None) -> tuple[Any, Any]:
    """Open the shared partial store of ``out``, creating it if absent (first wins)."""
    import zarr

    from .io.compression import zarr_compressors

    store = partial_path(out.path)
    if not store.exists():
        plan = make_plan()
        plan = _chunk_aligned(plan)
        # pids repeat across the nodes of a cluster: make the name unique to this process
        tmp = layout.unique_temporary_path(out.path, "new")
        try:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            chunks = (max(1, min(plan.chunk_rows, shape[0] if shape else 1)),) + tuple(
                max(1, s) for s in shape[1:])
            arr = group.create_array(out.dataset, shape=shape, dtype=dtype, chunks=chunks,
                                     compressors=zarr_compressors(compression))
            arr.attrs.update({"complete": False, _STORE_KEY: {
                "count": count, "fingerprint": fingerprint, "plan": plan.as_dict()}})
            try:
                os.rename(tmp, store)           # atomic; fails if another shard won
            except OSError:
                if not store.exists():
                    raise
        finally:
            _remove(tmp)
    try:
        arr = zarr.open_array(str(store), path=out.dataset, mode="r+")
        meta = dict(arr.attrs.get(_STORE_KEY) or {})
    except Exception as exc:
        raise FormatError(f"{store} is not a logmm shard store ({exc}); delete it") from None
    if meta.get("fingerprint") != fingerprint or meta.get("count") != count \
            or tuple(arr.shape) != tuple(shape) or np.dtype(arr.dtype) != np.dtype(dtype):
        raise LogmmError(
            f"{store} holds the shards of another run (count {meta.get('count')}, shape "
            f"{tuple(arr.shape)}, inputs or options differ); delete it to start afresh")
    return arr, load_plan(meta["plan"])


def _chunk_aligned(plan: Any) -> Any:
    """The plan with output chunks that never straddle two blocks (so that shards own
    whole chunks): chunk rows become the largest divisor of the block rows not above them."""
    block, chunk = plan.block_rows, plan.chunk_rows
    if block % chunk == 0 or plan.n <= block:
        return plan
    best = max(d for d in range(1, chunk + 1) if block % d == 0)
    if 2 * best < chunk:
        raise UsageError(
            f"--shard into a Zarr store needs every output chunk inside one row block, and "
            f"{block} rows per block do not split into chunks of about {chunk} rows (the "
            f"best fit is {best}); give --block-rows a multiple of --chunk-rows {chunk}")
    return replace(plan, chunk_rows=best)


class SharedZarrWriter(ArrayWriter):
    """Writes one shard's rows into the shared store; :meth:`commit` leaves its marker and,
    when every shard is done, finishes the store. :meth:`abort` never removes the store
    (other shards' chunks live in it)."""

    def __init__(self, address: ArrayAddress, arr: Any, rows: tuple[int, int], shard: Shard,
                 *, overwrite: bool) -> None:
        self.address = address
        self.path = address.path
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.overwrite = overwrite
        self.compression = None
        self.chunk_rows = int(arr.chunks[0])
        self.tmp_path = partial_path(self.path)
        self.contiguous = False
        self.attrs = {}
        self.committed = self.aborted = self.resumed = self.suspended = False
        self.row_offset = 0
        self._arr: Any = arr
        self.rows = rows
        self.shard = shard
        self.finished = False

    def _write(self, key: Any, block: np.ndarray) -> None:
        rows = key[0] if isinstance(key, tuple) else key
        if not self.rows[0] <= rows.start <= rows.stop <= self.rows[1]:
            raise ValueError(f"rows {rows.start}:{rows.stop} are not shard {self.shard}'s "
                             f"({self.rows[0]}:{self.rows[1]})")
        self._arr[key] = block

    def _store_attrs(self, attrs: dict[str, Any]) -> None:
        pass                                # in the marker, summed at the end

    def _close(self) -> None:
        self._arr = None

    def commit(self) -> Path:
        """Leave this shard's marker; finish the store if it was the last one missing."""
        if self.committed:
            return self.path
        marker = layout.marker_path(partial_path(self.path) / self.address.dataset,
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
        self.finished = _finish_store(self.address, overwrite=self.overwrite)
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
            _discard_if_abandoned(self.address, self.shard)


def _discard_if_abandoned(out: ArrayAddress, failed: Shard) -> None:
    """Remove the shared store of ``out`` when no shard has finished, none but ``failed``
    (whose lock the caller holds) is running and none was interrupted (its resume record
    counts on the rows it stored). Holding every other shard's lock while looking keeps a
    shard from starting meanwhile (shards lock before they open the store)."""
    store = partial_path(out.path)
    markers = store / out.dataset / MARKER_DIR
    if _read_markers(markers):
        return
    held: list[OutputLock] = []
    try:
        for i in range(failed.count):
            if i == failed.index:
                continue
            unit = shard_path(out.path, Shard(i, failed.count))
            if record_path(unit).exists():
                return                      # interrupted: --resume will need its rows
            lock = OutputLock(unit)
            try:
                lock.acquire()
            except LogmmError:
                return                      # a shard is running: its rows are in the store
            held.append(lock)
        if not _read_markers(markers):
            _remove(store)
    finally:
        for lock in held:
            lock.release()


# ----------------------------------------------------------------------------- status


@dataclass
class ShardState:
    """One shard: its row range (None when unknown) and whether it is complete."""

    index: int
    rows: tuple[int, int] | None
    complete: bool
    where: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShardStatus:
    """The shards of a sharded output, as :func:`shard_status` finds them.

    Attributes
    ----------
    format : {"zarr", "hdf5"}
    count : int
        N.
    n_rows : int or None
        Rows of the whole output.
    shards : list of ShardState
        One per index 0..N-1.
    merged : bool
        The final output exists (Zarr: renamed into place; HDF5: merged).
    problems : list of str
        Disagreements found (another fingerprint, rows that do not tile).
    """

    format: str
    count: int
    n_rows: int | None
    shards: list[ShardState]
    merged: bool
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[ShardState]:
        return [s for s in self.shards if not s.complete]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.problems

    def describe_missing(self) -> str:
        """``3 (rows 300:400), 6 (rows 600:700)``."""
        return ", ".join(f"{s.index}" + (f" (rows {s.rows[0]}:{s.rows[1]})" if s.rows else "")
                         for s in self.missing)

    def summary(self) -> str:
        """One line: how many shards are complete, which rows are missing."""
        done = self.count - len(self.missing)
        text = f"shards: {done} of {self.count} complete"
        ranges: list[list[int]] = []           # the complete rows, adjacent ranges joined
        for s in self.shards:
            if s.complete and s.rows is not None and s.rows[1] > s.rows[0]:
                if ranges and ranges[-1][1] == s.rows[0]:
                    ranges[-1][1] = s.rows[1]
                else:
                    ranges.append(list(s.rows))
        if self.missing and ranges:
            text += " (rows " + ", ".join(f"{r0}:{r1}" for r0, r1 in ranges) + ")"
        if self.missing:
            text += f"; missing {self.describe_missing()}"
        if self.problems:
            text += "; " + "; ".join(self.problems)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "count": self.count, "n_rows": self.n_rows,
                "merged": self.merged, "complete": self.complete,
                "problems": list(self.problems), "summary": self.summary(),
                "shards": [{"index": s.index, "rows": list(s.rows) if s.rows else None,
                            "complete": s.complete, "where": s.where} for s in self.shards]}


def shard_status(address: str | Path | ArrayAddress) -> ShardStatus | None:
    """The shards behind ``address`` (a Zarr store's markers, or HDF5 shard files beside
    it), or None when it is not a sharded output."""
    out = output_address(address)
    if out.format == "zarr":
        return _zarr_status(out)
    if out.format == "hdf5":
        return _hdf5_status(out)
    return None


def _zarr_status(out: ArrayAddress) -> ShardStatus | None:
    import zarr

    partial = partial_path(out.path)
    # a partial store is a run under way (perhaps one replacing a finished OUT with
    # --overwrite): it is the one to report and to finish
    merged = not partial.exists() and out.path.exists()
    store = out.path if merged else partial
    if not (store / out.dataset).is_dir():
        return None
    try:
        arr = zarr.open_array(str(store), path=out.dataset, mode="r")
        meta = dict(arr.attrs.get(_STORE_KEY) or {})
    except Exception:
        return None
    if not meta:
        return None
    count, fingerprint = int(meta["count"]), meta.get("fingerprint")
    blocks = _plan_blocks(meta["plan"])
    markers = _read_markers(store / out.dataset / MARKER_DIR)
    states, problems = [], []
    for i in range(count):
        rows = shard_rows(blocks, Shard(i, count))
        marker = markers.get((i, count))
        ok = marker is not None and marker.get("fingerprint") == fingerprint
        if marker is not None and not ok:
            problems.append(f"shard {i}'s marker belongs to another run")
        states.append(ShardState(i, rows, ok, str(store), (marker or {}).get("attrs", {})))
    return ShardStatus("zarr", count, int(arr.shape[0]), states, merged, problems)


def _plan_blocks(plan: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The row blocks of a recorded plan (any plan kind: they all cut n by block_rows)."""
    return row_ranges(int(plan["n"]), int(plan["block_rows"]))


def _read_markers(directory: Path) -> dict[tuple[int, int], dict[str, Any]]:
    found: dict[tuple[int, int], dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        key = layout.parse_marker(name)
        if key is None:
            continue
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found[key] = data
    return found


def _hdf5_shard_files(out: ArrayAddress) -> dict[int, dict[int, Path]]:
    """``{count: {index: path}}`` of the shard files beside ``out``: the complete file, or
    else the hidden partial file of an unfinished shard."""
    path = out.path
    found: dict[int, dict[int, Path]] = {}
    try:
        names = sorted(os.listdir(path.parent))
    except OSError:
        return found
    for name in names:
        parsed = layout.parse_shard_file(path, name)
        if parsed is None:
            continue
        index, count, partial = parsed
        shards = found.setdefault(count, {})
        if not partial or index not in shards:
            shards[index] = path.parent / name
    return found


def _hdf5_status(out: ArrayAddress) -> ShardStatus | None:
    import h5py

    groups = _hdf5_shard_files(out)
    if not groups:
        return None
    problems = []
    if len(groups) > 1:
        problems.append("shard files of different counts lie beside it: "
                        + ", ".join(f"N={n}" for n in sorted(groups)))
    count = max(groups, key=lambda n: (len(groups[n]), n))
    files = groups[count]
    states: list[ShardState] = []
    fingerprints, totals = set(), set()
    for i in range(count):
        path = files.get(i)
        attrs: dict[str, Any] = {}
        complete = False
        if path is not None and not path.name.startswith("."):
            try:
                with h5py.File(path, "r") as f:
                    attrs = {k: _jsonable(v) for k, v in f[out.dataset].attrs.items()}
                complete = attrs.get("complete") is True
            except Exception:
                problems.append(f"{path.name} cannot be read")
        rows = (int(attrs["row_start"]), int(attrs["row_stop"])) if complete else None
        if complete:
            fingerprints.add(attrs.get("fingerprint"))
            totals.add(tuple(attrs.get("total_shape", ())))
        states.append(ShardState(i, rows, complete, str(path or shard_path(out.path,
                                                                           Shard(i, count))),
                                 attrs))
    if len(fingerprints) > 1:
        problems.append("the shard files come from different runs (inputs or options differ)")
    n_rows = next(iter(totals))[0] if len(totals) == 1 and next(iter(totals)) else None
    if states and all(s.complete for s in states) and not problems:
        expected = 0
        for s in states:
            assert s.rows is not None
            if s.rows[0] != expected:
                problems.append(f"shard {s.index} holds rows {s.rows[0]}:{s.rows[1]}, not "
                                f"from {expected} (shards planned with different block "
                                "sizes: give all the same --memory or --block-rows)")
                break
            expected = s.rows[1]
        if not problems and n_rows is not None and expected != n_rows:
            problems.append(f"the shards cover {expected} of {n_rows} rows")
    if n_rows is not None:                  # rows of missing shards, from a present plan
        plan = next((s.attrs.get("plan") for s in states if s.complete), None)
        if plan is not None:
            blocks = _plan_blocks(json.loads(plan))
            for s in states:
                if s.rows is None:
                    s.rows = shard_rows(blocks, Shard(s.index, count))
    return ShardStatus("hdf5", count, n_rows, states, out.path.exists(), problems)


# ----------------------------------------------------------------------------- finishing


def _summed_attrs(attr_sets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The shards' provenance as one: the first shard's, with the entry counts summed and
    the per-shard keys dropped."""
    sets = list(attr_sets)
    merged = dict(sets[0]) if sets else {}
    for key in list(merged):
        if key == "entries" or key.endswith("_entries"):
            merged[key] = int(sum(int(s.get(key, 0) or 0) for s in sets))
    for key in ("shard", "shard_index", "row_start", "row_stop", "total_shape"):
        merged.pop(key, None)
    return merged


def _finish_store(out: ArrayAddress, *, overwrite: bool) -> bool:
    """Rename a shared store into place once all its shards are done; True if it is (or
    was already) finished, False while shards are missing or another process finishes it."""
    import zarr

    status = _zarr_status(out)
    if status is None or status.merged:
        return status is not None
    if not status.complete:
        return False
    lock = OutputLock(out.path)
    try:
        lock.acquire()
    except LogmmError:
        return False                        # another shard is finishing it
    try:
        store = partial_path(out.path)
        if not store.exists():
            return out.path.exists()
        arr = zarr.open_array(str(store), path=out.dataset, mode="r+")
        attrs = _summed_attrs(s.attrs for s in status.shards)
        attrs.update(complete=True, shards=status.count)
        arr.attrs.update({k: v for k, v in attrs.items() if v is not None})
        if not overwrite and os.path.lexists(out.path):
            raise OutputExistsError(f"output exists: {out.path} (created while the shards "
                                    "ran; use --overwrite to replace it)")
        _replace(store, out.path)
        return True
    finally:
        lock.release()


@dataclass
class MergeResult:
    """What :func:`merge` did: the output, its shape, the shard count, and whether it
    wrote anything (a Zarr store already finished by its last shard needs nothing)."""

    output: ArrayAddress
    shape: tuple[int, ...]
    count: int
    wrote: bool


def merge(address: str | Path | ArrayAddress, *, overwrite: bool = False) -> MergeResult:
    """Join the shards of ``address`` into one output.

    HDF5 ``OUT.h5``: a virtual dataset over ``OUT.shard-IIII-of-NNNN.h5`` (relative
    paths, so the directory can move with them; the shard files must stay). Zarr
    ``OUT.zarr``: finishes the shared store (the last shard normally does it itself).

    Raises
    ------
    LogmmError
        No shards, a missing or incomplete shard (the message names them and their rows),
        shards of different runs or that do not tile the rows.
    OutputExistsError
        ``OUT.h5`` exists and ``overwrite`` is false.
    UsageError
        Not a .h5 or .zarr address.
    """
    out = output_address(address)
    if out.format not in ("hdf5", "zarr"):
        raise UsageError(f"merge joins the shards of a .h5 or .zarr output, not {out.path.name}")
    status = shard_status(out)
    if status is None:
        where = (f"no {out.path.stem}.shard-*-of-*{out.path.suffix} files beside it"
                 if out.format == "hdf5" else f"{out.path} is not a sharded logmm store")
        raise LogmmError(f"cannot merge {out.path}: {where}")
    if status.missing or status.problems:
        why = (f"missing or incomplete shards of {status.count}: {status.describe_missing()}"
               if status.missing else "; ".join(status.problems))
        raise LogmmError(f"cannot merge {out.path}: {why}")
    if out.format == "zarr":
        if status.merged:
            return MergeResult(out, (status.n_rows or 0,), status.count, wrote=False)
        if not _finish_store(out, overwrite=overwrite):
            raise LogmmError(f"cannot merge {out.path}: another process is finishing it")
        return MergeResult(out, (status.n_rows or 0,), status.count, wrote=True)
    return _merge_hdf5(out, status, overwrite=overwrite)


def _merge_hdf5(out: ArrayAddress, status: ShardStatus, *, overwrite: bool) -> MergeResult:
    import h5py

    _refuse_container(out)
    check_output(out, overwrite=overwrite)
    first = status.shards[0].attrs
    shape = tuple(int(s) for s in first["total_shape"])
    with h5py.File(status.shards[0].where, "r") as f:
        dtype = f[out.dataset].dtype
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    for s in status.shards:
        assert s.rows is not None
        r0, r1 = s.rows
        if r1 > r0:
            source = h5py.VirtualSource(os.path.relpath(s.where, out.path.parent),
                                        out.dataset, shape=(r1 - r0, *shape[1:]))
            layout[r0:r1] = source
    tmp = partial_path(out.path)
    _remove(tmp)
    try:
        with h5py.File(tmp, "w") as f:
            ds = f.create_virtual_dataset(out.dataset, layout, fillvalue=np.nan)
            attrs = _summed_attrs(s.attrs for s in status.shards)
            attrs.update(complete=True, shards=status.count,
                         shard_files=[Path(s.where).name for s in status.shards])
            for key, value in attrs.items():
                if value is not None:
                    ds.attrs[key] = _jsonable(value)
        if not overwrite and os.path.lexists(out.path):
            raise OutputExistsError(f"output exists: {out.path} (use --overwrite to replace it)")
        _replace(tmp, out.path)
    except BaseException:
        _remove(tmp)
        raise
    return MergeResult(out, shape, status.count, wrote=True)


def shard_summary(output: Any) -> str | None:
    """One line about the shard an engine just wrote (None when it wrote no shard):
    its rows, or that it was empty, and whether the whole output is now finished."""
    shard = getattr(output, "shard", None)
    if shard is None:
        return None
    writer = output.writer
    r0, r1 = writer.attrs.get("row_start", 0), writer.attrs.get("row_stop", 0)
    out = writer.address if isinstance(writer, SharedZarrWriter) else output_address(
        writer.path).with_dataset(writer.address.dataset)
    if r1 <= r0:
        text = (f"shard {shard} holds no row blocks (the plan has "
                f"{len(output.plan.row_blocks())}); wrote only its completion marker")
    else:
        own = shard_blocks(output.plan.row_blocks(), shard)
        text = (f"shard {shard}: rows {r0}:{r1} (blocks {own[0][0]}-{own[-1][0]} of "
                f"{len(output.plan.row_blocks())}) into {out}")
    if isinstance(writer, SharedZarrWriter):
        text += ("; all shards done, the store is now " + str(writer.path) if writer.finished
                 else "; the store is renamed into place when every shard is done")
    else:
        text += "; join the shards with 'logmm merge'"
    return text
