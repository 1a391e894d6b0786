"""diag_gaussian_logpdf and softplus against scipy.stats.norm and exact references."""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
from scipy.stats import norm

from logmm.errors import InputError, UsageError
from logmm.gaussian import diag_gaussian_logpdf, log_softplus, softplus


@pytest.mark.parametrize("shape_mu", [(), (5,), (4, 5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_scipy_elementwise_row_and_sum(shape_mu: tuple, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)).astype(dtype)
    mu = rng.normal(size=shape_mu).astype(dtype)
    sigma = np.exp(rng.normal(size=shape_mu)).astype(dtype)
    ref = norm.logpdf(x.astype(np.float64), mu.astype(np.float64), sigma.astype(np.float64))
    tol = 1e-13 if dtype == np.float64 else 2e-6
    got = diag_gaussian_logpdf(x, mu, sigma=sigma)
    assert got.dtype == dtype and got.shape == (4, 5)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(diag_gaussian_logpdf(x, mu, sigma=sigma, reduce="row"),
                               ref.sum(axis=-1), rtol=tol, atol=tol * 5)
    total = diag_gaussian_logpdf(x, mu, sigma=sigma, reduce="sum")
    assert isinstance(total, float)
    assert total == pytest.approx(math.fsum(ref.ravel()), rel=tol, abs=tol * 20)


@pytest.mark.parametrize("rho", [-50.0, -20.0, 0.0, 20.0, 88.0, 1000.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softplus_is_exact_to_a_few_ulps_over_the_range(rho: float, dtype) -> None:
    with mpmath.workprec(200):
        exact = mpmath.log(1 + mpmath.exp(mpmath.mpf(float(dtype(rho)))))
        exact_log = mpmath.log(exact)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp = softplus(np.array([rho], dtype))
        lsp = log_softplus(np.array([rho], dtype))
    assert sp.dtype == dtype and np.isfinite(sp).all() and np.isfinite(lsp).all()
    def ulp(value) -> float:
        return abs(float(np.spacing(dtype(float(value)))))

    assert abs(float(sp[0]) - float(exact)) <= 4 * ulp(exact)
    assert abs(float(lsp[0]) - float(exact_log)) <= 4 * ulp(exact_log)


@pytest.mark.parametrize("rho", [-50.0, -20.0, 0.0, 20.0, 88.0, 1000.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rho_parameterisation_matches_scipy(rho: float, dtype) -> None:
    rng = np.random.default_rng(1)
    sigma64 = float(softplus(np.array(rho)))
    x = (rng.normal(size=(3, 4)) * sigma64).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = diag_gaussian_logpdf(x, 0.0, rho=np.full(4, rho, dtype))
    ref = norm.logpdf(x.astype(np.float64), 0.0, sigma64)
    assert got.dtype == dtype and np.isfinite(got).all()
    rel = 1e-12 if dtype == np.float64 else 5e-6
    np.testing.assert_allclose(got, ref, rtol=rel, atol=rel * abs(math.log(sigma64)))


def test_sigma_below_the_range_still_gives_log_sigma_from_rho() -> None:
    """rho = -1000: sigma = exp(-1000) underflows, yet at x == mu the density is exact."""
    got = diag_gaussian_logpdf(np.array([0.0, 1.0]), 0.0, rho=-1000.0)
    assert got[0] == pytest.approx(1000.0 - 0.5 * math.log(2 * math.pi), rel=1e-15)
    assert got[1] == -np.inf


def test_large_sum_keeps_its_digits() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=1_000_000).astype(np.float32)
    ref = math.fsum(norm.logpdf(x.astype(np.float64)).tolist())
    got = diag_gaussian_logpdf(x, 0.0, sigma=1.0, reduce="sum")
    assert abs(got - ref) <= 1e-6 * abs(ref)       # float32 terms, float64 accumulation


def test_n_dimensional_inputs_without_special_cases() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4))
    got = diag_gaussian_logpdf(x, np.zeros(4), sigma=np.ones((3, 1)), reduce="row")
    np.testing.assert_allclose(got, norm.logpdf(x).sum(axis=-1), rtol=1e-13)
    assert diag_gaussian_logpdf(np.array(0.5), 0.0, sigma=2.0).shape == ()


def test_errors() -> None:
    x = np.zeros(3)
    with pytest.raises(UsageError, match="exactly one of sigma and rho"):
        diag_gaussian_logpdf(x, 0.0)
    with pytest.raises(UsageError, match="exactly one of sigma and rho"):
        diag_gaussian_logpdf(x, 0.0, sigma=1.0, rho=0.0)
    with pytest.raises(InputError, match="sigma must be finite and > 0"):
        diag_gaussian_logpdf(x, 0.0, sigma=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="sigma must be finite and > 0"):
        diag_gaussian_logpdf(x, 0.0, sigma=np.inf)
    with pytest.raises(InputError, match="rho must be finite"):
        diag_gaussian_logpdf(x, 0.0, rho=np.inf)
    with pytest.raises(InputError, match="do not broadcast"):
        diag_gaussian_logpdf(np.zeros((2, 3)), np.zeros(2), sigma=1.0)
    with pytest.raises(UsageError, match="unknown reduce"):
        diag_gaussian_logpdf(x, 0.0, sigma=1.0, reduce="mean")
