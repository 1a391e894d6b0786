"""Run a logmm product on a SLURM cluster through dask-jobqueue.

    pip install 'logmm[dask]' dask-jobqueue
    python examples/jobqueue_cluster.py big.h5:/a b.h5:/b /scratch/c.zarr [logmm options]

dask-jobqueue submits SLURM jobs that start dask workers; logmm connects to their
scheduler with --dask-address and runs one task per row block on them (reading inputs
by path, so the files must be on a filesystem the workers see). The results come back
to this process, which writes the output: run it where the output's filesystem is fast.
For very large outputs prefer array jobs with --shard (examples/slurm_array.sh), where
every node writes its own rows.

Edit the parameters below for your cluster. dask-jobqueue writes each job's
``#SBATCH --cpus-per-task`` and ``--mem`` from ``cores`` and ``memory``; every job runs
one single-threaded worker process per CPU, each computing one block at a time within
``TASK_MEMORY``. Workers retire (``--lifetime``, staggered) before the walltime kills
them, and ``adapt`` submits fresh jobs in their place, so a long product outlives its
jobs' walltime.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import Any

# ---------------------------------------------------------------- parameters to edit
JOBS = 16                     # SLURM jobs (of dask workers) kept running
CPUS_PER_JOB = 4              # #SBATCH --cpus-per-task: worker processes per job
MEMORY_PER_JOB = "8GB"        # #SBATCH --mem of each job, shared by its worker processes
TASK_MEMORY = "1GB"           # logmm --memory: one block's budget (< MEMORY_PER_JOB / CPUS)
WALLTIME = "02:00:00"         # each job's walltime...
LIFETIME = "110m"             # ...and its workers' lifetime, a little shorter
LIFETIME_STAGGER = "5m"       # so that workers do not all retire at once
WORKERS_TIMEOUT = 1800        # seconds to wait for the first worker (queueing time)
LOGMM = "logmm"
# -----------------------------------------------------------------------------------

USAGE = f"usage: python {sys.argv[0]} A B OUT [logmm multiply options...]"


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


def run(a: str, b: str, out: str, cluster: Any, extra: Sequence[str] = (),
        logmm: Sequence[str] = (LOGMM,)) -> int:
    """``logmm multiply A B -o OUT`` on ``cluster``'s workers, once one has started;
    returns logmm's exit status."""
    from distributed import Client

    with Client(cluster) as client:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        return subprocess.run([*logmm, "multiply", a, b, "-o", out, "--memory", TASK_MEMORY,
                               "--dask-address", cluster.scheduler_address, *extra]).returncode


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        cluster = slurm_cluster()
    except ImportError:
        print("this example needs dask-jobqueue: pip install 'logmm[dask]' dask-jobqueue",
              file=sys.stderr)
        return 1
    with cluster:
        return run(argv[0], argv[1], argv[2], cluster, extra=argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
