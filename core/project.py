"""The out-of-core engine behind ``logmm project``: rows of X times a Kronecker-structured
operator, file to file, the operator never formed.

Two forms:

- ``project(X, OUT, w_address=W, blocks=K)``: every row of X (length K·d), viewed as
  (K, d), times Wᵀ, i.e. rows times ``(I_K ⊗ W)ᵀ`` (:func:`logmm.kron.block_project`);
- ``project(X, OUT, factors=[F1, Identity(n), F2, …])``: rows times
  ``(F1 ⊗ I_n ⊗ F2 ⊗ …)ᵀ`` by successive mode products
  (:func:`logmm.kron.kron_matvec`); identity factors are skipped.

X is dense (``.npy``, HDF5, Zarr) or sparse CSR (scipy ``.npz``, an HDF5/Zarr CSR group;
see :class:`logmm.io.readers.SparseReader`) and is streamed by row blocks; W and the
factors are read whole (they are small). ``semiring="log"`` treats X and the operator as
log-values (absent sparse entries are log 0 = ``-inf``) and uses the stable
:func:`logmm.logmatmulexp` for every mode product.

Blocks are planned by :func:`logmm.plan.plan_rows` from the memory budget; the pipeline,
the atomic writer, the resume record and the lock are the ones ``multiply`` uses
(:mod:`logmm.engine`). Rows are independent, so the result of a resumed run is bit for bit
that of an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Block, Job, OutputOptions, RunOptions, RunResult, run
from .errors import InputError, UsageError
from .io.addresses import ArrayAddress
from .io.readers import ArrayReader, open_array, require_matrix
from .io.resume import input_fingerprint
from .io.writers import check_output, default_chunk_rows
from .kron import DENSIFY_ABOVE, SEMIRINGS, Identity, block_project, kron_matvec
from .logmatmul import check_no_posinf
from .plan import KERNEL_OVERHEAD, RowPlan, plan_rows
from .policy import check_at_least_one, check_choice, resolve_dtype
from .resources import accepts_threads
from .shards import Shard
from .typing import KronSemiring

__all__ = ["ProjectResult", "prepare_project", "project", "project_row_bytes"]

#: fixed scratch of the real semiring (GEMM threads, small temporaries)
REAL_OVERHEAD = 8 << 20
#: bytes per stored entry of a sparse block beyond the block itself: the COO copy and the
#: index arithmetic of the first (sparse) mode product, about ten 8-byte arrays
SPARSE_ENTRY_SCRATCH = 80

Address = str | Path | ArrayAddress
FactorSpec = Address | Identity


@dataclass(kw_only=True)
class ProjectResult(RunResult):
    """What :func:`project` wrote: the fields of :class:`logmm.engine.RunResult`, and these.

    Attributes
    ----------
    semiring : str
        ``real`` or ``log``.
    operator : str
        The operator, e.g. ``I_6 ⊗ w.npy`` or ``f1.npy ⊗ I_2 ⊗ f2.npy``.
    sparse : bool
        X was read as a sparse CSR matrix.
    """

    semiring: KronSemiring
    operator: str
    sparse: bool


@accepts_threads
def project(x_address: Address, out_address: Address, *, w_address: Address | None = None,
            blocks: int | None = None, factors: Sequence[FactorSpec] = (),
            semiring: KronSemiring = "real", dtype: np.dtype | type | str | None = None,
            block_rows: int | None = None, memory: int | None = None, overwrite: bool = False,
            compression: str | None = None, chunk_rows: int | None = None,
            resume: bool = False, progress: bool = False, command: str = "",
            shard: Shard | str | None = None, scheduler: Any = "local",
            dask_address: str | None = None,
            zarr_format: int = 3) -> ProjectResult:
    """Write rows of X times ``(I_K ⊗ W)ᵀ`` or ``(F1 ⊗ F2 ⊗ …)ᵀ``, streaming X by row blocks.

    Parameters
    ----------
    x_address : str, Path or ArrayAddress
        X (n, width): dense ``x.npy``, ``x.h5:/name``, ``x.zarr:name``, or sparse CSR
        ``x.npz`` or an HDF5/Zarr group with ``data``, ``indices``, ``indptr`` and a
        ``shape`` attribute.
    out_address : str, Path or ArrayAddress
        Dense output; the dataset defaults to ``data``. Written under a hidden partial
        name and renamed into place when complete.
    w_address : address, optional
        W (p, d) with ``width = blocks · d``; give it with ``blocks`` and no ``factors``.
    blocks : int, optional
        K, the number of diagonal blocks of ``I_K ⊗ W``.
    factors : sequence of addresses and :class:`logmm.kron.Identity`
        F1, F2, … (mᵢ, nᵢ) with ``Π nᵢ = width``, in Kronecker order; ``Identity(n)``
        is an identity factor of size n, skipped rather than multiplied.
    semiring : {"real", "log"}
        ``log``: X and the operator hold log-values; sums are stable log-sum-exps and an
        absent sparse entry is log 0.
    dtype : float32 or float64, optional
        Result dtype; default the inputs' common type (float32 stays float32; integers
        become float64).
    block_rows, memory, chunk_rows, overwrite, compression, resume, progress, command, shard
    scheduler, dask_address
        As for :func:`logmm.multiply.multiply`.
    threads : int, optional
        Compute threads and BLAS threads in all (default the job's CPUs, see
        :mod:`logmm.resources`).
    zarr_format : {3, 2}
        Zarr format of a ``.zarr`` output (2 for readers that only know Zarr v2; refused
        for a ``shard`` run, whose shared store is format 3).

    Returns
    -------
    ProjectResult

    Raises
    ------
    UsageError
        Neither or both of (W with ``blocks``) and ``factors``; W without ``blocks`` or
        the reverse; an unknown semiring, dtype or compression; a size below 1.
    MissingInputError, FormatError
        An input file or dataset is missing or unreadable (corrupt CSR arrays included).
    InputError
        X, W or a factor is not a 2-D real matrix; ``blocks`` does not divide X's width,
        W's width is not ``width / blocks``, the factors' widths do not multiply to X's
        width; a non-CSR sparse group; ``+inf`` in the log semiring.
    OutputExistsError
        The output exists and ``overwrite`` is false.
    LogmmError
        ``resume`` with changed inputs or options; another run is writing the output.

    All of these are raised before any output is created, except ``+inf`` in X (found
    block by block; the partial output is then removed).

    Examples
    --------
    >>> project("x.h5:/x", "y.h5", w_address="w.npy", blocks=6)  # doctest: +SKIP
    >>> project("x.npz", "y.npy", factors=["f1.npy", Identity(2), "f2.npy"])  # doctest: +SKIP
    """
    options = RunOptions.checked(memory=memory, block_rows=block_rows, resume=resume,
                                 shard=shard, scheduler=scheduler, dask_address=dask_address,
                                 progress=progress, command=command)
    return run(prepare_project(x_address, out_address, w_address=w_address, blocks=blocks,
                               factors=factors, semiring=semiring, dtype=dtype,
                               output=OutputOptions(overwrite=overwrite,
                                                    compression=compression,
                                                    chunk_rows=chunk_rows,
                                                    zarr_format=zarr_format),
                               options=options))


def prepare_project(x_address: Address, out_address: Address, *,
                    w_address: Address | None = None, blocks: int | None = None,
                    factors: Sequence[FactorSpec] = (), semiring: KronSemiring = "real",
                    dtype: np.dtype | type | str | None = None,
                    output: OutputOptions | None = None,
                    options: RunOptions | None = None) -> Job[ProjectResult]:
    """The :class:`logmm.engine.Job` of :func:`project` (same parameters, grouped)."""
    output, options = output or OutputOptions(), options or RunOptions()
    specs = _check_options(w_address, blocks, factors, semiring, dtype,
                           block_rows=options.block_rows, chunk_rows=output.chunk_rows,
                           memory=options.memory)
    stack = ExitStack()
    try:
        x = stack.enter_context(open_array(x_address, sparse=True))
        require_matrix(x, "X")
        operands: list[np.ndarray | Identity] = []
        readers: list[ArrayReader | None] = []
        for role, spec in specs:
            if isinstance(spec, Identity):
                operands.append(spec)
                readers.append(None)
                continue
            reader = stack.enter_context(open_array(spec))
            require_matrix(reader, role)
            readers.append(reader)
            operands.append(reader.read_all())
        n, width = x.shape
        out_width = _check_shapes(x, specs, operands, readers, blocks)
        out_dtype = x.dtype
        for op in operands:
            if not isinstance(op, Identity):
                out_dtype = resolve_dtype(out_dtype, op.dtype)
        out_dtype = resolve_dtype(out_dtype, out_dtype, dtype)
        operands = [op if isinstance(op, Identity)
                    else _cast_operand(op, out_dtype, semiring, f"{role} ({_file(r).address})")
                    for (role, _), op, r in zip(specs, operands, readers, strict=True)]
        out = check_output(out_address, overwrite=output.overwrite,
                           compression=output.compression,
                           inputs=[x.address] + [r.address for r in readers if r is not None],
                           resume=options.resume)
    except BaseException:
        stack.close()
        raise
    names = [str(op) if isinstance(op, Identity) else str(_file(r).address)
             for op, r in zip(operands, readers, strict=True)]
    operator = _operator(names, operands, blocks)
    if not options.command:
        options = replace(options, command=_python_call(x.address, out, readers, operands,
                                                        blocks, semiring, dtype))
    fingerprint = {
        "operation": "project", "x": input_fingerprint(x.address, x.shape, x.dtype),
        "operator": [{"identity": op.n} if isinstance(op, Identity)
                     else input_fingerprint(_file(r).address, _file(r).shape, _file(r).dtype)
                     for op, r in zip(operands, readers, strict=True)],
        "blocks": blocks, "semiring": semiring, "dtype": str(out_dtype),
        "output": str(out), "compression": output.compression,
    }
    kernel_ops = [op for op in operands if not isinstance(op, Identity)]
    row_bytes = project_row_bytes(
        width=width, out_width=out_width, max_width=_max_width(x, operands, blocks),
        x_itemsize=x.dtype.itemsize, itemsize=out_dtype.itemsize, semiring=semiring,
        read_copies=3 if x.decodes_chunks else 2,
        nnz_per_row=-(-x.nnz // max(n, 1)) if x.is_sparse else None)
    resident = 2 * sum(op.nbytes for op in kernel_ops)
    if x.is_sparse and x.address.format == "npz":
        resident += x.nbytes                          # a .npz is loaded whole
    chunk_rows = output.chunk_rows

    def make_plan(options: RunOptions) -> RowPlan:
        return plan_rows(
            n, row_bytes=row_bytes, resident=resident,
            overhead=KERNEL_OVERHEAD if semiring == "log" else REAL_OVERHEAD,
            memory=options.memory, block_rows=options.block_rows, chunk_rows=chunk_rows,
            in_chunk_rows=x.chunk_rows,
            default_chunk_rows=default_chunk_rows(n, out_width * out_dtype.itemsize),
            min_blocks=options.min_blocks)

    def describe(header: dict[str, Any], _: Any, plan: RowPlan) -> dict[str, Any]:
        return _provenance(header, x, readers, operands, blocks, semiring, out_dtype,
                           operator, plan, (n, out_width))

    block = _BlockProjection(x, operands, blocks, semiring, out_dtype)
    return Job(operation="project",
               inputs=[x.address] + [r.address for r in readers if r is not None],
               output=out, shape=(n, out_width), dtype=out_dtype, output_options=output,
               options=options, fingerprint=fingerprint, make_plan=make_plan,
               load_plan=lambda d: RowPlan(**d), load=block.load, compute=block.compute,
               describe=describe,
               result=lambda base, _: ProjectResult(**base, semiring=semiring,
                                                    operator=operator, sparse=x.is_sparse),
               stack=stack)


def project_row_bytes(*, width: int, out_width: int, max_width: int, x_itemsize: int,
                      itemsize: int, semiring: KronSemiring = "real", read_copies: int = 2,
                      nnz_per_row: int | None = None, index_itemsize: int = 4) -> int:
    """Working memory per row of a block of a projection, every copy in flight counted.

    - X: a dense row is held ``read_copies`` times as stored (the block read ahead, the one
      being computed, and a decode buffer for Zarr and filtered HDF5) and once cast; a
      sparse row holds ``nnz_per_row`` entries of value and column index that many times,
      plus :data:`SPARSE_ENTRY_SCRATCH` bytes per entry for the index arithmetic of the
      sparse mode product, and a dense copy where the kernel makes one (the log
      semiring, filled with ``-inf``; rows denser than the kernel's densifying threshold,
      where a dense GEMM is faster).
    - mode products: four buffers (six in the log semiring: the kernel's exponentiated
      copies and masks) of the widest intermediate, ``max_width``;
    - output: three blocks (being computed, queued, being written).
    """
    if nnz_per_row is None:
        x_bytes = width * (read_copies * x_itemsize + itemsize)
    else:
        entry = read_copies * (x_itemsize + index_itemsize) + itemsize + SPARSE_ENTRY_SCRATCH
        x_bytes = nnz_per_row * entry + 2 * index_itemsize
        if semiring == "log" or nnz_per_row > DENSIFY_ABOVE * width:
            x_bytes += width * itemsize
    work = max_width * itemsize * (6 if semiring == "log" else 4)
    return int(x_bytes + work + 3 * out_width * itemsize)


# ----------------------------------------------------------------------------- checks


def _check_options(w_address: Address | None, blocks: int | None,
                   factors: Sequence[FactorSpec], semiring: KronSemiring, dtype: Any, *,
                   block_rows: int | None, chunk_rows: int | None,
                   memory: int | None) -> list[tuple[str, FactorSpec]]:
    """Validate the options; return ``(role, address or Identity)`` per Kronecker factor."""
    check_choice("semiring", semiring, SEMIRINGS)
    check_at_least_one(block_rows=block_rows, chunk_rows=chunk_rows, memory=memory)
    if dtype is not None:
        resolve_dtype(np.dtype(np.float64), np.dtype(np.float64), dtype)  # validate early
    factors = list(factors)
    if w_address is not None and factors:
        raise UsageError("give either W with --blocks, or --factor/--identity, not both")
    if w_address is not None:
        if blocks is None:
            raise UsageError("W needs --blocks K (the number of diagonal blocks of I_K ⊗ W)")
        if int(blocks) < 1:
            raise UsageError(f"--blocks must be at least 1, got {blocks}")
        return [("identity", Identity(int(blocks))), ("W", w_address)]
    if blocks is not None:
        raise UsageError("--blocks needs W (logmm project X W --blocks K)")
    if not factors:
        raise UsageError("nothing to project by: give W with --blocks, or at least one "
                         "--factor")
    specs: list[tuple[str, FactorSpec]] = []
    for i, spec in enumerate(factors, 1):
        if not isinstance(spec, (str, Path, ArrayAddress, Identity)):
            raise UsageError(f"factor {i} is a {type(spec).__name__}; give an array address "
                             "or logmm.kron.Identity(n)")
        specs.append((f"factor {i}", spec))
    return specs


def _check_shapes(x: ArrayReader, specs: list[tuple[str, FactorSpec]],
                  operands: list[Any], readers: list[ArrayReader | None],
                  blocks: int | None) -> int:
    """Check that the operator fits X's width; return the output's width."""
    n, width = x.shape
    if blocks is not None:
        w, w_reader = operands[1], readers[1]
        assert w_reader is not None
        if width % blocks:
            raise InputError(f"--blocks {blocks} does not divide X's width: X ({x.address}) "
                             f"is {n}×{width}")
        if w.shape[1] != width // blocks:
            raise InputError(f"W ({w_reader.address}) is {w.shape[0]}×{w.shape[1]}; X "
                             f"({x.address}) of width {width} in {blocks} blocks needs W "
                             f"with {width // blocks} columns")
        return blocks * int(w.shape[0])
    widths = [op.n if isinstance(op, Identity) else int(op.shape[1]) for op in operands]
    if math.prod(widths) != width:
        shown = " × ".join(str(w) for w in widths)
        raise InputError(f"the factors' widths {shown} multiply to {math.prod(widths)}, but X "
                         f"({x.address}) is {n}×{width}")
    return math.prod(op.n if isinstance(op, Identity) else int(op.shape[0]) for op in operands)


def _cast_operand(op: np.ndarray, dtype: np.dtype, semiring: KronSemiring, name: str) -> np.ndarray:
    """A factor as ``dtype``; in the log semiring ``+inf`` (before or after the cast) is an
    :class:`InputError`."""
    cast = op.astype(dtype, copy=False)
    if semiring == "log":
        check_no_posinf(op, name)
        if cast is not op and np.isposinf(cast).any():
            raise InputError(f"{name} has values too large for {dtype}")
    return np.ascontiguousarray(cast)


def _file(reader: ArrayReader | None) -> ArrayReader:
    """The reader of a factor that is not an identity (those have one)."""
    assert reader is not None, "an identity factor has no file"
    return reader


def _max_width(x: ArrayReader, operands: list[Any], blocks: int | None) -> int:
    """An upper bound on the width of any intermediate of the mode products, whatever
    their order: the product over factors of max(rows, columns)."""
    return max(x.shape[1], math.prod(op.n if isinstance(op, Identity) else max(op.shape)
                                     for op in operands))


# ----------------------------------------------------------------------------- running


class _BlockProjection:
    """One row block: ``load`` reads X's rows, ``compute`` projects them into the block's
    output rows. Picklable (a dask task): the reader travels as its address."""

    def __init__(self, x: ArrayReader, operands: list[Any], blocks: int | None,
                 semiring: KronSemiring, dtype: np.dtype) -> None:
        self.x, self.operands, self.blocks = x, operands, blocks
        self.semiring, self.dtype = semiring, dtype
        self.W = operands[1] if blocks is not None else None

    def load(self, block: Block) -> Any:
        _, r0, r1 = block
        return self.x.read_rows(r0, r1, allow_view=True)

    def compute(self, block: Block, rows: Any, out: np.ndarray, advance: Any = None) -> None:
        _, r0, r1 = block
        if rows.dtype != self.dtype:
            rows = rows.astype(self.dtype)
        try:
            if self.W is not None and self.blocks is not None:
                Y = block_project(rows, self.W, self.blocks, semiring=self.semiring)
            else:
                Y = kron_matvec(self.operands, rows, semiring=self.semiring)
        except InputError as exc:   # name the file and rows: "X (x.h5:/x, rows 0:512) …"
            where, msg = f"X ({self.x.address}, rows {r0}:{r1})", str(exc)
            raise InputError(f"{where} {msg[2:]}" if msg.startswith(("A ", "X ")) else
                             f"{where}: {msg}") from exc
        out[...] = Y


# ----------------------------------------------------------------------------- provenance


def _operator(names: list[str], operands: list[Any], blocks: int | None) -> str:
    """``I_6 ⊗ w.npy`` / ``f1.npy ⊗ I_2 ⊗ f2.npy``."""
    return " ⊗ ".join(f"I_{op.n}" if isinstance(op, Identity) else name
                      for name, op in zip(names, operands, strict=True))


def _provenance(header: dict[str, Any], x: ArrayReader, readers: list[ArrayReader | None],
                operands: list[Any], blocks: int | None, semiring: KronSemiring, dtype: np.dtype,
                operator: str, plan: RowPlan, shape: tuple[int, int]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        **header,
        "operation": "project",
        "semiring": semiring,
        "operator": operator,
        "x": str(x.address),
        "x_shape": list(x.shape),
        "x_sparse": bool(x.is_sparse),
        "x_nnz": int(x.nnz) if x.is_sparse else None,
        "dtype": str(dtype),
        "shape": list(shape),
        "block_rows": plan.block_rows,
    }
    if blocks is not None:
        w_reader = readers[1]
        assert w_reader is not None
        attrs.update(w=str(w_reader.address), w_shape=list(w_reader.shape), blocks=int(blocks))
    else:
        attrs.update(
            factors=[f"I:{op.n}" if isinstance(op, Identity) else str(_file(r).address)
                     for op, r in zip(operands, readers, strict=True)],
            factor_shapes=[[op.n, op.n] if isinstance(op, Identity) else list(_file(r).shape)
                           for op, r in zip(operands, readers, strict=True)],
        )
    return attrs


def _python_call(x: ArrayAddress, out: ArrayAddress, readers: list[ArrayReader | None],
                 operands: list[Any], blocks: int | None, semiring: KronSemiring,
                 dtype: Any) -> str:
    if blocks is not None:
        w = readers[1]
        assert w is not None
        operator = f"w_address={str(w.address)!r}, blocks={blocks}"
    else:
        parts = [f"Identity({op.n})" if isinstance(op, Identity)
                 else repr(str(_file(r).address))
                 for op, r in zip(operands, readers, strict=True)]
        operator = f"factors=[{', '.join(parts)}]"
    extra = f", dtype={str(np.dtype(dtype))!r}" if dtype is not None else ""
    return (f"logmm.project({str(x)!r}, {str(out)!r}, {operator}, semiring={semiring!r}"
            f"{extra})")
