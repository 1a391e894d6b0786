"""``--scheduler dask``: the same block plan as tasks on a ``dask.distributed`` cluster.

:func:`logmm.engine.run` hands a job's pending row blocks here instead of to the local
read-ahead pipeline. Each block becomes one task that runs the job's own ``load`` and
``compute`` (the kernel the local path runs, on the same blocks, so the result is bit
for bit the local one).

- **Workers write their own chunks** where the output allows it: a Zarr output's partial
  store (blocks are whole chunks, so tasks never share one; no lock), including the shared
  store of ``--shard`` runs. The task then returns only its block's small summary (the
  kernel's tier counts); this process marks the block in the resume record. An HDF5
  output's partial file is written by the tasks too, one at a time under a cluster lock
  (:mod:`logmm.io.hdf5_locked`; HDF5 allows one writing process per file), while this
  process keeps it closed. An output added to an existing HDF5 file, and ``.npy``, are
  written here, from the values the tasks return. A Zarr task writes its block in
  pieces, a piece's write overlapping the next one's compute
  (:func:`logmm.engine._compute_writing`).
- **One kernel thread per task**: the workers' threads are the parallelism
  (:func:`logmm.resources.one_thread_per_task`). The task is pickled once per run.
- **Column panels are tasks**: a plan with column panels runs as one task per (block,
  panel) into a Zarr store chunked by panel; K-chunks are folded in k order inside it.
- **Inputs travel as addresses**: a reader pickles to its (absolute) address and a worker
  reopens it, once per process (:func:`logmm.io.base.reopen_reader`); a task reads B (or its panels)
  from the file, nothing is scattered, so a task can run again anywhere. Workers need the
  input files at the same paths (a shared filesystem on a cluster).
- **Tasks in flight follow the cluster**: twice the worker threads present *now*, looked
  up as tasks complete, so workers that join later (adaptive scaling, dask-jobqueue) get
  work; with no worker yet, the run waits for one (``distributed.comm.timeouts.connect``
  at most, then :data:`WORKER_WAIT` seconds).
- **Failures**: each task is retried (:data:`RETRIES`) after a transient error (an
  ``OSError`` reading a file, a lost worker). Bad data found by a task (a
  :class:`~logmm.errors.LogmmError`) is returned, not raised, so it is not retried, and
  raised here as it is. A failure of the cluster itself (``KilledWorker``, cancelled
  futures, a lost connection, a timeout, an I/O error that outlived its retries) raises
  :class:`~logmm.errors.RunInterrupted`: the runner keeps the partial output and its
  resume record, and ``--resume`` computes only the missing blocks.

Without an address, a ``LocalCluster`` sized to this machine runs the tasks: one
single-threaded worker process per core (fewer if that many budgets would not fit in
available memory), each with ``memory_limit`` the ``--memory`` budget plus 256 MiB for
the worker process itself, without dask's ``MALLOC_TRIM_THRESHOLD_`` (:data:`_TRIM_KEY`)
and with short lock leases (:data:`_LOCK_LEASES`). dask and distributed are imported
only here: ``pip install 'logmm[dask]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import LogmmError, UsageError, install_hint

__all__ = ["RETRIES", "SCHEDULERS", "TaskError", "WORKER_WAIT", "check_scheduler", "connect",
           "import_distributed", "run_dask", "task_slots"]

#: the values of ``--scheduler``
SCHEDULERS = ("local", "dask")
_INSTALL_HINT = install_hint("dask")
_IN_FLIGHT_PER_WORKER = 2
#: a worker process's own memory (interpreter, numpy, h5py, zarr, dask) beside its budget
_INTERPRETER = 256 << 20
#: dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (this config key),
#: which also fixes glibc's mmap threshold at 128 KiB: every block's arrays are then
#: mapped and unmapped afresh, and their pages faulted in again. On logmm's own
#: LocalCluster the variable is left unset (glibc's adaptive thresholds): bench_scaling's
#: Zarr run took 7.7 s of CPU with it and 5.6 s without (one local process: 5.7 s), and
#: one 8192 x 256 x 256 block's kernel 76 ms against 58 ms. A variable set in the
#: environment is kept. docs/scaling.md says how to do the same on another cluster.
_TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
#: An HDF5 output's cluster lock (:mod:`logmm.io.hdf5_locked`) is a ``distributed.Lock``:
#: a lease on the scheduler that the holder's event loop refreshes every fifth of
#: ``lease-timeout``; distributed does not release the lease of a worker that dies (leases
#: are anonymous), the scheduler drops it once unrefreshed for ``lease-timeout``, checked
#: every ``lease-validation-interval``: with dask's 30 s and 10 s a killed holder stalled
#: every other write 36.7 s (measured). On logmm's own LocalCluster 5 s and 1 s: the stall
#: is then at most ~6 s, and a live holder loses its lease only if its loop (or the
#: scheduler's) stops for ~4 s between 1 s refreshes, above dask's own 3 s
#: "unresponsive" warning and >10x the longest stall measured in HDF5 runs under load
#: (0.37 s; h5py releases the GIL while it writes, gzip included). The workers read the
#: timeout (their lock sends it to the scheduler), the scheduler the interval.
_LOCK_LEASES = {"distributed.scheduler.locks.lease-timeout": "5s",
                "distributed.scheduler.locks.lease-validation-interval": "1s"}


def import_distributed() -> Any:
    """``dask.distributed``, or a :class:`LogmmError` saying how to install it."""
    try:
        import dask.array  # noqa: F401 - the [array] extra, needed by workers' numpy tasks
        import distributed
    except ImportError as exc:
        raise LogmmError(f"--scheduler dask needs dask and distributed ({exc.name} is "
                         f"missing): {_INSTALL_HINT}") from None
    return distributed


def check_scheduler(scheduler: Any, address: str | None) -> Any:
    """Validate ``scheduler`` (``"local"``, ``"dask"`` or a ``distributed.Client``) and
    ``address``; return the scheduler to use (an address implies ``"dask"``).

    Raises
    ------
    UsageError
        An unknown scheduler.
    LogmmError
        ``"dask"`` without dask installed.
    """
    if scheduler is None:
        scheduler = "dask" if address else "local"
    if isinstance(scheduler, str):
        if scheduler not in SCHEDULERS:
            raise UsageError(f"unknown scheduler {scheduler!r}; choose local or dask")
        if address:
            scheduler = "dask"                  # an address implies the dask scheduler
        if scheduler == "dask":
            import_distributed()
    return scheduler


#: retries of a task after a transient error (a lost worker, a failed read)
RETRIES = 2
#: seconds to wait for the first worker of a cluster that has none (dask-jobqueue workers
#: start when the batch system runs their job)
WORKER_WAIT = 600.0


class TaskError:
    """Bad data found by a task: returned, not raised, so that dask does not retry it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _apply(task: bytes, block: Any) -> Any:
    """``task(block)`` on this thread alone, ``task`` as :func:`run_dask` pickled it once
    for the run. Bad data comes back as a :class:`TaskError`."""
    import cloudpickle

    from .errors import LogmmError
    from .resources import one_thread_per_task

    try:
        run: Callable[[Any], Any] = cloudpickle.loads(task)
        return one_thread_per_task(run)(block)      # the workers' threads are the parallelism
    except LogmmError as exc:
        return TaskError(exc)


