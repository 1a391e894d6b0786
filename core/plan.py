"""Working-memory budget → row blocks, column panels and contraction chunks.

One planner for every streamed product. Given the shapes, the dtypes and a budget in
bytes, :func:`plan_product` picks

- ``col_panel``: columns of B per panel (all of them when B fits in a quarter of the
  budget, which is then read once);
- ``k_chunk``: contraction terms per chunk (all of them unless even a thin panel of B is
  too big; partial products are then combined with the kernel's log-accumulator);
- ``block_rows``: rows of A per block, the largest that fits what is left, rounded to
  whole output chunks (so that a block never shares a storage chunk with another, which
  keeps ``--resume`` safe) and, when possible, to whole input chunks.

The estimate counts every copy the pipeline keeps per row of a block: two input blocks
(one prefetched, one being computed) as stored and as cast, the kernel's exponentiated
copy, three output blocks (being computed, queued, being written), the repair masks and,
with a contraction split, the accumulator's two float64 arrays. A fixed overhead covers
the kernel's bounded scratch (repair tiles, exact tiles, thread stacks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .errors import LogmmError, UsageError
from .resources import Limit, detect_memory

__all__ = [
    "DEFAULT_MEMORY_CAP",
    "KERNEL_OVERHEAD",
    "ProductPlan",
    "RowPlan",
    "available_memory",
    "default_memory",
    "default_memory_limit",
    "plan_copy_rows",
    "plan_product",
    "plan_rows",
    "row_ranges",
]

#: scratch the kernel keeps whatever the block size (repair and exact tiles, threads)
KERNEL_OVERHEAD = 48 << 20
#: the default budget is a quarter of available memory, at most this
DEFAULT_MEMORY_CAP = 4 << 30
_MIN_PANEL = 64


@dataclass(frozen=True)
class ProductPlan:
    """How a product of A (n, k) and B (k, m) is cut up; see the module docstring.

    ``estimate`` is the planned peak of working memory in bytes (inputs' resident parts,
    blocks in flight, kernel scratch), to compare with ``memory``.
    """

    n: int
    k: int
    m: int
    block_rows: int
    col_panel: int
    k_chunk: int
    chunk_rows: int
    memory: int
    estimate: int

    @property
    def b_resident(self) -> bool:
        """B is read once and kept (no panels, no contraction split)."""
        return self.col_panel >= self.m and self.k_chunk >= self.k

    def row_blocks(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering the rows of A."""
        return row_ranges(self.n, self.block_rows)

    def col_panels(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering the columns of B."""
        return row_ranges(self.m, self.col_panel)

    def k_chunks(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering the contraction axis (empty when k == 0)."""
        return row_ranges(self.k, self.k_chunk)

    def as_dict(self) -> dict[str, int]:
        """The plan as JSON-ready numbers (a resume record keeps it)."""
        return asdict(self)


def row_ranges(total: int, step: int) -> list[tuple[int, int]]:
    """``[(0, step), (step, 2 step), …]`` up to ``total`` (the last range may be short)."""
    step = max(1, step)
    return [(start, min(total, start + step)) for start in range(0, total, step)]


def available_memory() -> int:
    """Bytes of memory available to new work (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * DEFAULT_MEMORY_CAP


def default_memory() -> int:
    """The default budget: a quarter of the memory the job may use (the smallest of its
    cgroup limit, SLURM allocation and ``MemAvailable``, see :mod:`logmm.resources`),
    capped at 4 GiB."""
    return default_memory_limit().value


def default_memory_limit() -> Limit:
    """:func:`default_memory` and where it came from, e.g. ``a quarter of the cgroup limit
    1.0 GiB``."""
    detected = detect_memory()
    quarter = detected.value // 4
    if quarter > DEFAULT_MEMORY_CAP:
        return Limit(DEFAULT_MEMORY_CAP, f"the {_size(DEFAULT_MEMORY_CAP)} cap; a quarter of "
                                         f"{detected.source} is more")
    if quarter < KERNEL_OVERHEAD * 2:        # a small job: up to all of it, never more
        if detected.value <= KERNEL_OVERHEAD * 2:
            return Limit(detected.value, f"all of {detected.source}")
        return Limit(KERNEL_OVERHEAD * 2, f"the {_size(KERNEL_OVERHEAD * 2)} floor, within "
                                          f"{detected.source}")
    return Limit(quarter, f"a quarter of {detected.source}")


@contextmanager
def _default_budget() -> Iterator[int]:
    """The default budget; a plan it cannot hold is the job's limit's fault, not a usage
    error: exit 1, naming the limit and where it came from."""
    budget = default_memory_limit()
    try:
        yield budget.value
    except UsageError as exc:
        raise LogmmError(f"{exc} (the default budget is {budget.source}: give the job more "
                         "memory)") from None


def plan_product(n: int, k: int, m: int, *, a_itemsize: int, b_itemsize: int,
                 itemsize: int, a_read_copies: int = 2, memory: int | None = None,
                 block_rows: int | None = None,
                 chunk_rows: int | None = None, a_chunk_rows: int | None = None,
                 default_chunk_rows: int | None = None, min_blocks: int = 1) -> ProductPlan:
    """Plan a streamed ``logmatmulexp`` of A (n, k) by B (k, m) within ``memory`` bytes.

    Parameters
    ----------
    a_itemsize, b_itemsize : int
        Bytes per stored element of A and B; ``itemsize`` of the result dtype.
    a_read_copies : int
        Copies of a block of A alive while it is read: 2 (the block read ahead and the
        one being computed), 3 where the storage library decodes chunks into buffers of
        its own (Zarr, compressed HDF5).
    memory : int, optional
        Budget in bytes (default :func:`default_memory`).
    block_rows : int, optional
        Rows per block, overriding the budget's choice (panels and chunks still follow
        the budget).
    chunk_rows : int, optional
        Rows per output storage chunk as requested; default ``default_chunk_rows`` (or
        the block), never more than a block.
    a_chunk_rows : int, optional
        Rows per storage chunk of A; blocks are rounded to it when that keeps them whole
        output chunks.
    min_blocks : int
        Plan at least this many row blocks (when ``n`` allows) unless ``block_rows`` is
        given: ``--shard I/N`` passes N, so that every shard gets rows to compute.

    Raises
    ------
    UsageError
        The budget cannot hold even one row of the thinnest panel.
    """
    if memory is None:
        with _default_budget() as memory:
            return plan_product(n, k, m, a_itemsize=a_itemsize, b_itemsize=b_itemsize,
                                itemsize=itemsize, a_read_copies=a_read_copies, memory=memory,
                                block_rows=block_rows, chunk_rows=chunk_rows,
                                a_chunk_rows=a_chunk_rows,
                                default_chunk_rows=default_chunk_rows, min_blocks=min_blocks)
    memory = int(memory)
    avail = memory - KERNEL_OVERHEAD
    if avail <= 0:
        raise UsageError(f"memory budget {_size(memory)} is too small; logmm needs at least "
                         f"{_size(KERNEL_OVERHEAD)} of scratch plus room for one block")
    b_elem = b_itemsize + 3 * itemsize       # B as stored, cast, exponentiated, gathered
    k_chunk, col_panel = max(k, 1), max(m, 1)
    b_share = avail // 4
    if k_chunk * col_panel * b_elem > b_share:
        col_panel = max(1, b_share // (k_chunk * b_elem))
        if col_panel < min(m, _MIN_PANEL):      # too thin to be efficient: split k instead
            col_panel = max(1, min(m, _MIN_PANEL))
            k_chunk = max(1, b_share // (col_panel * b_elem))
    k_split = k_chunk < k
    per_row = (k_chunk * (a_read_copies * a_itemsize + 2 * itemsize)  # as read; cast, exp
               + col_panel * (3 * itemsize + 2)              # 3 output blocks, repair masks
               + (col_panel * 16 if k_split else 0))          # accumulator (m, s) float64
    rows = plan_rows(n, row_bytes=per_row, resident=k_chunk * col_panel * b_elem,
                     overhead=KERNEL_OVERHEAD, memory=memory, block_rows=block_rows,
                     chunk_rows=chunk_rows, in_chunk_rows=a_chunk_rows,
                     default_chunk_rows=default_chunk_rows, min_blocks=min_blocks)
    return ProductPlan(n=n, k=k, m=m, block_rows=rows.block_rows,
                       col_panel=min(col_panel, max(m, 1)), k_chunk=min(k_chunk, max(k, 1)),
                       chunk_rows=rows.chunk_rows, memory=memory, estimate=rows.estimate)


def _align_rows(rows: int, chunk_rows: int | None, *, aligned: bool,
                in_chunk_rows: int | None) -> tuple[int, int]:
    """``(block rows, output chunk rows)``: a block of ``rows`` made of whole output chunks
    (and of whole input chunks when both fit) unless the rows were given (``aligned``
    false); a chunk is never longer than a block."""
    out_chunk = int(chunk_rows or rows)
    if out_chunk >= rows:
        return rows, rows
    if aligned:                                 # whole output chunks per block
        aligned_rows = rows - rows % out_chunk
        if in_chunk_rows and in_chunk_rows > 1:
            both = math.lcm(out_chunk, in_chunk_rows)
            if both <= rows:
                aligned_rows = rows - rows % both
        rows = aligned_rows
    return rows, out_chunk


@dataclass(frozen=True)
class RowPlan:
    """Row blocks of a row-by-row operation (``project``): every block is independent.

    ``estimate`` is the planned peak of working memory in bytes, to compare with
    ``memory``.
    """

    n: int
    block_rows: int
    chunk_rows: int
    memory: int
    estimate: int

    def row_blocks(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering the rows."""
        return row_ranges(self.n, self.block_rows)

    def as_dict(self) -> dict[str, int]:
        """The plan as JSON-ready numbers (a resume record keeps it)."""
        return asdict(self)


