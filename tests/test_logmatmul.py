"""logmatmulexp against exact (mpmath) references, on easy and adversarial inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import logmm
from logmm import adversarial
from logmm.logmatmul import _blocked_product, _exact_entries, _exact_product

from exact_reference import error_bound, exact_logmatmul, exact_tier_errors, max_abs_error

FAMILY_SHAPE = (9, 40, 7)


@pytest.mark.parametrize("method", ["auto", "exact"])
@pytest.mark.parametrize("case", range(2))
def test_public_counterexamples_are_exact(method: str, case: int) -> None:
    A, B, expected = adversarial.counterexamples()[case]
    C = logmm.logmatmulexp(A, B, method=method)
    np.testing.assert_allclose(C, expected, rtol=0, atol=4e-13)


def test_fast_method_is_documented_as_inexact_on_the_rowcol_counterexample() -> None:
    A, B, _ = adversarial.counterexamples()[1]
    C, report = logmm.logmatmulexp_report(A, B, method="fast")
    assert not abs(C[0, 0] - (400 + math.log(2))) < 1.0   # the shift's failure, documented
    assert report.unchecked == 1 and report.repaired == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("family", sorted(adversarial.FAMILIES))
@pytest.mark.parametrize("method", ["auto", "exact"])
def test_families_within_documented_bound(family: str, dtype: type, method: str) -> None:
    A, B = adversarial.FAMILIES[family](*FAMILY_SHAPE, dtype=dtype, seed=11)
    ref = exact_logmatmul(A, B)
    C, report = logmm.logmatmulexp_report(A, B, method=method)
    assert C.dtype == dtype
    assert report.entries == C.size
    assert max_abs_error(C, ref) <= error_bound(A, B, dtype)
    # Nothing finite may come back as -inf or NaN.
    assert not np.any(np.isfinite(ref) & ~np.isfinite(C))


def test_float32_extremes_within_bound() -> None:
    A, B = adversarial.float32_extremes(10, 64, 8, seed=5)
    ref = exact_logmatmul(A, B)
    C, report = logmm.logmatmulexp_report(A, B)
    assert C.dtype == np.float32
    assert report.repaired > 0                      # the float32 fast path cannot vouch
    assert max_abs_error(C, ref) <= error_bound(A, B, np.float32)
    fast = logmm.logmatmulexp(A, B, method="fast")
    assert max_abs_error(fast, ref) > max_abs_error(C, ref)


@pytest.mark.parametrize(
    ("family", "kwargs", "tier"),
    [
        ("banded", {"fraction": 0.3}, "rebalanced"),
        ("scale_drift", {}, "rebalanced"),
        ("huge_magnitudes", {}, "exact"),
        ("banded", {"fraction": 0.1}, "blocked"),
    ],
)
def test_each_tier_is_exercised_and_accurate(family: str, kwargs: dict, tier: str) -> None:
    A, B = adversarial.FAMILIES[family](12, 48, 10, seed=3, **kwargs)
    C, report = logmm.logmatmulexp_report(A, B)
    assert getattr(report, tier) > 0, report
    assert report.fast + report.repaired == report.entries
    assert max_abs_error(C, exact_logmatmul(A, B)) <= error_bound(A, B, np.float64)


def test_blocked_tier_vouches_only_for_accurate_entries() -> None:
    A, B = adversarial.banded(16, 64, 12, fraction=0.5, seed=8)
    ref = exact_logmatmul(A, B)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        values, trusted = _blocked_product(A, B, block=8)
    assert trusted.any()
    err = np.abs(values - ref)[trusted]
    assert err.max() <= error_bound(A, B, np.float64)


def test_exact_entries_match_reference() -> None:
    A, B = adversarial.huge_magnitudes(6, 30, 5, seed=2)
    ref = exact_logmatmul(A, B)
    ii, jj = np.nonzero(np.ones((6, 5), bool))
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        got = _exact_entries(A, B, ii, jj).reshape(6, 5)
    assert max_abs_error(got, ref) <= error_bound(A, B, np.float64)


def test_large_k_against_exact_reference() -> None:
    """K large enough to split the per-entry and exact tiles into several chunks."""
    A, B = adversarial.banded(5, 700, 4, fraction=0.6, seed=4)
    ref = exact_logmatmul(A, B)
    for method in ("auto", "exact"):
        C = logmm.logmatmulexp(A, B, method=method)
        assert max_abs_error(C, ref) <= error_bound(A, B, np.float64)


# ---- method="exact": the exact-tier bound, certified or per entry --------------------------

def _exact_with_count(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, int]:
    """``method="exact"``'s values and how many entries it evaluated term by term."""
    out = np.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        per_entry = _exact_product(A, B, out)
    np.testing.assert_array_equal(out, logmm.logmatmulexp(A, B, method="exact"))
    return out, per_entry


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("family", sorted(adversarial.FAMILIES))
def test_exact_method_within_exact_tier_bound(family: str, dtype: type) -> None:
    """Every family, entry by entry, within the tighter bound ``exact`` promises; the
    adversarial ones (maxima misaligned) fail the certificate and go per entry."""
    A, B = adversarial.FAMILIES[family](9, 40, 7, dtype=dtype, seed=11)
    C, per_entry = _exact_with_count(A, B)
    assert exact_tier_errors(C, exact_logmatmul(A, B), 40).max() <= 1
    if family in ("banded", "scale_drift", "huge_magnitudes"):
        assert per_entry > 0
    if family == "log_probabilities":
        assert per_entry == 0                           # all certified: no exp per term


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_certificate_at_its_worst_case(dtype: type) -> None:
    """The certificate's edge: the row maximum of A and column maximum of B on different
    k, the other terms negligible, so S is about the aligned term: e^-13.5 > 2^-20 is
    certified, e^-14.5 goes per entry. Then K = 1500 terms that all count (94 blocks of
    16, a 7-level tree) with S just above 2^-20. All within the exact-tier bound."""
    rng = np.random.default_rng(7)
    k = 1500
    A = np.full((4, k), -40.0)
    B = np.full((k, 5), -40.0)
    A[:, 0] = 0.0                                       # row maxima at k = 0
    B[1, :] = 0.0                                       # column maxima at k = 1
    B[0, :2] = -13.5                                    # S ~ e^-13.5 > 2^-20: certified
    B[0, 2:] = -14.5                                    # S ~ e^-14.5 < 2^-20: per entry
    A[:, 2:] = rng.uniform(-40.0, -30.0, size=(4, k - 2))
    A, B = (A + 30.0).astype(dtype), (B - 50.0).astype(dtype)
    C, per_entry = _exact_with_count(A, B)
    assert per_entry == 4 * 3
    assert exact_tier_errors(C, exact_logmatmul(A, B), k).max() <= 1
    # every term counts: x_k y_k ~ e^-(14 + 7.3 +- 0.5), S ~ 1500 e^-21.3 ~ 2^-20.2 .. 2^-19
    A[:, 2:] = rng.uniform(-7.5, -6.5, size=(4, k - 2)).astype(dtype) + dtype(30.0)
    B[2:, :] = rng.uniform(-14.5, -13.5, size=(k - 2, 5)).astype(dtype) - dtype(50.0)
    B[0, :] = -90.0
    C, per_entry = _exact_with_count(A, B)
    assert per_entry < C.size
    assert exact_tier_errors(C, exact_logmatmul(A, B), k).max() <= 1


