"""Log-space chains and powers: :func:`log_chain`, :func:`chain_order`, :func:`log_power`
and the file engines :func:`chain_files`, :func:`power_file`."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

import logmm.chain as chain_mod
from logmm import logmatmulexp
from logmm.chain import (
    chain_order,
    log_chain,
    log_identity,
    log_power,
    power_schedule,
)
from logmm.chain_files import chain_files, power_file
from logmm.errors import InputError, OutputExistsError, UsageError

RNG = np.random.default_rng(5)


def log_stochastic(rows: int, cols: int, scale: float = 3.0, seed: int = 0) -> np.ndarray:
    """log of a random row-stochastic matrix (rows of logits of ``scale``, normalised)."""
    logits = scale * np.random.default_rng(seed).standard_normal((rows, cols))
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


def sequential(matrices: Sequence[np.ndarray], reverse: bool = False) -> np.ndarray:
    """Left-to-right (or right-to-left) exact products: the reference for chains."""
    if reverse:
        return functools.reduce(lambda acc, m: logmatmulexp(m, acc, method="exact"),
                                list(matrices)[-2::-1], matrices[-1])
    return functools.reduce(lambda acc, m: logmatmulexp(acc, m, method="exact"),
                            matrices[1:], matrices[0])


def repeated(P: np.ndarray, steps: int) -> np.ndarray:
    """``steps - 1`` sequential exact products (the log identity for 0)."""
    if steps == 0:
        return log_identity(len(P), P.dtype)
    return sequential([P] * steps)


# ----------------------------------------------------------------------------- chain_order


def brute_force(dims: Sequence[int]) -> int:
    """Least multiply-adds over every parenthesisation, by exhaustive recursion."""

    @functools.cache
    def best(i: int, j: int) -> int:
        if i == j:
            return 0
        return min(best(i, s) + best(s + 1, j) + dims[i] * dims[s + 1] * dims[j + 1]
                   for s in range(i, j))

    return best(0, len(dims) - 2)


def all_orders(i: int, j: int) -> list[str]:
    """Every parenthesisation of M(i+1) … M(j+1), as strings."""
    if i == j:
        return [f"M{i + 1}"]
    return [f"({left} {right})" for s in range(i, j)
            for left in all_orders(i, s) for right in all_orders(s + 1, j)]


def cost_of(order: str, dims: Sequence[int]) -> int:
    """Multiply-adds of a parenthesisation string ``((M1 M2) M3)`` on ``dims``."""
    tokens = order.replace("(", " ( ").replace(")", " ) ").split()
    pos = 0

    def parse() -> tuple[int, int, int]:          # (rows, cols, cost)
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token != "(":
            i = int(token[1:]) - 1
            return dims[i], dims[i + 1], 0
        r, k, c1 = parse()
        k2, c, c2 = parse()
        assert k == k2 and tokens[pos] == ")"
        pos += 1
        return r, c, c1 + c2 + r * k * c

    result = parse()
    assert pos == len(tokens)
    return result[2]


def test_chain_order_textbook() -> None:
    # CLRS 15.2: dims 30, 35, 15, 5, 10, 20, 25
    dims = [30, 35, 15, 5, 10, 20, 25]
    cost, order = chain_order(list(zip(dims[:-1], dims[1:], strict=True)))
    assert cost == 15125
    assert order == "((M1 (M2 M3)) ((M4 M5) M6))"
    assert chain_order([(40, 30), (30, 50), (50, 5)]) == (13500, "(M1 (M2 M3))")
    assert chain_order([(3, 4)]) == (0, "M1")
    assert chain_order([(3, 4), (4, 2)]) == (24, "(M1 M2)")


@pytest.mark.parametrize("count", [3, 4, 5])
@pytest.mark.parametrize("seed", range(8))
def test_chain_order_against_brute_force(count: int, seed: int) -> None:
    dims = [int(d) for d in np.random.default_rng(seed * 10 + count).integers(1, 60, count + 1)]
    shapes = list(zip(dims[:-1], dims[1:], strict=True))
    cost, order = chain_order(shapes)
    orders = all_orders(0, count - 1)
    assert order in orders
    assert cost == brute_force(dims) == min(cost_of(o, dims) for o in orders)
    assert cost_of(order, dims) == cost


def test_chain_order_errors() -> None:
    with pytest.raises(InputError, match=r"M2 is 4×5 and M3 is 6×2; M2's columns \(5\)"):
        chain_order([(3, 4), (4, 5), (6, 2)])
    with pytest.raises(InputError, match="3-D"):
        chain_order([(3, 4), (4, 5, 1)])
    with pytest.raises(UsageError, match="at least one"):
        chain_order([])


# ----------------------------------------------------------------------------- log_chain


CHAINS = [
    [(4, 7), (7, 3), (3, 6)],
    [(2, 9), (9, 30), (30, 1), (1, 8)],
    [(30, 2), (2, 25), (25, 3), (3, 20), (20, 4)],
    [(5, 5), (5, 5)],
    [(1, 40), (40, 1)],
]


@pytest.mark.parametrize("shapes", CHAINS)
@pytest.mark.parametrize("method", ["auto", "exact"])
def test_log_chain_equals_sequential_products(shapes: list, method: str) -> None:
    mats = [log_stochastic(r, c, scale=40.0, seed=i) for i, (r, c) in enumerate(shapes)]
    mats[0][0, :] = -np.inf                      # an impossible row stays impossible
    mats[-1][:, -1] = -np.inf                    # ... and an unreachable column
    if shapes[0][1] > 1:
        mats[0][-1, 1] += 600.0                  # far out of scale: needs the repair tiers
    got = log_chain(mats, method=method)
    for reference in (sequential(mats), sequential(mats, reverse=True)):
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-9)
    assert np.isneginf(got[0]).all() and np.isneginf(got[:, -1]).all()


def test_log_chain_multiplies_in_the_cheapest_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = chain_mod.logmatmulexp_report

    def spy(A: np.ndarray, B: np.ndarray, **kw: object):
        calls.append((A.shape, B.shape))
        return real(A, B, **kw)

    monkeypatch.setattr(chain_mod, "logmatmulexp_report", spy)
    mats = [log_stochastic(r, c, seed=i) for i, (r, c) in
            enumerate([(40, 30), (30, 50), (50, 5)])]
    log_chain(mats)
    assert calls == [((30, 50), (50, 5)), ((40, 30), (30, 5))]


def test_log_chain_dtypes_and_single_matrix() -> None:
    mats = [log_stochastic(6, 4, seed=1), log_stochastic(4, 3, seed=2)]
    m32 = [m.astype(np.float32) for m in mats]
    got32 = log_chain(m32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, sequential(mats), rtol=1e-5, atol=1e-5)
    assert log_chain([m32[0], mats[1]]).dtype == np.float64
    assert log_chain(mats, dtype="float32").dtype == np.float32
    one = log_chain(mats[:1])
    np.testing.assert_array_equal(one, mats[0])
    assert one is not mats[0]
    ints = log_chain([np.zeros((2, 3), dtype=np.int64), np.zeros((3, 1), dtype=np.int32)])
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, np.log(3.0))


def test_log_chain_errors() -> None:
    a, b = log_stochastic(3, 4), log_stochastic(4, 2)
    with pytest.raises(InputError, match="M1 is 3×4 and M2 is 2×4"):
        log_chain([a, b.T])
    with pytest.raises(InputError, match="M2 contains \\+inf"):
        log_chain([a, np.where(b == b.max(), np.inf, b)])
    with pytest.raises(InputError, match="1-D"):
        log_chain([a, b[:, 0]])
    with pytest.raises(InputError, match="complex"):
        log_chain([a, b.astype(complex)])
    with pytest.raises(UsageError, match="unknown method"):
        log_chain([a, b], method="slow")
    with pytest.raises(UsageError, match="float16"):
        log_chain([a, b], dtype="float16")
    with pytest.raises(UsageError):
        log_chain([])
    with pytest.raises(InputError, match="beyond the range of float32"):
        log_chain([np.full((2, 2), -1e300), np.zeros((2, 2))], dtype="float32")


# ----------------------------------------------------------------------------- log_power


@pytest.mark.parametrize("steps", [0, 1, 2, 13, 64])
def test_log_power_equals_repeated_products(steps: int) -> None:
    P = log_stochastic(7, 7, scale=20.0, seed=3)
    P[2, 4] = -np.inf
    P[2] -= np.log(np.exp(P[2]).sum())              # row 2 sums to 1 again
    got = log_power(P, steps)
    np.testing.assert_allclose(got, repeated(P, steps), rtol=1e-12, atol=1e-9)
    # still a stochastic matrix: every row sums to 1 in probability space
    top = got.max(axis=1, keepdims=True)
    rows = top[:, 0] + np.log(np.exp(got - top).sum(axis=1))
    np.testing.assert_allclose(rows, 0, atol=1e-12)


def test_log_power_identity_and_copy() -> None:
    P = log_stochastic(4, 4, seed=4)
    eye = log_power(P, 0)
    assert eye.dtype == np.float64
    np.testing.assert_array_equal(eye, np.log(np.eye(4), where=np.eye(4) > 0,
                                              out=np.full((4, 4), -np.inf)))
    one = log_power(P, 1)
    np.testing.assert_array_equal(one, P)
    assert one is not P
    assert log_power(P.astype(np.float32), 0).dtype == np.float32
    assert log_power(P.astype(np.float32), 5).dtype == np.float32
    assert log_power(P, 5, dtype=np.float32).dtype == np.float32
    assert log_power(np.zeros((3, 3), dtype=np.int64), 2).dtype == np.float64


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 7, 13, 64])
def test_log_power_preserves_neg_inf_structure(steps: int) -> None:
    # banded left-to-right transitions: stay, move 1 or 2 states on; the last is absorbing
    n = 9
    support = np.zeros((n, n), dtype=bool)
    for i in range(n):
        support[i, i:min(n, i + 3)] = True
    probs = np.where(support, np.random.default_rng(7).random((n, n)) + 0.05, 0.0)
    probs /= probs.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        P = np.log(probs)
    got = log_power(P, steps, method="auto")
    reach = np.eye(n, dtype=np.int64)
    for _ in range(steps):
        reach = np.minimum(reach @ support.astype(np.int64), 1)
    np.testing.assert_array_equal(np.isneginf(got), reach == 0)
    assert np.isfinite(got[reach == 1]).all()
    np.testing.assert_allclose(got, repeated(P, steps), rtol=1e-12, atol=1e-9)


def test_log_power_of_a_permutation_is_exact() -> None:
    n = 5
    P = np.full((n, n), -np.inf)
    P[np.arange(n), (np.arange(n) + 1) % n] = 0.0        # a cycle: i → i + 1
    for steps in (3, 5, 64):
        expected = np.full((n, n), -np.inf)
        expected[np.arange(n), (np.arange(n) + steps) % n] = 0.0
        np.testing.assert_array_equal(log_power(P, steps), expected)


def test_log_power_errors() -> None:
    P = log_stochastic(3, 3)
    with pytest.raises(InputError, match="square"):
        log_power(P[:, :2], 2)
    with pytest.raises(InputError, match="square"):
        log_power(P[0], 2)
    with pytest.raises(InputError, match=r"\+inf"):
        log_power(np.where(P == P.max(), np.inf, P), 0)
    for bad in (-1, 2.0, True, "3"):
        with pytest.raises(UsageError, match="non-negative integer"):
            log_power(P, bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown method"):
        log_power(P, 2, method="fastest")


def test_power_schedule() -> None:
    assert power_schedule(0) == (0, 0)
    assert power_schedule(1) == (0, 0)
    assert power_schedule(2) == (1, 0)
    assert power_schedule(13) == (3, 2)
    assert power_schedule(64) == (6, 0)
    assert power_schedule(2**40 - 1) == (39, 39)


def test_log_power_counts_products(monkeypatch: pytest.MonkeyPatch) -> None:
    count = 0
    real = chain_mod.logmatmulexp_report

    def spy(A: np.ndarray, B: np.ndarray, **kw: object):
        nonlocal count
        count += 1
        return real(A, B, **kw)

    monkeypatch.setattr(chain_mod, "logmatmulexp_report", spy)
    P = log_stochastic(3, 3)
    for steps in (0, 1, 2, 13, 64, 1000):
        count = 0
        log_power(P, steps)
        assert count == sum(power_schedule(steps))


# ----------------------------------------------------------------------------- file engines


def _read(address: str | Path) -> np.ndarray:
    from logmm.io import open_array

    with open_array(address) as r:
        return r.read_all()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".logmm-" in p.name)


@pytest.mark.parametrize("fmt", ["npy", "h5", "zarr"])
def test_chain_files(tmp_path: Path, save, fmt: str) -> None:
    mats = [log_stochastic(r, c, seed=i) for i, (r, c) in
            enumerate([(20, 3), (3, 15), (15, 4)])]
    addresses = [save(f"{tmp_path}/m.h5:/m1", mats[0]), save(tmp_path / "m2.npy", mats[1]),
                 save(f"{tmp_path}/m3.zarr:m3", mats[2])]
    explained: list[str] = []
    result = chain_files(addresses, tmp_path / f"c.{fmt}", explain=explained.append)
    got = _read(tmp_path / f"c.{fmt}")
    np.testing.assert_array_equal(got, log_chain(mats))
    assert result.shape == (20, 4) and result.dtype == np.float64
    assert result.order == "(M1 (M2 M3))" and result.cost == 3 * 15 * 4 + 20 * 3 * 4
    assert result.products == 2 and result.report is not None
    assert result.report.entries == 3 * 4 + 20 * 4
    assert len(explained) == 1 and "cheapest order: (M1 (M2 M3))" in explained[0]
    assert "m2.npy" in explained[0]
    assert "cost: 420 multiply-adds (left to right: 2,100; right to left: 420)" in explained[0]
    attrs = result.attrs
    assert attrs["operation"] == "chain" and attrs["order"] == "(M1 (M2 M3))"
    assert attrs["input_shapes"] == [[20, 3], [3, 15], [15, 4]]
    assert attrs["inputs"][1].endswith("m2.npy") and attrs["method"] == "auto"
    assert attrs["command"].startswith("logmm.chain_files(")
    if fmt == "npy":
        stored = json.loads((tmp_path / "c.npy.json").read_text())
    elif fmt == "h5":
        with h5py.File(tmp_path / "c.h5") as f:
            stored = dict(f["data"].attrs)
    else:
        import zarr
        stored = dict(zarr.open_array(str(tmp_path / "c.zarr"), path="data").attrs)
    assert stored["complete"] and stored["order"] == "(M1 (M2 M3))"
    assert int(stored["cost"]) == result.cost and "logmm_version" in stored
    assert _leftovers(tmp_path) == []


def test_chain_files_errors_touch_nothing(tmp_path: Path, save) -> None:
    a = save(tmp_path / "a.npy", log_stochastic(4, 3))
    b = save(tmp_path / "b.npy", log_stochastic(4, 2))
    with pytest.raises(InputError, match=r"M1 \(.*a.npy\) is 4×3 and M2 \(.*b.npy\) is 4×2"):
        chain_files([a, b], tmp_path / "c.h5")
    bad = save(tmp_path / "bad.npy", np.array([[0.0, np.inf, 0.0]] * 3))
    with pytest.raises(InputError, match=r"bad.npy\) contains \+inf"):
        chain_files([a, bad], tmp_path / "c.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "bad.npy"]
    b = save(tmp_path / "b.npy", log_stochastic(2, 4))
    (tmp_path / "c.h5").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        chain_files([b, a], tmp_path / "c.h5")
    assert (tmp_path / "c.h5").read_bytes() == b"keep"
    with pytest.raises(UsageError):
        chain_files([], tmp_path / "d.h5")


def test_power_file(tmp_path: Path, save) -> None:
    P = log_stochastic(6, 6, seed=9)
    addr = save(f"{tmp_path}/p.h5:/P", P)
    explained: list[str] = []
    result = power_file(addr, 13, tmp_path / "p13.h5", dtype="float32",
                        explain=explained.append, command="logmm power ...")
    got = _read(tmp_path / "p13.h5")
    assert got.dtype == np.float32 and result.dtype == np.float32
    np.testing.assert_allclose(got, repeated(P, 13), rtol=1e-5, atol=1e-5)
    assert explained == ["P^13 = P^8 · P^4 · P: 3 squarings, 2 products of 6×6 matrices "
                         "(repeated squaring); cost 1,080 multiply-adds (one product per "
                         "step: 2,592)"]
    assert result.order == "P^13 = P^8 · P^4 · P: 3 squarings, 2 products"
    with h5py.File(tmp_path / "p13.h5") as f:
        attrs = dict(f["data"].attrs)
    assert attrs["steps"] == 13 and attrs["squarings"] == 3 and attrs["products"] == 2
    assert attrs["order"] == "P^8 · P^4 · P" and attrs["command"] == "logmm power ..."
    assert attrs["operation"] == "power" and attrs["dtype"] == "float32"
    result = power_file(addr, 0, tmp_path / "eye.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "eye.npy"), log_identity(6))
    assert result.products == 0
    with pytest.raises(InputError, match=r"P \(.*\) is 6×5; a matrix power needs a square"):
        power_file(save(tmp_path / "r.npy", P[:, :5]), 2, tmp_path / "x.npy")
    with pytest.raises(UsageError, match="non-negative"):
        power_file(addr, -2, tmp_path / "x.npy")
    assert not (tmp_path / "x.npy").exists() and _leftovers(tmp_path) == []


def test_chain_streams_a_large_first_factor_through_the_multiply_engine(tmp_path) -> None:
    """M1 (6000x20) is the large one and the cheapest order is (M1 (M2 M3)): M1's rows
    are streamed in blocks against R = M2 M3 computed in memory."""
    from logmm import adversarial, logmatmulexp
    from logmm.chain_files import chain_files
    from logmm.io import open_array

    M1, M2 = adversarial.banded(6000, 20, 15, fraction=0.2, seed=1)
    M3 = np.log(np.random.default_rng(2).dirichlet(np.ones(4), size=15))
    for name, m in (("m1", M1), ("m2", M2), ("m3", M3)):
        np.save(tmp_path / f"{name}.npy", m)
    result = chain_files([tmp_path / "m1.npy", tmp_path / "m2.npy", tmp_path / "m3.npy"],
                         tmp_path / "c.h5", block_rows=500)
    assert result.order == "(M1 (M2 M3))" and result.attrs["streamed"] == "M1"
    with open_array(tmp_path / "c.h5") as reader:
        C = reader.read_all()
    expected = logmatmulexp(M1, logmatmulexp(M2, M3, method="exact"), method="exact")
    np.testing.assert_allclose(C, expected, rtol=1e-12, atol=1e-12)
    assert not [p for p in tmp_path.iterdir() if ".logmm-" in p.name]   # no scratch left
    import h5py

    with h5py.File(tmp_path / "c.h5") as f:
        attrs = dict(f["data"].attrs)
    assert attrs["operation"] == "chain" and attrs["order"] == "(M1 (M2 M3))"
    assert attrs["block_rows"] == 500 and attrs["complete"]


# ------------------------------------------------- the power error rule: (n - 1) x bound
def _exact_log_power(P: np.ndarray, n: int) -> np.ndarray:
    """log(exp(P)^n) at 400 bits, by repeated squaring (exp of the float P exactly)."""
    import mpmath
    with mpmath.workprec(400):
        M = mpmath.matrix([[mpmath.exp(mpmath.mpf(float(v))) for v in row] for row in P])
        R = mpmath.eye(P.shape[0])
        while n:
            if n & 1:
                R = R * M
            M = M * M
            n >>= 1
        return np.array([[float(mpmath.log(R[i, j])) for j in range(P.shape[0])]
                         for i in range(P.shape[0])])


@pytest.mark.parametrize("dtype, n", [(np.float64, 2 ** 20), (np.float64, 2 ** 30),
                                      (np.float64, 1000), (np.float32, 2 ** 30),
                                      (np.float32, 2 ** 20 + 12345)])
def test_power_error_grows_like_n_times_the_product_bound(dtype, n: int) -> None:
    # each squaring doubles the error: err(X^2) <= 2 err(X) + b, so err(P^n) <= (n - 1) b
    # with b the pairwise bound; a stochastic matrix's powers stay within [min P, 0], so b
    # for P itself covers every product. (Adding the pairwise bounds, as README said,
    # gives log2(n) b: 2**20 measured 1.8e-11, 221 x that.)
    from exact_reference import error_bound
    P = np.log(np.array([[0.3, 0.7], [0.6, 0.4]])).astype(dtype)
    got = chain_mod.log_power(P, n)
    exact = _exact_log_power(P, n)
    err = float(np.abs(got.astype(np.float64) - exact).max())
    assert err <= (n - 1) * error_bound(P, P, np.dtype(dtype)), err


@pytest.mark.parametrize("n", [1000, 4097])
def test_power_rule_holds_for_a_near_periodic_chain(n: int) -> None:
    # the second case: a 6-cycle with a little leakage exceeded the old rule at
    # n = 1000 (measured here: 1.95e-13 against log2(n) b = 1.04e-13; (n - 1) b = 1.04e-11)
    from exact_reference import error_bound
    cycle = np.roll(np.eye(6), 1, axis=1)
    P = np.log((1 - 1e-3) * cycle + 1e-3 / 6)
    got = chain_mod.log_power(P, n)
    exact = _exact_log_power(P, n)
    err = float(np.abs(got - exact).max())
    assert err <= (n - 1) * error_bound(P, P, np.dtype(np.float64)), err


@pytest.mark.parametrize("n", [2 ** 20, 2 ** 30])
@pytest.mark.parametrize("which", ["2x2", "6x6"])
def test_float32_power_is_squared_in_float64_and_rounded_once(which: str, n: int) -> None:
    # float32 squarings doubled a float32 error per squaring: 2x2, n = 2**30 was 11.7 nats
    # off (6x6: 26.2). Now float64 squarings of the (exact) float32 values, one rounding:
    # within (n - 1) b64 + half a float32 ulp of the result (measured <= 0.5 ulp).
    from exact_reference import error_bound
    if which == "2x2":
        P = np.log(np.array([[0.3, 0.7], [0.6, 0.4]]))
    else:
        P = np.log((1 - 1e-3) * np.roll(np.eye(6), 1, axis=1) + 1e-3 / 6)
    P32 = P.astype(np.float32)
    got = chain_mod.log_power(P32, n)
    assert got.dtype == np.float32
    exact = _exact_log_power(P32, n)
    b64 = error_bound(P32.astype(np.float64), P32.astype(np.float64), np.dtype(np.float64))
    allowed = (n - 1) * b64 + np.spacing(np.abs(exact).astype(np.float32)) / 2
    assert np.all(np.abs(got.astype(np.float64) - exact) <= allowed)


def test_float32_power_beyond_float32_range() -> None:
    # squared in float64, the result may leave float32's range: above it is an error
    # (no +inf result), below it rounds to -inf as float32 products did
    P = np.array([[3e37, -np.inf], [-np.inf, -3e38]], np.float32)
    with pytest.raises(InputError, match="beyond the range of float32"):
        chain_mod.log_power(P, 16)
    got = chain_mod.log_power(np.array([[0.0, -np.inf], [-np.inf, -3e38]], np.float32), 2)
    assert got.dtype == np.float32 and got[1, 1] == -np.inf and got[0, 0] == 0


def test_cli_power_float32_large_n(tmp_path: Path) -> None:
    # through `logmm power`: float32 in, float32 out, n = 2**30 within half a float32 ulp
    # (plus the float64 rule) of 400-bit mpmath; a result beyond float32 is one error line
    from cli_run import one_error_line, run_logmm
    from exact_reference import error_bound
    P = np.log(np.array([[0.3, 0.7], [0.6, 0.4]])).astype(np.float32)
    np.save(tmp_path / "p.npy", P)
    n = 2 ** 30
    proc = run_logmm("power", tmp_path / "p.npy", "-n", str(n), "-o", tmp_path / "out.npy")
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npy")
    assert got.dtype == np.float32
    exact = _exact_log_power(P, n)
    b64 = error_bound(P.astype(np.float64), P.astype(np.float64), np.dtype(np.float64))
    assert np.all(np.abs(got - exact) <= (n - 1) * b64 + np.spacing(np.abs(exact).astype(
        np.float32)) / 2)
    np.save(tmp_path / "big.npy", np.array([[3e37, -np.inf], [-np.inf, 0.0]], np.float32))
    proc = run_logmm("power", tmp_path / "big.npy", "-n", "16", "-o", tmp_path / "big_out.npy")
    assert "beyond the range of float32" in one_error_line(proc, codes=(1,))
    assert not (tmp_path / "big_out.npy").exists()
