"""The compiled kernels for small products (logmm.compiled, numba) and their fallback.

The kernels compute the fast tier only and hand every other case (dead lines, +inf,
values beyond the range, sums the trust test cannot vouch for) back to the numpy tiers.
Checked here against mpmath references, directly (the status each case returns) and
through ``logmatmulexp`` (the same values, refusals and reports as the numpy tiers); the
accuracy tests then run again with the kernels on (LOGMM_COMPILED=1). The rest of the
suite runs in the default mode, the numpy tiers alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import logmm
from logmm import adversarial
from logmm.errors import InputError
from logmm.logmatmul import log_tau, set_compiled

from exact_reference import error_bound, exact_logmatmul, max_abs_error

pytest.importorskip("numba", reason="numba (logmm[fast]) is not installed")
from logmm import compiled  # noqa: E402  (after the skip: it imports numba)

TESTS = Path(__file__).parent


@pytest.fixture(params=["on", "off"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test that takes it runs with the compiled kernels and with numpy alone."""
    set_compiled(request.param)
    yield request.param
    set_compiled(os.environ.get("LOGMM_COMPILED", "off"))


@pytest.fixture(autouse=True)
def _default_mode_after() -> Iterator[None]:
    """Tests here switch the kernels on; the rest of the suite runs in the default mode."""
    yield
    set_compiled(os.environ.get("LOGMM_COMPILED", "off"))


def _kernel(A: np.ndarray, B: np.ndarray, check: bool = True) -> tuple[int, np.ndarray]:
    dt = A.dtype
    C = np.full((A.shape[0], B.shape[1]), 7.0, dtype=dt)
    constants = np.array([np.log(np.finfo(dt).tiny) + 1.0, np.exp(log_tau(dt)),
                          float(np.finfo(dt).max) / 4, check], dtype=dt)
    status = compiled.product(np.ascontiguousarray(A), np.ascontiguousarray(B), C, constants)
    return int(status), C


def _small_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(150)
    cases = [("log-probabilities 1x6x6", np.log(rng.dirichlet(np.ones(6), size=1)),
              np.log(rng.dirichlet(np.ones(6), size=6))),
             ("log-probabilities 7x9x5", np.log(rng.dirichlet(np.ones(9), size=7)),
              np.log(rng.dirichlet(np.ones(5), size=9))),
             ("1x64x64", np.log(rng.dirichlet(np.ones(64), size=1)),
              np.log(rng.dirichlet(np.ones(64), size=64)))]
    for family in sorted(adversarial.FAMILIES):
        A, B = adversarial.FAMILIES[family](6, 10, 5, seed=3)
        cases.append((family, A, B))
    return cases


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, A, B", _small_cases(), ids=[c[0] for c in _small_cases()])
def test_kernel_entries_it_vouches_for_are_within_the_bound(name: str, A: np.ndarray,
                                                            B: np.ndarray, dtype: type) -> None:
    A, B = A.astype(dtype), B.astype(dtype)
    ref = exact_logmatmul(A, B)
    status, C = _kernel(A, B)
    assert C.dtype == dtype
    if status == compiled.OK:
        assert max_abs_error(C, ref) <= error_bound(A, B, dtype), name
        assert not np.any(np.isfinite(ref) & ~np.isfinite(C))
    else:              # what it cannot vouch for goes on to the numpy tiers
        assert status in (compiled.DEAD, compiled.UNTRUSTED), (name, status)
    # through logmatmulexp either way: within the bound, with the tiers reported
    set_compiled("on")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C2, report = logmm.logmatmulexp_report(A, B)
    assert C2.dtype == dtype
    assert max_abs_error(C2, ref) <= error_bound(A, B, dtype), name
    assert not np.any(np.isfinite(ref) & ~np.isfinite(C2))
    assert (report.repaired == 0) == (status == compiled.OK) or status == compiled.DEAD


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_misaligned_maxima_are_not_vouched_for(dtype: type) -> None:
    # the row maximum and the column maximum sit on different k: the shifted sum
    # underflows to 0, which the trust test refuses; the rebalanced tier repairs it
    A = np.array([[-500.0, 900.0]], dtype=dtype)
    B = np.array([[900.0], [-500.0]], dtype=dtype)
    status, _ = _kernel(A, B)
    assert status == compiled.UNTRUSTED
    set_compiled("on")
    C, report = logmm.logmatmulexp_report(A, B)
    assert C.dtype == dtype
    assert C[0, 0] == pytest.approx(400.6931471805599, abs=error_bound(A, B, dtype))
    assert report.repaired == 1 and report.fast == 0
    assert logmm.logmatmulexp(A, B)[0, 0] == C[0, 0]        # the report-free path too
    status, fast = _kernel(A, B, check=False)               # method="fast": unchecked
    assert status == compiled.OK and not abs(fast[0, 0] - 400.69) < 1.0
    _, report = logmm.logmatmulexp_report(A, B, method="fast")
    assert report.unchecked == 1


