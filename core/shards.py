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
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LogmmError, OutputExistsError, UsageError
from .io import hdf5, layout
from .io import zarr as zarr_io
from .io.addresses import ArrayAddress
from .io.base import ArrayWriter, remove_path
from .io.layout import MARKER_DIR
from .io.resume import OutputLock, ResumeRecord, record_path
from .io.writers import (
    check_output,
    container_output,
    create_writer,
    output_address,
    partial_path,
)
from .io.zarr import SharedZarrWriter
from .plan import row_ranges

__all__ = [
    "MARKER_DIR",
    "PlannedRun",
    "MergeResult",
    "Shard",
    "ShardState",
    "ShardStatus",
    "check_shard_output",
    "describe_plan",
    "digest",
    "merge",
    "open_shard_output",
    "parse_shard",
    "planned",
    "shard_blocks",
    "shard_path",
    "shard_status",
    "shard_summary",
]



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

@dataclass(frozen=True)
class PlannedRun:
    """What :func:`logmm.engine.plan_job` found: the plan of a command, its output, and
    the Zarr store it created for its shards (or None)."""

    plan: Any
    output: ArrayAddress
    shape: tuple[int, ...]
    dtype: np.dtype
    store: Path | None


def planned(out: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype, *,
            fingerprint: dict[str, Any], make_plan: Callable[[], Any],
            load_plan: Callable[[dict[str, Any]], Any], compression: str | None,
            shard: Shard | None) -> PlannedRun:
    """The :class:`PlannedRun` of a command; with a shard count and a Zarr output, the
    shared store is created first (empty, with the plan every shard will then use)."""
    if shard is not None and out.format == "zarr":
        _, plan = _open_shared_store(out, shape, dtype, fingerprint=digest(fingerprint),
                                     count=shard.count, make_plan=make_plan,
                                     load_plan=load_plan, compression=compression)
        return PlannedRun(plan, out, shape, dtype, partial_path(out.path))
    return PlannedRun(make_plan(), out, shape, dtype, None)


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def describe_plan(signal: PlannedRun, count: int | None,
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


def check_shard_output(out: ArrayAddress, fingerprint: str, shard: Shard, *, resume: bool,
                       overwrite: bool,
                       refuse_existing: Callable[[ArrayAddress, str, str], None]) -> None:
    """The checks :func:`open_shard_output` makes before any work (also run before a dask
    cluster starts): a format that shards, not inside a container, and under ``resume``
    a finished shard (or store) met by ``refuse_existing`` (``fingerprint``: the run's
    :func:`digest`)."""
    if out.format not in ("zarr", "hdf5"):
        raise UsageError(f"--shard needs a .zarr or .h5 output, not {out.path.name}: shards "
                         "share one Zarr store, or write HDF5 files that 'logmm merge' joins")
    _refuse_container(out)
    if resume and not overwrite:        # a rerun of a finished shard (or whole store)
        unit = shard_path(out.path, shard)
        shard_file = out.__class__(unit, out.format).with_dataset(out.dataset)
        if out.format == "zarr" and os.path.lexists(out.path):
            refuse_existing(out, fingerprint, f"{out} (all {shard.count} shards)")
        elif out.format == "hdf5" and os.path.lexists(unit):
            refuse_existing(shard_file, fingerprint, f"shard {shard} of {out}")


def open_shard_output(stack: ExitStack, out: ArrayAddress, shape: tuple[int, ...],
                      dtype: np.dtype, *, fingerprint: dict[str, Any], resume: bool,
                      make_plan: Callable[[], Any], load_plan: Callable[[dict[str, Any]], Any],
                      overwrite: bool, compression: str | None, contiguous: bool,
                      shard: Shard,
                      refuse_existing: Callable[[ArrayAddress, str, str], None]
                      ) -> tuple[ArrayWriter, ResumeRecord, Any, list[tuple[int, int, int]]]:
    """What :func:`logmm.engine.open_output` does for one shard: ``(writer, record, plan,
    blocks of the shard)``; see the module docstring. The writer takes rows by their
    place in the whole output. ``refuse_existing(output, fingerprint digest, name)``
    meets a finished shard (or store) under ``resume``
    (:func:`logmm.inspect.refuse_or_skip_existing`)."""
    whole = digest(fingerprint)
    check_shard_output(out, whole, shard, resume=resume, overwrite=overwrite,
                       refuse_existing=refuse_existing)
    unit = shard_path(out.path, shard)
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
        writer = stack.enter_context(SharedZarrWriter(
            out, arr, (r0, r1), shard, overwrite=overwrite, resumed=record is not None,
            finish=lambda: _finish_store(out, overwrite=overwrite),
            discard=lambda: _discard_if_abandoned(out, shard)))
    else:
        plan = load_plan(record.plan) if record is not None else make_plan()
        r0, r1 = shard_rows(plan.row_blocks(), shard)
        blocks = shard_blocks(plan.row_blocks(), shard)
        target = out.__class__(shard_path(out.path, shard), out.format).with_dataset(out.dataset)
        writer = stack.enter_context(create_writer(
            target, (r1 - r0, *shape[1:]), dtype, overwrite=overwrite, compression=compression,
            chunk_rows=min(plan.chunk_rows, max(r1 - r0, 1)), resume=record is not None,
            contiguous=contiguous, row_offset=r0))
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

    def describe() -> tuple[int, dict[str, Any]]:
        plan = _chunk_aligned(make_plan())
        return plan.chunk_rows, {"count": count, "fingerprint": fingerprint,
                                 "plan": plan.as_dict()}

    zarr_io.ensure_shared_store(out, shape, dtype, compression=compression, describe=describe)
    arr, meta = zarr_io.open_shared_array(out)
    store = partial_path(out.path)
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


def _discard_if_abandoned(out: ArrayAddress, failed: Shard) -> None:
    """Remove the shared store of ``out`` when no shard has finished, none but ``failed``
    (whose lock the caller holds) is running and none was interrupted (its resume record
    counts on the rows it stored). Holding every other shard's lock while looking keeps a
    shard from starting meanwhile (shards lock before they open the store)."""
    store = partial_path(out.path)
    if zarr_io.read_markers(store / out.dataset_name):
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
        if not zarr_io.read_markers(store / out.dataset_name):
            remove_path(store)
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
        """The shards not finished yet."""
        return [s for s in self.shards if not s.complete]

    @property
    def complete(self) -> bool:
        """Every shard is finished."""
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
        """The status as JSON (``logmm info --json``)."""
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
    found = zarr_io.read_shared_store(out)
    if found is None:
        return None
    store, merged, meta, n_rows = found
    count, fingerprint = int(meta["count"]), meta.get("fingerprint")
    blocks = _plan_blocks(meta["plan"])
    markers = zarr_io.read_markers(store / out.dataset_name)
    states, problems = [], []
    for i in range(count):
        rows = shard_rows(blocks, Shard(i, count))
        marker = markers.get((i, count))
        ok = marker is not None and marker.get("fingerprint") == fingerprint
        if marker is not None and not ok:
            problems.append(f"shard {i}'s marker belongs to another run")
        states.append(ShardState(i, rows, ok, str(store), (marker or {}).get("attrs", {})))
    return ShardStatus("zarr", count, n_rows, states, merged, problems)


def _plan_blocks(plan: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The row blocks of a recorded plan (any plan kind: they all cut n by block_rows)."""
    return row_ranges(int(plan["n"]), int(plan["block_rows"]))


def _hdf5_status(out: ArrayAddress) -> ShardStatus | None:
    groups = hdf5.shard_files(out.path)
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
                attrs = hdf5.read_attrs(path, out.dataset_name)
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
        attrs = _summed_attrs(s.attrs for s in status.shards)
        attrs.update(complete=True, shards=status.count)
        return zarr_io.finish_shared_store(out, attrs, overwrite=overwrite)
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
    _refuse_container(out)
    check_output(out, overwrite=overwrite)
    shape = tuple(int(s) for s in status.shards[0].attrs["total_shape"])
    attrs = _summed_attrs(s.attrs for s in status.shards)
    attrs.update(complete=True, shards=status.count,
                 shard_files=[Path(s.where).name for s in status.shards])
    sources = []
    for s in status.shards:
        assert s.rows is not None
        sources.append((s.where, *s.rows))
    hdf5.merge_virtual(out, sources, shape, attrs, overwrite=overwrite)
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
