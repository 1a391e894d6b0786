"""Options shared by the compute commands, and small helpers every command uses.

Each ``*_option`` is a decorator; stack the ones a command needs so that the same flag
means the same thing everywhere.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import click

# the choices come from logmm.typing (tests/test_typing.py keeps them equal to the tuples
# the engines check), so that defining an option imports no engine, numpy or h5py
from logmm.typing import Compression, Method, Scheduler

if TYPE_CHECKING:
    from logmm.chain_files import ChainResult

__all__ = [
    "ADDRESS",
    "PLANNED_KEY",
    "PLAN_KEY",
    "job_options",
    "planning",
    "run_job",
    "storage_options",
    "ZARR_FORMAT_KEY",
    "zarr_format",
    "zarr_format_option",
    "threads_option",
    "ARGV_KEY",
    "COMPRESSION_ENV",
    "MEMORY_ENV",
    "THREADS_ENV",
    "DEBUG_KEY",
    "QUIET_KEY",
    "VERBOSE_KEY",
    "ByteSize",
    "block_rows_option",
    "chain_summary_line",
    "chunk_rows_option",
    "command_line",
    "is_quiet",
    "compression_option",
    "debug_option",
    "dtype_option",
    "explain_option",
    "memory_option",
    "method_option",
    "output_option",
    "overwrite_option",
    "parse_size",
    "progress_option",
    "quiet_option",
    "verbose_option",
    "report_result",
    "reporting_options",
    "resolve_progress",
    "resume_option",
    "row_streaming_options",
    "scheduler_options",
    "shard_option",
    "sibling_command",
]

F = TypeVar("F", bound=Callable[..., Any])

#: the type of every array-address argument and option: a plain string to logmm (no
#: checks here; ``file.h5:/name`` is not a path), but a path to shell completion, so that
#: TAB completes file names once the completion script is sourced
ADDRESS = click.Path()

#: keys in ``click.Context.meta`` (shared by a command's context and its parents')
DEBUG_KEY = "logmm.debug"
ARGV_KEY = "logmm.argv"
QUIET_KEY = "logmm.quiet"
VERBOSE_KEY = "logmm.verbose"

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"512MB"`` → 512000000, ``"4GiB"`` → 4294967296, ``"1.5G"`` → 1610612736.

    SI suffixes (kB, MB, GB, TB) are powers of 1000; binary ones (KiB, MiB, GiB, TiB)
    and bare letters (K, M, G, T) powers of 1024; no suffix means bytes.

    Raises
    ------
    ValueError
        Not a size, or not positive.
    """
    match = _SIZE_RE.match(text)
    unit = match[2].lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 512MB, 4GiB, 1.5G)")
    size = int(float(match[1]) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return size


class ByteSize(click.ParamType):
    """A Click parameter type for memory sizes (see :func:`parse_size`)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        """Bytes from ``"4GiB"`` (an int passes through); a usage error otherwise."""
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_KEY] = True


def debug_option(f: F) -> F:
    """``--debug``: show the traceback of an error."""
    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                        help="Show the full traceback when an error occurs.")(f)


def output_option(f: F) -> F:
    """``-o/--output ADDR`` (required)."""
    return click.option("-o", "--output", "output", required=True, metavar="ADDR", type=ADDRESS,
                        help="Output address: OUT.npy, OUT.h5[:/name], OUT.zarr[:name] "
                             "(dataset 'data' by default).")(f)


def overwrite_option(f: F) -> F:
    """``--overwrite``."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace an existing output (otherwise it is an error and "
                             "nothing is touched).")(f)


def method_option(f: F) -> F:
    """``--method auto|fast|exact``."""
    return click.option("--method", type=click.Choice(get_args(Method)), default="auto",
                        show_default=True,
                        help="auto: fast path plus exact repair of untrusted entries; "
                             "fast: fast path only (possibly inexact); exact: blocked exact "
                             "logsumexp.")(f)


def dtype_option(f: F) -> F:
    """``--dtype float32|float64``."""
    return click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
                        help="Result dtype  [default: the inputs']")(f)


