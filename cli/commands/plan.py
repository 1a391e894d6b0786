"""``logmm plan [--shards N] COMMAND ARGS…``: print a command's block plan, run nothing."""

from __future__ import annotations

import click

from logmm.errors import UsageError

from ..options import PLAN_KEY, PLANNED_KEY, debug_option, sibling_command

__all__ = ["plan"]

EPILOG = """\b
Examples:
  logmm plan multiply a.h5:/a b.npy -o c.h5 --memory 2GiB
  logmm plan --shards 16 multiply a.h5:/a b.npy -o c.zarr --memory 2GiB
  logmm plan --shards 8 loglik x.zarr:x --mu 0 --sigma 1 -o ll.h5 --block-rows 4096

\b
Prints how COMMAND would cut its rows: blocks, rows per block, output chunk rows, the
memory budget, and with --shards N the blocks and rows of every shard, so that N can be
chosen (at least 2 blocks per shard; more shards than blocks leaves shards empty).
With --shards and a .zarr output, the shared store the shards write into is created
(empty, holding the plan), so that array jobs started later all find it. Nothing is
computed; the inputs' metadata is read.
"""


@click.command(epilog=EPILOG, short_help="Print a command's block plan (and shards).",
               context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--shards", type=click.IntRange(min=1), default=None, metavar="N",
              help="Plan N array-job shards (create the shared store of a .zarr output).")
@debug_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def plan(ctx: click.Context, shards: int | None, command: tuple[str, ...]) -> None:
    """Print how COMMAND (multiply, project, loglik, einsum) would cut its rows."""
    from logmm.shards import describe_plan

    name, *args = command
    if name not in ("multiply", "project", "loglik", "einsum"):
        raise UsageError(f"logmm plan takes multiply, project, loglik or einsum, not {name!r}")
    if any(a == "--shard" or a.startswith("--shard=") for a in args):
        raise UsageError("give logmm plan --shards N, not --shard I/N")
    if shards is not None:
        args += ["--shard", f"0/{shards}"]
    ctx.meta[PLAN_KEY] = True               # the command plans its job (cli/options.run_job)
    sub = sibling_command(ctx, name)
    assert sub is not None
    with sub.make_context(name, list(args), parent=ctx) as sub_ctx:
        sub.invoke(sub_ctx)
        planned = ctx.meta.get(PLANNED_KEY)
        if planned is None:
            raise UsageError(f"{name} with these options does not stream by row blocks; "
                             "nothing to plan")
        # described while the command's --threads is still in force
        click.echo(describe_plan(planned, shards, sources=_sources(sub_ctx)))


def _sources(ctx: click.Context) -> dict[str, str]:
    """Where the memory budget and the thread count came from: the option, its
    environment variable, or the job's limits (:mod:`logmm.resources`)."""
    from click.core import ParameterSource

    from logmm.plan import default_memory_limit
    from logmm.resources import detect_threads, thread_limit

    from ..options import MEMORY_ENV, THREADS_ENV

    def given(param: str, env: str) -> str | None:
        source = ctx.get_parameter_source(param)
        if source is ParameterSource.COMMANDLINE:
            return f"--{param}"
        return env if source is ParameterSource.ENVIRONMENT else None

    threads = given("threads", THREADS_ENV) or detect_threads().source
    return {"memory": given("memory", MEMORY_ENV) or default_memory_limit().source,
            "threads": f"{thread_limit()} ({threads})"}
