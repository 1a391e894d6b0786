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

import weakref
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .accumulate import LogSumAccumulator
from .engine import Block, Job, OutputOptions, RunOptions, RunResult, run
from .errors import InputError
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.resume import input_fingerprint
from .io.writers import check_output, default_chunk_rows
from .logmatmul import ProductReport, check_no_posinf, logmatmulexp_report
from .plan import ProductPlan, plan_product
from .policy import check_at_least_one, check_method, resolve_dtype
from .resources import accepts_threads
from .shards import Shard
from .typing import Method

__all__ = ["MultiplyResult", "multiply", "prepare_multiply", "resolve_dtype"]

Address = str | Path | ArrayAddress


@dataclass(kw_only=True)
class MultiplyResult(RunResult):
    """What :func:`multiply` wrote: the fields of :class:`logmm.engine.RunResult`, and these.

    Attributes
    ----------
    method : str
        ``auto``, ``fast`` or ``exact``.
    report : ProductReport
        Entries per tier, summed over the blocks this run computed
        (``report.repaired``: recomputed entries).
    plan : ProductPlan
        Blocks, panels and contraction chunks used.
    """

    method: Method
    report: ProductReport


@accepts_threads
def multiply(a_address: str | Path | ArrayAddress, b_address: str | Path | ArrayAddress,
             out_address: str | Path | ArrayAddress, *, method: Method = "auto",
             dtype: np.dtype | type | str | None = None, block_rows: int | None = None,
             overwrite: bool = False, compression: str | None = None,
             chunk_rows: int | None = None, memory: int | None = None,
             resume: bool = False, progress: bool = False,
             command: str = "", shard: Shard | str | None = None, scheduler: Any = "local",
             dask_address: str | None = None,
             provenance: Mapping[str, Any] | None = None,
             zarr_format: int = 3) -> MultiplyResult:
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
    zarr_format : {3, 2}
        Zarr format of a ``.zarr`` output (2 for readers that only know Zarr v2; refused
        for a ``shard`` run, whose shared store is format 3).

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
    options = RunOptions.checked(memory=memory, block_rows=block_rows, resume=resume,
                                 shard=shard, scheduler=scheduler, dask_address=dask_address,
                                 progress=progress, command=command)
    return run(prepare_multiply(a_address, b_address, out_address, method=method, dtype=dtype,
                                output=OutputOptions(overwrite=overwrite,
                                                     compression=compression,
                                                     chunk_rows=chunk_rows,
                                                     zarr_format=zarr_format),
                                options=options, provenance=provenance))


def prepare_multiply(a_address: Address, b_address: Address, out_address: Address, *,
                     method: Method = "auto", dtype: np.dtype | type | str | None = None,
                     output: OutputOptions | None = None, options: RunOptions | None = None,
                     provenance: Mapping[str, Any] | None = None) -> Job[MultiplyResult]:
    """The :class:`logmm.engine.Job` of :func:`multiply` (same parameters, grouped):
    inputs opened and checked, output checked, plan and fingerprint made."""
    output, options = output or OutputOptions(), options or RunOptions()
    check_method(method)
    check_at_least_one(block_rows=options.block_rows, chunk_rows=output.chunk_rows,
                       memory=options.memory)
    if dtype is not None:
        resolve_dtype(np.dtype(np.float64), np.dtype(np.float64), dtype)  # validate early
    stack = ExitStack()
    try:
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
        out = check_output(out_address, overwrite=output.overwrite,
                           compression=output.compression, inputs=(a.address, b.address),
                           resume=options.resume)
    except BaseException:
        stack.close()
        raise
    if not options.command:
        options = replace(options, command=_python_call(a.address, b.address, out, method,
                                                        dtype))
    fingerprint = {
        "operation": "multiply", "a": input_fingerprint(a.address, a.shape, a.dtype),
        "b": input_fingerprint(b.address, b.shape, b.dtype), "method": method,
        "dtype": str(out_dtype), "output": str(out), "compression": output.compression,
    }

    def make_plan(options: RunOptions) -> ProductPlan:
        return plan_product(
            n, k, m, a_itemsize=a.dtype.itemsize, b_itemsize=b.dtype.itemsize,
            a_read_copies=3 if a.decodes_chunks else 2,
            itemsize=out_dtype.itemsize, memory=options.memory,
            block_rows=options.block_rows,
            chunk_rows=output.chunk_rows, a_chunk_rows=a.chunk_rows,
            default_chunk_rows=default_chunk_rows(n, m * out_dtype.itemsize),
            min_blocks=options.min_blocks)

    product = _BlockProduct(a, b, method, out_dtype)

    def describe(header: dict[str, Any], report: ProductReport,
                 plan: ProductPlan) -> dict[str, Any]:
        return _provenance(header, a.address, b.address, (n, k), (k_b, m), method, out_dtype,
                           report, plan) | dict(provenance or {})

    return Job(operation="multiply", inputs=[a.address, b.address], output=out,
               shape=(n, m), dtype=out_dtype, output_options=output, options=options,
               fingerprint=fingerprint, make_plan=make_plan,
               load_plan=lambda d: ProductPlan(**d), load=product.load,
               compute=product.compute, use_plan=product.use_plan,
               compute_panel=product.compute_panel,
               summarize=_total_report, describe=describe,
               result=lambda base, report: MultiplyResult(**base, method=method,
                                                          report=report),
               stack=stack)


def _total_report(reports: list[ProductReport]) -> ProductReport:
    total = ProductReport()
    for report in reports:
        total += report
    return total


