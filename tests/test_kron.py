"""kron_matvec and block_project against explicit np.kron, dense and sparse, both semirings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from logmm import logmatmulexp
from logmm.errors import InputError
from logmm.kron import Identity, block_project, kron_matvec


def explicit(factors: list) -> np.ndarray:
    K = np.ones((1, 1))
    for f in factors:
        K = np.kron(K, np.eye(f.n) if isinstance(f, Identity) else f)
    return K


def make_factors(spec: list, rng: np.random.Generator, dtype=np.float64) -> list:
    return [Identity(s) if isinstance(s, int) else rng.normal(size=s).astype(dtype)
            for s in spec]


SPECS = [
    [(3, 5)],
    [(3, 2), (4, 5)],
    [(2, 3), 4, (5, 2)],
    [3, (2, 4)],
    [(2, 2), (3, 3), (2, 4), (1, 3)],
    [(4, 4), 2],
    [2, 3],
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_matches_explicit_kron(spec: list, dtype) -> None:
    rng = np.random.default_rng(0)
    factors = make_factors(spec, rng, dtype)
    K = explicit(factors)
    X = rng.normal(size=(6, K.shape[1])).astype(dtype)
    got = kron_matvec(factors, X)
    assert got.dtype == dtype and got.shape == (6, K.shape[0])
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, X @ K.T, rtol=tol, atol=tol)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("density", [0.06, 0.3])      # sparse product; densified
def test_sparse_matches_explicit_kron(spec: list, fmt: str, density: float) -> None:
    rng = np.random.default_rng(1)
    factors = make_factors(spec, rng)
    K = explicit(factors)
    X = sp.random(9, K.shape[1], density=density, random_state=2, format=fmt)
    got = kron_matvec(factors, X)
    np.testing.assert_allclose(got, X.toarray() @ K.T, rtol=1e-12, atol=1e-12)


def test_sparse_rows_stay_sparse_in_the_first_mode_product(monkeypatch) -> None:
    """The real-semiring sparse path never densifies X (toarray/todense are not called)."""
    rng = np.random.default_rng(2)
    X = sp.random(20, 60, density=0.05, random_state=3, format="csr")
    W = rng.normal(size=(4, 6))
    expected = X.toarray() @ np.kron(np.eye(10), W).T

    def refuse(*args, **kwargs):
        raise AssertionError("densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sp.csr_matrix, "todense", refuse)
    np.testing.assert_allclose(block_project(X, W, 10), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_log_semiring_is_the_log_of_the_real_result(spec: list) -> None:
    rng = np.random.default_rng(3)
    positive = [f if isinstance(f, Identity) else np.exp(rng.normal(size=f.shape))
                for f in make_factors(spec, rng)]
    K = explicit(positive)
    X = np.exp(rng.normal(size=(5, K.shape[1])))
    logs = [f if isinstance(f, Identity) else np.log(f) for f in positive]
    got = kron_matvec(logs, np.log(X), semiring="log")
    np.testing.assert_allclose(got, np.log(X @ K.T), rtol=1e-12, atol=1e-12)


def test_log_semiring_is_stable_where_exp_overflows() -> None:
    """Log-values of +-800: the real route overflows; the log route matches logmatmulexp."""
    rng = np.random.default_rng(4)
    F1, F2 = rng.normal(scale=800, size=(2, 3)), rng.normal(scale=800, size=(3, 2))
    X = rng.normal(scale=800, size=(4, 6))
    # the explicit log-space Kronecker operator: entries add
    LK = (F1[:, None, :, None] + F2[None, :, None, :]).reshape(6, 6)
    got = kron_matvec([F1, F2], X, semiring="log")
    np.testing.assert_allclose(got, logmatmulexp(X, LK.T), rtol=1e-13, atol=1e-9)
    assert np.isfinite(got).all()


def test_sparse_log_semiring_treats_absent_entries_as_log_zero() -> None:
    rng = np.random.default_rng(5)
    W = rng.normal(size=(3, 4))
    X = sp.random(5, 8, density=0.3, random_state=6, format="csr")
    dense = np.full(X.shape, -np.inf)
    dense[X.nonzero()] = X.data
    got = block_project(X, W, 2, semiring="log")
    np.testing.assert_allclose(got, block_project(dense, W, 2, semiring="log"), rtol=1e-13)


def test_block_project_is_the_identity_kronecker_case() -> None:
    rng = np.random.default_rng(6)
    X = rng.normal(size=(7, 30 * 8)).astype(np.float32)
    W = rng.normal(size=(5, 8)).astype(np.float32)
    got = block_project(X, W, 30)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, X @ np.kron(np.eye(30), W).T, rtol=2e-5, atol=2e-5)


def test_errors_are_one_clear_line() -> None:
    X = np.zeros((2, 12))
    with pytest.raises(InputError, match="does not divide X's width 12"):
        block_project(X, np.zeros((2, 3)), 5)
    with pytest.raises(InputError, match="must have 3 columns"):
        block_project(X, np.zeros((2, 4)), 4)
    with pytest.raises(InputError, match=r"widths 3 x 5 multiply to 15"):
        kron_matvec([np.zeros((1, 3)), np.zeros((1, 5))], X)
    with pytest.raises(InputError, match="unknown semiring"):
        kron_matvec([np.zeros((1, 12))], X, semiring="tropical")
    with pytest.raises(InputError, match="at least one factor"):
        kron_matvec([], X)
    with pytest.raises(InputError, match="at least 1"):
        Identity(0)
    with pytest.raises(ValueError, match=r"\+inf"):
        kron_matvec([np.full((1, 12), np.inf)], X, semiring="log")


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=4),
       st.lists(st.booleans(), min_size=4, max_size=4), st.integers(0, 2**31))
def test_mixed_product_identity(shapes, identity, seed) -> None:
    """kron_matvec agrees with the explicit operator for any mix of factors (hypothesis)."""
    rng = np.random.default_rng(seed)
    factors = [Identity(n) if identity[i] else rng.normal(size=(m, n))
               for i, (m, n) in enumerate(shapes)]
    K = explicit(factors)
    X = rng.normal(size=(3, math.prod(f.shape[1] for f in factors)))
    np.testing.assert_allclose(kron_matvec(factors, X), X @ K.T, rtol=1e-10, atol=1e-10)


def test_infinities_in_the_real_semiring_give_nan_without_warnings() -> None:
    import warnings

    X = np.array([[np.inf, 1.0, 2.0, 3.0]])
    W = np.array([[0.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = block_project(X, W, 2)
    assert np.isnan(got[0, 0]) and got[0, 1] == 3.0      # inf * 0 is NaN, as in numpy


# ---------------------------------------------------------------- sparse log-semiring edges
def _exact_log_sum(values: list[float]) -> float:
    from exact_reference import exact_logsumexp
    return exact_logsumexp(values)


@pytest.mark.parametrize("fmt", ["csr", "coo", "csc"])
def test_sparse_log_all_identity_absent_entries_are_log_zero(fmt: str, monkeypatch) -> None:
    X = sp.csr_matrix(np.array([[0.5, 0, 0], [0, 0, -2.0]])).asformat(fmt)
    # the all-identity shortcut must not densify X by toarray (its absent entries are 0)
    monkeypatch.setattr(type(X), "toarray", lambda *a, **k: pytest.fail("densified X"))
    got = kron_matvec([Identity(3)], X, semiring="log")
    assert got.tolist() == [[0.5, -np.inf, -np.inf], [-np.inf, -np.inf, -2.0]]
    got32 = kron_matvec([Identity(1), Identity(3)], X.astype(np.float32), semiring="log")
    assert got32.dtype == np.float32 and np.isneginf(got32[0, 1:]).all()


@pytest.mark.parametrize("sparse", [False, True])
def test_log_all_identity_refuses_posinf(sparse: bool) -> None:
    X = np.array([[np.inf, 1.0, 0.0]])
    with pytest.raises(InputError, match=r"^X contains \+inf"):
        kron_matvec([Identity(3)], sp.csr_matrix(X) if sparse else X, semiring="log")
    assert kron_matvec([Identity(3)], X)[0, 0] == np.inf        # the real semiring: a number


def test_sparse_log_duplicates_log_add_whatever_the_storage() -> None:
    # CSR with a repeated column index (non-canonical) and the same entries as COO
    data, cols = np.array([30.0, 60.0, -1.0, 2.0, -np.inf]), np.array([0, 0, 2, 2, 1])
    csr = sp.csr_matrix((data, cols, np.array([0, 2, 5])), shape=(2, 3))
    coo = sp.coo_matrix((data, (np.array([0, 0, 1, 1, 1]), cols)), shape=(2, 3))
    F = np.array([[0.0, 0.0, 0.0], [-1.0, 5.0, -np.inf]])
    exact = np.array([[_exact_log_sum([30.0 + F[k, 0], 60.0 + F[k, 0]]) for k in range(2)],
                      [_exact_log_sum([-1.0 + F[k, 2], 2.0 + F[k, 2]]) if np.isfinite(F[k, 2])
                       else -np.inf for k in range(2)]])
    for factors in ([F], [Identity(3)]):
        a = kron_matvec(factors, csr, semiring="log")
        b = kron_matvec(factors, coo, semiring="log")
        assert np.array_equal(a, b)
        if factors[0] is F:
            np.testing.assert_allclose(a, exact, rtol=4e-16)
    ident = kron_matvec([Identity(3)], csr, semiring="log")
    assert ident[0, 0] == pytest.approx(_exact_log_sum([30.0, 60.0]), rel=2e-16)
    assert ident[0, 0] != 60.0 and np.isneginf(ident[1, 1])
    # the real semiring sums duplicates (scipy's rule) in both storages
    np.testing.assert_allclose(kron_matvec([F[:1]], csr), kron_matvec([F[:1]], coo))


def test_project_cli_sparse_log_identity_only(tmp_path) -> None:
    from cli_run import one_error_line, run_logmm
    X = sp.csr_matrix(np.array([[0.5, 0, 0, 0], [0, 0, 0, -3.0]]))
    sp.save_npz(tmp_path / "x.npz", X)
    proc = run_logmm("project", tmp_path / "x.npz", "--identity", "2", "--identity", "2",
                     "--semiring", "log", "-o", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "y.npy").tolist() == [[0.5, -np.inf, -np.inf, -np.inf],
                                                    [-np.inf, -np.inf, -np.inf, -3.0]]
    X.data[0] = np.inf
    sp.save_npz(tmp_path / "bad.npz", X)
    proc = run_logmm("project", tmp_path / "bad.npz", "--identity", "4",
                     "--semiring", "log", "-o", tmp_path / "z.npy")
    line = one_error_line(proc, codes=(1,))
    assert "bad.npz, rows 0:2) contains +inf" in line and not (tmp_path / "z.npy").exists()