def memory_option(f: F) -> F:
    """``--memory SIZE``."""
    return click.option("--memory", type=ByteSize(), default=None, metavar="SIZE",
                        envvar=MEMORY_ENV, show_envvar=True,
                        help="Working-memory budget, e.g. 512MB or 4GiB; block sizes, "
                             "panels of B and contraction splits follow from it  [default: "
                             "a quarter of what the job may use (cgroup limit, SLURM "
                             "allocation, available memory: the smallest), at most 4GiB]")(f)


def resume_option(f: F) -> F:
    """``--resume``."""
    return click.option("--resume", is_flag=True,
                        help="Finish an interrupted run of the same command, recomputing "
                             "only the blocks it had not written (refused if an input or "
                             "option changed).")(f)


class ShardType(click.ParamType):
    """``I/N`` → :class:`logmm.shards.Shard` (a usage error otherwise)."""

    name = "I/N"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        from logmm.errors import UsageError
        from logmm.shards import Shard, parse_shard

        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def shard_option(f: F) -> F:
    """``--shard I/N``."""
    return click.option("--shard", type=ShardType(), default=None, metavar="I/N",
                        help="Compute only the I-th (from 0) of N contiguous row ranges, for "
                             "array jobs: .zarr outputs share one store, renamed into place "
                             "when the last shard finishes; .h5 outputs get one "
                             "OUT.shard-IIII-of-NNNN.h5 file per shard, joined by 'logmm "
                             "merge OUT.h5'.")(f)


def scheduler_options(f: F) -> F:
    """``--scheduler local|dask`` and ``--dask-address ADDR``."""
    f = click.option("--dask-address", default=None, metavar="ADDR",
                     help="Dask scheduler to run on (tcp://HOST:PORT); implies --scheduler "
                          "dask  [default: a LocalCluster sized to this machine]")(f)
    return click.option("--scheduler", type=click.Choice(get_args(Scheduler)), default="local",
                        show_default=True,
                        help="local: this process (read ahead, compute, write behind); dask: "
                             "one task per row block on a dask.distributed cluster (pip "
                             "install 'logmm[dask]').")(f)


def block_rows_option(f: F) -> F:
    """``--block-rows N``."""
    return click.option("--block-rows", type=click.IntRange(min=1), default=None, metavar="N",
                        help="Rows per block (overrides --memory).")(f)


def compression_option(f: F) -> F:
    """``--compression gzip|lzf|zstd|blosc|none``."""
    return click.option("--compression", type=click.Choice(get_args(Compression)), default=None,
                        envvar=COMPRESSION_ENV, show_envvar=True,
                        help="Output compression: HDF5 gzip/lzf/zstd/blosc/none (default "
                             "none; zstd and blosc need 'pip install logmm[hdf5plugin]'); "
                             "Zarr gzip/zstd/blosc/none (default zstd); .npy is never "
                             "compressed.")(f)


def chunk_rows_option(f: F) -> F:
    """``--chunk-rows N``."""
    return click.option("--chunk-rows", type=click.IntRange(min=1), default=None, metavar="N",
                        help="Rows per output storage chunk  [default: about 4 MiB per "
                             "chunk]")(f)