def plan_rows(n: int, *, row_bytes: int, resident: int = 0, overhead: int = KERNEL_OVERHEAD,
              memory: int | None = None, block_rows: int | None = None,
              chunk_rows: int | None = None, in_chunk_rows: int | None = None,
              default_chunk_rows: int | None = None, min_blocks: int = 1) -> RowPlan:
    """Plan row blocks of an operation whose rows are independent, within ``memory``.

    Parameters
    ----------
    n : int
        Rows in all.
    row_bytes : int
        Working memory per row of a block, every copy in flight counted by the caller
        (see :func:`logmm.project.project_row_bytes`).
    resident : int
        Bytes held for the whole run whatever the block (operands read once).
    overhead : int
        Fixed scratch (the log kernel's tiles and threads).
    memory, block_rows, chunk_rows, default_chunk_rows, min_blocks
        As for :func:`plan_product`.
    in_chunk_rows : int, optional
        Rows per storage chunk of the input; blocks are rounded to it when that keeps
        them whole output chunks.

    Raises
    ------
    UsageError
        The budget cannot hold one row.
    """
    if memory is None:
        with _default_budget() as memory:
            return plan_rows(n, row_bytes=row_bytes, resident=resident, overhead=overhead,
                             memory=memory, block_rows=block_rows, chunk_rows=chunk_rows,
                             in_chunk_rows=in_chunk_rows,
                             default_chunk_rows=default_chunk_rows, min_blocks=min_blocks)
    memory = int(memory)
    avail = memory - overhead - resident
    per_row = max(1, int(row_bytes))
    rows = avail // per_row if avail > 0 else 0
    if block_rows is None and rows < 1:
        raise UsageError(f"memory budget {_size(memory)} cannot hold one row; use at least "
                         f"{_size(overhead + resident + per_row)}")
    if block_rows is None and min_blocks > 1:        # at least one block per shard
        rows = min(rows, max(1, n // min_blocks))
    rows = int(block_rows) if block_rows is not None else int(rows)
    rows = max(1, min(rows, max(n, 1)))
    rows, out_chunk = _align_rows(rows, chunk_rows or default_chunk_rows,
                                  aligned=block_rows is None, in_chunk_rows=in_chunk_rows)
    return RowPlan(n=n, block_rows=rows, chunk_rows=out_chunk, memory=memory,
                   estimate=int(overhead + resident + rows * per_row))


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def plan_copy_rows(n_rows: int, in_row_bytes: int, out_row_bytes: int, *,
                   memory: int | None = None, align: int | None = None) -> int:
    """Rows per block so that one block's copies fit in ``memory`` bytes.

    ``memory`` defaults to :func:`default_memory` (as for products). Used by ``convert``.

    Counts two copies of a row as read (the block and the storage library's buffer) and
    two as written (the cast block and the writer's buffer). The result is rounded down
    to a multiple of ``align`` (the output's chunk rows) when at least one chunk fits,
    and lies in ``[1, max(n_rows, 1)]``.
    """
    if memory is None:
        memory = default_memory()
    per_row = max(1, 2 * in_row_bytes + 2 * out_row_bytes)
    rows = max(1, int(memory) // per_row)
    if align and align > 1 and rows >= align:
        rows -= rows % align
    return int(max(1, min(rows, max(n_rows, 1))))
