"""One runner for every file operation: a prepared :class:`Job` and :func:`run`.

An operation (``multiply``, ``project``, ``loglik``, ``einsum``, ``chain``, ``power``,
``convert``) is *prepared* into a :class:`Job`: its inputs are opened and checked, its
output address, shape and dtype fixed, its fingerprint and plan made, and its work is
two functions, ``load(block)`` (read a block's inputs) and ``compute(block, data, out)``
(fill ``out``, the block's rows of the output). :func:`run` then runs any job, always the
same way:

1. take the output's lock; with ``resume``, load an interrupted run's record (refusing one
   whose fingerprint differs) and reuse its plan; open the writer (reopening the partial
   output when resuming) and list the row blocks still to compute (:func:`open_output`);
2. run those blocks: locally through :func:`logmm.stream.run_pipeline` (read ahead,
   compute, write behind), or as tasks on a dask cluster (:mod:`logmm.dask_backend`);
   each stored block is noted in the resume record and advances the progress bar;
3. on success store the provenance (one header for every command,
   :func:`logmm.provenance.run_provenance`, and the job's own attributes) and commit
   (rename into place); on an interruption keep the partial output for ``--resume``; on
   a failure remove it (:func:`finish_output`).

Two kinds of job share that path. A *row* job (``gather is None``) writes each block's
rows as it goes: ``compute`` fills the view the runner passes in (the output's own
memory map where the format has one, otherwise a buffer the runner then stores). A
*gathering* job (``gather`` set: the whole-array commands, ``loglik --reduce sum``)
collects its blocks' values, and ``gather(values)`` is the output, written whole; such a
job keeps no resume record.

:func:`plan_job` is the planned-only run behind ``logmm plan``: it makes (or, for
``--shard`` of a Zarr output, creates the shared store with) the plan and returns it,
computing nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from .errors import AlreadyComplete, LogmmError, RunInterrupted, UsageError
from .inspect import refuse_or_skip_existing
from .io.addresses import ArrayAddress
from .io.resume import OutputLock, ResumeRecord, record_path
from .io.writers import ArrayWriter, create_writer, output_exists, partial_path
from .shards import (
    PlannedRun,
    Shard,
    check_shard_output,
    digest,
    open_shard_output,
    parse_shard,
    planned,
    shard_status,
    shard_summary,
)
from .stream import run_pipeline

__all__ = ["Block", "BlockTask", "Job", "OpenOutput", "OutputOptions", "Plan", "PlannedRun",
           "RunOptions", "RunResult", "WholePlan", "finish_output", "open_output",
           "plan_job", "progress_bar", "run"]

#: ``(index, start, stop)``: a row block of the plan
Block = tuple[int, int, int]

#: row blocks per dask worker thread a plan makes at least: with 1-2 blocks per worker
#: (what one process's memory budget often gives) a cluster idles after the first wave
#: and a lost worker loses half the run; 4 keeps workers busy at a few blocks' overhead
BLOCKS_PER_WORKER = 4


class Plan(Protocol):
    """What the runner needs of a plan (:class:`logmm.plan.ProductPlan`,
    :class:`logmm.plan.RowPlan`, :class:`WholePlan`)."""

    @property
    def chunk_rows(self) -> int:
        """Rows per output storage chunk."""

    @property
    def block_rows(self) -> int:
        """Rows per block."""

    def row_blocks(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]``: the row blocks."""

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready numbers (a resume record keeps it)."""


@dataclass(frozen=True)
class WholePlan:
    """The plan of a job computed in one piece (chain, power, an einsum read whole)."""

    chunk_rows: int = 0
    block_rows: int = 1
    memory: int = 0
    estimate: int = 0

    @classmethod
    def make(cls, options: RunOptions) -> WholePlan:
        """The plan (whatever the options)."""
        return cls()

    def row_blocks(self) -> list[tuple[int, int]]:
        """One block."""
        return [(0, 1)]

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready numbers."""
        return {"chunk_rows": self.chunk_rows}


@dataclass(frozen=True)
class OutputOptions:
    """How an output is stored: replace an existing one, compression, chunking."""

    overwrite: bool = False
    compression: str | None = None
    chunk_rows: int | None = None
    zarr_format: int = 3

    @property
    def contiguous(self) -> bool:
        """No chunk rows asked: an HDF5 output may be stored contiguously."""
        return self.chunk_rows is None