def _note_in_meta(key: str) -> Callable[[click.Context, click.Parameter, bool], bool]:
    """A flag's callback that also sets ``ctx.meta[key]`` (shared with the group's and the
    command's contexts), so a flag given to ``logmm`` itself reaches the command."""
    def note(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[key] = True
        return value

    return note


def quiet_option(f: F) -> F:
    """``-q/--quiet`` (also noted in ``ctx.meta[QUIET_KEY]`` for the group's reporting)."""
    return click.option("-q", "--quiet", is_flag=True, callback=_note_in_meta(QUIET_KEY),
                        help="Print nothing on success (errors are still reported).")(f)


def progress_option(f: F) -> F:
    """``--progress/--no-progress`` (default: on when stderr is a terminal)."""
    return click.option("--progress/--no-progress", default=None,
                        help="Show a progress bar on stderr  [default: when stderr is a "
                             "terminal and not --quiet]")(f)


def storage_options(f: F) -> F:
    """``--compression``, ``--chunk-rows`` and ``--zarr-format``: how an output is stored."""
    return compression_option(chunk_rows_option(zarr_format_option(f)))


#: key in ``click.Context.meta``: the ``--zarr-format`` of the command (an int)
ZARR_FORMAT_KEY = "logmm.zarr_format"


def _note_zarr_format(ctx: click.Context, param: click.Parameter, value: str) -> None:
    ctx.meta[ZARR_FORMAT_KEY] = int(value)


def zarr_format_option(f: F) -> F:
    """``--zarr-format 3|2`` (noted in ``ctx.meta[ZARR_FORMAT_KEY]``, see :func:`zarr_format`)."""
    return click.option("--zarr-format", type=click.Choice(["3", "2"]), default="3",
                        show_default=True, expose_value=False, callback=_note_zarr_format,
                        help="Format of a Zarr output: 2 for readers on zarr-python 2.x.")(f)


def zarr_format(ctx: click.Context) -> int:
    """The command's ``--zarr-format`` (3 unless given)."""
    return int(ctx.meta.get(ZARR_FORMAT_KEY, 3))


def row_streaming_options(f: F) -> F:
    """``--memory``, ``--block-rows``, ``--resume``, ``--shard`` and ``--scheduler`` /
    ``--dask-address``: the options of every command that streams row blocks through
    the engine (multiply, project, loglik, einsum)."""
    return memory_option(block_rows_option(resume_option(shard_option(scheduler_options(
        threads_option(f))))))


# ------------------------------------------------- job resources and environment defaults
#: environment variables that give options their defaults (an explicit option wins)
MEMORY_ENV, THREADS_ENV, COMPRESSION_ENV = "LOGMM_MEMORY", "LOGMM_THREADS", "LOGMM_COMPRESSION"


def _hold_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """Hold the command to ``value`` threads (BLAS included) until its context closes;
    without ``--threads``, to the job's CPUs (see :mod:`logmm.resources`)."""
    from logmm.resources import thread_limit, use_threads

    ctx.with_resource(use_threads(value if value is not None else thread_limit()))


def threads_option(f: F) -> F:
    """``--threads N`` (``LOGMM_THREADS``): compute threads and BLAS threads, in all."""
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                        envvar=THREADS_ENV, show_envvar=True, expose_value=False,
                        callback=_hold_threads,
                        help="Threads in all, compute and BLAS  [default: the job's CPUs: "
                             "SLURM_CPUS_PER_TASK, cgroup CPU quota, affinity, the "
                             "smallest]")(f)


def reporting_options(f: F) -> F:
    """``--quiet``, ``--verbose``, ``--progress/--no-progress`` and ``--debug``: what a
    command reports."""
    return quiet_option(verbose_option(progress_option(debug_option(f))))


def verbose_option(f: F) -> F:
    """``-v/--verbose`` (noted in ``ctx.meta[VERBOSE_KEY]``)."""
    return click.option("-v", "--verbose", is_flag=True, callback=_note_in_meta(VERBOSE_KEY),
                        expose_value=False,
                        help="Also print the block plan and how many entries each tier "
                             "of the kernel produced.")(f)


def _context_flag(key: str) -> bool:
    """A flag given at the group level (``logmm -q multiply …``) or the command's."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(key))


def is_quiet(quiet: bool) -> bool:
    """The command's ``-q``, or ``logmm -q`` before it."""
    return quiet or _context_flag(QUIET_KEY)


def resolve_progress(progress: bool | None, quiet: bool) -> bool:
    """An explicit ``--progress/--no-progress`` wins; otherwise on for a TTY unless quiet
    (``-q`` given to the command or to ``logmm`` itself)."""
    if progress is not None:
        return progress
    if is_quiet(quiet):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------- preparing and running jobs
#: set in ``ctx.meta`` by ``logmm plan``: the command plans its job instead of running it,
#: and leaves the plan under :data:`PLANNED_KEY`
PLAN_KEY = "logmm.plan"
PLANNED_KEY = "logmm.planned"


def planning(ctx: click.Context) -> bool:
    """The command runs under ``logmm plan`` (plan, do not compute)."""
    return bool(ctx.meta.get(PLAN_KEY))


