"""logeinsum against exact references: log (mpmath), max (brute force), real (np.einsum)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from logmm import adversarial
from logmm.einsum import contraction_info, logeinsum
from logmm.errors import InputError, UsageError

from exact_reference import error_bound, exact_logeinsum, max_abs_error

CASES = [
    ("bimd,bind->bimn", [(2, 2, 3, 4), (2, 2, 3, 4)]),
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("ij->", [(3, 5)]),
    ("ijk->i", [(2, 3, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
    ("ab,bc,cd,de->ae", [(2, 3), (3, 4), (4, 3), (3, 2)]),
]


def operands(shapes: list, dtype=np.float64, seed: int = 0, scale: float = 300.0) -> list:
    rng = np.random.default_rng(seed)
    ops = []
    for shape in shapes:
        op = rng.normal(scale=scale, size=shape)
        op[rng.random(shape) < 0.1] = -np.inf
        ops.append(op.astype(dtype))
    return ops


def bound(ops: list, dtype) -> float:
    k = max(op.size for op in ops)
    flat = [op.ravel() for op in ops]
    return error_bound(np.concatenate(flat)[None, :k], np.zeros((k, 1)), dtype) * len(ops)


@pytest.mark.parametrize(("subscripts", "shapes"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_semiring_matches_exact_reference(subscripts: str, shapes: list, dtype) -> None:
    ops = operands(shapes, dtype)
    got = logeinsum(subscripts, *ops)
    ref = exact_logeinsum(subscripts, *ops)
    assert got.dtype == dtype and got.shape == ref.shape
    assert max_abs_error(got, ref) <= bound(ops, dtype)


@pytest.mark.parametrize(("subscripts", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_max_semiring_matches_brute_force(subscripts: str, shapes: list) -> None:
    import opt_einsum

    ops = operands(shapes, seed=1)
    inputs, output, _ = opt_einsum.parser.parse_einsum_input((subscripts, *ops))
    terms = inputs.split(",")
    sizes = {}
    for term, op in zip(terms, ops, strict=True):
        sizes.update({c: max(sizes.get(c, 1), s) for c, s in zip(term, op.shape, strict=True)})
    summed = [c for c in sizes if c not in output]
    ref = np.full([sizes[c] for c in output], -np.inf)
    for out_index in itertools.product(*(range(sizes[c]) for c in output)):
        for sum_index in itertools.product(*(range(sizes[c]) for c in summed)):
            where = dict(zip(output, out_index, strict=True)) | dict(
                zip(summed, sum_index, strict=True))
            total = sum(op[tuple(where[c] if op.shape[i] > 1 else 0
                                 for i, c in enumerate(t))] for t, op in zip(terms, ops,
                                                                              strict=True))
            ref[out_index] = max(ref[out_index], total)
    got = logeinsum(subscripts, *ops, semiring="max")
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("subscripts", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_real_semiring_is_einsum(subscripts: str, shapes: list) -> None:
    rng = np.random.default_rng(2)
    ops = [rng.normal(size=s) for s in shapes]
    np.testing.assert_allclose(logeinsum(subscripts, *ops, semiring="real"),
                               np.einsum(subscripts, *ops), rtol=1e-12, atol=1e-12)


def test_public_counterexample_inside_a_larger_contraction() -> None:
    A, B, expected = adversarial.counterexamples()[1]
    # batch the 1x2 @ 2x1 counterexample three times with a harmless extra label
    A3 = np.stack([A, A - 10.0, A + 5.0])          # (3, 1, 2)
    B3 = np.stack([B, B, B])                       # (3, 2, 1)
    got = logeinsum("bij,bjk->bik", A3, B3)
    np.testing.assert_allclose(got[:, 0, 0], expected[0, 0] + np.array([0.0, -10.0, 5.0]),
                               rtol=0, atol=1e-12)
    chained = logeinsum("ij,jk,kl->il", A, B, np.zeros((1, 3)))
    np.testing.assert_allclose(chained, np.full((1, 3), expected[0, 0]), rtol=0, atol=1e-12)


def test_empty_dimensions() -> None:
    assert np.all(logeinsum("ij,jk->ik", np.zeros((2, 0)), np.zeros((0, 3))) == -np.inf)
    assert logeinsum("ij,jk->ik", np.zeros((0, 2)), np.zeros((2, 3))).shape == (0, 3)
    assert float(logeinsum("i->", np.zeros(0))) == -np.inf


def test_nan_and_neg_inf_conventions() -> None:
    A = np.array([[0.0, np.nan], [0.0, 0.0]])
    B = np.full((2, 2), -np.inf)
    got = logeinsum("ij,jk->ik", A, B)
    assert np.isnan(got[0]).all() and (got[1] == -np.inf).all()


def test_errors() -> None:
    with pytest.raises(UsageError, match="names 2 operands but 1 were given"):
        logeinsum("ij,jk->ik", np.zeros((2, 2)))
    with pytest.raises(UsageError, match="bad einsum subscripts|appear in no operand"):
        logeinsum("ij->iz", np.zeros((2, 2)))
    with pytest.raises(InputError, match="label 'j' has size 3 in operand 1 and 4 in operand 2"):
        logeinsum("ij,jk->ik", np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(InputError, match="has 2 dimensions but its subscripts 'ijk'"):
        logeinsum("ijk->i", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\+inf"):
        logeinsum("ij,jk->ik", np.full((2, 2), np.inf), np.zeros((2, 2)))
    with pytest.raises(UsageError, match="unknown semiring"):
        logeinsum("ij->i", np.zeros((2, 2)), semiring="tropical")


def test_contraction_info_describes_the_path() -> None:
    info = contraction_info("ij,jk,kl->il", (100, 5), (5, 100), (100, 3))
    assert "Optimized FLOP count" in info and "ij,jk,kl->il" in info


def test_real_semiring_with_infinities_warns_nothing() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = logeinsum("ij,jk->ik", np.array([[np.inf, 1.0]]), np.array([[0.0], [2.0]]),
                        semiring="real")
    assert np.isnan(got[0, 0])


@pytest.mark.parametrize("semiring", ["log", "max"])
def test_integer_operands_compute_in_float64(semiring: str) -> None:
    """Integers are log-values too (as in logmatmulexp): they compute in float64 instead
    of failing in the +inf check."""
    x = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    y = np.arange(8, dtype=np.uint8).reshape(4, 2)
    got = logeinsum("ij,jk->ik", x, y, semiring=semiring)
    want = logeinsum("ij,jk->ik", x.astype(np.float64), y.astype(np.float64),
                     semiring=semiring)
    assert got.dtype == np.float64 and np.array_equal(got, want)