@dataclass(frozen=True)
class RunOptions:
    """How a job runs: memory budget and blocks, resume, shard, scheduler, reporting."""

    memory: int | None = None
    block_rows: int | None = None
    resume: bool = False
    shard: Shard | None = None
    scheduler: Any = "local"
    dask_address: str | None = None
    progress: bool = False
    command: str = ""
    #: task slots (worker threads) of the dask cluster the run uses; set by :func:`run`
    workers: int = 0

    @classmethod
    def checked(cls, *, shard: Shard | str | None = None, scheduler: Any = "local",
                dask_address: str | None = None, **fields: Any) -> RunOptions:
        """Run options from a command's keyword arguments, ``shard`` parsed (``"I/N"``)
        and ``scheduler`` checked (an address implies ``"dask"``).

        Raises
        ------
        UsageError
            A malformed shard or an unknown scheduler.
        LogmmError
            ``"dask"`` without dask installed.
        """
        from .dask_backend import check_scheduler

        return cls(shard=parse_shard(shard), scheduler=check_scheduler(scheduler, dask_address),
                   dask_address=dask_address, **fields)

    @property
    def min_blocks(self) -> int:
        """Blocks a fresh plan makes at least: one per shard (no shard of ``--shard I/N``
        is idle), and :data:`BLOCKS_PER_WORKER` per worker thread of a dask cluster
        (without ``block_rows``), so that every worker has work and a lost one loses
        little."""
        per_shard = self.shard.count if self.shard is not None else 1
        per_worker = BLOCKS_PER_WORKER * self.workers if self.block_rows is None else 1
        return max(per_shard, per_worker)


