"""The shared log-accumulator and logsumexp against exact references."""

from __future__ import annotations

import numpy as np
import pytest

from logmm.accumulate import LogSumAccumulator, finite_or_zero, logsumexp

from exact_reference import exact_logsumexp, max_abs_error


def test_logsumexp_matches_exact_reference() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(scale=300, size=(4, 50)), np.full((4, 3), -np.inf)], axis=1)
    got = logsumexp(x, axis=1)
    ref = np.array([exact_logsumexp(list(row)) for row in x])
    assert max_abs_error(got, ref) <= 4e-16 * (53 + 1000)


def test_logsumexp_edge_cases() -> None:
    x = np.array([[-np.inf, -np.inf], [np.nan, 0.0], [0.0, 0.0], [np.nan, -np.inf],
                  [np.nan, np.nan]])
    got = logsumexp(x, axis=1)
    assert got[0] == -np.inf
    assert np.isnan(got[1]) and np.isnan(got[3]) and np.isnan(got[4])
    assert got[2] == pytest.approx(np.log(2.0))
    assert logsumexp(np.zeros((3, 0)), axis=1).tolist() == [-np.inf] * 3
    assert logsumexp(np.array([1.0, 2.0])).shape == ()
    assert logsumexp(np.ones((2, 3), np.float32), axis=0).dtype == np.float32
    assert logsumexp(np.ones((2, 3), np.float32), axis=0, dtype=np.float64).dtype == np.float64


def test_accumulator_blocks_equal_one_reduction() -> None:
    rng = np.random.default_rng(1)
    terms = rng.normal(scale=500, size=(3, 4, 60))
    terms[0, 0] = -np.inf                      # an entry that never sees a finite term
    terms[1, 2, 7] = np.nan                    # NaN must survive later rescalings
    acc = LogSumAccumulator((3, 4))
    for start in range(0, 60, 13):
        acc.add_reduced(terms[:, :, start:start + 13], axis=2)
    got = acc.result()
    ref = np.array([[exact_logsumexp(list(terms[i, j])) for j in range(4)] for i in range(3)])
    assert got[0, 0] == -np.inf
    assert np.isnan(got[1, 2])
    assert max_abs_error(got, ref) <= 4e-16 * (60 + 2000)


def test_accumulator_keeps_nan_added_alone() -> None:
    acc = LogSumAccumulator((2,))
    acc.add(np.array([np.nan, -np.inf]))
    acc.add(np.array([-np.inf, -np.inf]))
    got = acc.result()
    assert np.isnan(got[0]) and got[1] == -np.inf


def test_accumulator_add_log_values() -> None:
    acc = LogSumAccumulator((3,))
    acc.add(np.array([-np.inf, 1000.0, -5.0]))
    acc.add(np.array([-np.inf, -1000.0, np.nan]))
    acc.add(np.array([-np.inf, 1000.0, 3.0]))
    got = acc.result(np.float32)
    assert got.dtype == np.float32
    assert got[0] == -np.inf
    assert got[1] == pytest.approx(1000 + np.log(2.0))
    assert np.isnan(got[2])


def test_finite_or_zero() -> None:
    x = np.array([1.0, -np.inf, np.nan, np.inf])
    assert finite_or_zero(x).tolist() == [1.0, 0.0, 0.0, 0.0]
    ro = np.array([-np.inf])
    ro.flags.writeable = False
    assert finite_or_zero(ro).tolist() == [0.0]
    assert float(finite_or_zero(np.float64(-np.inf))) == 0.0
