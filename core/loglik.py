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
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dask_backend import check_scheduler
from .engine import finish_output, open_output, stream_blocks
from .errors import InputError, UsageError
from .gaussian import REDUCTIONS, diag_gaussian_logpdf
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.resume import input_fingerprint
from .io.writers import check_output, default_chunk_rows
from .plan import RowPlan, plan_rows
from .resources import accepts_threads
from .shards import Shard, parse_shard, shard_summary

__all__ = ["LoglikResult", "loglik"]

Param = str | Path | ArrayAddress | float | int
_OVERHEAD = 16 << 20


@dataclass
class LoglikResult:
    """What :func:`loglik` computed: the output (or None), its shape, the total for
    ``reduce="sum"``, and the plan."""

    output: ArrayAddress | None
    shape: tuple[int, ...]
    dtype: np.dtype
    reduce: str
    total: float | None
    seconds: float
    plan: RowPlan
    shard_note: str | None = None


def _number(value: Param) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@accepts_threads
def loglik(x_address: Param, out_address: Param | None, *, mu: Param,
           sigma: Param | None = None, rho: Param | None = None, reduce: str = "none",
           dtype: Any = None, block_rows: int | None = None, memory: int | None = None,
           overwrite: bool = False, compression: str | None = None,
           chunk_rows: int | None = None, resume: bool = False, progress: bool = False,
           command: str = "", shard: Shard | str | None = None, scheduler: Any = "local",
           dask_address: str | None = None) -> LoglikResult:
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

    Raises
    ------
    UsageError
        Both or neither of sigma/rho, no output for an elementwise or per-row result.
    InputError
        A parameter whose shape does not fit X; sigma ≤ 0; rho not finite.
    """
    started = time.perf_counter()
    shard = parse_shard(shard)
    scheduler = check_scheduler(scheduler, dask_address)
    if shard is not None and reduce == "sum":
        raise UsageError("--shard cannot split --reduce sum; shard with --reduce row and add "
                         "the per-row values")
    if (sigma is None) == (rho is None):
        raise UsageError("give exactly one of --sigma and --rho")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    if out_address is None and reduce != "sum":
        raise UsageError("an output (-o) is needed unless --reduce sum")
    scale_name, scale = ("sigma", sigma) if sigma is not None else ("rho", rho)
    with ExitStack() as stack:
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
            reader = stack.enter_context(open_array(value))
            shape = reader.shape
            if shape in ((width,), (1, width)):
                params[name] = (None, None, reader.read_all().reshape(width), reader)
            elif shape == (n, width):
                params[name] = (None, reader, None, reader)    # streamed with X
            else:
                raise InputError(f"{name} ({reader.address}) has shape {shape}; it must be "
                                 f"a number, ({width},), (1, {width}) or ({n}, {width})")
        typed = [x.dtype] + [p[1].dtype if p[1] is not None else p[2].dtype
                             for p in params.values() if p[0] is None]
        out_dtype = np.dtype(dtype) if dtype is not None else np.result_type(
            *(np.float64 if t.kind in "biu" else t for t in typed))
        out_shape = {"none": (n, width), "row": (n,), "sum": (1,)}[reduce]

        def block_of(name: str, r0: int, r1: int) -> Any:
            number, reader, array, _ = params[name]
            if number is not None:
                return out_dtype.type(number)
            if reader is not None:
                return reader.read_rows(r0, r1).astype(out_dtype, copy=False)
            return array.astype(out_dtype, copy=False)

        def load(block: tuple[int, int, int]) -> tuple[np.ndarray, Any, Any]:
            _, r0, r1 = block
            return (x.read_rows(r0, r1, allow_view=True).astype(out_dtype, copy=False),
                    block_of("mu", r0, r1), block_of(scale_name, r0, r1))

        writer_view: list = []          # the open output, once there is one

        def compute(block: tuple[int, int, int], data: tuple) -> Any:
            _, r0, r1 = block
            xb, mub, sb = data
            view = (writer_view[0].region_view(r0, 0, (r1 - r0, width))
                    if writer_view and reduce == "none" else None)
            try:
                values = diag_gaussian_logpdf(xb, mub, reduce=reduce, out=view,
                                              **{scale_name: sb})
            except InputError as exc:     # name the files: "sigma must be ... (sigma: s.npy)"
                raise InputError(f"{exc} (X: {x.address}, rows {r0}:{r1}; "
                                 f"{_sources(params)})") from None
            return None if view is not None and values is view else values

        row_bytes = width * (x.dtype.itemsize * 3 + out_dtype.itemsize * 6)
        row_bytes += sum(width * 8 * 2 for p in params.values() if p[1] is not None)

        def make_plan() -> RowPlan:
            return plan_rows(n, row_bytes=row_bytes, overhead=_OVERHEAD, memory=memory,
                             block_rows=block_rows, chunk_rows=chunk_rows,
                             in_chunk_rows=x.chunk_rows,
                             default_chunk_rows=default_chunk_rows(
                                 n, (width if reduce == "none" else 1) * out_dtype.itemsize),
                             min_blocks=shard.count if shard is not None else 1)

        if reduce == "sum":
            plan = make_plan()
            # each block's sum is float64-accumulated; the blocks' sums are added exactly
            blocks = [(i, r0, r1) for i, (r0, r1) in enumerate(plan.row_blocks())]
            if scheduler == "local":
                sums = [compute(block, load(block)) for block in blocks]
            else:                               # the blocks' sums from dask tasks
                from .dask_backend import run_dask
                from .engine import BlockTask

                found: dict[int, float] = {}
                run_dask(blocks, BlockTask(load, compute),
                         lambda block, value: found.__setitem__(block[0], value),
                         lambda block: None, scheduler=scheduler, address=dask_address,
                         memory=plan.memory)
                sums = [found[i] for i, _, _ in blocks]
            total = math.fsum(sums)
            out = None
            if out_address is not None:
                from .chain import write_whole  # the one-shot atomic writer

                out = check_output(out_address, overwrite=overwrite, compression=compression,
                                   inputs=_input_addresses(x, params))
                write_whole(out, np.array([total], out_dtype), _attrs(
                    command, x, params, scale_name, reduce, out_dtype, (1,)),
                    overwrite=overwrite, compression=compression, chunk_rows=None)
            return LoglikResult(output=out, shape=(1,), dtype=out_dtype, reduce=reduce,
                                total=total, seconds=time.perf_counter() - started, plan=plan)

        out = check_output(out_address, overwrite=overwrite, compression=compression,
                           inputs=_input_addresses(x, params), resume=resume)
        fingerprint = {
            "operation": "loglik", "x": input_fingerprint(x.address, x.shape, x.dtype),
            "params": {k: v[0] if v[0] is not None else
                       input_fingerprint(v[3].address, v[3].shape, v[3].dtype)
                       for k, v in params.items()},
            "reduce": reduce, "dtype": str(out_dtype), "output": str(out),
            "compression": compression,
        }
        output = open_output(stack, out, out_shape, out_dtype, fingerprint=fingerprint,
                             resume=resume, make_plan=make_plan,
                             load_plan=lambda d: RowPlan(**d), overwrite=overwrite,
                             compression=compression, contiguous=chunk_rows is None,
                             shard=shard)

        writer_view.append(output.writer)

        def store(block: tuple[int, int, int], values: np.ndarray | None) -> None:
            if values is not None:                  # else computed straight into a .npy map
                output.writer.write_rows(block[1], values)
            output.writer.flush()

        finish_output(output, lambda: stream_blocks(output, n, load, compute, store,
                                                    progress=progress, desc="loglik",
                                                    scheduler=scheduler,
                                                    dask_address=dask_address),
                      lambda _: _attrs(command, x, params, scale_name, reduce, out_dtype,
                                       out_shape))
    return LoglikResult(output=out, shape=out_shape, dtype=out_dtype, reduce=reduce,
                        total=None, seconds=time.perf_counter() - started, plan=output.plan,
                        shard_note=shard_summary(output))


def _input_addresses(x: ArrayReader, params: dict) -> list[ArrayAddress]:
    """X's address and those of the parameters read from files."""
    return [x.address] + [p[3].address for p in params.values() if p[3] is not None]


def _sources(params: dict) -> str:
    """``mu: 0.0; sigma: s.npy`` — where each parameter comes from, for messages."""
    return "; ".join(f"{name}: {p[0] if p[0] is not None else p[3].address}"
                     for name, p in params.items())


def _attrs(command: str, x: ArrayReader, params: dict, scale_name: str, reduce: str,
           dtype: np.dtype, shape: tuple[int, ...]) -> dict[str, Any]:
    from .provenance import run_provenance

    described = {name: (number if number is not None else str(source.address))
                 for name, (number, _, _, source) in params.items()}
    return {**run_provenance(command or "logmm.loglik(...)", _input_addresses(x, params)),
            "operation": "loglik", "x": str(x.address), "x_shape": list(x.shape),
            "scale": scale_name, **{k: str(v) for k, v in described.items()},
            "reduce": reduce, "dtype": str(dtype), "shape": list(shape)}