def test_kernel_statuses_for_what_it_leaves_to_numpy() -> None:
    A = np.log(np.full((2, 3), 1 / 3))
    B = np.log(np.full((3, 2), 1 / 2))
    dead = A.copy()
    dead[1] = -np.inf
    all_nan = B.copy()
    all_nan[:, 0] = np.nan
    assert _kernel(A, B)[0] == compiled.OK
    assert _kernel(dead, B)[0] == compiled.DEAD
    assert _kernel(A, all_nan)[0] == compiled.DEAD
    for bad in (np.inf, 1e308):
        posinf = B.copy()
        posinf[2, 1] = bad
        assert _kernel(A, posinf)[0] == compiled.REFUSE
        assert _kernel(dead, posinf)[0] == compiled.REFUSE    # refusal wins over a dead line


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_and_neg_inf_semantics(mode: str, dtype: type) -> None:
    rng = np.random.default_rng(4)
    A = np.log(rng.dirichlet(np.ones(5), size=4)).astype(dtype)
    B = np.log(rng.dirichlet(np.ones(3), size=5)).astype(dtype)
    A[0, 2] = np.nan                     # row 0 is NaN wherever its sum takes column 2
    A[1, :] = -np.inf                    # a dead row: exactly -inf
    A[2, 1] = -np.inf                    # one -inf term: the rest still counts
    B[:, 2] = -np.inf                    # a dead column
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C = logmm.logmatmulexp(A, B)
    assert C.dtype == dtype
    ref = exact_logmatmul(A, B)
    assert np.array_equal(np.isnan(C), np.isnan(ref))
    assert np.isnan(C[0, :2]).all() and np.isneginf(C[1]).all() and np.isneginf(C[2:, 2]).all()
    assert np.array_equal(np.isneginf(C), np.isneginf(ref))
    finite = np.isfinite(ref)
    assert np.all(np.abs(C[finite] - ref[finite]) <= error_bound(A, B, dtype))


