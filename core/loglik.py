"""The streaming engine behind ``logmm loglik``: a diagonal-Gaussian log-likelihood of X.

X is read in row blocks through the same planner, pipeline, atomic writer and resume
record as ``multiply`` (:mod:`logmm.engine`); each block goes through
:func:`logmm.gaussian.diag_gaussian_logpdf`. ``mu`` and ``sigma``/``rho`` are numbers or
arrays: a scalar, a row of X's width (per column), or an array of X's own shape, which is
then streamed in the same row blocks. ``reduce="none"`` writes the elementwise values,
``"row"`` one value per row, ``"sum"`` the total (returned, and written as a 1-element
array when an output is given).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from .engine import Job, OutputOptions, RunOptions, RunResult, run
from .errors import InputError, UsageError
from .gaussian import REDUCTIONS, diag_gaussian_logpdf
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.resume import input_fingerprint
from .io.writers import check_output, default_chunk_rows
from .plan import RowPlan, plan_rows
from .policy import check_choice
from .resources import accepts_threads
from .shards import Shard
from .typing import Reduce

__all__ = ["LoglikResult", "loglik", "prepare_loglik"]

Address = str | Path | ArrayAddress
Param = Address | float | int
_OVERHEAD = 16 << 20


@dataclass(kw_only=True)
class LoglikResult(RunResult):
    """What :func:`loglik` computed: the fields of :class:`logmm.engine.RunResult`, and these.

    ``output`` is None for a sum without one.

    Attributes
    ----------
    reduce : str
    total : float or None
        The sum, for ``reduce="sum"``.
    """

    reduce: Reduce
    total: float | None = None


def _number(value: Param) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@accepts_threads
def loglik(x_address: Address, out_address: Address | None, *, mu: Param,
           sigma: Param | None = None, rho: Param | None = None, reduce: Reduce = "none",
           dtype: Any = None, block_rows: int | None = None, memory: int | None = None,
           overwrite: bool = False, compression: str | None = None,
           chunk_rows: int | None = None, resume: bool = False, progress: bool = False,
           command: str = "", shard: Shard | str | None = None, scheduler: Any = "local",
           dask_address: str | None = None,
           zarr_format: int = 3) -> LoglikResult:
    """Write (or return) ``log N(X; mu, diag(sigma²))``, streaming X by row blocks.

    Parameters
    ----------
    x_address : address
        X (n, width), 2-D.
    out_address : address or None
        Output; required unless ``reduce="sum"``. Shape (n, width), (n,) or (1,).
    mu, sigma, rho : number or address
        Exactly one of ``sigma``/``rho`` (``sigma = softplus(rho)``); arrays of shape
        (width,), (1, width) or (n, width).
    reduce, dtype
        As for :func:`logmm.diag_gaussian_logpdf` (``dtype`` float32/float64 forces the
        result type).
    block_rows, memory, overwrite, compression, chunk_rows, resume, progress, command, shard
    scheduler, dask_address
        As for :func:`logmm.multiply.multiply` (``shard`` not with ``reduce="sum"``: shard
        with ``reduce="row"`` and add the rows).
    threads : int, optional
        Compute threads and BLAS threads in all (default the job's CPUs, see
        :mod:`logmm.resources`).
    zarr_format : {3, 2}
        Zarr format of a ``.zarr`` output (2 for readers that only know Zarr v2; refused
        for a ``shard`` run, whose shared store is format 3).

    Raises
    ------
    UsageError
        Both or neither of sigma/rho, no output for an elementwise or per-row result.
    InputError
        A parameter whose shape does not fit X; sigma ≤ 0; rho not finite.
    """
    options = RunOptions.checked(memory=memory, block_rows=block_rows, resume=resume,
                                 shard=shard, scheduler=scheduler, dask_address=dask_address,
                                 progress=progress, command=command)
    return run(prepare_loglik(x_address, out_address, mu=mu, sigma=sigma, rho=rho,
                              reduce=reduce, dtype=dtype,
                              output=OutputOptions(overwrite=overwrite,
                                                   compression=compression,
                                                   chunk_rows=chunk_rows,
                                                   zarr_format=zarr_format),
                              options=options))


def prepare_loglik(x_address: Address, out_address: Address | None, *, mu: Param,
                   sigma: Param | None = None, rho: Param | None = None,
                   reduce: Reduce = "none", dtype: Any = None,
                   output: OutputOptions | None = None,
                   options: RunOptions | None = None) -> Job[LoglikResult]:
    """The :class:`logmm.engine.Job` of :func:`loglik` (same parameters, grouped); with
    ``reduce="sum"`` a gathering job (the blocks' sums, added exactly)."""
    output, options = output or OutputOptions(), options or RunOptions()
    if options.shard is not None and reduce == "sum":
        raise UsageError("--shard cannot split --reduce sum; shard with --reduce row and add "
                         "the per-row values")
    if (sigma is None) == (rho is None):
        raise UsageError("give exactly one of --sigma and --rho")
    check_choice("reduce", reduce, REDUCTIONS)
    if out_address is None and reduce != "sum":
        raise UsageError("an output (-o) is needed unless --reduce sum")
    scale_name, scale = ("sigma", sigma) if sigma is not None else ("rho", rho)
    assert scale is not None
    stack = ExitStack()
    try:
        x = stack.enter_context(open_array(x_address))
        require_matrix(x, "X")
        n, width = x.shape
        params: dict[str, tuple[float | None, ArrayReader | None, np.ndarray | None,
                          ArrayReader | None]] = {}
        for name, value in (("mu", mu), (scale_name, scale)):
            number = _number(value)
            if number is not None:
                params[name] = (number, None, None, None)
                continue
            reader = stack.enter_context(open_array(cast(Address, value)))
            shape = reader.shape
            if shape in ((width,), (1, width)):
                params[name] = (None, None, reader.read_all().reshape(width), reader)
            elif shape == (n, width):
                params[name] = (None, reader, None, reader)    # streamed with X
            else:
                raise InputError(f"{name} ({reader.address}) has shape {shape}; it must be "
                                 f"a number, ({width},), (1, {width}) or ({n}, {width})")
        typed = [x.dtype] + [source.dtype for number, _, _, source in params.values()
                             if number is None and source is not None]
        out_dtype = np.dtype(dtype) if dtype is not None else np.result_type(
            *(np.float64 if t.kind in "biu" else t for t in typed))
        out_shape = {"none": (n, width), "row": (n,), "sum": (1,)}[reduce]
        inputs = _input_addresses(x, params)
        out = None if out_address is None else check_output(
            out_address, overwrite=output.overwrite, compression=output.compression,
            inputs=inputs, resume=options.resume and reduce != "sum")
    except BaseException:
        stack.close()
        raise
    if not options.command:
        options = replace(options, command="logmm.loglik(...)")
    row_bytes = width * (x.dtype.itemsize * 3 + out_dtype.itemsize * 6)
    row_bytes += sum(width * 8 * 2 for p in params.values() if p[1] is not None)
    chunk_rows = output.chunk_rows

    def make_plan(options: RunOptions) -> RowPlan:
        return plan_rows(n, row_bytes=row_bytes, overhead=_OVERHEAD, memory=options.memory,
                         block_rows=options.block_rows, chunk_rows=chunk_rows,
                         in_chunk_rows=x.chunk_rows,
                         default_chunk_rows=default_chunk_rows(
                             n, (width if reduce == "none" else 1) * out_dtype.itemsize),
                         min_blocks=options.min_blocks)

    def describe(header: dict[str, Any], _: Any, plan: RowPlan) -> dict[str, Any]:
        return _attrs(header, x, params, scale_name, reduce, out_dtype, out_shape)

    block = _BlockLoglik(x, params, scale_name, reduce, out_dtype)
    fingerprint = None if reduce == "sum" else {
        "operation": "loglik", "x": input_fingerprint(x.address, x.shape, x.dtype),
        "params": {k: number if source is None else
                   input_fingerprint(source.address, source.shape, source.dtype)
                   for k, (number, _, _, source) in params.items()},
        "reduce": reduce, "dtype": str(out_dtype), "output": str(out),
        "compression": output.compression,
    }
    if reduce == "sum":   # each block's sum is float64-accumulated; the sums added exactly
        return Job(operation="loglik", inputs=inputs, output=out, shape=out_shape,
                   dtype=out_dtype, output_options=output, options=options,
                   fingerprint=None, make_plan=make_plan, load=block.load,
                   compute=block.compute,
                   gather=lambda sums: np.array([math.fsum(sums)], out_dtype),
                   summarize=math.fsum, describe=describe,
                   result=lambda base, total: LoglikResult(**base, reduce=reduce,
                                                           total=total),
                   stack=stack)
    return Job(operation="loglik", inputs=inputs, output=out, shape=out_shape,
               dtype=out_dtype, output_options=output, options=options,
               fingerprint=fingerprint, make_plan=make_plan,
               load_plan=lambda d: RowPlan(**d), load=block.load, compute=block.compute,
               describe=describe,
               result=lambda base, _: LoglikResult(**base, reduce=reduce), stack=stack)


class _BlockLoglik:
    """One row block: ``load`` reads X's rows (and those of parameters of X's shape),
    ``compute`` writes their log-likelihood into the block's output rows, or returns the
    block's sum. Picklable (a dask task): readers travel as their addresses."""

    def __init__(self, x: ArrayReader, params: dict, scale_name: str, reduce: Reduce,
                 dtype: np.dtype) -> None:
        self.x, self.params, self.scale_name = x, params, scale_name
        self.reduce, self.dtype = reduce, dtype

    def _param(self, name: str, r0: int, r1: int) -> Any:
        number, reader, array, _ = self.params[name]
        if number is not None:
            return self.dtype.type(number)
        if reader is not None:
            return reader.read_rows(r0, r1).astype(self.dtype, copy=False)
        return array.astype(self.dtype, copy=False)

    def load(self, block: tuple[int, int, int]) -> tuple[np.ndarray, Any, Any]:
        _, r0, r1 = block
        return (self.x.read_rows(r0, r1, allow_view=True).astype(self.dtype, copy=False),
                self._param("mu", r0, r1), self._param(self.scale_name, r0, r1))

    def compute(self, block: tuple[int, int, int], data: tuple, out: np.ndarray | None,
                advance: Any = None) -> Any:
        _, r0, r1 = block
        xb, mub, sb = data
        try:
            values = diag_gaussian_logpdf(xb, mub, reduce=self.reduce,
                                          out=out if self.reduce == "none" else None,
                                          **{self.scale_name: sb})
        except InputError as exc:     # name the files: "sigma must be ... (sigma: s.npy)"
            raise InputError(f"{exc} (X: {self.x.address}, rows {r0}:{r1}; "
                             f"{_sources(self.params)})") from None
        if out is None:
            return values                       # the block's sum
        if values is not out:
            out[...] = values
        return None


def _input_addresses(x: ArrayReader, params: dict) -> list[ArrayAddress]:
    """X's address and those of the parameters read from files."""
    return [x.address] + [p[3].address for p in params.values() if p[3] is not None]


def _sources(params: dict) -> str:
    """``mu: 0.0; sigma: s.npy`` — where each parameter comes from, for messages."""
    return "; ".join(f"{name}: {p[0] if p[0] is not None else p[3].address}"
                     for name, p in params.items())


def _attrs(header: dict[str, Any], x: ArrayReader, params: dict, scale_name: str,
           reduce: Reduce, dtype: np.dtype, shape: tuple[int, ...]) -> dict[str, Any]:
    described = {name: (number if number is not None else str(source.address))
                 for name, (number, _, _, source) in params.items()}
    return {**header,
            "operation": "loglik", "x": str(x.address), "x_shape": list(x.shape),
            "scale": scale_name, **{k: str(v) for k, v in described.items()},
            "reduce": reduce, "dtype": str(dtype), "shape": list(shape)}
