"""The small-product path (one block, no thread pool, no errstate) keeps every check.

Small 2-D products take ``_lean_product`` when every row maximum of A and column maximum
of B is finite; everything else (dead lines, all-NaN lines, +inf, batches) takes the
general path. Both are compared here against mpmath references on the same inputs, and
the refusals and warnings contract is checked on inputs small enough for the lean path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import logmm
from logmm.errors import InputError

from exact_reference import error_bound, exact_logmatmul


def _cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(15)
    A = np.log(rng.dirichlet(np.ones(8), size=3))
    B = np.log(rng.dirichlet(np.ones(5), size=8))
    with_nan = A.copy()
    with_nan[1, 2] = np.nan
    with_neg_inf = B.copy()
    with_neg_inf[:4, 1] = -np.inf
    dead_row = A.copy()
    dead_row[0] = -np.inf
    far = A.copy()
    far[:, 0] = 900.0                    # rows peak where B's columns do not
    far_b = B.copy()
    far_b[1] = 900.0
    return [("plain", A, B), ("nan entry", with_nan, B), ("-inf entries", A, with_neg_inf),
            ("dead row", dead_row, B), ("needs repair", far - 1000 * (np.arange(8) == 0),
                                        far_b),
            ("1-D row", A[0], B), ("1x1x1", A[:1, :1], B[:1, :1]),
            ("underflowing factors", A - 1e3 * np.arange(8), B)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, A, B", _cases(), ids=[c[0] for c in _cases()])
def test_small_products_match_the_exact_reference(name: str, A: np.ndarray, B: np.ndarray,
                                                  dtype: type) -> None:
    A, B = A.astype(dtype), B.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C, report = logmm.logmatmulexp_report(A, B)
        batched = logmm.logmatmulexp(A[None], B[None])[0]     # the general (batched) path
    assert C.dtype == dtype
    ref = exact_logmatmul(np.atleast_2d(A), B).reshape(C.shape)
    assert np.array_equal(np.isnan(C), np.isnan(ref))
    assert np.array_equal(np.isneginf(C), np.isneginf(ref))
    finite = np.isfinite(ref)
    bound = error_bound(np.atleast_2d(A), B, dtype)
    assert np.all(np.abs(C[finite] - ref[finite]) <= bound), name
    assert np.allclose(batched.reshape(C.shape)[finite], C[finite], rtol=0,
                       atol=2 * bound)
    assert report.entries == C.size and report.fast + report.repaired == C.size


def test_repaired_entries_are_reported_on_the_lean_path() -> None:
    A = np.array([[-500.0, 900.0]])
    B = np.array([[900.0], [-500.0]])
    C, report = logmm.logmatmulexp_report(A, B)
    assert C[0, 0] == pytest.approx(400.0 + np.log(2.0), abs=1e-12)
    assert report.repaired == 1 and report.fast == 0
    _, fast = logmm.logmatmulexp_report(A, B, method="fast")
    assert fast.unchecked == 1


@pytest.mark.parametrize("bad", [np.inf, 1e308])
@pytest.mark.parametrize("side", ["A", "B"])
def test_small_products_refuse_plus_inf(bad: float, side: str) -> None:
    A = np.zeros((1, 4))
    B = np.zeros((4, 3))
    (A if side == "A" else B)[0, 1] = bad
    with pytest.raises(InputError, match=f"^{side} (contains \\+inf|holds)"):
        logmm.logmatmulexp(A, B)


@pytest.mark.parametrize("rows", [1, 600, 5000])
def test_plus_inf_is_refused_beside_an_all_nan_line(rows: int) -> None:
    # an all-NaN row has a NaN maximum; it must not hide another row's +inf
    A = np.array([[np.nan, np.nan], [np.inf, 0.0]] * rows)
    with pytest.raises(InputError, match=r"^A contains \+inf"):
        logmm.logmatmulexp(A, np.zeros((2, 2)))


def test_small_products_under_a_raising_errstate() -> None:
    # exp underflows on these factors: the caller's np.seterr(all="raise") must not leak
    # into a FloatingPointError (the lean path falls back to the general one)
    A = np.array([[0.0, -800.0, -np.inf]])
    B = np.array([[0.0], [-5.0], [1.0]])
    with np.errstate(all="raise"):
        C = logmm.logmatmulexp(A, B)
    assert C[0, 0] == pytest.approx(np.logaddexp(0.0, -805.0), abs=1e-15)


@pytest.mark.parametrize("n, k, m", [(7, 5, 3), (8, 8, 8), (3, 9, 2)])
def test_many_small_products_match_one_at_a_time(n: int, k: int, m: int) -> None:
    # a batch large enough for the short-line maxima (odd sizes too), with NaN, -inf and
    # dead lines, against the same products taken one at a time
    rng = np.random.default_rng(n * k * m)
    A = np.log(rng.dirichlet(np.ones(k), size=(3000, n)))
    B = np.log(rng.dirichlet(np.ones(m), size=(3000, k)))
    A[rng.random(A.shape) < 0.05] = -np.inf
    B[rng.random(B.shape) < 0.05] = np.nan
    A[5, 1] = -np.inf                    # a dead row
    B[7, :, 0] = np.nan                  # an all-NaN column
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C = logmm.logmatmulexp(A, B)
        for i in [0, 5, 7, 1234, 2999]:
            one = logmm.logmatmulexp(A[i], B[i])
            assert np.array_equal(np.isnan(C[i]), np.isnan(one))
            assert np.array_equal(np.isneginf(C[i]), np.isneginf(one))
            np.testing.assert_allclose(C[i][np.isfinite(one)], one[np.isfinite(one)],
                                       rtol=0, atol=1e-13)
    B[9, 2, 1] = np.inf
    with pytest.raises(InputError, match=r"^B contains \+inf"):
        logmm.logmatmulexp(A, B)


def test_compiled_mode_without_numba_runs_the_numpy_tiers() -> None:
    """``LOGMM_COMPILED=1`` on an install without numba (no ``[fast]`` extra): the numpy
    tiers run, with the same bytes as mode off, and nothing fails."""
    code = ("import sys; sys.modules['numba'] = None\n"       # import numba -> ImportError
            "import json, numpy as np, logmm\n"
            "rng = np.random.default_rng(5)\n"
            "a = np.log(rng.random((3, 6))); b = np.log(rng.random((6, 4)))\n"
            "on = logmm.logmatmulexp(a, b); batch = logmm.logmatmulexp(a[None], b[None])\n"
            "logmm.set_compiled('off')\n"
            "off = logmm.logmatmulexp(a, b)\n"
            "print(json.dumps([on.tobytes() == off.tobytes(),\n"
            "                  batch[0].tobytes() == off.tobytes(),\n"
            "                  'logmm.compiled' in sys.modules]))\n")
    env = dict(os.environ, LOGMM_COMPILED="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [True, True, False]