@pytest.mark.parametrize("side", ["A", "B"])
@pytest.mark.parametrize("bad", [np.inf, 1e308])
def test_plus_inf_refused_with_the_same_message(mode: str, side: str, bad: float) -> None:
    A, B = np.zeros((2, 4)), np.zeros((4, 3))
    (A if side == "A" else B)[1, 2] = bad
    with pytest.raises(InputError, match=f"^{side} (contains \\+inf|holds)"):
        logmm.logmatmulexp(A, B)
    with pytest.raises(InputError, match=f"^{side} (contains \\+inf|holds)"):
        logmm.logmatmulexp(np.stack([A] * 3), np.stack([B] * 3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shared_b", [False, True])
def test_batches_of_small_products(mode: str, dtype: type, shared_b: bool) -> None:
    rng = np.random.default_rng(8)
    A = np.log(rng.dirichlet(np.ones(6), size=(300, 4))).astype(dtype)
    B = np.log(rng.dirichlet(np.ones(5), size=(1 if shared_b else 300, 6))).astype(dtype)
    A[3, 1] = -np.inf                    # a dead row in one product
    A[7, 0, 2] = np.nan
    if not shared_b:
        B[9, :, 4] = -np.inf             # a dead column in another
        B[11] = adversarial.FAMILIES["banded"](4, 6, 5, seed=1)[1]
        A[11] = adversarial.FAMILIES["banded"](4, 6, 5, seed=1)[0]
    else:
        B = B[0]                         # (6, 5), broadcast over the batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C, report = logmm.logmatmulexp_report(A, B)
    assert C.dtype == dtype and C.shape == (300, 4, 5)
    assert report.entries == C.size and report.fast + report.repaired == C.size
    for i in (0, 3, 7, 9, 11, 299):
        Bi = B if shared_b else B[i]
        ref = exact_logmatmul(A[i], Bi)
        assert np.array_equal(np.isnan(C[i]), np.isnan(ref)), i
        assert np.array_equal(np.isneginf(C[i]), np.isneginf(ref)), i
        finite = np.isfinite(ref)
        assert np.all(np.abs(C[i][finite] - ref[finite]) <= error_bound(A[i], Bi, dtype)), i


def test_both_modes_agree_to_rounding() -> None:
    rng = np.random.default_rng(9)
    A = np.log(rng.dirichlet(np.ones(8), size=(50, 3)))
    B = np.log(rng.dirichlet(np.ones(8), size=(50, 8)))
    results = {}
    for mode in ("on", "off"):
        set_compiled(mode)
        results[mode] = (logmm.logmatmulexp(A, B), logmm.logmatmulexp(A[0], B[0]))
    set_compiled("on")
    for on, off in zip(results["on"], results["off"], strict=True):
        np.testing.assert_allclose(on, off, rtol=0, atol=4e-15)


def test_under_a_raising_errstate(mode: str) -> None:
    A = np.array([[0.0, -800.0, -np.inf]])
    B = np.array([[0.0], [-5.0], [1.0]])
    with np.errstate(all="raise"):
        C = logmm.logmatmulexp(A, B)
    assert C[0, 0] == pytest.approx(np.logaddexp(0.0, -805.0), abs=1e-15)


def _probe(code: str, env: dict[str, str]) -> object:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_numba_is_imported_only_when_asked_for() -> None:
    # by default (a script, a CLI call) numba is never imported, however many products;
    # LOGMM_COMPILED=1 loads the kernels on the first small product
    code = ("import json, sys, numpy as np, logmm\n"
            "a = np.log(np.full((1, 6), 1 / 6)); b = np.log(np.full((6, 6), 1 / 6))\n"
            "for _ in range(3000): c = logmm.logmatmulexp(a, b)\n"
            "assert np.allclose(c, np.log(np.exp(a) @ np.exp(b)))\n"
            "print(json.dumps([m in sys.modules for m in ('numba', 'logmm.compiled')]))\n")
    env = {k: v for k, v in os.environ.items() if k != "LOGMM_COMPILED"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [False, False]
    assert _probe(code, {"LOGMM_COMPILED": "0"}) == [False, False]
    assert _probe(code, {"LOGMM_COMPILED": "1"}) == [True, True]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(InputError, match="compiled mode 'fastest'"):
        set_compiled("fastest")
    before = set_compiled("on")
    assert set_compiled(before) == "on"


def test_accuracy_tests_pass_with_the_kernels() -> None:
    # the small-product accuracy tests, again with the compiled kernels on
    # (`-m slow` runs every logmatmul accuracy module so)
    _run_pytest_with_kernels(["test_latency.py", "test_logmatmul.py"])


@pytest.mark.slow
def test_all_accuracy_tests_pass_with_the_kernels() -> None:
    _run_pytest_with_kernels(["test_latency.py", "test_logmatmul.py",
                              "test_logmatmul_properties.py", "test_logmatmul_memory.py",
                              "test_properties.py"])


def _run_pytest_with_kernels(files: list[str]) -> None:
    code = ("import sys, pytest\n"
            f"code = pytest.main(['-q', '-x', '-p', 'no:cacheprovider', *{files!r}])\n"
            "assert 'logmm.compiled' in sys.modules   # the kernels were used\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900, cwd=TESTS, env={**os.environ, "LOGMM_COMPILED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1], proc.stdout[-500:]


def test_small_products_take_the_kernels_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("product", "batched_product"):
        kernel = getattr(compiled, name)

        def counted(*args: object, _kernel: object = kernel, _name: str = name) -> object:
            calls.append(_name)
            return _kernel(*args)                           # type: ignore[operator]
        monkeypatch.setattr(compiled, name, counted)
    A = np.log(np.full((1, 6), 1 / 6))
    B = np.log(np.full((6, 6), 1 / 6))
    set_compiled("on")
    logmm.logmatmulexp(A, B)                 # the report-free path
    logmm.logmatmulexp_report(A, B)
    logmm.logmatmulexp(np.stack([A] * 4), B)
    assert calls == ["product", "product", "batched_product"]
    logmm.logmatmulexp(np.zeros((300, 300)), np.zeros((300, 300)))    # large: numpy tiers
    set_compiled("off")
    logmm.logmatmulexp(A, B)
    assert calls == ["product", "product", "batched_product"]