def _cluster_failure(exc: BaseException, distributed: Any) -> bool:
    """A failure of the cluster (or of I/O that outlived its retries), not of the data."""
    import asyncio
    import concurrent.futures

    from .errors import LogmmError

    if isinstance(exc, LogmmError):
        return False
    lost = (distributed.KilledWorker, asyncio.CancelledError,
            concurrent.futures.CancelledError, TimeoutError, OSError)
    comm = getattr(getattr(distributed, "comm", None), "CommClosedError", None)
    return isinstance(exc, lost) or (comm is not None and isinstance(exc, comm))


def task_slots(client: Any) -> int:
    """Worker threads of the cluster now (waiting for the first worker if none)."""
    slots = sum(client.nthreads().values())
    if not slots:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
        slots = sum(client.nthreads().values())
    return max(1, slots)


@contextmanager
def connect(scheduler: Any, address: str | None, memory: int | None) -> Iterator[Any]:
    """A connected ``distributed.Client``: the given one, one to ``address``, or one on a
    new LocalCluster with ``memory`` per worker (closed on exit)."""
    distributed = import_distributed()
    if not isinstance(scheduler, str):
        yield scheduler
        return
    with _quiet_distributed():
        yield from _connect(distributed, address, memory)


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Silence distributed's own log lines (``Couldn't gather 1 keys, rescheduling``, a
    worker's death) on a cluster logmm connects to itself: a lost worker is retried or ends
    the run with one :class:`RunInterrupted` line, so the CLI's stderr keeps one line."""
    import logging

    names = [n for n in list(logging.root.manager.loggerDict)
             if n == "distributed" or n.startswith("distributed.")]   # some set own levels
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _connect(distributed: Any, address: str | None, memory: int | None) -> Iterator[Any]:
    if address:
        try:
            client = distributed.Client(address)  # waits distributed.comm.timeouts.connect
        except (OSError, TimeoutError) as exc:
            raise LogmmError(f"cannot reach the dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    from .resources import detect_memory, thread_limit

    cores = thread_limit()                 # the job's CPUs (or --threads), not the node's
    workers, limit = cores, None
    if memory:
        limit = memory + _INTERPRETER      # the budget is for blocks; the worker needs more
        workers = max(1, min(cores, detect_memory().value // limit))
    import dask

    with dask.config.set({_TRIM_KEY: None, **_LOCK_LEASES}):   # see _TRIM_KEY, _LOCK_LEASES
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, memory_limit=limit or "auto",
            dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},  # no clash
            silence_logs=50)
    with cluster, distributed.Client(cluster) as client:
        yield client


def run_dask(pending: Sequence[Any], task: Callable[[Any], Any],
             store: Callable[[Any, Any], None], on_stored: Callable[[Any], None], *,
             client: Any) -> None:
    """Run ``store(block, task(block))`` for every block, the tasks on a dask cluster.

    ``task`` must pickle (it travels with each task); ``store`` and ``on_stored`` run
    here, in completion order.

    Raises
    ------
    RunInterrupted
        The cluster failed (see the module docstring): what is stored stays.
    LogmmError
        A task found bad data (the first one, as it was raised in the task).
    """
    if not pending:
        return
    import cloudpickle  # distributed's own pickler for tasks

    from .errors import RunInterrupted

    distributed = import_distributed()
    # the task pickled once, not once per submit: ~15 ms of this process's CPU a block in
    # bench_scaling's profile (its readers and writer reduce to addresses each time)
    payload = cloudpickle.dumps(task)
    blocks = iter(list(pending))
    futures: dict[Any, Any] = {}
    tag = f"{os.getpid()}-{id(futures)}"

    def submit(block: Any) -> Any:
        future = client.submit(_apply, payload, block, pure=False, retries=RETRIES,
                               key=f"logmm-block-{'-'.join(map(str, block[:1] + block[3:4]))}"
                                   f"-{tag}")
        futures[future] = block
        return future

    try:
        running = distributed.as_completed(
            [submit(b) for _, b in zip(range(2 * task_slots(client)), blocks,
                                       strict=False)])
        for future in running:
            block = futures.pop(future)
            result = future.result()
            future.release()
            if isinstance(result, TaskError):
                raise result.error
            store(block, result)
            on_stored(block)
            window = 2 * max(1, sum(client.nthreads().values()))
            while len(futures) < window and (following := next(blocks, None)) is not None:
                running.add(submit(following))
    except BaseException as exc:
        for future in list(futures):
            future.cancel()
        if _cluster_failure(exc, distributed):
            why = str(exc).split(". ")[0]        # KilledWorker's is a paragraph
            raise RunInterrupted(
                f"the dask cluster failed ({type(exc).__name__}: {why}); the blocks "
                "computed so far are kept: rerun with --resume to finish") from exc
        raise
