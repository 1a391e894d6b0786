"""Property tests (hypothesis) for logmatmulexp: exactness, equivariance, agreement."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import logmm

from exact_reference import error_bound, exact_logmatmul, max_abs_error

NEG_INF = float("-inf")


@st.composite
def log_matrix_pairs(draw: st.DrawFn, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with entries spread over [-1000, 1000] (wide enough to defeat the fast path)
    and a sprinkling of -inf."""
    n = draw(st.integers(1, 5))
    k = draw(st.integers(1, 20))          # beyond 8 the blocked tier has two blocks or more
    m = draw(st.integers(1, 5))
    width = 32 if dtype == np.float32 else 64
    finite = st.floats(-1000, 1000, width=width)
    elements = st.one_of(finite, finite, finite, st.just(NEG_INF))
    A = draw(arrays(dtype, (n, k), elements=elements))
    B = draw(arrays(dtype, (k, m), elements=elements))
    return A, B


@given(log_matrix_pairs())
def test_auto_matches_exact_reference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    A, B = pair
    C = logmm.logmatmulexp(A, B)
    assert max_abs_error(C, exact_logmatmul(A, B)) <= error_bound(A, B, np.float64)


@given(log_matrix_pairs(np.float32))
def test_auto_matches_exact_reference_float32(pair: tuple[np.ndarray, np.ndarray]) -> None:
    A, B = pair
    C = logmm.logmatmulexp(A, B)
    assert C.dtype == np.float32
    assert max_abs_error(C, exact_logmatmul(A, B)) <= error_bound(A, B, np.float32)


@given(log_matrix_pairs(), st.data())
def test_row_and_column_shifts_pass_through(pair: tuple[np.ndarray, np.ndarray],
                                            data: st.DataObject) -> None:
    """Adding r_i to row i of A adds r_i to row i of C; likewise columns of B."""
    A, B = pair
    r = np.array(data.draw(st.lists(st.floats(-300, 300), min_size=A.shape[0],
                                    max_size=A.shape[0])))
    c = np.array(data.draw(st.lists(st.floats(-300, 300), min_size=B.shape[1],
                                    max_size=B.shape[1])))
    shifted = logmm.logmatmulexp(A + r[:, None], B + c[None, :])
    expected = exact_logmatmul(A, B) + r[:, None] + c[None, :]
    tolerance = error_bound(A + r[:, None], B + c[None, :], np.float64) + 1e-12 * (
        np.abs(r).max() + np.abs(c).max())
    assert max_abs_error(shifted, expected) <= tolerance


@given(log_matrix_pairs())
def test_auto_and_exact_agree(pair: tuple[np.ndarray, np.ndarray]) -> None:
    A, B = pair
    auto = logmm.logmatmulexp(A, B, method="auto")
    exact = logmm.logmatmulexp(A, B, method="exact")
    assert max_abs_error(auto, exact) <= 2 * error_bound(A, B, np.float64)


@given(log_matrix_pairs(), st.randoms(use_true_random=False))
def test_contraction_order_does_not_matter(pair: tuple[np.ndarray, np.ndarray], rnd) -> None:
    A, B = pair
    perm = list(range(A.shape[1]))
    rnd.shuffle(perm)
    C = logmm.logmatmulexp(A, B)
    P = logmm.logmatmulexp(A[:, perm], B[perm, :])
    assert max_abs_error(C, P) <= 2 * error_bound(A, B, np.float64)


@given(log_matrix_pairs(np.float32))
def test_float32_agrees_with_float64(pair: tuple[np.ndarray, np.ndarray]) -> None:
    A, B = pair
    C32 = logmm.logmatmulexp(A, B)
    C64 = logmm.logmatmulexp(A.astype(np.float64), B.astype(np.float64))
    # float32 error bound plus rounding the float64 value to float32
    tol = error_bound(A, B, np.float32) + np.finfo(np.float32).eps * np.nanmax(
        np.abs(np.where(np.isfinite(C64), C64, 0)), initial=0)
    assert max_abs_error(C32, C64) <= tol


@given(log_matrix_pairs(), st.data())
def test_nan_reaches_exactly_the_entries_it_touches(pair: tuple[np.ndarray, np.ndarray],
                                                    data: st.DataObject) -> None:
    A, B = pair
    A, B = A.copy(), B.copy()
    for X in (A, B):
        flat = data.draw(st.lists(st.integers(0, X.size - 1), max_size=2))
        X.flat[flat] = np.nan
    ref = exact_logmatmul(A, B)
    for method in ("auto", "exact"):
        C = logmm.logmatmulexp(A, B, method=method)
        assert np.array_equal(np.isnan(C), np.isnan(ref))
        assert max_abs_error(C, ref) <= error_bound(A, B, np.float64)
