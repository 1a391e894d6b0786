"""Run a logmm product on a SLURM cluster through dask-jobqueue (not run by the tests).

    pip install 'logmm[dask]' dask-jobqueue
    python examples/dask_jobqueue.py big.h5:/a b.h5:/b /scratch/c.zarr

dask-jobqueue submits SLURM jobs that start dask workers; logmm connects to their
scheduler with --dask-address and runs one task per row block on them (reading inputs
by path, so the files must be on a filesystem the workers see). The results come back
to this process, which writes the output: run it where the output's filesystem is fast.
For very large outputs prefer array jobs with --shard (examples/slurm_array.sh), where
every node writes its own rows.
"""

from __future__ import annotations

import subprocess
import sys


def main(a: str, b: str, out: str, jobs: int = 16) -> None:
    from dask_jobqueue import SLURMCluster

    # one worker process per job, single-threaded tasks, memory per task = --memory
    cluster = SLURMCluster(cores=1, processes=1, memory="8GB", walltime="02:00:00",
                           job_extra_directives=["--cpus-per-task=4"],
                           job_script_prologue=["export OMP_NUM_THREADS=4"])
    cluster.scale(jobs=jobs)
    try:
        subprocess.run(["logmm", "multiply", a, b, "-o", out, "--memory", "6GB",
                        "--dask-address", cluster.scheduler_address, "--progress"],
                       check=True)
    finally:
        cluster.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