@dataclass(kw_only=True)
class RunResult:
    """What a run wrote; each command's result adds its own fields.

    Attributes
    ----------
    output : ArrayAddress or None
        The output address, dataset part filled in (``OUT.h5:/data``); None for a
        ``loglik --reduce sum`` without ``-o``.
    shape : tuple of int
    dtype : numpy.dtype
    seconds : float
        Wall time from opening the inputs to the committed output.
    plan : Plan
        The blocks used (the recorded plan when resuming).
    resumed_blocks : int
        Row blocks found already stored by an interrupted run (``resume``).
    shard_note : str or None
        With ``shard``: which rows this shard wrote, and whether the output is finished.
    attrs : dict
        The provenance attributes stored with the output.
    """

    output: ArrayAddress | None
    shape: tuple[int, ...]
    dtype: np.dtype
    seconds: float
    plan: Any = None
    resumed_blocks: int = 0
    shard_note: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The output file or store on disk."""
        if self.output is None:
            raise AttributeError("this run wrote no output")
        return self.output.path

    @property
    def block_rows(self) -> int:
        """Rows per block of the plan."""
        return int(self.plan.block_rows)


#: the result type of a job
R = TypeVar("R", bound="RunResult")

#: ``compute(block, data, out, advance)``: fill ``out`` (a row job) or return the block's
#: value (a gathering job, ``out`` None); ``advance(n)`` moves a progress bar counted in
#: steps other than rows (chain and power count products). Returns a partial summary.
Compute = Callable[[Block, Any, Any, Callable[[int], Any]], Any]


def _no_advance(_: int) -> None:
    return None


@dataclass(kw_only=True)
class Job(Generic[R]):
    """A prepared operation; see the module docstring. Close it (or use ``with``) to
    release its open inputs; :func:`run` does.

    Attributes
    ----------
    operation : str
        ``multiply``, ``project``, ...; also the progress bar's label.
    inputs : list of ArrayAddress
        What the output's provenance lists as inputs.
    output : ArrayAddress or None
    shape, dtype
        The output's; None for a gathering job whose result decides them.
    output_options : OutputOptions
    options : RunOptions
    fingerprint : dict or None
        The inputs and every option that changes the result; None for a job that keeps
        no resume record (it cannot be resumed).
    make_plan, load_plan
        ``make_plan(options)``: plan a fresh run under these run options;
        ``load_plan(record)``: rebuild a recorded plan (``--resume``, shards).
    load, compute
        See :data:`Compute`; both must pickle for the dask scheduler.
    gather : callable, optional
        ``gather(values) -> array``: the output of a gathering job.
    summarize : callable
        ``summarize(partials)``: what the result reports (a kernel report, a total).
    describe : callable
        ``describe(header, summary, plan) -> attrs``: the provenance attributes, given the
        common header.
    result : callable
        ``result(base, summary) -> RunResult``: the command's result from the base fields.
    progress_unit : str
        ``row`` (the runner counts stored rows) or another step that ``compute`` counts.
    progress_total : int, optional
        Steps in all when not rows.
    use_plan : callable, optional
        Called with the plan once it is fixed (the recorded one when resuming), before
        any block is read.
    compute_panel : callable, optional
        ``compute_panel(block, (c0, c1), data) -> (values, partial summary)``: columns
        ``c0:c1`` of the block, the bytes ``compute`` stores there. With it, a plan with
        column panels (``plan.col_panels()``) runs on dask as (block, panel) tasks.
    """

    operation: str
    inputs: Sequence[ArrayAddress]
    output: ArrayAddress | None
    shape: tuple[int, ...] | None
    dtype: np.dtype | None
    output_options: OutputOptions
    options: RunOptions
    fingerprint: dict[str, Any] | None
    make_plan: Callable[[RunOptions], Any]
    load_plan: Callable[[dict[str, Any]], Any] | None = None
    load: Callable[[Block], Any]
    compute: Compute
    gather: Callable[[list[Any]], np.ndarray] | None = None
    summarize: Callable[[list[Any]], Any] = lambda partials: None
    describe: Callable[[dict[str, Any], Any, Any], dict[str, Any]]
    result: Callable[[dict[str, Any], Any], R]
    progress_unit: str = "row"
    progress_total: int | None = None
    use_plan: Callable[[Any], None] | None = None
    compute_panel: Callable[[Block, tuple[int, int], Any], tuple[np.ndarray, Any]] | None = None
    stack: ExitStack = field(default_factory=ExitStack)
    started: float = field(default_factory=time.perf_counter)

    def close(self) -> None:
        """Close the job's open inputs."""
        self.stack.close()

    def __enter__(self) -> Job[R]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class OpenOutput:
    """An output being written: its writer, resume record, plan and the blocks left.

    Attributes
    ----------
    writer : ArrayWriter
    record : ResumeRecord or None
        None for a job without a fingerprint.
    plan : the plan (recorded one when resuming)
    pending : list of (index, start, stop)
        Row blocks not yet stored.
    resumed_blocks : int
        Row blocks an interrupted run had already stored.
    total_rows : int
        Rows this run computes in all (the whole output, or its shard's rows).
    shard : Shard or None
        The shard computed (``--shard``), None for the whole output.
    fingerprint : str
        :func:`logmm.shards.digest` of the run's fingerprint, stored in the output's
        ``fingerprint`` attribute at commit (a ``--resume`` rerun compares it).
    """

    writer: ArrayWriter
    record: ResumeRecord | None
    plan: Any
    pending: list[Block]
    resumed_blocks: int
    total_rows: int = 0
    shard: Shard | None = None
    fingerprint: str = ""


# ----------------------------------------------------------------------------- running


def run(job: Job[R]) -> R:
    """Run ``job`` to its committed output and close it; return the command's result.

    Raises
    ------
    logmm.errors.AlreadyComplete
        ``resume``, and the output is complete and made by the same inputs and options.
    OutputExistsError
        The output exists and ``overwrite`` is false.
    LogmmError
        Another run holds the lock; ``resume`` with a different fingerprint.
    Whatever the job's ``load`` and ``compute`` raise (bad data found block by block).
    """
    with job:
        if not _local(job.options):
            if job.gather is None:      # refused, or nothing to do: start no cluster
                _refuse_or_skip(job)
            _connect(job)
        if job.gather is not None:
            return _run_gathering(job)
        output = open_output(job)
        if job.use_plan is not None:
            job.use_plan(output.plan)
        summary = finish_output(output, lambda: _run_rows(job, output),
                                lambda summary: _attrs(job, summary, output.plan))
        return job.result(_base(job, output.plan, resumed_blocks=output.resumed_blocks,
                                shard_note=shard_summary(output),
                                attrs=output.writer.attrs), summary)


