"""What every streaming engine does around its kernel: lock, resume record, writer, run.

An engine (``multiply``, ``project``) opens and checks its inputs, then

1. :func:`open_output` takes the output's lock, loads the resume record of an
   interrupted run when ``resume`` is asked (refusing one whose fingerprint differs),
   reuses its block plan or makes a new one, opens the writer (reopening the partial
   output when resuming) and lists the row blocks still to compute;
2. :func:`stream_blocks` runs those blocks through :func:`logmm.stream.run_pipeline`
   (read ahead, compute, write behind), marking each stored block in the record and
   advancing a progress bar;
3. :func:`finish_output` wraps the run: on an interruption the partial output is kept for
   ``--resume``, on a failure it goes, on success the provenance attributes are stored,
   the output is committed (renamed into place) and the record removed.

The plan is any object with ``chunk_rows``, ``row_blocks()`` and ``as_dict()`` (see
:class:`logmm.plan.ProductPlan`, :class:`logmm.plan.RowPlan`).

With ``shard`` (``--shard I/N``), :func:`open_output` hands over to
:func:`logmm.shards.open_shard_output`: the run computes only the shard's contiguous run
of the same row blocks, into the shared Zarr store or its own HDF5 shard file, with its
own lock and resume record; everything else here is the same.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from .errors import LogmmError, UsageError
from .inspect import refuse_or_skip_existing
from .io.addresses import ArrayAddress
from .io.resume import OutputLock, ResumeRecord, record_path
from .io.writers import ArrayWriter, create_writer, output_exists, partial_path
from .shards import PLAN_ONLY, Shard, digest, open_shard_output, planned, shard_status
from .stream import run_pipeline

__all__ = ["Block", "BlockTask", "OpenOutput", "finish_output", "open_output", "progress_bar",
           "stream_blocks"]

#: ``(index, start, stop)``: a row block of the plan
Block = tuple[int, int, int]
P = TypeVar("P")
T = TypeVar("T")


@dataclass
class OpenOutput(Generic[P]):
    """An output being written: its writer, resume record, plan and the blocks left.

    Attributes
    ----------
    writer : ArrayWriter
    record : ResumeRecord
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
    record: ResumeRecord
    plan: P
    pending: list[Block]
    resumed_blocks: int
    total_rows: int = 0
    shard: Shard | None = None
    fingerprint: str = ""


def open_output(stack: ExitStack, out: ArrayAddress, shape: tuple[int, ...], dtype: np.dtype,
                *, fingerprint: dict[str, Any], resume: bool, make_plan: Callable[[], P],
                load_plan: Callable[[dict[str, Any]], P], overwrite: bool = False,
                compression: str | None = None, contiguous: bool = False,
                shard: Shard | None = None) -> OpenOutput[P]:
    """Lock ``out``, find what an interrupted run left, and open the writer.

    ``fingerprint`` names the inputs (:func:`logmm.io.resume.input_fingerprint`) and every
    option that changes the result; ``make_plan()`` plans a fresh run and
    ``load_plan(record.plan)`` rebuilds a recorded plan. The lock and the writer are
    entered on ``stack``. ``shard`` limits the run to one shard's row blocks (see
    :mod:`logmm.shards`).

    With ``resume``, an existing complete output whose stored fingerprint is this run's
    is nothing to do (:class:`AlreadyComplete`); any other existing output is refused
    unless ``overwrite``.

    Raises
    ------
    logmm.errors.AlreadyComplete
        ``resume``, and the output is complete and made by the same inputs and options.
    OutputExistsError
        ``resume`` without ``overwrite``, and the output exists but is not that.
    LogmmError
        Another run holds the lock, or ``resume`` and the recorded fingerprint differs.
    UsageError
        ``shard`` with a ``.npy`` output.
    """
    if PLAN_ONLY.get():
        raise planned(out, shape, dtype, fingerprint=fingerprint, make_plan=make_plan,
                      load_plan=load_plan, compression=compression, shard=shard)
    if shard is not None:
        writer, record, plan, blocks = open_shard_output(
            stack, out, shape, dtype, fingerprint=fingerprint, resume=resume,
            make_plan=make_plan, load_plan=load_plan, overwrite=overwrite,
            compression=compression, contiguous=contiguous, shard=shard)
        pending = [b for b in blocks if b[0] not in record.done]
        return OpenOutput(writer=writer, record=record, plan=plan, pending=pending,
                          resumed_blocks=len(blocks) - len(pending),
                          total_rows=sum(r1 - r0 for _, r0, r1 in blocks), shard=shard)
    if resume and not overwrite and output_exists(out):
        refuse_or_skip_existing(out, digest(fingerprint))
    stack.enter_context(OutputLock(out))
    if out.format == "zarr" and (shared := shard_status(out)) is not None and not shared.merged:
        raise LogmmError(f"{partial_path(out.path)} is the shared store of --shard runs "
                         f"({shared.summary()}); finish them with --shard, or delete it")
    record = ResumeRecord.load(record_path(out)) if resume else None
    if record is not None and (why := record.mismatch(fingerprint)):
        raise LogmmError(f"cannot resume {out}: {why}; rerun without --resume to start afresh")
    plan = load_plan(record.plan) if record is not None else make_plan()
    writer = stack.enter_context(create_writer(
        out, shape, dtype, overwrite=overwrite, compression=compression,
        chunk_rows=plan.chunk_rows, resume=record is not None,  # type: ignore[attr-defined]
        contiguous=contiguous))
    if not writer.resumed or record is None:
        record = ResumeRecord(record_path(out), fingerprint,
                              plan.as_dict())  # type: ignore[attr-defined]
    record.save()
    blocks = list(enumerate(plan.row_blocks()))  # type: ignore[attr-defined]
    pending = [(i, r0, r1) for i, (r0, r1) in blocks if i not in record.done]
    return OpenOutput(writer=writer, record=record, plan=plan, pending=pending,
                      resumed_blocks=len(blocks) - len(pending),
                      total_rows=sum(r1 - r0 for _, (r0, r1) in blocks),
                      fingerprint=digest(fingerprint))