def test_exact_method_dense_untrusted_block_goes_per_entry() -> None:
    """Most entries beyond the certificate (banded, 60%): the tiled per-entry pass over
    their rows and columns, values only where needed, within the exact-tier bound."""
    A, B = adversarial.banded(120, 96, 100, fraction=0.6, seed=9)
    C, per_entry = _exact_with_count(A, B)
    assert per_entry >= 0.3 * C.size
    sample = (slice(0, 120, 13), slice(0, 100, 11))    # the mpmath reference is slow
    assert exact_tier_errors(C[sample], exact_logmatmul(A[sample[0]], B[:, sample[1]]),
                             96).max() <= 1


# ---- semantics -------------------------------------------------------------------------

def test_neg_inf_rows_and_columns_give_neg_inf_without_warnings() -> None:
    A = np.log(np.random.default_rng(0).dirichlet(np.ones(5), size=4))
    B = np.log(np.random.default_rng(1).dirichlet(np.ones(3), size=5))
    A[1] = -np.inf
    B[:, 2] = -np.inf
    ref = exact_logmatmul(A, B)
    for method in ("auto", "fast", "exact"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            C = logmm.logmatmulexp(A, B, method=method)
        assert np.all(C[1] == -np.inf) and np.all(C[:, 2] == -np.inf)
        assert not np.isnan(C).any()
        assert max_abs_error(C, ref) <= error_bound(A, B, np.float64)


def test_disjoint_supports_give_exact_neg_inf() -> None:
    A = np.array([[0.0, -np.inf], [-np.inf, 0.0]])
    B = np.array([[-np.inf, 0.0], [0.0, -np.inf]])
    for method in ("auto", "exact"):
        C = logmm.logmatmulexp(A, B, method=method)
        np.testing.assert_array_equal(C, [[-np.inf, 0.0], [0.0, -np.inf]])


@pytest.mark.parametrize("method", ["auto", "fast", "exact"])
def test_nan_propagates_only_to_entries_it_touches(method: str) -> None:
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 6))
    B = rng.normal(size=(6, 5))
    A[2, 3] = np.nan
    B[1, 4] = np.nan
    C = logmm.logmatmulexp(A, B, method=method)
    touched = np.zeros((4, 5), bool)
    touched[2, :] = True       # row 2 of A enters every entry of row 2
    touched[:, 4] = True       # column 4 of B enters every entry of column 4
    assert np.array_equal(np.isnan(C), touched)
    ref = exact_logmatmul(np.nan_to_num(A, nan=-np.inf), np.nan_to_num(B, nan=-np.inf))
    assert max_abs_error(C[~touched], ref[~touched]) <= error_bound(A, B, np.float64)


