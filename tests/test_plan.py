"""The block planner: budgets, panels, contraction splits, chunk alignment."""

from __future__ import annotations

import pytest

from logmm.errors import UsageError
from logmm.plan import KERNEL_OVERHEAD, ProductPlan, default_memory, plan_product

MiB = 1 << 20


def plan(n: int, k: int, m: int, memory: int, **kw) -> ProductPlan:
    return plan_product(n, k, m, a_itemsize=8, b_itemsize=8, itemsize=8, memory=memory, **kw)


def test_small_problem_is_one_block_with_b_resident() -> None:
    p = plan(100, 20, 30, 256 * MiB)
    assert p.block_rows == 100 and p.b_resident
    assert p.row_blocks() == [(0, 100)] and p.col_panels() == [(0, 30)]
    assert p.k_chunks() == [(0, 20)]


def test_blocks_fit_the_budget_and_cover_the_rows() -> None:
    p = plan(10**7, 1000, 100, 128 * MiB)
    assert p.b_resident and 1 <= p.block_rows < 10**7
    assert p.estimate <= p.memory
    blocks = p.row_blocks()
    assert blocks[0][0] == 0 and blocks[-1][1] == 10**7
    assert all(b[1] == c[0] for b, c in zip(blocks, blocks[1:], strict=False))


def test_blocks_are_whole_output_chunks_and_input_chunks_when_possible() -> None:
    p = plan(10**6, 64, 64, 96 * MiB, default_chunk_rows=1000, a_chunk_rows=750)
    assert p.chunk_rows == 1000
    assert p.block_rows % 3000 == 0                       # lcm(1000, 750)
    big = plan(10**6, 64, 64, 96 * MiB, default_chunk_rows=1000, a_chunk_rows=99991)
    assert big.block_rows % 1000 == 0                     # output chunks come first


def test_explicit_block_rows_win_and_chunks_never_exceed_a_block() -> None:
    p = plan(1000, 10, 10, 256 * MiB, block_rows=7, chunk_rows=50)
    assert p.block_rows == 7 and p.chunk_rows == 7
    assert len(p.row_blocks()) == 143


def test_b_larger_than_its_share_is_cut_into_panels() -> None:
    memory = KERNEL_OVERHEAD + 16 * MiB        # B's share: 4 MiB
    p = plan(500, 2000, 600, memory)
    assert not p.b_resident and p.k_chunk == 2000
    assert 64 <= p.col_panel < 600
    assert p.col_panel * 2000 * 32 <= 4 * MiB
    assert p.estimate <= memory


def test_tall_b_splits_the_contraction_axis() -> None:
    memory = KERNEL_OVERHEAD + 4 * MiB         # B's share: 1 MiB
    p = plan(500, 20000, 100, memory)
    assert p.col_panel == 64 and 1 <= p.k_chunk < 20000
    assert p.k_chunk * p.col_panel * 32 <= MiB
    assert p.estimate <= memory


def test_budget_below_the_kernel_scratch_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="too small"):
        plan(10, 10, 10, KERNEL_OVERHEAD // 2)


def test_default_memory_is_a_capped_share_of_available() -> None:
    assert 2 * KERNEL_OVERHEAD <= default_memory() <= 4 << 30


def test_plan_round_trips_through_a_dict() -> None:
    p = plan(1000, 50, 60, 100 * MiB)
    assert ProductPlan(**p.as_dict()) == p


def test_empty_shapes() -> None:
    p = plan(0, 5, 5, 100 * MiB)
    assert p.row_blocks() == [] and p.block_rows == 1
    assert plan(5, 0, 5, 100 * MiB).k_chunks() == []


def test_readers_that_decode_chunks_get_smaller_blocks() -> None:
    plain = plan(10**7, 64, 64, 128 * MiB)
    decoded = plan(10**7, 64, 64, 128 * MiB, a_read_copies=3)
    assert decoded.block_rows < plain.block_rows
    assert decoded.estimate <= decoded.memory


def test_readers_report_whether_they_decode_chunks(tmp_path) -> None:
    import h5py
    import numpy as np
    import zarr

    from logmm.io import open_array

    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("plain", data=np.zeros((10, 4)))
        f.create_dataset("gzip", data=np.zeros((10, 4)), compression="gzip")
    np.save(tmp_path / "a.npy", np.zeros((10, 4)))
    zarr.open_group(str(tmp_path / "z.zarr"), mode="w").create_array(
        "a", shape=(10, 4), dtype="f8")
    expected = {f"{tmp_path}/f.h5:/plain": False, f"{tmp_path}/f.h5:/gzip": True,
                f"{tmp_path}/a.npy": False, f"{tmp_path}/z.zarr:a": True}
    for address, decodes in expected.items():
        with open_array(address) as reader:
            assert reader.decodes_chunks is decodes, address
