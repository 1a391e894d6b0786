"""The ``logmm`` Click group and the mapping of errors to one line and an exit code.

Exit codes: 0 success; 1 data or runtime error (any :class:`~logmm.errors.LogmmError`
carries its own code); 2 usage error; 130 interrupted (143 on SIGTERM). Errors are one
line on stderr, ``logmm: error: …``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

import click

from logmm.errors import AlreadyComplete, LogmmError

from .commands import COMMANDS
from .options import ARGV_KEY, DEBUG_KEY, QUIET_KEY, debug_option, quiet_option, verbose_option

__all__ = ["cli", "main"]

EPILOG = """\b
Examples:
  logmm multiply a.h5:/a b.h5:/b -o c.h5
  logmm multiply a.npy b.zarr:b -o c.zarr --method exact --dtype float32
  logmm multiply big.h5:/a b.npy -o c.h5 --memory 2GiB --compression gzip
  logmm chain m1.npy m2.h5:/m2 m3.npy -o c.h5 --explain
  logmm power trans.npy -n 16 -o trans16.npy
  logmm einsum 'bij,bjk->bik' x.h5:/x y.h5:/y -o z.h5 --semiring log
  logmm project x.npz w.npy --blocks 30 -o y.h5
  logmm info c.h5                   arrays, chunks, compression, provenance
  logmm convert c.h5 c.zarr --compression zstd
  logmm plan --shards 16 multiply a.h5 b.h5 -o c.h5   blocks and rows of 16 shards
  logmm multiply a.h5 b.h5 -o c.h5 --shard 3/16    one of 16 array-job shards
  logmm merge c.h5                  join the 16 shard files (HDF5 virtual dataset)
  logmm multiply --help

\b
Array addresses: x.npy, x.h5:/group/name (also .hdf5), x.zarr:group/name.
Without :NAME, a file holding exactly one array uses it. project also reads
sparse CSR matrices: x.npz (scipy.sparse.save_npz) or an HDF5/Zarr CSR group.
Exit codes: 0 success, 1 data or runtime error, 2 usage error, 130 interrupted.
"""


#: Click ≥ 8.2 raises this usage error for a group called without a command
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Terminated(SystemExit):
    """Raised on SIGTERM so that ``with`` blocks (temporary outputs) clean up."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(128 + signum)


class LogmmGroup(click.Group):
    """A Click group that records its argv and turns exceptions into one line + exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta.setdefault(ARGV_KEY, list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except AlreadyComplete as exc:     # a rerun of a finished job: success
            if not ctx.meta.get(QUIET_KEY):
                click.echo(f"logmm: {exc}", err=True)
            raise click.exceptions.Exit(0) from None
        except LogmmError as exc:
            _fail(ctx, exc, exc.exit_code, str(exc))
        except KeyboardInterrupt as exc:
            _fail(ctx, exc, 130, "interrupted")
        except _Terminated as exc:
            _fail(ctx, exc, int(exc.code or 143), "terminated")
        except MemoryError as exc:
            _fail(ctx, exc, 1, "out of memory; try a smaller --memory or --block-rows")
        except OSError as exc:  # disk full, permission denied, ...
            _fail(ctx, exc, 1, str(exc) or type(exc).__name__)
        except Exception as exc:
            _fail(ctx, exc, 1, f"unexpected {type(exc).__name__}: {exc} "
                               "(rerun with --debug for the traceback)")


    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """Click's ``main``, except that a usage error is one line too.

        Click prints a usage error as the usage line, a hint and the message; logmm prints
        ``logmm: error: MESSAGE (see 'logmm CMD --help')`` and exits 2, like every other
        error, so scripts and logs get one line naming the option at fault.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as exc:       # bare ``logmm``: the help, as Click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.ClickException as exc:
            message = exc.format_message()
            sub_ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and sub_ctx is not None:
                see = f"see '{sub_ctx.command_path} --help'"
                message = (f"{message} ({see})" if message.endswith("?")   # "Did you mean …?"
                           else f"{message.rstrip('.')}; {see}")
            click.echo(f"logmm: error: {' '.join(message.split())}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("logmm: error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(ctx: click.Context, exc: BaseException, code: int, message: str) -> None:
    if ctx.meta.get(DEBUG_KEY):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    else:
        # When one Zarr chunk write fails (disk full), its siblings are still pending on
        # zarr's background event loop; at exit asyncio logs "Task was destroyed but it is
        # pending!" for each. The error line below says what happened; keep it the only one.
        logging.getLogger("asyncio").disabled = True
    click.echo(f"logmm: error: {' '.join(message.split())}", err=True)
    raise click.exceptions.Exit(code)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``logmm, version X``, as click's version option prints it, from ``logmm.__version__``
    (read on first use: the installed metadata, or ``0+unknown`` in a bare source tree)."""
    if not value or ctx.resilient_parsing:
        return
    from logmm import __version__

    click.echo(f"logmm, version {__version__}")
    ctx.exit()


@click.group(cls=LogmmGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version, help="Show the version and exit.")
@quiet_option
@verbose_option
@debug_option
def cli(quiet: bool) -> None:
    """Stable log-space matrix products, out of core: C = log(exp(A) @ exp(B)) and friends.

    -q/-v given here apply to the command that follows (as its own -q would).
    """


for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``logmm …``."""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not in the main thread
        pass
    cli.main(args=list(argv) if argv is not None else None, prog_name="logmm")


if __name__ == "__main__":
    main()