def job_options(ctx: click.Context, *, overwrite: bool, compression: str | None,
                chunk_rows: int | None, memory: int | None = None,
                block_rows: int | None = None, resume: bool = False, shard: Any = None,
                scheduler: str = "local", dask_address: str | None = None,
                progress: bool | None = None, quiet: bool = False) -> tuple[Any, Any]:
    """``(OutputOptions, RunOptions)`` of a compute command's parsed options."""
    from logmm.engine import OutputOptions, RunOptions

    return (OutputOptions(overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
                          zarr_format=zarr_format(ctx)),
            RunOptions.checked(memory=memory, block_rows=block_rows, resume=resume,
                               shard=shard, scheduler=scheduler, dask_address=dask_address,
                               progress=resolve_progress(progress, quiet),
                               command=command_line(ctx)))


def run_job(ctx: click.Context, job: Any) -> Any:
    """Run a prepared job (:func:`logmm.engine.run`) and return its result; under
    ``logmm plan``, plan it instead (:func:`logmm.engine.plan_job`, kept in
    ``ctx.meta[PLANNED_KEY]``) and return None."""
    from logmm.engine import plan_job, run

    if planning(ctx):
        ctx.meta[PLANNED_KEY] = plan_job(job)
        return None
    return run(job)


def report_result(result: Any, summary: Callable[[Any], str], quiet: bool) -> None:
    """The one stderr line a compute command ends with: ``summary(result)``, or for a
    ``--shard`` run the shard's note (its rows, where they went, what finishes the
    output) and the time. Nothing when ``quiet`` (the command's ``-q`` or the group's).
    With ``-v``, the block plan and the kernel's tier counts come first."""
    if is_quiet(quiet):
        return
    if _context_flag(VERBOSE_KEY):
        for line in verbose_lines(result):
            click.echo(line, err=True)
    if getattr(result, "shard_note", None) is not None:
        click.echo(f"{result.shard_note} ({result.seconds:.2f} s)", err=True)
    else:
        click.echo(summary(result), err=True)


def verbose_lines(result: Any) -> list[str]:
    """``plan  block_rows=… chunk_rows=…`` and ``tiers  fast=… exact=…`` for ``-v``: what
    a result carries of its plan and its kernel report."""
    lines = []
    plan = getattr(result, "plan", None)
    if plan is not None and hasattr(plan, "as_dict"):
        lines.append("plan    " + " ".join(f"{k}={v}" for k, v in plan.as_dict().items()))
    report = getattr(result, "report", None)
    if report is not None and hasattr(report, "repaired"):
        counts = {name: getattr(report, name) for name in
                  ("entries", "fast", "rebalanced", "blocked", "exact", "unchecked")
                  if hasattr(report, name)}
        lines.append("tiers   " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return lines


def command_line(ctx: click.Context) -> str:
    """The command line as typed (``logmm multiply a.h5 b.h5 -o c.h5``), for provenance."""
    argv = ctx.meta.get(ARGV_KEY)
    if argv is None:
        argv = sys.argv[1:]
    return shlex.join(["logmm", *argv])


def sibling_command(ctx: click.Context, name: str) -> click.Command | None:
    """The command ``name`` of the group ``ctx``'s command belongs to (``logmm plan`` runs
    ``multiply``), found through the context rather than by importing ``cli.main``."""
    parent = ctx.parent
    if parent is None or not isinstance(parent.command, click.Group):
        return None
    return parent.command.get_command(parent, name)


def explain_option(help_text: str) -> Callable[[F], F]:
    """``--explain``: print the contraction order and its cost on stderr."""
    return click.option("--explain", is_flag=True, help=help_text)


def chain_summary_line(result: ChainResult) -> str:
    """``wrote c.h5:/data (40×5 float64; (M1 (M2 M3)), method auto, 0 entries repaired)
    in 0.01 s`` for chain, power and einsum results."""
    shape = "×".join(str(s) for s in result.shape) or "scalar"
    detail = [result.order] if result.order else []
    if result.operation == "einsum":
        detail.append(f"{result.attrs.get('semiring', 'log')} semiring")
    detail.append(f"method {result.method}")
    if result.report is not None and result.products:
        if result.method == "exact":
            detail.append("every entry by exact logsumexp")
        else:
            count, what = ((result.report.unchecked, "unchecked") if result.method == "fast"
                           else (result.report.repaired, "repaired"))
            detail.append(f"{count} {'entry' if count == 1 else 'entries'} {what}")
    return (f"wrote {result.output} ({shape} {result.dtype}; {', '.join(detail)}) in "
            f"{result.seconds:.2f} s")
