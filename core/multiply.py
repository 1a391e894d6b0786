"""The out-of-core engine behind ``logmm multiply``: ``C = log(exp(A) @ exp(B))`` file to file.

:func:`logmm.plan.plan_product` turns the memory budget into row blocks of A, column
panels of B and contraction chunks; :func:`logmm.stream.run_pipeline` reads the next
block of A while the kernel (:func:`logmm.logmatmul.logmatmulexp_report`) computes the
current one and the previous one is written, into a hidden partial output that is renamed
into place only when every block is written (see :mod:`logmm.io.writers`). After each
block is flushed, a resume record (:mod:`logmm.io.resume`) notes it, so ``resume=True``
finishes a killed run bit-identically.

Every row block is an independent product: the result is bit for bit the in-memory
product of the same row blocks, and agrees with one whole in-memory product up to BLAS
rounding (a GEMM's result may depend on how many rows it is given).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .accumulate import LogSumAccumulator
from .dask_backend import check_scheduler
from .engine import Block, OpenOutput, finish_output, open_output, stream_blocks
from .errors import InputError, UsageError
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.resume import input_fingerprint
from .io.writers import check_output, default_chunk_rows
from .logmatmul import METHODS, ProductReport, check_no_posinf, logmatmulexp_report, result_dtype
from .plan import ProductPlan, plan_product
from .resources import accepts_threads
from .shards import Shard, parse_shard, shard_summary

__all__ = ["MultiplyResult", "multiply", "resolve_dtype"]


@dataclass
class MultiplyResult:
    """What :func:`multiply` wrote.

    Attributes
    ----------
    output : ArrayAddress
        The output address, dataset part filled in (``OUT.h5:/data``).
    shape : tuple of int
        ``(n, m)``.
    dtype : numpy.dtype
        float32 or float64.
    method : str
        ``auto``, ``fast`` or ``exact``.
    report : ProductReport
        Entries per tier, summed over all blocks (``report.repaired``: recomputed entries).
    seconds : float
        Wall time from opening the inputs to the committed output.
    block_rows : int
        Rows of A per block.
    plan : ProductPlan
        Blocks, panels and contraction chunks used.
    resumed_blocks : int
        Row blocks found already stored by an interrupted run (``resume``).
    shard_note : str or None
        With ``shard``: which rows this shard wrote, and whether the output is finished.
    """

    output: ArrayAddress
    shape: tuple[int, int]
    dtype: np.dtype
    method: str
    report: ProductReport
    seconds: float
    block_rows: int
    plan: ProductPlan
    resumed_blocks: int = 0
    shard_note: str | None = None

    @property
    def path(self) -> Path:
        """The output file or store on disk."""
        return self.output.path


def resolve_dtype(a_dtype: np.dtype, b_dtype: np.dtype,
                  dtype: np.dtype | type | str | None = None) -> np.dtype:
    """The result dtype, as :func:`logmm.logmatmul.result_dtype` decides it.

    Raises
    ------
    UsageError
        ``dtype`` is not float32 or float64 (a bad option, not bad data).
    InputError
        An input's dtype cannot hold log-values.
    """
    if dtype is not None:
        try:
            return result_dtype(a_dtype, b_dtype, dtype)
        except InputError as exc:
            raise UsageError(str(exc)) from None
    return result_dtype(a_dtype, b_dtype)


@accepts_threads
def multiply(a_address: str | Path | ArrayAddress, b_address: str | Path | ArrayAddress,
             out_address: str | Path | ArrayAddress, *, method: str = "auto",
             dtype: np.dtype | type | str | None = None, block_rows: int | None = None,
             overwrite: bool = False, compression: str | None = None,
             chunk_rows: int | None = None, memory: int | None = None,
             resume: bool = False, progress: bool = False,
             command: str = "", shard: Shard | str | None = None, scheduler: Any = "local",
             dask_address: str | None = None,
             provenance: Mapping[str, Any] | None = None) -> MultiplyResult:
    """Write ``C = log(exp(A) @ exp(B))`` for arrays in files, streaming A by row blocks.

    Parameters
    ----------
    a_address, b_address : str, Path or ArrayAddress
        2-D inputs, A (n, k) and B (k, m): ``x.npy``, ``x.h5:/name``, ``x.zarr:name``.
        Integer inputs are converted to float64.
    out_address : str, Path or ArrayAddress
        Output (n, m); the dataset defaults to ``data``. Written under a hidden partial
        name and renamed into place when complete.
    method : {"auto", "fast", "exact"}
        Kernel method, see :func:`logmm.logmatmulexp`.
    dtype : float32 or float64, optional
        Result dtype; default the inputs' result type.
    block_rows : int, optional
        Rows of A per block; default from ``memory`` (see :func:`logmm.plan.plan_product`).
    overwrite : bool
        Replace an existing output; otherwise :class:`OutputExistsError`, nothing touched.
    compression : str, optional
        Output compression (see ``logmm multiply --help``).
    chunk_rows : int, optional
        Rows per output storage chunk (default about 4 MiB per chunk, at most a block).
    memory : int, optional
        Working-memory budget in bytes (default a quarter of available memory, at most
        4 GiB). When B does not fit a quarter of it, B is streamed in column panels, and
        when even a thin panel does not fit, the contraction axis is split and partial
        products are combined with the kernel's log-accumulator.
    resume : bool
        Finish an interrupted run of the same command from its partial output, computing
        only the blocks it had not stored; the recorded plan is reused, so the result is
        bit-identical to an uninterrupted run. Refused if an input or an option that
        changes the result differs. Without an interrupted run, starts afresh.
    progress : bool
        Show a tqdm bar (rows) on stderr.
    command : str
        Recorded in the output's ``command`` attribute (the CLI passes its command line).
    provenance : mapping, optional
        Attributes that replace or add to the recorded ones (engines built on this one,
        such as a chain whose first factor is streamed, describe themselves with it).
    shard : Shard or "I/N", optional
        Compute only shard I of N of the plan's row blocks (see :mod:`logmm.shards`):
        into the shared store of a ``.zarr`` output, or ``OUT.shard-IIII-of-NNNN.h5``
        for an ``.h5`` output (``logmm merge`` joins those). Not for ``.npy``.
    scheduler : {"local", "dask"} or distributed.Client
        ``dask``: one task per row block on a dask.distributed cluster (see
        :mod:`logmm.dask_backend`): the one at ``dask_address``, or a LocalCluster sized
        to this machine with ``memory`` per worker. A Client runs them on its cluster.
        Same blocks, same kernel: bit for bit the local result.
    dask_address : str, optional
        ``tcp://HOST:PORT`` of a dask scheduler (implies ``scheduler="dask"``).
    threads : int, optional
        Compute threads and BLAS threads in all (default the job's CPUs, see
        :mod:`logmm.resources`).

    Returns
    -------
    MultiplyResult

    Raises
    ------
    MissingInputError, FormatError
        An input file or dataset is missing or unreadable.
    InputError
        Not 2-D, non-numeric, ``A.shape[1] != B.shape[0]``, or ``+inf`` in an input.
    OutputExistsError
        The output exists and ``overwrite`` is false.
    UsageError
        Unknown method, dtype or compression, a block size below 1, a budget too small.
    LogmmError
        ``resume`` with changed inputs or options; another run is writing the output.

    Examples
    --------
    >>> result = multiply("a.h5:/a", "b.npy", "c.h5")  # doctest: +SKIP
    >>> result.shape, result.report.repaired  # doctest: +SKIP
    ((200, 32), 0)
    """
    started = time.perf_counter()
    shard = parse_shard(shard)
    scheduler = check_scheduler(scheduler, dask_address)
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for name, value in (("block rows", block_rows), ("chunk rows", chunk_rows),
                        ("memory budget", memory)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if dtype is not None:
        resolve_dtype(np.dtype(np.float64), np.dtype(np.float64), dtype)  # validate early

    with ExitStack() as stack:
        a = stack.enter_context(open_array(a_address))
        b = stack.enter_context(open_array(b_address))
        require_matrix(a, "A")
        require_matrix(b, "B")
        (n, k), (k_b, m) = a.shape, b.shape
        if k != k_b:
            raise InputError(
                f"shape mismatch: A ({a.address}) is {n}×{k} and B ({b.address}) is {k_b}×{m}; "
                f"A's columns ({k}) must equal B's rows ({k_b})"
            )
        out_dtype = resolve_dtype(a.dtype, b.dtype, dtype)
        out = check_output(out_address, overwrite=overwrite, compression=compression,
                           inputs=(a.address, b.address),
                           resume=resume)
        if not command:
            command = _python_call(a.address, b.address, out, method, dtype)

        fingerprint = {
            "operation": "multiply", "a": input_fingerprint(a.address, a.shape, a.dtype),
            "b": input_fingerprint(b.address, b.shape, b.dtype), "method": method,
            "dtype": str(out_dtype), "output": str(out), "compression": compression,
        }

        def make_plan() -> ProductPlan:
            return plan_product(
                n, k, m, a_itemsize=a.dtype.itemsize, b_itemsize=b.dtype.itemsize,
                a_read_copies=3 if a.decodes_chunks else 2,
                itemsize=out_dtype.itemsize, memory=memory, block_rows=block_rows,
                chunk_rows=chunk_rows, a_chunk_rows=a.chunk_rows,
                default_chunk_rows=default_chunk_rows(n, m * out_dtype.itemsize),
                min_blocks=shard.count if shard is not None else 1)

        output = open_output(stack, out, (n, m), out_dtype, fingerprint=fingerprint,
                             resume=resume, make_plan=make_plan,
                             load_plan=lambda d: ProductPlan(**d), overwrite=overwrite,
                             compression=compression, contiguous=chunk_rows is None,
                             shard=shard)
        plan = output.plan
        report = finish_output(
            output, lambda: _run_product(a, b, output, method, out_dtype, progress, scheduler,
                                         dask_address),
            lambda report: _provenance(a.address, b.address, (n, k), (k_b, m), method,
                                       out_dtype, report, command, plan) | dict(provenance or {}))
    return MultiplyResult(
        output=out, shape=(n, m), dtype=out_dtype, method=method, report=report,
        seconds=time.perf_counter() - started, block_rows=plan.block_rows, plan=plan,
        resumed_blocks=output.resumed_blocks, shard_note=shard_summary(output),
    )


def _run_product(a: ArrayReader, b: ArrayReader, output: OpenOutput[ProductPlan],
                 method: str, out_dtype: np.dtype, progress: bool, scheduler: Any = "local",
                 dask_address: str | None = None) -> ProductReport:
    """Stream the listed row blocks through the kernel into ``writer``.

    B resident: read once, then each block of A is read ahead on a thread, multiplied, and
    written behind. Otherwise each block of A is multiplied panel by panel of B (read per
    block), and with a contraction split each panel's partial products are combined by
    :class:`logmm.accumulate.LogSumAccumulator`.
    """
    writer, plan = output.writer, output.plan
    report = ProductReport()
    B = None
    if plan.b_resident:
        B = b.read_all().astype(out_dtype, copy=False)
        check_no_posinf(B, f"B ({b.address})")
    panels, chunks = plan.col_panels(), plan.k_chunks()

    def product(A_part: np.ndarray, B_part: np.ndarray, where: str, tally: list[ProductReport],
                out: np.ndarray | None = None) -> np.ndarray:
        try:
            C, part_report = logmatmulexp_report(A_part, B_part, method=method, dtype=out_dtype,
                                                 out=out)
        except InputError as exc:  # name the file and rows: "A (a.h5:/a, rows 0:512) …"
            msg = str(exc)
            msg = f"{where} {msg[2:]}" if msg[:2] in ("A ", "B ") else f"{msg} ({where})"
            raise InputError(msg) from exc
        tally[0] += part_report
        return C

    def load(block: Block) -> np.ndarray | None:
        _, r0, r1 = block
        return a.read_rows(r0, r1, allow_view=True) if len(chunks) <= 1 else None

    def compute(block: Block, A_rows: np.ndarray | None) -> tuple[list, ProductReport]:
        """The block's regions ``[(first column, C part), ...]`` and its kernel report
        (returned rather than added up here: under dask this runs in a worker)."""
        _, r0, r1 = block
        where = f"A ({a.address}, rows {r0}:{r1})"
        tally = [ProductReport()]
        if B is not None:
            view = writer.region_view(r0, 0, (r1 - r0, plan.m))
            if view is not None:                 # computed straight into the output
                product(A_rows, B, where, tally, out=view)
                return [], tally[0]
            return [(0, product(A_rows, B, where, tally))], tally[0]
        regions = []
        for c0, c1 in panels:
            if A_rows is not None:
                B_panel = b.read_region(0, b.shape[0], c0, c1).astype(out_dtype, copy=False)
                regions.append((c0, product(A_rows, B_panel, where, tally)))
                continue
            acc = LogSumAccumulator((r1 - r0, c1 - c0), np.float64)
            for k0, k1 in chunks:
                B_part = b.read_region(k0, k1, c0, c1).astype(out_dtype, copy=False)
                acc.add(product(a.read_region(r0, r1, k0, k1), B_part,
                                f"A ({a.address}, rows {r0}:{r1}, columns {k0}:{k1})", tally))
            regions.append((c0, acc.result(out_dtype)))
        return regions, tally[0]

    def store(block: Block, computed: tuple[list, ProductReport]) -> None:
        nonlocal report
        _, r0, _ = block
        regions, block_report = computed
        for c0, C in regions:
            writer.write_region(r0, c0, C)
        writer.flush()
        report += block_report

    stream_blocks(output, plan.n, load, compute, store, progress=progress, desc="multiply",
                  scheduler=scheduler, dask_address=dask_address)
    return report


def _provenance(a: ArrayAddress, b: ArrayAddress, a_shape: tuple[int, int],
                b_shape: tuple[int, int], method: str, dtype: np.dtype, report: ProductReport,
                command: str, plan: ProductPlan) -> dict[str, Any]:
    from .provenance import run_provenance

    return {
        **run_provenance(command, [a, b]),
        "operation": "multiply",
        "method": method,
        "a": str(a),
        "b": str(b),
        "a_shape": list(a_shape),
        "b_shape": list(b_shape),
        "dtype": str(dtype),
        "entries": int(report.entries),
        "repaired_entries": int(report.repaired),
        # one count per kernel tier: fast_entries, blocked_entries, exact_entries, ...
        **{f"{f.name}_entries": int(getattr(report, f.name))
           for f in fields(report) if f.name != "entries"},
        "block_rows": plan.block_rows,
        "col_panel": plan.col_panel,
        "k_chunk": plan.k_chunk,
    }


def _python_call(a: ArrayAddress, b: ArrayAddress, out: ArrayAddress, method: str,
                 dtype: Any) -> str:
    extra = f", dtype={str(np.dtype(dtype))!r}" if dtype is not None else ""
    return f"logmm.multiply({str(a)!r}, {str(b)!r}, {str(out)!r}, method={method!r}{extra})"
