"""``--scheduler dask``: the same block plan as tasks on a ``dask.distributed`` cluster.

:func:`logmm.engine.stream_blocks` hands its pending row blocks here instead of to the
local read-ahead pipeline. Each block becomes one task that runs the engine's own
``load`` and ``compute`` (the kernel the local path runs, on the same blocks, so the
result is bit for bit the local one); the task's function is sent to every worker once
(scattered), and the blocks are submitted a few per worker at a time. Results come back
to this process, which stores them as they complete (any order; each block owns its own
output chunks) and marks them in the resume record, so HDF5, Zarr and ``.npy`` outputs,
``--shard`` and ``--resume`` all work unchanged, and no two processes ever write one
file.

Inputs travel as addresses: a reader pickles to its (absolute) address and a worker
reopens it, once per process (:func:`reopen_reader`), so workers need the input files at
the same paths (a shared filesystem on a cluster). A writer does not travel: a task
computes into its own array rather than into the output's memory map.

Without an address, a ``LocalCluster`` sized to this machine runs the tasks: one
single-threaded worker process per core (fewer if that many budgets would not fit in
available memory), each with ``memory_limit`` the ``--memory`` budget plus 256 MiB for
the worker process itself. dask and distributed are imported only here: ``pip install
'logmm[dask]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import LogmmError, UsageError, install_hint
from .io.addresses import ArrayAddress

__all__ = ["SCHEDULERS", "check_scheduler", "import_distributed", "reopen_reader",
           "run_dask"]

#: the values of ``--scheduler``
SCHEDULERS = ("local", "dask")
_INSTALL_HINT = install_hint("dask")
_IN_FLIGHT_PER_WORKER = 2
#: a worker process's own memory (interpreter, numpy, h5py, zarr, dask) beside its budget
_INTERPRETER = 256 << 20
_READERS: dict[tuple[str, str, bool, int, int], Any] = {}


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


def reopen_reader(address: ArrayAddress, sparse: bool) -> Any:
    """The reader of ``address`` in this process, opened once (keyed by the file's size and
    modification time, so a rewritten file is reopened). Readers unpickle through this."""
    from .io.readers import open_array

    try:
        stat = os.stat(address.path)
        key = (str(address), address.format, sparse, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = (str(address), address.format, sparse, 0, 0)
    reader = _READERS.get(key)
    if reader is None:
        reader = _READERS[key] = open_array(address, sparse=sparse)
    return reader


def _apply(task: Callable[[Any], Any], block: Any) -> Any:
    return task(block)


@contextmanager
def _client(scheduler: Any, address: str | None, memory: int | None) -> Iterator[Any]:
    """A connected ``distributed.Client``: the given one, one to ``address``, or one on a
    new LocalCluster (closed on exit)."""
    distributed = import_distributed()
    if not isinstance(scheduler, str):
        yield scheduler
        return
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
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                  memory_limit=limit or "auto", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": ":0"},  # no port clash
                                  silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def run_dask(pending: Sequence[Any], task: Callable[[Any], Any],
             store: Callable[[Any, Any], None], on_stored: Callable[[Any], None], *,
             scheduler: Any = "dask", address: str | None = None,
             memory: int | None = None) -> None:
    """Run ``store(block, task(block))`` for every block, the tasks on a dask cluster.

    ``task`` must pickle (it is cloudpickled once and scattered to every worker);
    ``store`` and ``on_stored`` run here, in completion order. The first failed task
    cancels the rest and its exception is raised here.
    """
    if not pending:
        return
    with _client(scheduler, address, memory) as client:
        distributed = import_distributed()
        workers = max(1, sum(client.nthreads().values()))      # task slots
        [shipped] = client.scatter([task], broadcast=True, hash=False)
        blocks = list(pending)
        futures: dict[Any, Any] = {}

        def submit(block: Any) -> Any:
            future = client.submit(_apply, shipped, block, pure=False,
                                   key=f"logmm-block-{block[0]}-{os.getpid()}-{id(blocks)}")
            futures[future] = block
            return future

        window = workers * _IN_FLIGHT_PER_WORKER
        queue = iter(blocks)
        running = distributed.as_completed([submit(b) for _, b in zip(range(window), queue,
                                                                       strict=False)])
        try:
            for future in running:
                block = futures.pop(future)
                result = future.result()
                future.release()
                store(block, result)
                on_stored(block)
                following = next(queue, None)
                if following is not None:
                    running.add(submit(following))
        except BaseException:
            for future in list(futures):
                future.cancel()
            raise
