"""Property tests (hypothesis) for the engines beyond the kernel: logeinsum, log_chain,
log_power, kron_matvec / block_project in the log semiring, diag_gaussian_logpdf.

The kernel's own properties (exact agreement, row/column shifts, contraction order,
float32 against float64, NaN) are in test_logmatmul_properties.py; here each engine gets

- shift equivariance: constants added to the operands come out in the result;
- associativity / composition: the same product computed in another order or grouping;
- the Kronecker mixed-product identity (F1 ⊗ F2)(G1 ⊗ G2) = F1G1 ⊗ F2G2, log semiring;
- agreement with the exact mpmath references of exact_reference.py;
- float32 against float64: the float32 result within the float32 bound of the float64 one.

Tolerances: a log-space product is 1-Lipschitz in each operand (max norm), so the errors
of a chain of products add up; each product contributes at most the kernel's bound
4u(K + max|A| + max|B|), and an intermediate's magnitude is at most the sum of its
factors' magnitudes plus log of the contracted sizes. ``chain_bound`` is that sum.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from logmm import Identity, diag_gaussian_logpdf, kron_matvec, logmatmulexp
from logmm.chain import log_chain, log_power
from logmm.einsum import logeinsum

from exact_reference import exact_logeinsum, exact_logmatmul, max_abs_error

NEG_INF = float("-inf")


def finite_max(x: np.ndarray) -> float:
    x = np.abs(np.asarray(x, dtype=np.float64))
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else 0.0


def chain_bound(ops: list[np.ndarray], dtype: type) -> float:
    """Sum over the len(ops) - 1 products of 4u(K + |left| + |right|), bounding every
    intermediate by the sum of all operands' magnitudes and logs of all sizes."""
    u = float(np.finfo(dtype).eps) / 2
    size = max(max(op.shape) for op in ops)
    magnitude = sum(finite_max(op) for op in ops) + len(ops) * math.log(size + 1)
    return max(1, len(ops) - 1) * 4 * u * (size + 2 * magnitude)


def rounding(result: np.ndarray, dtype: type) -> float:
    """What rounding a float64 result to ``dtype`` can cost."""
    return float(np.finfo(dtype).eps) * finite_max(result)


def log_values(dtype: type = np.float64, low: float = -300, high: float = 300):
    width = 32 if dtype == np.float32 else 64
    finite = st.floats(low, high, width=width)
    return st.one_of(finite, finite, finite, st.just(NEG_INF))


def log_matrix(shape: tuple[int, ...], dtype: type = np.float64):
    return arrays(dtype, shape, elements=log_values(dtype))


@st.composite
def chains(draw: st.DrawFn, dtype: type = np.float64, max_len: int = 4) -> list[np.ndarray]:
    """2 to ``max_len`` log-valued matrices whose shapes chain."""
    count = draw(st.integers(2, max_len))
    dims = draw(st.lists(st.integers(1, 5), min_size=count + 1, max_size=count + 1))
    return [draw(log_matrix((dims[i], dims[i + 1]), dtype)) for i in range(count)]


# ----------------------------------------------------------------------------- logeinsum


@given(chains(max_len=3), st.data())
def test_logeinsum_chain_matches_exact_and_shifts(ops: list[np.ndarray],
                                                  data: st.DataObject) -> None:
    """'ab,bc,cd->ad' (or shorter) against mpmath; a constant per row of the first operand
    and per column of the last comes out in the rows and columns of the result."""
    letters = "abcde"
    subscripts = ",".join(letters[i:i + 2] for i in range(len(ops)))
    subscripts += f"->a{letters[len(ops)]}"
    got = logeinsum(subscripts, *ops)
    exact = exact_logeinsum(subscripts, *ops)
    assert max_abs_error(got, exact) <= chain_bound(ops, np.float64)

    r = np.array(data.draw(st.lists(st.floats(-100, 100), min_size=ops[0].shape[0],
                                    max_size=ops[0].shape[0])))
    c = np.array(data.draw(st.lists(st.floats(-100, 100), min_size=ops[-1].shape[1],
                                    max_size=ops[-1].shape[1])))
    shifted_ops = [ops[0] + r[:, None], *ops[1:-1], ops[-1] + c[None, :]] if len(ops) > 1 \
        else [ops[0] + r[:, None] + c[None, :]]
    shifted = logeinsum(subscripts, *shifted_ops)
    assert max_abs_error(shifted, exact + r[:, None] + c[None, :]) <= chain_bound(
        shifted_ops, np.float64) + 1e-13 * (finite_max(r) + finite_max(c))


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.data())
def test_logeinsum_batched_product_is_the_kernel_per_batch(b: int, n: int, k: int, m: int,
                                                           data: st.DataObject) -> None:
    x = data.draw(log_matrix((b, n, k)))
    y = data.draw(log_matrix((b, k, m)))
    got = logeinsum("bij,bjk->bik", x, y)
    for i in range(b):
        assert max_abs_error(got[i], exact_logmatmul(x[i], y[i])) <= chain_bound(
            [x[i], y[i]], np.float64)