def finish_output(output: OpenOutput[Any], run: Callable[[], T],
                  attrs: Callable[[T], Mapping[str, Any]]) -> T:
    """``run()`` the blocks, then store ``attrs(result)`` and commit; return the result.

    An interruption (KeyboardInterrupt, SystemExit) keeps the partial output and its
    record for ``--resume``; any other failure removes the record (the writer removes the
    partial output when its ``with`` block exits with the error).
    """
    try:
        result = run()
    except (KeyboardInterrupt, SystemExit):
        output.writer.suspend()       # interrupted: keep what is stored for --resume
        raise
    except BaseException:
        output.record.remove()        # failed: the partial output goes with the writer
        raise
    output.writer.set_attrs(attrs(result))
    if output.fingerprint:
        output.writer.set_attrs({"fingerprint": output.fingerprint})
    output.writer.commit()
    output.record.remove()
    return result


def stream_blocks(output: OpenOutput[Any], n_rows: int, load: Callable[[Block], Any],
                  compute: Callable[[Block, Any], Any], store: Callable[[Block, Any], None],
                  *, progress: bool = False, desc: str = "", scheduler: Any = "local",
                  dask_address: str | None = None) -> None:
    """Run the pending blocks through the read-ahead / compute / write-behind pipeline.

    After each block is stored, the resume record notes it and the progress bar (rows, on
    stderr, when ``progress``) advances; it starts at the rows already stored.
    ``n_rows`` is the whole output's; a shard's bar counts its own rows.

    With ``scheduler`` ``"dask"`` (or a ``distributed.Client``), each block is instead a
    task ``compute(block, load(block))`` on a dask cluster (``dask_address``, or a
    LocalCluster within the plan's memory budget per worker), and this process stores
    the results as they complete (see :mod:`logmm.dask_backend`); ``load`` and
    ``compute`` must then pickle (readers do, as their addresses).
    """
    n_rows = output.total_rows if output.total_rows or output.shard is not None else n_rows
    pending, record = output.pending, output.record
    bar = progress_bar(n_rows, progress, desc)
    bar.update(n_rows - sum(r1 - r0 for _, r0, r1 in pending))

    def stored(block: Block) -> None:
        record.mark_done(block[0])
        bar.update(block[2] - block[1])

    try:
        if isinstance(scheduler, str) and scheduler == "local" and not dask_address:
            run_pipeline(pending, load, compute, store, on_stored=stored)
        else:
            from .dask_backend import run_dask

            if output.writer.shares_file_with_inputs:
                raise UsageError(
                    f"--scheduler dask cannot read inputs from {output.writer.path} while this "
                    "run adds a dataset to it (HDF5 lets no other process read a file being "
                    "written): write the output to another file, or drop --scheduler dask")
            run_dask(pending, BlockTask(load, compute), store, stored, scheduler=scheduler,
                     address=dask_address, memory=getattr(output.plan, "memory", None))
    finally:
        bar.close()


class BlockTask:
    """``compute(block, load(block))`` as one picklable callable (a dask task)."""

    def __init__(self, load: Callable[[Block], Any], compute: Callable[[Block, Any], Any]):
        self.load, self.compute = load, compute

    def __call__(self, block: Block) -> Any:
        return self.compute(block, self.load(block))


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar counting rows on stderr (a no-op one when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="row", unit_scale=True, desc=desc, file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)
