"""The engine behind ``logmm einsum``: :func:`logmm.einsum.logeinsum` from files to a file.

Every operand is read whole into memory (this increment does not stream); the result is
written under a hidden partial name and renamed into place when complete (see
:func:`logmm.chain.write_whole`), holding the output's lock meanwhile. The numerics are
all :func:`logmm.einsum.logeinsum`'s; this module reads, validates, casts and writes.

:mod:`logmm.einsum` (and with it opt_einsum) is imported only when an einsum runs, so
the command line starts without it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import numpy as np

from .chain import (
    Address,
    ChainResult,
    base_provenance,
    check_common_options,
    open_inputs,
    progress_steps,
    read_whole,
    shapes_json,
    write_whole,
)
from .errors import InputError, UsageError
from .io.readers import ArrayReader
from .io.resume import OutputLock
from .io.writers import check_output

__all__ = ["EINSUM_SEMIRINGS", "einsum_files"]

#: the semirings of :func:`logmm.einsum.logeinsum` (``logmm.einsum.SEMIRINGS``; repeated
#: here so that the command line can list them without importing opt_einsum)
EINSUM_SEMIRINGS = ("log", "max", "real")


def _check_operand(reader: ArrayReader, index: int) -> None:
    if reader.dtype.kind not in "biuf":
        raise InputError(f"operand {index} ({reader.address}) has dtype {reader.dtype}; "
                         "einsum needs real numbers (float32 or float64; integers are "
                         "converted)")


def _cast(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` as ``dtype``; narrowing finite values beyond its range is an error."""
    if x.dtype == dtype:
        return x
    if x.dtype.kind == "f" and x.dtype.itemsize > dtype.itemsize and x.size:
        finite = x[np.isfinite(x)]
        top = float(np.abs(finite).max(initial=0.0))
        if top > float(np.finfo(dtype).max):
            raise InputError(f"{name} holds {top:.6g}, beyond the range of {dtype}")
    return x.astype(dtype)


def einsum_files(subscripts: str, addresses: Sequence[Address], out_address: Address, *,
                 semiring: str = "log", method: str = "auto",
                 dtype: np.dtype | type | str | None = None, overwrite: bool = False,
                 compression: str | None = None, chunk_rows: int | None = None,
                 progress: bool = False, command: str = "",
                 explain: Callable[[str], None] | None = None) -> ChainResult:
    """Write ``logeinsum(subscripts, *operands, semiring=…)`` for operands in files.

    Parameters
    ----------
    subscripts : str
        numpy einsum subscripts: ``"bij,bjk->bik"``, implicit output (``"ij,jk"``),
        ``...`` ellipsis.
    addresses : sequence of addresses
        The operands (``x.npy``, ``x.h5:/name``, ``x.zarr:name``), any number of
        dimensions; read whole into memory.
    out_address : address
        The output; dataset ``data`` unless named. A scalar result (e.g. ``"ii->"``)
        needs a ``.npy`` or ``.h5`` output.
    semiring : {"log", "max", "real"}
        ``log``: log-sum-exp of sums (inputs are log-values); ``max``: max of sums;
        ``real``: ordinary einsum.
    method : {"auto", "fast", "exact"}
        Kernel method of the log semiring's pairwise products (see
        :func:`logmm.logmatmulexp`).
    dtype : float32 or float64, optional
        Operands are cast to it (a narrowing that would overflow is an error); default
        the result type :func:`logeinsum` gives the inputs.
    overwrite, compression, chunk_rows, progress, command
        As :func:`logmm.chain.chain_files`.
    explain : callable, optional
        Called with opt_einsum's description of the contraction order and its cost
        (:func:`logmm.einsum.contraction_info`) before computing.

    Returns
    -------
    ChainResult
        ``operation`` is ``einsum``, ``order`` the subscripts; ``report`` is None.

    The output carries ``logmm_version``, ``command``, ``operation: einsum``,
    ``subscripts``, ``semiring``, ``method``, ``inputs``, ``input_shapes`` (JSON text,
    since ranks may differ), ``dtype`` and ``shape``.

    Raises
    ------
    UsageError
        Bad subscripts, an operand count that does not match them, unknown semiring,
        method, dtype or compression (exit code 2).
    InputError
        Dimensions that do not match, ``+inf`` in a log-semiring operand, a non-numeric
        operand (exit code 1).
    MissingInputError, FormatError, OutputExistsError
        As :func:`logmm.chain.chain_files`.
    """
    started = time.perf_counter()
    if semiring not in EINSUM_SEMIRINGS:
        raise UsageError(f"unknown semiring {semiring!r}; choose one of "
                         f"{', '.join(EINSUM_SEMIRINGS)}")
    if not isinstance(subscripts, str) or not subscripts.strip():
        raise UsageError("einsum needs subscripts, e.g. 'ij,jk->ik'")
    check_common_options(method, dtype, chunk_rows)
    if len(addresses) == 0:
        raise UsageError("einsum needs at least one operand")
    out_dtype = np.dtype(dtype) if dtype is not None else None
    from .einsum import contraction_info, logeinsum

    with ExitStack() as stack:
        readers = open_inputs(stack, addresses)
        for i, r in enumerate(readers, start=1):
            _check_operand(r, i)
        out = check_output(out_address, overwrite=overwrite, compression=compression)
        if not command:
            command = (f"logmm.einsum_files({subscripts!r}, "
                       f"{[str(r.address) for r in readers]!r}, {str(out)!r}, "
                       f"semiring={semiring!r}, method={method!r})")
        stack.enter_context(OutputLock(out.path))
        operands = [read_whole(r) for r in readers]
        if out_dtype is not None:
            operands = [_cast(x, out_dtype, f"operand {i} ({r.address})")
                        for i, (x, r) in enumerate(zip(operands, readers, strict=True), 1)]
        if explain is not None:
            explain(contraction_info(subscripts, *operands).rstrip("\n"))
        with progress_steps(1, progress, "einsum") as bar:
            try:
                result = np.asarray(logeinsum(subscripts, *operands, semiring=semiring,
                                              method=method))
            except InputError as exc:     # "operand 2 contains +inf": name its file too
                raise InputError(re.sub(
                    r"\boperand (\d+)\b",
                    lambda m: f"{m[0]} ({readers[int(m[1]) - 1].address})"
                    if 0 < int(m[1]) <= len(readers) else m[0], str(exc))) from None
            bar.update(1)
        if out_dtype is not None and result.dtype != out_dtype:
            result = result.astype(out_dtype)
        attrs = base_provenance(command, "einsum", method, readers, result.dtype,
                                result.shape)
        attrs.update(subscripts=subscripts, semiring=semiring,
                     input_shapes=shapes_json([r.shape for r in readers]))
        write_whole(out, result, attrs, overwrite=overwrite, compression=compression,
                    chunk_rows=chunk_rows)
    return ChainResult(output=out, shape=tuple(result.shape), dtype=result.dtype,
                       operation="einsum", method=method,
                       seconds=time.perf_counter() - started, order=subscripts, attrs=attrs)