@given(chains(np.float32, max_len=3))
def test_logeinsum_float32_agrees_with_float64(ops: list[np.ndarray]) -> None:
    subscripts = {2: "ab,bc->ac", 3: "ab,bc,cd->ad"}[len(ops)]
    got32 = logeinsum(subscripts, *ops)
    got64 = logeinsum(subscripts, *(op.astype(np.float64) for op in ops))
    assert got32.dtype == np.float32
    assert max_abs_error(got32, got64) <= chain_bound(ops, np.float32) + rounding(got64,
                                                                                  np.float32)


# ----------------------------------------------------------------------------- chains, powers


@given(chains(max_len=4))
def test_log_chain_is_associative(ops: list[np.ndarray]) -> None:
    """The cheapest order, left to right and right to left agree with each other and with
    the exact product."""
    best = log_chain(ops)
    left = ops[0]
    for op in ops[1:]:
        left = logmatmulexp(left, op)
    right = ops[-1]
    for op in reversed(ops[:-1]):
        right = logmatmulexp(op, right)
    letters = "abcde"
    subscripts = ",".join(letters[i:i + 2] for i in range(len(ops))) + f"->a{letters[len(ops)]}"
    exact = exact_logeinsum(subscripts, *ops)
    tol = chain_bound(ops, np.float64)
    for got in (best, left, right):
        assert np.array_equal(np.isneginf(got), np.isneginf(exact))
        assert max_abs_error(got, exact) <= tol


@given(chains(np.float32, max_len=4))
def test_log_chain_float32_agrees_with_float64(ops: list[np.ndarray]) -> None:
    got32 = log_chain(ops)
    got64 = log_chain([op.astype(np.float64) for op in ops])
    assert got32.dtype == np.float32
    assert max_abs_error(got32, got64) <= chain_bound(ops, np.float32) + rounding(got64,
                                                                                  np.float32)


@given(st.integers(1, 4), st.integers(0, 9), st.integers(0, 9), st.data())
def test_log_power_adds_exponents(n: int, p: int, q: int, data: st.DataObject) -> None:
    """P^(p+q) = P^p P^q, and a constant added to P adds (p+q) times it."""
    P = data.draw(arrays(np.float64, (n, n), elements=log_values(low=-20, high=20)))
    whole = log_power(P, p + q)
    parts = logmatmulexp(log_power(P, p), log_power(P, q))
    tol = chain_bound([P] * max(2, p + q), np.float64) * 2
    assert np.array_equal(np.isneginf(whole), np.isneginf(parts))
    assert max_abs_error(whole, parts) <= tol
    shift = data.draw(st.floats(-5, 5))
    assert max_abs_error(log_power(P + shift, p + q), whole + (p + q) * shift) <= (
        tol + chain_bound([P + shift] * max(2, p + q), np.float64) + 1e-13 * (p + q))


# ----------------------------------------------------------------------------- Kronecker


def log_kron(F: np.ndarray, G: np.ndarray) -> np.ndarray:
    """The log-semiring Kronecker product: (F ⊗ G)[i m2 + k, j n2 + l] = F[i,j] + G[k,l]."""
    m1, n1 = F.shape
    m2, n2 = G.shape
    return (F[:, None, :, None] + G[None, :, None, :]).reshape(m1 * m2, n1 * n2)


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=2, max_size=2),
       st.integers(1, 3), st.data())
def test_log_kron_matches_the_explicit_operator(shapes, rows: int, data: st.DataObject) -> None:
    (m1, n1), (m2, n2) = shapes
    F1 = data.draw(log_matrix((m1, n1)))
    F2 = data.draw(log_matrix((m2, n2)))
    X = data.draw(log_matrix((rows, n1 * n2)))
    got = kron_matvec([F1, F2], X, semiring="log")
    exact = exact_logmatmul(X, log_kron(F1, F2).T)
    assert max_abs_error(got, exact) <= chain_bound([X, F1, F2], np.float64)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 3), st.data())