def _connect(job: Job) -> None:
    """Connect to (or start) the job's dask cluster, held on the job's stack; plan for its
    worker threads."""
    from .dask_backend import connect, task_slots
    from .plan import default_memory

    options = job.options
    client = job.stack.enter_context(connect(options.scheduler, options.dask_address,
                                             options.memory or default_memory()))
    job.options = replace(options, scheduler=client, workers=task_slots(client))


def _base(job: Job, plan: Any, **fields: Any) -> dict[str, Any]:
    """The fields every :class:`RunResult` has; ``fields`` add to or replace them."""
    return dict(dict(output=job.output, shape=job.shape, dtype=job.dtype,
                     seconds=time.perf_counter() - job.started, plan=plan), **fields)


def _attrs(job: Job, summary: Any, plan: Any) -> dict[str, Any]:
    """The output's provenance: the common header and the job's own attributes."""
    from .provenance import run_provenance

    return job.describe(run_provenance(job.options.command, job.inputs), summary, plan)


def _run_rows(job: Job, output: OpenOutput) -> Any:
    """Compute the pending blocks, each into its rows of the output; return the summary
    of the blocks computed by this run."""
    # the task below travels to dask workers: it holds what it needs, not the job
    writer, shape, dtype, job_compute = output.writer, job.shape, job.dtype, job.compute
    assert shape is not None and dtype is not None
    if (panels := _task_panels(job, output)) is not None:
        return _run_tiles(job, output, panels)
    parts: dict[int, list[Any]] = {}
    chunk_rows = output.writer.chunk_rows

    def compute(block: Block, data: Any) -> tuple[np.ndarray | None, list[Any]]:
        _, r0, r1 = block
        rows = (r1 - r0, *shape[1:])
        view = writer.region_view(r0, 0, rows) if len(rows) == 2 else None
        out = view if view is not None else np.empty(rows, dtype)
        if view is None and writer.writes_in_task:   # a dask task writing its own chunks
            return None, _compute_writing(block, data, out, job_compute, writer, chunk_rows)
        part = job_compute(block, data, out, _no_advance)
        return (None if view is not None else out), [part]

    def store(block: Block, computed: tuple[np.ndarray | None, list[Any]]) -> None:
        values, block_parts = computed
        if values is not None:                 # else computed straight into a memory map
            writer.write_rows(block[1], values)
        writer.flush()
        parts[block[0]] = block_parts

    _execute(job, output, compute, store)
    return job.summarize([p for i in sorted(parts) for p in parts[i]])


#: pieces a dask task cuts its block into, so that it writes one piece while it computes
#: the next (what the local pipeline's writer thread overlaps): a single-threaded worker
#: otherwise spent half of each Zarr block waiting for the write (zstd and the chunk
#: files; profiled on bench_scaling's blocks of 8192 x 256). A writer may ask for fewer
#: (``pieces``): an HDF5 task writes its block at once, as each write takes the file's
#: cluster lock and reopens it (~10 ms of CPU a piece: 4 pieces took 4.56 s of CPU
#: against 4.25 s for 1, and no less time)
TASK_PIECES = 4


