"""Memory of logmatmulexp, measured with tracemalloc (numpy reports its allocations)."""

from __future__ import annotations

import tracemalloc

import numpy as np

import logmm
from logmm.logmatmul import _EXACT_TILE_ELEMENTS, _worker_count


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_exact_method_memory_is_bounded_by_tiles() -> None:
    """n*k*m = 27M terms (216 MB as a broadcast); exact must stay within a few MB + output."""
    rng = np.random.default_rng(2)
    A = rng.normal(size=(300, 300))
    B = rng.normal(size=(300, 300))
    peak = _peak_bytes(lambda: logmm.logmatmulexp(A, B, method="exact"))
    output_and_copies = 8 * (300 * 300) * 3         # result, float64 copies of A and B.T
    tiles = 2 * _worker_count() * 8 * _EXACT_TILE_ELEMENTS   # terms + scratch per thread
    assert peak < output_and_copies + tiles + 2**20
    assert peak < 8 * 300**3 / 8                    # far below the broadcast's n*k*m


def test_auto_memory_is_about_output_plus_inputs() -> None:
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4000, 64))
    B = rng.normal(size=(64, 64))
    peak = _peak_bytes(lambda: logmm.logmatmulexp(A, B))
    assert peak < 8 * (4000 * 64) * 2.5 + 2**20     # C, exp(A) block, masks: O(n*m + n*k)


def test_vjp_memory_is_a_few_inputs_not_nkm() -> None:
    """Forward + backward at 300^3 float64: the broadcast autograd route holds n*k*m
    terms (216 MB); the VJP holds a few (n, k), (k, m) and (n, m) arrays."""
    rng = np.random.default_rng(4)
    n = 300
    A, B = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    C = logmm.logmatmulexp(A, B)
    # G of one sign: one part (measured 5.2 n^2 doubles); signed G: two (11.4 n^2)
    for G, arrays in ((np.ones_like(C), 7), (rng.normal(size=C.shape), 14)):
        peak = _peak_bytes(lambda G=G: logmm.logmatmulexp_vjp(A, B, C, G))
        assert peak < 8 * n * n * arrays, peak / (8 * n * n)
        assert peak < 8 * n**3 / 20