@pytest.mark.parametrize("method", ["auto", "fast", "exact"])
@pytest.mark.parametrize("where", ["A", "B"])
def test_positive_infinity_is_a_clear_error(method: str, where: str) -> None:
    A = np.zeros((3, 4))
    B = np.zeros((4, 2))
    (A if where == "A" else B)[1, 1] = np.inf
    with pytest.raises(ValueError, match=rf"{where} contains \+inf"):
        logmm.logmatmulexp(A, B, method=method)


def test_dtypes_preserved_and_overridable() -> None:
    A32 = np.zeros((2, 3), np.float32)
    B32 = np.zeros((3, 2), np.float32)
    assert logmm.logmatmulexp(A32, B32).dtype == np.float32
    assert logmm.logmatmulexp(A32.astype(np.float64), B32).dtype == np.float64
    assert logmm.logmatmulexp(A32, B32, dtype="float64").dtype == np.float64
    assert logmm.logmatmulexp(A32, B32, method="exact").dtype == np.float32
    assert logmm.logmatmulexp(np.zeros((2, 3), int), B32).dtype == np.float64
    with pytest.raises(ValueError, match="complex"):
        logmm.logmatmulexp(A32.astype(complex), B32)
    with pytest.raises(ValueError, match="float32 or float64"):
        logmm.logmatmulexp(A32, B32, dtype=np.int64)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"shape mismatch: A is \(2, 3\) and B is \(4, 2\)"):
        logmm.logmatmulexp(np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="do not broadcast"):
        logmm.logmatmulexp(np.zeros((2, 2, 3)), np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="unknown method"):
        logmm.logmatmulexp(np.zeros((2, 3)), np.zeros((3, 2)), method="quick")


