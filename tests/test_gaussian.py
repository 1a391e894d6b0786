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


# ------------------------------------------------------------------ extremes vs mpmath
def _exact_logpdf(x: float, mu: float, log_sigma, sigma=None) -> float:
    import mpmath
    with mpmath.workprec(400):
        s = mpmath.mpf(sigma) if sigma is not None else mpmath.exp(log_sigma)
        z = (mpmath.mpf(float(x)) - mpmath.mpf(float(mu))) / s
        return float(-z * z / 2 - mpmath.log(s) - mpmath.log(2 * mpmath.pi) / 2)


def _exact_softplus(rho: float):
    import mpmath
    with mpmath.workprec(400):
        return mpmath.log1p(mpmath.exp(mpmath.mpf(float(rho))))


F64MAX = float(np.finfo(np.float64).max)


@pytest.mark.parametrize("x, mu, sigma", [
    (1e-310, 0.0, 1e-310),                       # subnormal sigma: 1/sigma overflows
    (0.75 * F64MAX, -0.75 * F64MAX, F64MAX / 4),  # x - mu overflows
    (3.0, 1.0, 0.5),
])
def test_sigma_extremes_match_mpmath(x: float, mu: float, sigma: float) -> None:
    got = diag_gaussian_logpdf(np.array([x]), mu, sigma=sigma)[0]
    exact = _exact_logpdf(x, mu, None, sigma)
    assert abs(got - exact) <= 4 * np.spacing(abs(exact))


@pytest.mark.parametrize("rho", [-720.0, -750.0, -709.0, -30.5, -20.0, -5.0, -1.0, 0.3, 40.0])
def test_rho_path_matches_mpmath(rho: float) -> None:
    import mpmath
    s = _exact_softplus(rho)
    d = float(s) if float(s) > 0 else 5e-324
    x = np.array([d, 0.0, 3 * d])
    got = diag_gaussian_logpdf(x, 0.0, rho=rho)
    for g, xi in zip(got, x, strict=True):
        with mpmath.workprec(400):
            z = mpmath.mpf(float(xi)) / s
            exact = float(-z * z / 2 - mpmath.log(s) - mpmath.log(2 * mpmath.pi) / 2)
            # below the normal range z comes from logs: log|x - mu| - log sigma carries
            # eps * (|log|x - mu|| + |log sigma|) absolutely, z^2 twice that relatively
            log_err = 0.0 if float(s) >= 2.3e-308 else float(
                z * z * 2 * (abs(mpmath.log(mpmath.mpf(float(xi)) or 1)) + abs(mpmath.log(s))))
            scale = max(abs(exact), float(z * z / 2), abs(float(mpmath.log(s))))
        tol = 4 * np.spacing(scale) + 2 * np.finfo(float).eps * log_err  # 4 ulps of the terms
        assert np.isfinite(g) and abs(g - exact) <= tol, (xi, g, exact)


def test_float32_sum_and_row_accumulate_past_float32_range() -> None:
    x = np.array([[1e19, 0.0]], np.float32)
    total = diag_gaussian_logpdf(x, 0.0, sigma=np.float32(1.0), reduce="sum")
    exact = -0.5e38 - 2 * 0.9189385332046727     # -0.5 * 1e38 (as float32 1e19 squared)
    assert np.isfinite(total) and total == pytest.approx(
        -0.5 * float(np.float32(1e19)) ** 2 - 2 * 0.9189385332046727, rel=1e-15)
    assert exact < 0
    row = diag_gaussian_logpdf(x, 0.0, sigma=np.float32(1.0), reduce="row")
    assert row.dtype == np.float32 and np.isfinite(row).all()


def test_python_float_sigma_beyond_float32_is_refused_without_warning() -> None:
    with pytest.raises(InputError, match="sigma must be finite"):
        diag_gaussian_logpdf(np.zeros(2, np.float32), 0.0, sigma=1e40)


def test_out_of_another_dtype_is_refused() -> None:
    with pytest.raises(InputError, match="out has shape"):
        diag_gaussian_logpdf(np.zeros(2), 0.0, sigma=1.0, out=np.empty(2, np.float32))
    out = np.empty(2)
    assert diag_gaussian_logpdf(np.zeros(2), 0.0, sigma=1.0, out=out) is out


def _sweep_worst_ulps(dtype, rho_range: tuple[float, float], count: int, seed: int,
                      any_mu: bool = True) -> float:
    """Largest error of the rho path, in ulps of the largest of z²/2, |log sigma| and the
    result (400-bit mpmath), over random rho and (x - mu)/sigma from 0 to 1e3 (mu = 0
    unless ``any_mu``: a subnormal x - mu needs mu = 0)."""
    import mpmath
    rng = np.random.default_rng(seed)
    worst = 0.0
    for i in range(count):
        rho = dtype(rng.uniform(*rho_range))
        s = _exact_softplus(rho)
        mu = dtype(rng.normal()) if any_mu and i % 2 else dtype(0.0)
        with mpmath.workprec(400):
            d = float(float(rng.choice([0.5, 1, 3, 30, 1e3])) * rng.uniform(-1, 1) * s)
        x = dtype(float(mu) + d)
        if x == mu:                   # (x - mu)/sigma below one ulp of mu: the next float
            x = np.nextafter(mu, dtype(1))
        got = float(diag_gaussian_logpdf(np.array([x]), np.array([mu]), rho=np.array([rho]))[0])
        with mpmath.workprec(400):
            z = (mpmath.mpf(float(x)) - mpmath.mpf(float(mu))) / s
            exact = -z * z / 2 - mpmath.log(s) - mpmath.log(2 * mpmath.pi) / 2
            scale = float(max(abs(exact), z * z / 2, abs(mpmath.log(s))))
        assert np.isfinite(got)
        worst = max(worst, abs(got - float(exact)) / float(np.spacing(dtype(scale))))
    return worst


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rho_path_sweep_is_as_accurate_as_sigma(dtype) -> None:
    # rho in (-30, -1]: 1/sigma = exp(-log sigma) carried |rho| u and lost up to 31 ulps;
    # z = (x - mu) / softplus(rho) measured 4.0 ulps (sigma passed directly: 3)
    assert _sweep_worst_ulps(dtype, (-30.0, -1.0), 400, 5) <= 5


@pytest.mark.parametrize("dtype, rho_range", [(np.float64, (-1000.0, -708.5)),
                                              (np.float32, (-130.0, -87.5))])
def test_rho_path_below_the_normal_range_sweep(dtype, rho_range) -> None:
    # softplus(rho) subnormal or 0: z = |x - mu| exp(-rho/2)^2 (was exp(2 (log|d| -
    # log sigma)), 917 ulps in float64, 133 in float32); measured 5 and 1.9
    assert _sweep_worst_ulps(dtype, rho_range, 400, 6, any_mu=False) <= 8
