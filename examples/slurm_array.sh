#!/usr/bin/env bash
# C = log(exp(A) @ exp(B)) as a SLURM array job: SHARDS tasks, each computing its share of
# the rows of C into its own HDF5 shard file; a dependent job merges them.
#
#   jobid=$(sbatch --parsable --export=ALL,A=big.h5:/a,B=b.h5:/b,OUT=/scratch/c.h5 \
#           examples/slurm_array.sh)
#   sbatch --dependency=afterok:$jobid --wrap "logmm merge /scratch/c.h5"
#
# With OUT=/scratch/c.zarr instead, all tasks write into one shared Zarr store (on a
# filesystem every node sees) and the last task to finish renames it into place: no
# merge job is needed ('logmm info /scratch/c.zarr' shows which row ranges are done).
#
# The shard count is SHARDS below (keep --array the same size), not the size of the array
# that was submitted, so a task that failed or was preempted can be resubmitted alone
# (sbatch --array=7 ...): --resume finishes it from the blocks it had already written,
# and a task that had already finished (requeued) exits 0 at once: already complete.
# Array indices may start at 0 (--array=0-15) or 1 (--array=1-16); set FIRST=1 when
# resubmitting one task of an array numbered from 1.
# Memory and threads follow the job's allocation (--mem or --mem-per-cpu, --cpus-per-task):
# logmm reads SLURM_MEM_PER_NODE / SLURM_MEM_PER_CPU and SLURM_CPUS_PER_TASK itself; set
# MEMORY (e.g. MEMORY=12G) for a budget other than a quarter of --mem.
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
: "${SLURM_ARRAY_TASK_ID:?run this script as an array job (sbatch --array=0-15 ...)}"
LOGMM=${LOGMM:-logmm}
SHARDS=${SHARDS:-16}            # the number of shards: the size of the --array range
# the lowest index: 1 for --array=1-SHARDS (or a task numbered SHARDS), 0 otherwise
if [[ -z ${FIRST:-} ]]; then
    FIRST=0
    if [[ ${SLURM_ARRAY_TASK_MIN:-0} == 1 && ${SLURM_ARRAY_TASK_MAX:-0} == "$SHARDS" ]] ||
       (( SLURM_ARRAY_TASK_ID == SHARDS )); then
        FIRST=1
    fi
fi
SHARD=$(( SLURM_ARRAY_TASK_ID - FIRST ))
if (( SHARD < 0 || SHARD >= SHARDS )); then
    echo "slurm_array.sh: array index $SLURM_ARRAY_TASK_ID is outside 0-$((SHARDS - 1))" \
         "(SHARDS=$SHARDS, FIRST=$FIRST)" >&2
    exit 2
fi

# shellcheck disable=SC2086  # EXTRA_ARGS: more logmm options, word-split on purpose
$LOGMM multiply "$A" "$B" -o "$OUT" --shard "$SHARD/$SHARDS" --resume -q \
    ${MEMORY:+--memory "$MEMORY"} ${SLURM_CPUS_PER_TASK:+--threads "$SLURM_CPUS_PER_TASK"} \
    ${EXTRA_ARGS:-}