@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((3, 4), (4, 2)), ((5, 3, 4), (4, 2)), ((3, 4), (2, 4, 6)), ((2, 1, 3, 4), (5, 4, 2)),
     ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,))],
)
def test_batch_broadcasting_matches_matmul(shape_a: tuple, shape_b: tuple) -> None:
    rng = np.random.default_rng(7)
    A = rng.normal(size=shape_a)
    B = rng.normal(size=shape_b)
    expected = np.log(np.matmul(np.exp(A), np.exp(B)))
    for method in ("auto", "exact"):
        C = logmm.logmatmulexp(A, B, method=method)
        assert C.shape == expected.shape
        np.testing.assert_allclose(C, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(0, 3, 2), (2, 3, 0), (2, 0, 3), (0, 0, 0)])
@pytest.mark.parametrize("method", ["auto", "fast", "exact"])
def test_empty_dimensions(shape: tuple, method: str) -> None:
    n, k, m = shape
    C = logmm.logmatmulexp(np.zeros((n, k)), np.zeros((k, m)), method=method)
    assert C.shape == (n, m)
    assert np.all(C == -np.inf)          # K = 0: an empty sum is log 0


def test_report_counts_add_up() -> None:
    A, B = adversarial.banded(30, 64, 20, fraction=0.3, seed=9)
    C, report = logmm.logmatmulexp_report(A, B)
    assert report.entries == C.size == report.fast + report.repaired
    assert report.repaired > 0
    assert report.as_dict()["repaired"] == report.repaired
    total = logmm.ProductReport()
    total += report
    total += report
    assert total.entries == 2 * report.entries


def test_read_only_and_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 10))[:, ::2]
    B = np.asfortranarray(rng.normal(size=(5, 4)))
    A.flags.writeable = False
    C = logmm.logmatmulexp(A, B)
    np.testing.assert_allclose(C, np.log(np.exp(A) @ np.exp(B)), rtol=1e-13)


def test_docstring_example_value() -> None:
    A = np.array([[-500.0, 900.0]])
    B = np.array([[900.0], [-500.0]])
    assert float(logmm.logmatmulexp(A, B)[0, 0]) == pytest.approx(400 + math.log(2), abs=1e-12)


