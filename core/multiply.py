"""The out-of-core engine behind ``logmm multiply``: ``C = log(exp(A) @ exp(B))`` file to file.

B is read once and kept in memory; A is streamed in row blocks (aligned to its storage
chunks), each block goes through :func:`logmm.logmatmul.logmatmulexp_report`, and the
rows of C are written as they come to a temporary output that is renamed into place only
when every block is written (see :mod:`logmm.io.writers`). Every row block is an
independent product: the result is bit for bit the in-memory product of the same row
blocks, and agrees with one whole in-memory product up to BLAS rounding (a GEMM's result
may depend on how many rows it is given, e.g. 1-row products go through GEMV).
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .io.addresses import ArrayAddress
from .io.readers import open_array, require_matrix
from .io.writers import check_output, create_writer, default_chunk_rows
from .logmatmul import METHODS, ProductReport, check_no_posinf, logmatmulexp_report, result_dtype

__all__ = ["DEFAULT_MEMORY", "MultiplyResult", "multiply", "plan_block_rows", "resolve_dtype"]

#: default working-memory budget for one multiply, in bytes
DEFAULT_MEMORY = 256 << 20


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
    """

    output: ArrayAddress
    shape: tuple[int, int]
    dtype: np.dtype
    method: str
    report: ProductReport
    seconds: float
    block_rows: int

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


def plan_block_rows(n: int, k: int, m: int, itemsize: int, *, memory: int = DEFAULT_MEMORY,
                    align: int | None = None) -> int:
    """Rows of A per block so that B and one block's working set fit in ``memory`` bytes.

    The estimate counts B three times (the array, its shifted exponential, a temporary)
    and, per row of A, three copies of the row (read, cast, exponential) and four of the
    output row. The result is rounded down to a multiple of ``align`` (A's storage chunk
    rows) when at least one chunk fits, and lies in ``[1, max(n, 1)]``.
    """
    resident = 3 * k * m * itemsize
    per_row = max(1, itemsize * (3 * k + 4 * m))
    rows = max(1, (int(memory) - resident) // per_row)
    if align and align > 1 and rows >= align:
        rows -= rows % align
    return int(max(1, min(rows, max(n, 1))))


def multiply(a_address: str | Path | ArrayAddress, b_address: str | Path | ArrayAddress,
             out_address: str | Path | ArrayAddress, *, method: str = "auto",
             dtype: np.dtype | type | str | None = None, block_rows: int | None = None,
             overwrite: bool = False, compression: str | None = None,
             chunk_rows: int | None = None, memory: int | None = None,
             progress: bool = False, command: str = "") -> MultiplyResult:
    """Write ``C = log(exp(A) @ exp(B))`` for arrays in files, streaming A by row blocks.

    Parameters
    ----------
    a_address, b_address : str, Path or ArrayAddress
        2-D inputs, A (n, k) and B (k, m): ``x.npy``, ``x.h5:/name``, ``x.zarr:name``.
        Integer inputs are converted to float64.
    out_address : str, Path or ArrayAddress
        Output (n, m); the dataset defaults to ``data``. Written under a temporary name
        and renamed into place when complete.
    method : {"auto", "fast", "exact"}
        Kernel method, see :func:`logmm.logmatmulexp`.
    dtype : float32 or float64, optional
        Result dtype; default the inputs' result type.
    block_rows : int, optional
        Rows of A per block; default from ``memory`` (see :func:`plan_block_rows`).
    overwrite : bool
        Replace an existing output; otherwise :class:`OutputExistsError`, nothing touched.
    compression : {"gzip", "lzf", "none"}, optional
        Output compression (HDF5: lzf/gzip; Zarr: gzip, default zstd).
    chunk_rows : int, optional
        Rows per output storage chunk (default about 4 MiB per chunk).
    memory : int, optional
        Working-memory budget in bytes (default 256 MiB); ignored when ``block_rows`` is set.
    progress : bool
        Show a tqdm bar (rows) on stderr.
    command : str
        Recorded in the output's ``command`` attribute (the CLI passes its command line).

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
        Unknown method, dtype, compression or a block size below 1.

    Examples
    --------
    >>> result = multiply("a.h5:/a", "b.npy", "c.h5")  # doctest: +SKIP
    >>> result.shape, result.report.repaired  # doctest: +SKIP
    ((200, 32), 0)
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if block_rows is not None and block_rows < 1:
        raise UsageError(f"block rows must be at least 1, got {block_rows}")
    if chunk_rows is not None and chunk_rows < 1:
        raise UsageError(f"chunk rows must be at least 1, got {chunk_rows}")
    if memory is not None and memory < 1:
        raise UsageError(f"memory budget must be positive, got {memory}")
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
        out = check_output(out_address, overwrite=overwrite, compression=compression)
        if block_rows is None:
            block_rows = plan_block_rows(
                n, k, m, max(out_dtype.itemsize, a.dtype.itemsize),
                memory=memory or DEFAULT_MEMORY, align=a.chunk_rows,
            )
        if not command:
            command = _python_call(a.address, b.address, out, method, dtype)

        B = b.read_all().astype(out_dtype, copy=False)
        check_no_posinf(B, f"B ({b.address})")
        writer = stack.enter_context(create_writer(
            out, (n, m), out_dtype, overwrite=overwrite, compression=compression,
            chunk_rows=chunk_rows or min(block_rows, default_chunk_rows(n, m * out_dtype.itemsize)),
        ))
        report = ProductReport()
        bar = _progress_bar(n, progress)
        try:
            for start in range(0, n, block_rows):
                stop = min(n, start + block_rows)
                block = a.read_rows(start, stop)
                try:
                    C, block_report = logmatmulexp_report(block, B, method=method,
                                                          dtype=out_dtype)
                except InputError as exc:  # name the file and rows: "A (a.h5:/a, rows 0:512) …"
                    where, msg = f"A ({a.address}, rows {start}:{stop})", str(exc)
                    msg = f"{where} {msg[2:]}" if msg.startswith("A ") else f"{msg} ({where})"
                    raise InputError(msg) from exc
                writer.write_rows(start, C)
                report += block_report
                bar.update(stop - start)
        finally:
            bar.close()
        writer.set_attrs(_provenance(a.address, b.address, (n, k), (k_b, m), method,
                                     out_dtype, report, command))
        writer.commit()
    return MultiplyResult(
        output=out, shape=(n, m), dtype=out_dtype, method=method, report=report,
        seconds=time.perf_counter() - started, block_rows=block_rows,
    )


def _provenance(a: ArrayAddress, b: ArrayAddress, a_shape: tuple[int, int],
                b_shape: tuple[int, int], method: str, dtype: np.dtype, report: ProductReport,
                command: str) -> dict[str, Any]:
    from . import __version__

    return {
        "logmm_version": __version__,
        "command": command,
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
    }


def _python_call(a: ArrayAddress, b: ArrayAddress, out: ArrayAddress, method: str,
                 dtype: Any) -> str:
    extra = f", dtype={str(np.dtype(dtype))!r}" if dtype is not None else ""
    return f"logmm.multiply({str(a)!r}, {str(b)!r}, {str(out)!r}, method={method!r}{extra})"


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", unit_scale=True, desc="multiply", file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)