class _BlockProduct:
    """One row block of C: ``load`` reads A's rows, ``compute`` multiplies them by B into
    the block's output rows and returns the kernel's report.

    B resident (the plan's ``b_resident``): read once, at the first block. Otherwise each
    block of A is multiplied panel by panel of B (read per block), and with a
    contraction split each panel's partial products are combined by
    :class:`logmm.accumulate.LogSumAccumulator`. Picklable (a dask task): the readers
    travel as their addresses.
    """

    def __init__(self, a: ArrayReader, b: ArrayReader, method: Method, dtype: np.dtype) -> None:
        self.a, self.b, self.method, self.dtype = a, b, method, dtype
        self.plan: ProductPlan | None = None
        self.B: np.ndarray | None = None

    def use_plan(self, plan: ProductPlan) -> None:
        """Cut blocks by ``plan`` (the recorded one when resuming)."""
        self.plan = plan

    def load(self, block: Block) -> np.ndarray | None:
        _, r0, r1 = block
        plan = self._plan()
        return self.a.read_rows(r0, r1, allow_view=True) if len(plan.k_chunks()) <= 1 else None

    def compute(self, block: Block, A_rows: np.ndarray | None, out: np.ndarray,
                advance: Any = None) -> ProductReport:
        _, r0, r1 = block
        plan = self._plan()
        tally = [ProductReport()]
        if plan.b_resident:
            assert A_rows is not None             # one contraction chunk: rows were read
            self.product(A_rows, self._resident_b(), f"A ({self.a.address}, rows {r0}:{r1})",
                         tally, out=out)
            return tally[0]
        for c0, c1 in plan.col_panels():
            out[:, c0:c1] = self._panel(block, A_rows, c0, c1, tally)
        return tally[0]

    def compute_panel(self, block: Block, panel: tuple[int, int],
                      A_rows: np.ndarray | None) -> tuple[np.ndarray, ProductReport]:
        """Columns ``panel`` of the block's rows of C and their report (a (block, panel)
        task of ``--scheduler dask``): what :meth:`compute` stores there, the same
        bytes."""
        tally = [ProductReport()]
        return self._panel(block, A_rows, panel[0], panel[1], tally), tally[0]

    def _panel(self, block: Block, A_rows: np.ndarray | None, c0: int, c1: int,
               tally: list[ProductReport]) -> np.ndarray:
        """One column panel of a block of C: B's panel read, then one product, or with a
        contraction split the K-chunks' partial products folded in k order."""
        _, r0, r1 = block
        a, b, plan = self.a, self.b, self._plan()
        if A_rows is not None:
            B_panel = b.read_region(0, b.shape[0], c0, c1).astype(self.dtype, copy=False)
            return self.product(A_rows, B_panel, f"A ({a.address}, rows {r0}:{r1})", tally)
        acc = LogSumAccumulator((r1 - r0, c1 - c0), np.float64)
        for k0, k1 in plan.k_chunks():
            B_part = b.read_region(k0, k1, c0, c1).astype(self.dtype, copy=False)
            acc.add(self.product(a.read_region(r0, r1, k0, k1), B_part,
                                 f"A ({a.address}, rows {r0}:{r1}, columns {k0}:{k1})",
                                 tally))
        return acc.result(self.dtype)

    def product(self, A_part: np.ndarray, B_part: np.ndarray, where: str,
                tally: list[ProductReport], out: np.ndarray | None = None) -> np.ndarray:
        """The kernel on one part; its errors name the file and rows
        (``A (a.h5:/a, rows 0:512) …``)."""
        try:
            C, part_report = logmatmulexp_report(A_part, B_part, method=self.method,
                                                 dtype=self.dtype, out=out)
        except InputError as exc:
            msg = str(exc)
            msg = f"{where} {msg[2:]}" if msg[:2] in ("A ", "B ") else f"{msg} ({where})"
            raise InputError(msg) from exc
        tally[0] += part_report
        return C

    def _plan(self) -> ProductPlan:
        assert self.plan is not None, "use_plan() first"
        return self.plan

    def _resident_b(self) -> np.ndarray:
        """B, read once per process: a dask worker gets a fresh copy of this object with
        every task, but the same reader (:func:`logmm.io.base.reopen_reader`), so B
        is kept with the reader for the worker's later tasks."""
        if self.B is None:
            cached = _RESIDENT_B.get(self.b)
            if cached is None or cached.dtype != self.dtype:
                cached = self.b.read_all().astype(self.dtype, copy=False)
                check_no_posinf(cached, f"B ({self.b.address})")
                _RESIDENT_B[self.b] = cached
            self.B = cached
        return self.B


#: B of a product, per open reader of B (gone with the reader)
_RESIDENT_B: weakref.WeakKeyDictionary[ArrayReader, np.ndarray] = weakref.WeakKeyDictionary()


def _provenance(header: dict[str, Any], a: ArrayAddress, b: ArrayAddress,
                a_shape: tuple[int, int], b_shape: tuple[int, int], method: Method,
                dtype: np.dtype, report: ProductReport, plan: ProductPlan) -> dict[str, Any]:
    return {
        **header,
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


def _python_call(a: ArrayAddress, b: ArrayAddress, out: ArrayAddress, method: Method,
                 dtype: Any) -> str:
    extra = f", dtype={str(np.dtype(dtype))!r}" if dtype is not None else ""
    return f"logmm.multiply({str(a)!r}, {str(b)!r}, {str(out)!r}, method={method!r}{extra})"