def test_log_kron_mixed_product_identity(p1: int, q1: int, r1: int, p2: int, q2: int, r2: int,
                                         data: st.DataObject) -> None:
    """Rows times (G1 ⊗ G2)ᵀ, then times (F1 ⊗ F2)ᵀ, equal rows times (F1G1 ⊗ F2G2)ᵀ: in
    the log semiring, with log-space products F1G1 = logmatmulexp(F1, G1)."""
    F1, G1 = data.draw(log_matrix((p1, q1))), data.draw(log_matrix((q1, r1)))
    F2, G2 = data.draw(log_matrix((p2, q2))), data.draw(log_matrix((q2, r2)))
    X = data.draw(log_matrix((2, r1 * r2)))
    two_steps = kron_matvec([F1, F2], kron_matvec([G1, G2], X, semiring="log"),
                            semiring="log")
    one_step = kron_matvec([logmatmulexp(F1, G1), logmatmulexp(F2, G2)], X, semiring="log")
    tol = 2 * chain_bound([X, F1, G1, F2, G2], np.float64)
    assert np.array_equal(np.isneginf(two_steps), np.isneginf(one_step))
    assert max_abs_error(two_steps, one_step) <= tol


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.data())
def test_log_block_project_shifts_and_float32(blocks: int, p: int, d: int,
                                              data: st.DataObject) -> None:
    """A constant per row of X comes out in that row; float32 within its bound of float64."""
    X = data.draw(log_matrix((3, blocks * d), np.float32))
    W = data.draw(log_matrix((p, d), np.float32))
    got32 = kron_matvec([Identity(blocks), W], X, semiring="log")
    got64 = kron_matvec([Identity(blocks), W.astype(np.float64)], X.astype(np.float64),
                        semiring="log")
    assert got32.dtype == np.float32
    assert max_abs_error(got32, got64) <= chain_bound([X, W], np.float32) + rounding(
        got64, np.float32)
    r = np.array(data.draw(st.lists(st.floats(-100, 100), min_size=3, max_size=3)))
    shifted = kron_matvec([Identity(blocks), W.astype(np.float64)],
                          X.astype(np.float64) + r[:, None], semiring="log")
    assert max_abs_error(shifted, got64 + r[:, None]) <= 2 * chain_bound(
        [X.astype(np.float64) + r[:, None], W], np.float64)


# ----------------------------------------------------------------------------- Gaussian


def exact_logpdf(x: float, mu: float, sigma: float) -> float:
    import mpmath

    with mpmath.workdps(40):
        z = (mpmath.mpf(x) - mpmath.mpf(mu)) / mpmath.mpf(sigma)
        return float(-z * z / 2 - mpmath.log(mpmath.mpf(sigma))
                     - mpmath.log(2 * mpmath.pi) / 2)


finite_values = st.floats(-1e3, 1e3)
scales = st.floats(1e-3, 1e3)


@given(st.lists(st.tuples(finite_values, finite_values, scales), min_size=1, max_size=8))
def test_logpdf_matches_exact(triples: list) -> None:
    x, mu, sigma = (np.array(v) for v in zip(*triples, strict=True))
    got = diag_gaussian_logpdf(x, mu, sigma=sigma)
    for value, (xi, mi, si) in zip(got, triples, strict=True):
        exact = exact_logpdf(xi, mi, si)
        assert abs(value - exact) <= 8 * np.finfo(np.float64).eps * (abs(exact) + 1)


@given(st.lists(st.tuples(finite_values, finite_values, scales), min_size=1, max_size=8),
       st.floats(-1e3, 1e3))
def test_logpdf_is_invariant_when_x_and_mu_shift_together(triples: list, shift: float) -> None:
    x, mu, sigma = (np.array(v) for v in zip(*triples, strict=True))
    got = diag_gaussian_logpdf(x, mu, sigma=sigma, reduce="row")
    moved = diag_gaussian_logpdf(x + shift, mu + shift, sigma=sigma, reduce="row")
    # x + shift and mu + shift are rounded: each moves by up to u·|value|, so z by that / sigma
    u = np.finfo(np.float64).eps / 2
    dz = 2 * u * (np.abs(x) + np.abs(mu) + 2 * abs(shift)) / sigma
    z = np.abs(x - mu) / sigma
    tol = float(np.sum(dz * (z + dz))) + 8 * u * float(np.sum(np.abs(
        diag_gaussian_logpdf(x, mu, sigma=sigma)) + 1))
    assert abs(float(moved) - float(got)) <= tol


@given(arrays(np.float32, (3, 4), elements=st.floats(-100, 100, width=32)),
       arrays(np.float32, (4,), elements=st.floats(-100, 100, width=32)),
       arrays(np.float32, (4,), elements=st.floats(-20, 20, width=32)))
def test_logpdf_float32_agrees_with_float64(x: np.ndarray, mu: np.ndarray,
                                            rho: np.ndarray) -> None:
    got32 = diag_gaussian_logpdf(x, mu, rho=rho)
    got64 = diag_gaussian_logpdf(x.astype(np.float64), mu.astype(np.float64),
                                 rho=rho.astype(np.float64))
    assert got32.dtype == np.float32
    # float32 relative error of a handful of operations on z = (x - mu)/sigma and log sigma
    eps = float(np.finfo(np.float32).eps)
    rho64 = rho.astype(np.float64)
    sigma = np.log1p(np.exp(-np.abs(rho64))) + np.maximum(rho64, 0)
    z = np.abs(x.astype(np.float64) - mu) / sigma
    assert np.all(np.abs(got32 - got64) <= 16 * eps * (np.abs(got64) + z * z + 1))