def test_parallel_row_blocks_agree_with_exact_method() -> None:
    """Large enough (n*k*m > 4M) to run row blocks and repair tiles on worker threads."""
    A, B = adversarial.banded(3000, 128, 40, fraction=0.2, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C, report = logmm.logmatmulexp_report(A, B)
    assert report.rebalanced > 0 and report.fast > 0
    exact = logmm.logmatmulexp(A, B, method="exact")
    assert max_abs_error(C, exact) <= 2 * error_bound(A, B, np.float64)


def test_positive_infinity_in_a_late_block_is_reported_from_worker_threads() -> None:
    A = np.zeros((20000, 64))
    A[-1, 5] = np.inf
    with pytest.raises(ValueError, match=r"A contains \+inf"):
        logmm.logmatmulexp(A, np.zeros((64, 8)))


# ---- regressions from review ----------------------------------------------------------

@pytest.mark.parametrize(("dtype", "big"), [(np.float64, 1e20), (np.float32, 1e10),
                                            (np.float32, 6e8)])
@pytest.mark.parametrize("last", [0.0, -np.inf])
def test_huge_block_shifts_do_not_fool_the_trust_test(dtype, big: float, last: float) -> None:
    """K = 9 (two blocks of 8): a huge row maximum far from the one live term."""
    A = np.array([[big, 0.0] + [-np.inf] * 7], dtype)
    B = np.array([[-np.inf], [last]] + [[-np.inf]] * 7, dtype)
    for method in ("auto", "exact"):
        C = logmm.logmatmulexp(A, B, method=method)
        assert C[0, 0] == last                     # exactly 0 + 0, or exactly log 0


@pytest.mark.parametrize(
    ("A", "B"),
    [
        ([[np.nan, np.nan], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]),          # all-NaN row
        ([[np.nan, -np.inf], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]),         # NaN and -inf
        ([[0.0, 0.0], [0.0, 0.0]], [[np.nan, 0.0], [-np.inf, 0.0]]),         # same, in B
        ([[np.nan, 0.0]], [[-np.inf], [-np.inf]]),                           # vs -inf column
    ],
)
@pytest.mark.parametrize("method", ["auto", "fast", "exact"])
def test_nan_survives_lines_whose_maximum_is_not_finite(A, B, method: str) -> None:
    A, B = np.array(A), np.array(B)
    ref = exact_logmatmul(A, B)
    C = logmm.logmatmulexp(A, B, method=method)
    assert np.array_equal(np.isnan(C), np.isnan(ref))
    assert max_abs_error(C, ref) <= error_bound(A, B, np.float64)


def test_trust_threshold_grows_with_k_where_clamped_floors_could_add_up() -> None:
    from logmm.logmatmul import _trust_threshold, log_tau

    tiny32 = float(np.finfo(np.float32).tiny)
    assert _trust_threshold(np.dtype(np.float32), 1000) == pytest.approx(
        math.exp(log_tau(np.dtype(np.float32))))
    big_k = 120_000_000
    floors = big_k * (2 * math.e + 1) * tiny32          # every term clamped or underflowed
    assert floors <= _trust_threshold(np.dtype(np.float32), big_k) / 8


@pytest.mark.slow
def test_float32_with_k_beyond_1e8_keeps_exact_neg_inf() -> None:
    k = 120_000_000
    A = np.full((1, k), -np.inf, np.float32)
    B = np.full((k, 1), -np.inf, np.float32)
    A[0, 0] = 0.0
    B[1, 0] = 0.0
    assert logmm.logmatmulexp(A, B)[0, 0] == -np.inf
    A[0, 1] = -1000.0
    assert logmm.logmatmulexp(A, B)[0, 0] == pytest.approx(-1000.0, abs=1e-3)


@pytest.mark.parametrize("shapes", [((0, 3), (3, 2)), ((2, 3), (3, 0))])
def test_positive_infinity_is_refused_even_when_nothing_is_computed(shapes) -> None:
    A, B = np.zeros(shapes[0]), np.zeros(shapes[1])
    target = A if A.size else B
    target.flat[0] = np.inf
    with pytest.raises(ValueError, match=r"contains \+inf"):
        logmm.logmatmulexp(A, B)


def test_values_beyond_a_quarter_of_the_range_are_refused() -> None:
    A = np.array([[np.finfo(np.float64).max / 2, 0.0]])
    with pytest.raises(ValueError, match="would overflow the product"):
        logmm.logmatmulexp(A, np.zeros((2, 1)))
    A = np.array([[1e300, 0.0]])
    with pytest.raises(ValueError, match="beyond the range of float32"):
        logmm.logmatmulexp(A, np.zeros((2, 1)), dtype=np.float32)


def test_near_the_supported_limit_results_stay_finite_and_exact() -> None:
    big = np.finfo(np.float32).max / 4
    A = np.array([[big * 0.99, -big * 0.99, 0.0]], np.float32)
    B = np.array([[-big * 0.99], [big * 0.99], [-np.inf]], np.float32)
    C = logmm.logmatmulexp(A, B)
    ref = exact_logmatmul(A, B)
    assert np.isfinite(C).all()
    assert max_abs_error(C, ref) <= error_bound(A, B, np.float32)


def test_batched_fast_tier_repairs_only_the_batches_that_need_it() -> None:
    """Small batched products run the fast tier over all batches at once; adversarial
    batch elements are repaired one by one and match the 2-D results exactly."""
    A1, B1 = adversarial.banded(12, 40, 9, fraction=0.3, seed=1)
    A2, B2 = adversarial.log_probabilities(12, 40, 9, seed=2)
    A3, B3 = adversarial.neg_inf_mask(12, 40, 9, density=0.9, seed=3)
    A3[4] = -np.inf
    A3[5, 3] = np.nan
    A, B = np.stack([A1, A2, A3]), np.stack([B1, B2, B3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C, report = logmm.logmatmulexp_report(A, B)
    assert report.entries == C.size and report.repaired > 0
    for index, (a, b) in enumerate(zip(A, B, strict=True)):
        ref = exact_logmatmul(a, b)
        assert np.array_equal(np.isnan(C[index]), np.isnan(ref))
        assert max_abs_error(C[index], ref) <= error_bound(a, b, np.float64)
    assert np.all(C[2, 4] == -np.inf)
    fast, fast_report = logmm.logmatmulexp_report(A, B, method="fast")
    assert fast_report.unchecked == C.size
    np.testing.assert_array_equal(fast[1], C[1])      # nothing to repair there


def test_structural_zeros_are_exact_and_not_counted_as_repairs() -> None:
    """Disjoint supports give exact -inf without any repair tier (e.g. triangular
    transition matrices): A[i, k] is finite only for k > i, B[k, j] only for k <= j, so
    (A @ B)[i, j] has no live term when j <= i."""
    rng = np.random.default_rng(7)
    idx = np.arange(40)
    A = np.where(idx[None, :] > idx[:, None], rng.normal(size=(40, 40)), -np.inf)
    B = np.where(idx[:, None] <= idx[None, :], rng.normal(size=(40, 40)), -np.inf)
    C, report = logmm.logmatmulexp_report(A, B)
    ref = exact_logmatmul(A, B)
    assert np.isneginf(ref).sum() == 40 * 41 // 2
    assert np.array_equal(np.isneginf(C), np.isneginf(ref))
    assert max_abs_error(C, ref) <= error_bound(A, B, np.float64)
    assert report.repaired == 0 and report.fast == C.size


_NEAR_RANGE = [
    (np.array([[4e307, 4e307 - 1e302], [-1.7e308, -1.7e308 - 1e302]]), np.array([[-1e300], [0.0]])),
    (np.array([[8e37, 8e37 - 2e32], [-3.3e38, -3.3e38 - 2e32]], np.float32),
     np.array([[-1e31], [0.0]], np.float32)),
]


@pytest.mark.parametrize("A, B", _NEAR_RANGE + [(b.T.copy(), a.T.copy()) for a, b in _NEAR_RANGE])
def test_rebalanced_tier_never_returns_neg_inf_for_a_finite_value(A, B) -> None:
    # the rebalancing shift e_k (~0.6 max) used to push the -1.7e308 row to -inf, which
    # then passed for a dead row: C[1, 0] (or C[0, 1]) was -inf, exact -1.70000001e308

    C = logmm.logmatmulexp(A, B)
    ref = exact_logmatmul(A, B)
    assert C.dtype == A.dtype and np.isfinite(C).all()
    ulp = np.spacing(np.abs(ref).astype(A.dtype)).astype(np.float64)
    assert (np.abs(C.astype(np.float64) - ref) <= ulp).all()


def test_no_tier_returns_neg_inf_for_a_finite_value_near_the_range() -> None:
    # the rebalanced tier's -inf (issue 16) looked for in its siblings: seeded products with
    # entries up to -1.7e308 and misaligned maxima, so that the rebalanced, blocked and
    # exact tiers all take part, each entry against 200-bit mpmath
    import mpmath

    from logmm.logmatmul import logmatmulexp_report

    def exact(a: np.ndarray, b: np.ndarray) -> float:
        with mpmath.workprec(200):
            terms = [mpmath.mpf(float(x)) + mpmath.mpf(float(y)) for x, y in zip(a, b, strict=True)]
            top = max(terms)
            return float(top + mpmath.log(mpmath.fsum(mpmath.exp(t - top) for t in terms)))

    rng = np.random.default_rng(0)
    seen = {"rebalanced": 0, "blocked": 0, "exact": 0}
    for _ in range(120):
        n, k, m = rng.integers(1, 5), rng.integers(2, 70), rng.integers(1, 5)
        scale = 10.0 ** rng.uniform(0, 307.8)
        A = rng.standard_normal((n, k)) * scale * rng.uniform(0, 0.4)
        B = rng.standard_normal((k, m)) * scale * rng.uniform(0, 0.4)
        A[:, : k // 2] -= scale * 0.3
        B[k // 2:, :] -= scale * 0.3
        A, B = np.clip(A, -1.7e308, 4e307), np.clip(B, -1.7e308, 4e307)
        C, report = logmatmulexp_report(A, B)
        for tier in seen:
            seen[tier] += getattr(report, tier)
        for i in range(n):
            for j in range(m):
                want = exact(A[i], B[:, j])
                assert np.isfinite(C[i, j]) == np.isfinite(want), (A[i], B[:, j])
                assert abs(C[i, j] - want) <= 1e-10 * max(1.0, abs(want))
    assert min(seen.values()) > 0, seen            # every tier was exercised


def test_factor_certificate_changes_no_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping the scan of the sums when a factor's smallest entry proves them all above
    the trust threshold returns the same bytes as scanning them, and still repairs what
    needs repair (dead lines, NaN, a banded batch)."""
    from logmm.logmatmul import _ShiftedFactor
    rng = np.random.default_rng(5)
    A = np.log(rng.dirichlet(np.ones(16), size=(3, 300)))
    B = np.log(rng.dirichlet(np.ones(40), size=(3, 16)))     # (3, 16, 40): k << n
    A[0, 5] = -np.inf                                         # a dead row
    A[1, 7, 3] = np.nan
    bA, bB = adversarial.banded(300, 16, 40, fraction=0.2, seed=2)
    cases = [(A, B), (bA, bB), (A[0], B[0])]
    used = []
    real = _ShiftedFactor.vouches_for

    def spy(self, tau, work):
        answer = real(self, tau, work)
        used.append(answer)
        return answer

    monkeypatch.setattr(_ShiftedFactor, "vouches_for", spy)
    got = [logmm.logmatmulexp_report(a, b) for a, b in cases]
    assert any(used)                                          # the certificate did vouch
    monkeypatch.setattr(_ShiftedFactor, "vouches_for", lambda self, tau, work: False)
    for (a, b), (C, report) in zip(cases, got, strict=True):
        C_scan, report_scan = logmm.logmatmulexp_report(a, b)
        assert C.tobytes() == C_scan.tobytes() and report == report_scan
    assert got[1][1].repaired > 0
    assert np.all(got[0][0][0, 5] == -np.inf) and np.all(np.isnan(got[0][0][1, 7]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["auto", "exact"])
def test_a_result_below_the_range_is_minus_inf_without_a_warning(dtype: type,
                                                                  method: str) -> None:
    """Both maxima far below zero: the shift-back ``log S + ma + mb`` leaves the range.

    The exact value is below ``-max`` there, so ``-inf`` is its correct rounding; the
    other entries stay exact and no overflow warning escapes (2-D, batched, einsum).
    """
    big = float(np.finfo(dtype).max)
    A = np.array([[-0.22 * big] * 4, [6.4, -0.1, 0.12, 0.13]], dtype=dtype)
    B = np.zeros((4, 3), dtype=dtype)
    B[:, 0] = B[:, 2] = -0.8 * big
    ref = exact_logmatmul(A, B)
    ref[ref < -big] = -np.inf                     # the correctly rounded result
    assert np.isneginf(ref[0, 0]) and np.isfinite(ref[1, 0])
    results = [logmm.logmatmulexp(A, B, method=method),
               logmm.logmatmulexp(A[None], B[None], method=method)[0],
               logmm.logeinsum("ij,jk->ik", A, B, method=method)]
    for C in results:
        assert C.dtype == dtype
        assert np.array_equal(np.isneginf(C), np.isneginf(ref))
        assert max_abs_error(C, ref) <= error_bound(A, B, np.dtype(dtype))
