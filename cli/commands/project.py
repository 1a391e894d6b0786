"""``logmm project``: rows of X times ``(I_K ⊗ W)ᵀ`` or ``(F1 ⊗ F2 ⊗ …)ᵀ``, streamed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, get_args

import click

from logmm.errors import UsageError
from logmm.typing import KronSemiring

from ..options import (
    ADDRESS,
    dtype_option,
    job_options,
    output_option,
    overwrite_option,
    report_result,
    reporting_options,
    row_streaming_options,
    run_job,
    storage_options,
)

if TYPE_CHECKING:
    from logmm.kron import Identity
    from logmm.project import ProjectResult

__all__ = ["factor_specs", "project", "summary_line"]

#: ``ctx.meta`` key: the names of the --factor/--identity options in command-line order
ORDER_KEY = "logmm.project.factor_order"
_IDENTITY_RE = re.compile(r"^(?:i|identity):(\d+)$", re.IGNORECASE)

EPILOG = """\b
Examples:
  logmm project x.h5:/x w.npy --blocks 6 -o y.h5
  logmm project x.npz w.npy --blocks 6 -o y.zarr --dtype float32
  logmm project x.h5:/x --factor f1.npy --factor f2.npy -o y.npy
  logmm project x.npz --factor f1.npy --identity 4 --factor f2.npy -o y.h5
  logmm project logx.h5 logw.npy --blocks 30 -o logy.h5 --semiring log

\b
X (n × width) is dense (.npy, HDF5, Zarr) or sparse CSR: a scipy .npz
(scipy.sparse.save_npz), or an HDF5/Zarr group holding data, indices and indptr with
a 'shape' attribute (x.h5:/group). It is read in row blocks; sparse rows stay sparse
through the first mode product. W and the factors are read whole.

\b
With W and --blocks K, each row (K blocks of d) becomes K blocks of p: the row times
(I_K ⊗ W)ᵀ for W of shape p × d, with width = K·d.
With --factor F1 --factor F2 …, each row is multiplied by (F1 ⊗ F2 ⊗ …)ᵀ, factor by
factor, for factors of any shape whose column counts multiply to X's width. --identity
N (or --factor I:N) is an identity factor of size N, placed where it appears on the
command line among the --factor options, and skipped rather than multiplied.

\b
--semiring log: X, W and the factors hold log-values (an absent sparse entry is
log 0); every sum is a stable log-sum-exp, as in multiply.
The output (n × K·p, or n × Π rows of the factors) is dense, written under a hidden
temporary name and renamed into place when complete, with provenance attributes.
"""


class ProjectCommand(click.Command):
    """A command that remembers the order in which ``--factor`` and ``--identity`` were
    given (Click collects each repeated option separately)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        except click.ClickException:
            order = []             # the real parse below reports the problem
        ctx.meta[ORDER_KEY] = [p.name for p in order if p.name in ("factor", "identity")]
        return super().parse_args(ctx, args)


def factor_specs(factors: tuple[str, ...], identities: tuple[int, ...],
                 order: list[str] | None) -> list[str | Identity]:
    """The Kronecker factors in command-line order: addresses, and ``Identity(n)`` for
    ``--identity N`` and ``--factor I:N``.

    ``order`` lists ``"factor"`` and ``"identity"`` per occurrence; without it (or when
    it does not match the counts) identities follow the factors.
    """
    from logmm.kron import Identity

    specs: list[str | Identity] = []
    for text in factors:
        match = _IDENTITY_RE.match(text.strip())
        if match is not None:
            size = int(match[1])
            if size < 1:
                raise UsageError(f"--factor {text}: an identity factor needs a size of at "
                                 "least 1")
            specs.append(Identity(size))
        else:
            specs.append(text)
    ids = [Identity(int(n)) for n in identities]
    if order is None or sorted(order) != sorted(["factor"] * len(specs)
                                                + ["identity"] * len(ids)):
        return specs + ids
    queues = {"factor": iter(specs), "identity": iter(ids)}
    return [next(queues[name]) for name in order]


@click.command(cls=ProjectCommand, epilog=EPILOG,
               short_help="Rows times a Kronecker-structured operator, never formed.")
@click.argument("x", metavar="X", type=ADDRESS)
@click.argument("w", metavar="[W]", required=False, type=ADDRESS)
@click.option("--blocks", type=click.IntRange(min=1), default=None, metavar="K",
              help="Number of diagonal blocks of I_K ⊗ W (needs W; must divide X's width).")
@click.option("--factor", "factor", multiple=True, metavar="ADDR|I:N", type=ADDRESS,
              help="A Kronecker factor, in order (repeatable); I:N is an identity of size N.")
@click.option("--identity", "identity", type=click.IntRange(min=1), multiple=True,
              metavar="N", help="An identity factor of size N, at this position among the "
                                "--factor options (repeatable; skipped, never multiplied).")
@click.option("--semiring", type=click.Choice(get_args(KronSemiring)), default="real",
              show_default=True,
              help="real: ordinary sums; log: inputs are log-values, sums are stable "
                   "log-sum-exps.")
@output_option
@overwrite_option
@dtype_option
@row_streaming_options
@storage_options
@reporting_options
@click.pass_context
def project(ctx: click.Context, x: str, w: str | None, blocks: int | None,
            factor: tuple[str, ...], identity: tuple[int, ...], semiring: KronSemiring, output: str,
            overwrite: bool, dtype: str | None, memory: int | None, block_rows: int | None,
            resume: bool, shard: Any, scheduler: str,
            dask_address: str | None, compression: str | None, chunk_rows: int | None,
            quiet: bool, progress: bool | None) -> None:
    """Rows of X times (I_K ⊗ W)ᵀ, or times (F1 ⊗ F2 ⊗ …)ᵀ, without forming the product."""
    factors = factor_specs(factor, identity, ctx.meta.get(ORDER_KEY))
    from logmm.project import prepare_project

    out_options, run_options = job_options(
        ctx, overwrite=overwrite, compression=compression, chunk_rows=chunk_rows,
        memory=memory, block_rows=block_rows, resume=resume, shard=shard, scheduler=scheduler,
        dask_address=dask_address, progress=progress, quiet=quiet)
    result = run_job(ctx, prepare_project(
        x, output, w_address=w, blocks=blocks, factors=factors, semiring=semiring,
        dtype=dtype, output=out_options, options=run_options))
    if result is not None:
        report_result(result, summary_line, quiet)


def summary_line(result: ProjectResult) -> str:
    """``wrote y.h5:/data (60×30 float32; I_6 ⊗ w.npy, real semiring, sparse X) in 0.01 s``."""
    n, m = result.shape
    extra: list[Any] = [result.operator, f"{result.semiring} semiring"]
    if result.sparse:
        extra.append("sparse X")
    if result.resumed_blocks:
        extra.append(f"{result.resumed_blocks} blocks resumed")
    return (f"wrote {result.output} ({n}×{m} {result.dtype}; {', '.join(extra)}) in "
            f"{result.seconds:.2f} s")
