#!/usr/bin/env bash
# C = log(exp(A) @ exp(B)) as a SLURM array job: 16 tasks, each computing one sixteenth of
# the rows of C into its own HDF5 shard file; a dependent job merges them.
#
#   jobid=$(sbatch --parsable --export=ALL,A=big.h5:/a,B=b.h5:/b,OUT=/scratch/c.h5 \
#           examples/slurm_array.sh)
#   sbatch --dependency=afterok:$jobid --wrap "logmm merge /scratch/c.h5"
#
# With OUT=/scratch/c.zarr instead, all tasks write into one shared Zarr store (on a
# filesystem every node sees) and the last task to finish renames it into place: no
# merge job is needed ('logmm info /scratch/c.zarr' shows which row ranges are done).
# A task that fails or is preempted can be resubmitted alone (sbatch --array=7 ...);
# --resume makes it finish from the blocks it had already written.
#
#SBATCH --job-name=logmm-multiply
#SBATCH --array=0-15
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --output=logmm-%A_%a.log

set -euo pipefail

: "${A:?set A to the address of A, e.g. A=big.h5:/a}"
: "${B:?set B to the address of B}"
: "${OUT:?set OUT to the output, e.g. OUT=/scratch/c.h5}"
LOGMM=${LOGMM:-logmm}
SHARDS=${SLURM_ARRAY_TASK_COUNT:-16}
# memory for logmm's blocks: most of the job's allocation (SLURM_MEM_PER_NODE is in MB)
MEMORY=${MEMORY:-$(( ${SLURM_MEM_PER_NODE:-4096} * 3 / 4 ))MB}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# shellcheck disable=SC2086  # EXTRA_ARGS: more logmm options, word-split on purpose
$LOGMM multiply "$A" "$B" -o "$OUT" --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}" \
    --memory "$MEMORY" --resume -q ${EXTRA_ARGS:-}