def _compute_writing(block: Block, data: Any, out: np.ndarray, job_compute: Compute,
                     writer: Any, chunk_rows: int) -> list[Any]:
    """Compute ``block`` into ``out`` and write it through ``writer`` (a dask task's),
    piece by piece (whole output chunks; :data:`TASK_PIECES`, or the writer's ``pieces``):
    the next piece is computed on a second thread while this one writes the last, so the
    writes (taken on the task's own thread, as an HDF5 output's cluster lock must be)
    overlap the compute. Returns the pieces' partial summaries. The pieces are the
    block's rows cut again, which gives the same bytes (the kernels' rows are
    independent); data that cannot be cut by rows (not an array) is one piece."""
    from concurrent.futures import ThreadPoolExecutor

    from .resources import one_thread_per_task

    i, r0, r1 = block
    step = -(-(r1 - r0) // (getattr(writer, "pieces", None) or TASK_PIECES))
    step = max(1, chunk_rows) * max(1, -(-step // max(1, chunk_rows)))   # whole chunks
    if step >= r1 - r0 or not (data is None or isinstance(data, np.ndarray)):
        part = job_compute(block, data, out, _no_advance)
        writer.write_rows(r0, out)
        return [part]
    bounds = [(a, min(r1, a + step)) for a in range(r0, r1, step)]

    @one_thread_per_task                  # on the second thread too: one kernel thread
    def compute(a: int, b: int) -> Any:
        return job_compute((i, a, b), None if data is None else data[a - r0:b - r0],
                           out[a - r0:b - r0], _no_advance)

    pieces: list[Any] = []
    with ThreadPoolExecutor(1, thread_name_prefix="logmm-piece") as pool:
        ahead = pool.submit(compute, *bounds[0])
        for n, (a, b) in enumerate(bounds):
            pieces.append(ahead.result())
            if n + 1 < len(bounds):
                ahead = pool.submit(compute, *bounds[n + 1])
            writer.write_rows(a, out[a - r0:b - r0])  # stored when the task returns
    return pieces


def _task_panels(job: Job, output: OpenOutput) -> list[tuple[int, int]] | None:
    """The column panels to run as tasks of their own: on dask, with a plan of several
    panels, a job that computes by panel and a writer whose tasks write whole chunks of
    one panel (a Zarr store chunked by panel, as :func:`_panel_width` makes it); None
    otherwise (a task then computes its block's panels one after the other)."""
    panels: list[tuple[int, int]] = getattr(output.plan, "col_panels", list)()
    cols = getattr(output.writer, "chunk_cols", None)
    if _local(job.options) or job.compute_panel is None or len(panels) < 2 or not cols \
            or output.writer.task_target() is None \
            or any(c0 % cols or (c1 - c0) % cols and c1 != job.shape[1]  # type: ignore[index]
                   for c0, c1 in panels):
        return None
    return panels


#: ``(block index, r0, r1, c0, c1)``: one column panel of a row block, a dask task
Tile = tuple[int, int, int, int, int]


def _run_tiles(job: Job, output: OpenOutput, panels: list[tuple[int, int]]) -> Any:
    """Run the pending blocks as (block, panel) tasks, each writing its tile (whole
    chunks) into the partial store; a block counts as stored (resume record, progress)
    once all its panels are. Contraction chunks are folded in k order inside a task (the
    local bytes; separate K tasks would ship float64 partials between workers)."""
    writer, compute_panel = output.writer, job.compute_panel
    assert compute_panel is not None
    tiles: list[Tile] = [(i, r0, r1, c0, c1) for i, r0, r1 in output.pending
                         for c0, c1 in panels]
    left = {i: len(panels) for i, _, _ in output.pending}
    parts: dict[int, list[Any]] = {i: [] for i in left}

    def compute(tile: Tile, data: Any) -> Any:
        i, r0, r1, c0, c1 = tile
        values, part = compute_panel((i, r0, r1), (c0, c1), data)
        writer.write_region(r0, c0, values)
        return part

    def store(tile: Tile, part: Any) -> None:
        parts[tile[0]].append(part)
        left[tile[0]] -= 1

    def stored(tile: Tile) -> Block | None:
        return tile[:3] if not left[tile[0]] else None     # type: ignore[return-value]

    _execute(job, output, compute, store, units=tiles, unit_done=stored)
    return job.summarize([p for i in sorted(parts) for p in parts[i]])


def _execute(job: Job, output: OpenOutput, compute: Callable[[Any, Any], Any],
             store: Callable[[Any, Any], None], *, units: list[Any] | None = None,
             unit_done: Callable[[Any], Block | None] | None = None) -> None:
    """Run ``output.pending`` (or ``units``, tiles of them) through ``load`` →
    ``compute`` → ``store``, locally or on dask, marking each stored block (the block
    ``unit_done(unit)`` names once it is whole) in the record and on the progress bar."""
    options, record, pending = job.options, output.record, output.pending
    n_rows = output.total_rows
    bar = progress_bar(n_rows, options.progress, job.operation)
    bar.update(n_rows - sum(r1 - r0 for _, r0, r1 in pending))

    def stored(unit: Any) -> None:
        block = unit if unit_done is None else unit_done(unit)
        if block is None:
            return
        if record is not None:
            record.mark_done(block[0])
        bar.update(block[2] - block[1])

    try:
        if not _local(options) and output.writer.shares_file_with_inputs:
            raise UsageError(
                f"--scheduler dask cannot read inputs from {output.writer.path} while this "
                "run adds a dataset to it (HDF5 lets no other process read a file being "
                "written): write the output to another file, or drop --scheduler dask")
        with output.writer.lent() if not _local(options) else nullcontext():
            _dispatch(job, pending if units is None else units, compute, store, stored)
    finally:
        bar.close()


def _dispatch(job: Job[Any], blocks: list[Any], compute: Callable[[Any, Any], Any],
              store: Callable[[Any, Any], None], stored: Callable[[Any], None]) -> None:
    """``store(block, compute(block, job.load(block[:3])))`` then ``stored(block)`` for
    every block (or tile, ``(index, r0, r1, c0, c1)``): the local read-ahead pipeline, or
    tasks on the job's dask cluster."""
    if _local(job.options):
        run_pipeline(blocks, job.load, compute, store, on_stored=stored)
        return
    from .dask_backend import run_dask

    run_dask(blocks, BlockTask(job.load, compute), store, stored, client=job.options.scheduler)


def _local(options: RunOptions) -> bool:
    return (isinstance(options.scheduler, str) and options.scheduler == "local"
            and not options.dask_address)


def _run_gathering(job: Job[R]) -> R:
    """A gathering job: lock, compute every block (locally or on dask), ``gather`` the
    values into the output and write it whole."""
    out, options, job_compute = job.output, job.options, job.compute
    if out is not None:
        job.stack.enter_context(OutputLock(out))
    plan = job.make_plan(options)
    if job.use_plan is not None:
        job.use_plan(plan)
    blocks = [(i, r0, r1) for i, (r0, r1) in enumerate(plan.row_blocks())]
    values: dict[int, Any] = {}
    rows_bar = job.progress_unit == "row"
    bar = job.stack.enter_context(progress_bar(
        job.progress_total if not rows_bar else sum(r1 - r0 for _, r0, r1 in blocks),
        options.progress, job.operation, unit=job.progress_unit))
    advance = _no_advance if rows_bar else bar.update

    def compute(block: Block, data: Any) -> Any:
        return job_compute(block, data, None, advance)

    def store(block: Block, value: Any) -> None:
        values[block[0]] = value

    def stored(block: Block) -> None:
        if rows_bar:
            bar.update(block[2] - block[1])

    _dispatch(job, blocks, compute, store, stored)
    ordered = [values[i] for i, _, _ in blocks]
    result = np.asarray(job.gather(ordered))     # type: ignore[misc]
    summary = job.summarize(ordered)
    attrs: dict[str, Any] = {}
    if out is not None:
        attrs = _attrs(job, summary, plan)
        _write_whole(out, result, attrs, job.output_options)
    shown = None if isinstance(plan, WholePlan) else plan     # one block: nothing to show
    # the gathered result decides the shape and dtype (a whole einsum's, a chain's)
    return job.result(_base(job, shown, attrs=attrs, shape=tuple(result.shape),
                            dtype=result.dtype), summary)


def _write_whole(out: ArrayAddress, result: np.ndarray, attrs: dict[str, Any],
                 options: OutputOptions) -> None:
    """Write ``result`` under a hidden partial name, store ``attrs`` and commit."""
    from .errors import InputError

    if result.ndim == 0 and out.format == "zarr":
        raise InputError(f"the result is a scalar; {out} cannot store a 0-D array yet, "
                         "write it to .npy or .h5")
    with create_writer(out, result.shape, result.dtype, overwrite=options.overwrite,
                       compression=options.compression, chunk_rows=options.chunk_rows,
                       contiguous=options.contiguous,
                       zarr_format=options.zarr_format) as writer:
        writer.write_all(result)
        writer.set_attrs(attrs)
        writer.commit()


# ----------------------------------------------------------------------------- the output


def _sweep_finished_run(out: ArrayAddress) -> None:
    """Remove the resume record a run killed between its commit's rename and its clean-up
    left beside a complete output (its lock file goes with the lock's release), so that
    the ``--resume`` that finds the output complete leaves nothing behind; a live run
    holding the lock keeps its files."""
    try:
        with OutputLock(out):
            record_path(out).unlink(missing_ok=True)
    except LogmmError:
        pass            # another run holds the lock: the files are its own
    except OSError:
        pass            # unremovable (read-only directory): harmless, as before


def _refuse_or_skip(job: Job) -> None:
    """What the job's existing output decides before any work (:func:`open_output`
    first, or :func:`open_shard_output` for a shard, and :func:`run` before a dask
    cluster starts): with ``resume``, a complete
    output made by the same inputs and options is nothing to do, any other existing one is
    refused unless ``overwrite``; a ``shard`` needs an output that shards.

    Raises
    ------
    logmm.errors.AlreadyComplete, OutputExistsError, UsageError
        See :func:`open_output`.
    """
    out, options, opts = job.output, job.options, job.output_options
    assert out is not None
    fingerprint = _fingerprint(job)
    resume = options.resume and fingerprint is not None
    if options.shard is not None:
        _refuse_zarr_v2_shards(job)
        assert fingerprint is not None
        check_shard_output(out, digest(fingerprint), options.shard, resume=resume,
                           overwrite=opts.overwrite, refuse_existing=refuse_or_skip_existing)
        return
    if resume and not opts.overwrite and output_exists(out):
        assert fingerprint is not None
        try:
            refuse_or_skip_existing(out, digest(fingerprint))
        except AlreadyComplete:
            _sweep_finished_run(out)
            raise


def open_output(job: Job) -> OpenOutput:
    """Lock the job's output, find what an interrupted run left, and open the writer.

    The lock and the writer are entered on the job's stack. With ``resume``, an
    existing complete output whose stored fingerprint is this run's is nothing to do
    (:class:`AlreadyComplete`); any other existing output is refused unless
    ``overwrite``. ``shard`` limits the run to one shard's row blocks (see
    :mod:`logmm.shards`).

    Raises
    ------
    logmm.errors.AlreadyComplete, OutputExistsError, LogmmError, UsageError
        See :func:`run`; a ``shard`` with a ``.npy`` output is a UsageError.
    """
    out, stack, options, opts = job.output, job.stack, job.options, job.output_options
    assert out is not None and job.shape is not None and job.dtype is not None
    fingerprint = _fingerprint(job)
    resume = options.resume and fingerprint is not None
    if options.shard is not None:           # open_shard_output makes the shard checks
        _refuse_zarr_v2_shards(job)
        assert fingerprint is not None and job.load_plan is not None
        shard_writer, shard_record, shard_plan, shard_blocks = open_shard_output(
            stack, out, job.shape, job.dtype, fingerprint=fingerprint, resume=resume,
            make_plan=lambda: job.make_plan(options), load_plan=job.load_plan,
            overwrite=opts.overwrite,
            compression=opts.compression, contiguous=opts.contiguous, shard=options.shard,
            refuse_existing=refuse_or_skip_existing)
        pending = [b for b in shard_blocks if b[0] not in shard_record.done]
        return OpenOutput(writer=shard_writer, record=shard_record, plan=shard_plan,
                          pending=pending, resumed_blocks=len(shard_blocks) - len(pending),
                          total_rows=sum(r1 - r0 for _, r0, r1 in shard_blocks),
                          shard=options.shard)
    _refuse_or_skip(job)
    stack.enter_context(OutputLock(out))
    if out.format == "zarr" and (shared := shard_status(out)) is not None and not shared.merged:
        raise LogmmError(f"{partial_path(out.path)} is the shared store of --shard runs "
                         f"({shared.summary()}); finish them with --shard, or delete it")
    record: ResumeRecord | None = ResumeRecord.load(record_path(out)) if resume else None
    if record is not None and fingerprint is not None and (why := record.mismatch(fingerprint)):
        raise LogmmError(f"cannot resume {out}: {why}; rerun without --resume to start afresh")
    plan = (job.load_plan(record.plan) if record is not None and job.load_plan is not None
            else job.make_plan(options))
    writer = stack.enter_context(create_writer(
        out, job.shape, job.dtype, overwrite=opts.overwrite, compression=opts.compression,
        chunk_rows=plan.chunk_rows, resume=record is not None, contiguous=opts.contiguous,
        zarr_format=opts.zarr_format, chunk_cols=_panel_width(job, plan)))
    if fingerprint is not None and (not writer.resumed or record is None):
        record = ResumeRecord(record_path(out), fingerprint, plan.as_dict())
    assert record is None or fingerprint is not None
    if record is not None:
        record.save()
    blocks: list[Block] = [(i, r0, r1) for i, (r0, r1) in enumerate(plan.row_blocks())]
    done: set[int] = record.done if record is not None else set()
    pending = [block for block in blocks if block[0] not in done]
    return OpenOutput(writer=writer, record=record, plan=plan, pending=pending,
                      resumed_blocks=len(blocks) - len(pending),
                      total_rows=sum(r1 - r0 for _, r0, r1 in blocks),
                      fingerprint=digest(fingerprint) if fingerprint is not None else "")


def _panel_width(job: Job[Any], plan: Any) -> int | None:
    """Columns per chunk of a Zarr output that dask (block, panel) tasks write: the
    plan's panel width when it has several panels and the job computes by panel."""
    if _local(job.options) or job.compute_panel is None or job.output is None \
            or job.output.format != "zarr" or len(getattr(plan, "col_panels", list)()) < 2:
        return None
    return int(plan.col_panel)


def _fingerprint(job: Job[Any]) -> dict[str, Any] | None:
    """The job's fingerprint, with the Zarr format when it is not the default 3 (a
    partial store of the other format is not this run's to resume)."""
    if job.fingerprint is None or job.output_options.zarr_format == 3:
        return job.fingerprint
    return dict(job.fingerprint, zarr_format=job.output_options.zarr_format)


def _refuse_zarr_v2_shards(job: Job[Any]) -> None:
    """``--shard`` writes one shared format-3 store (or HDF5 files)."""
    if job.output_options.zarr_format != 3 and job.output is not None \
            and job.output.format == "zarr":
        raise UsageError("--zarr-format 2 is not for --shard runs: the shards share one "
                         "Zarr format 3 store (convert the finished output with 'logmm "
                         "convert OUT.zarr OUT2.zarr --zarr-format 2')")


def finish_output(output: OpenOutput, compute: Callable[[], Any],
                  attrs: Callable[[Any], Mapping[str, Any]]) -> Any:
    """``compute()`` the blocks, then store ``attrs(summary)`` and commit; return the
    summary.

    An interruption (KeyboardInterrupt, SystemExit, a lost dask cluster) keeps the partial
    output and its record for ``--resume``; any other failure removes the record (the
    writer removes the partial output when its ``with`` block exits with the error). A job
    without a record cannot be resumed, so an interruption removes its partial output too.
    """
    try:
        summary = compute()
    except (KeyboardInterrupt, SystemExit, RunInterrupted):
        if output.record is not None:
            output.writer.suspend()   # interrupted: keep what is stored for --resume
        raise
    except BaseException:
        if output.record is not None:
            output.record.remove()    # failed: the partial output goes with the writer
        raise
    output.writer.set_attrs(attrs(summary))
    if output.fingerprint:
        output.writer.set_attrs({"fingerprint": output.fingerprint})
    output.writer.commit()
    if output.record is not None:
        output.record.remove()
    return summary


# ----------------------------------------------------------------------------- planning


def plan_job(job: Job) -> PlannedRun:
    """The plan ``job`` would run, computing nothing (``logmm plan``); with a shard
    count and a Zarr output the shared store is created (empty, holding the plan every
    shard then uses).

    Raises
    ------
    UsageError
        A gathering job (it does not stream by row blocks: nothing to plan).
    """
    with job:
        if job.gather is not None:
            raise UsageError(f"{job.operation} with these options does not stream by row "
                             "blocks; nothing to plan")
        assert job.output is not None and job.shape is not None and job.dtype is not None
        fingerprint = _fingerprint(job)
        assert fingerprint is not None and job.load_plan is not None
        if job.options.shard is not None:
            _refuse_zarr_v2_shards(job)
        return planned(job.output, job.shape, job.dtype, fingerprint=fingerprint,
                       make_plan=lambda: job.make_plan(job.options), load_plan=job.load_plan,
                       compression=job.output_options.compression, shard=job.options.shard)


# ----------------------------------------------------------------------------- helpers


class BlockTask:
    """``compute(block, load(block))`` as one picklable callable (a dask task)."""

    def __init__(self, load: Callable[[Block], Any], compute: Callable[[Block, Any], Any]):
        self.load, self.compute = load, compute

    def __call__(self, block: Any) -> Any:
        """Load and compute one block (or tile: its block's rows are loaded)."""
        return self.compute(block, self.load(block[:3]))


def progress_bar(total: int | None, enabled: bool, desc: str, unit: str = "row") -> Any:
    """A tqdm bar on stderr counting ``unit`` (a no-op one when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=unit == "row", desc=desc, file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)
