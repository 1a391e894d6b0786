"""Run a logmm product on a SLURM cluster through dask-jobqueue.

    pip install 'logmm[dask]' dask-jobqueue
    python examples/jobqueue_cluster.py big.h5:/a b.h5:/b /scratch/c.zarr [logmm options]
    python examples/jobqueue_cluster.py --graph big.h5:/a b.h5:/b /scratch/c.zarr

dask-jobqueue submits SLURM jobs that start dask workers. Two ways to use them:

- default: logmm connects to their scheduler with --dask-address and runs one task per
  row block (or per block and column panel) on them; the workers write their own chunks
  of a Zarr output (and the blocks of an HDF5 output, one at a time under the file's
  lock), and only the tasks' summaries come back to this process. Workers that join
  later get tasks as they connect.
- ``--graph``: the product is a lazy ``logmm.dask`` graph (``from_address`` →
  ``logmatmulexp`` → ``to_zarr``) handed to the dask scheduler: every worker reads its
  own blocks by path and writes its own Zarr chunks (nothing returns through this
  process), a worker that joins late gets tasks as soon as it connects, and the tasks of
  a retired or lost worker are recomputed elsewhere (they hold addresses, not data).
  The Zarr store is written under a hidden name and renamed when complete.

Either way the input files (and for ``--graph`` the output) must be on a filesystem the
workers see at the same paths. For very large outputs prefer array jobs with --shard
(examples/slurm_array.sh), where every node writes its own rows.

Edit the parameters below for your cluster. dask-jobqueue writes each job's
``#SBATCH --cpus-per-task`` and ``--mem`` from ``cores`` and ``memory``; every job runs
one single-threaded worker process per CPU, each computing one block at a time within
``TASK_MEMORY``. As dask-jobqueue advises for walltimes, workers retire (``--lifetime``,
staggered by ``--lifetime-stagger`` so they do not all leave at once) before the
walltime kills them, and ``adapt`` submits fresh jobs in their place, so a long product
outlives its jobs' walltime. The run starts once ``MIN_WORKERS`` workers have connected
(waiting at most ``WORKERS_TIMEOUT`` seconds, the queueing time); the other jobs join as
SLURM starts them. Unset dask's ``MALLOC_TRIM_THRESHOLD_`` for the workers in
``~/.config/dask/`` (docs/scaling.md, "Workers on your own cluster"): with it, every
block's arrays are mapped and faulted in afresh, ~35% more CPU per task.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- parameters to edit
JOBS = 16                     # SLURM jobs (of dask workers) kept running
CPUS_PER_JOB = 4              # #SBATCH --cpus-per-task: worker processes per job
MEMORY_PER_JOB = "8GB"        # #SBATCH --mem of each job, shared by its worker processes
TASK_MEMORY = "1GB"           # logmm --memory: one block's budget (< MEMORY_PER_JOB / CPUS)
WALLTIME = "02:00:00"         # each job's walltime...
LIFETIME = "110m"             # ...and its workers' lifetime, a little shorter
LIFETIME_STAGGER = "5m"       # so that workers do not all retire at once
MIN_WORKERS = 1               # start once this many workers are up; the rest join later
WORKERS_TIMEOUT = 1800        # seconds to wait for them (queueing time)
GRAPH_CHUNKS = (8192, 4096)   # --graph: rows of A per task, and columns of A (k) per task
LOGMM = "logmm"
# -----------------------------------------------------------------------------------

USAGE = (f"usage: python {sys.argv[0]} A B OUT [logmm multiply options...]\n"
         f"       python {sys.argv[0]} --graph A B OUT.zarr")


def slurm_cluster() -> Any:
    """The dask-jobqueue cluster: JOBS jobs of CPUS_PER_JOB single-threaded workers."""
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(cores=CPUS_PER_JOB, processes=CPUS_PER_JOB, memory=MEMORY_PER_JOB,
                           walltime=WALLTIME,
                           worker_extra_args=["--lifetime", LIFETIME,
                                              "--lifetime-stagger", LIFETIME_STAGGER],
                           job_script_prologue=["export OMP_NUM_THREADS=1"])
    cluster.adapt(minimum_jobs=JOBS, maximum_jobs=JOBS)     # replaces retired workers
    return cluster


def wait_for_workers(client: Any, n: int = MIN_WORKERS, timeout: float = WORKERS_TIMEOUT
                     ) -> bool:
    """Wait until ``n`` workers have connected; False (with a message) after ``timeout``."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError:
        print(f"no {n} dask worker(s) connected within {timeout} s; are the SLURM jobs still "
              "queued (squeue --me)?", file=sys.stderr)
        return False
    return True


def run(a: str, b: str, out: str, cluster: Any, extra: Sequence[str] = (),
        logmm: Sequence[str] = (LOGMM,), min_workers: int = MIN_WORKERS,
        timeout: float = WORKERS_TIMEOUT) -> int:
    """``logmm multiply A B -o OUT`` on ``cluster``'s workers, once ``min_workers`` have
    started; returns logmm's exit status."""
    from distributed import Client

    with Client(cluster) as client:
        if not wait_for_workers(client, min_workers, timeout):
            return 1
        return subprocess.run([*logmm, "multiply", a, b, "-o", out, "--memory", TASK_MEMORY,
                               "--dask-address", cluster.scheduler_address, *extra]).returncode


def run_graph(a: str, b: str, out: str, cluster: Any, chunks: tuple[int, int] = GRAPH_CHUNKS,
              min_workers: int = MIN_WORKERS, timeout: float = WORKERS_TIMEOUT) -> int:
    """``C = logmm.dask.logmatmulexp(A, B)`` into the Zarr store ``out`` by ``cluster``'s
    workers: A in tiles of ``chunks`` (rows, k), B in the matching k chunks and all its
    columns. Returns 0, or 1 when ``out`` exists or no worker came."""
    from distributed import Client

    import logmm.dask as ld

    target = Path(out)
    if target.exists():
        print(f"{target} exists; remove it first", file=sys.stderr)
        return 1
    partial = target.with_name(f".{target.name}.partial")
    with Client(cluster) as client:
        if not wait_for_workers(client, min_workers, timeout):
            return 1
        A = ld.from_address(a, chunks=chunks)
        B = ld.from_address(b, chunks=(A.chunks[1], -1))
        ld.logmatmulexp(A, B).to_zarr(str(partial), overwrite=True)   # workers write chunks
    os.replace(partial, target)
    return 0


def main(argv: Sequence[str]) -> int:
    graph = bool(argv) and argv[0] == "--graph"
    args = list(argv[1:] if graph else argv)
    if len(args) < 3 or args[0] in ("-h", "--help") or (graph and len(args) != 3):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        cluster = slurm_cluster()
    except ImportError:
        print("this example needs dask-jobqueue: pip install 'logmm[dask]' dask-jobqueue",
              file=sys.stderr)
        return 1
    with cluster:
        if graph:
            return run_graph(args[0], args[1], args[2], cluster)
        return run(args[0], args[1], args[2], cluster, extra=args[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
