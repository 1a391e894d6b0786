"""The project engine (streaming, sparse inputs, resume) and ``logmm project``,
checked against explicit ``np.kron`` products."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from click.testing import CliRunner

import logmm.project as engine
from logmm.cli.commands.project import factor_specs
from logmm.cli.main import cli
from logmm.errors import InputError, LogmmError, OutputExistsError, UsageError
from logmm.io import open_array, sidecar_path
from logmm.kron import Identity
from logmm.plan import RowPlan
from logmm.project import project, project_row_bytes

RNG = np.random.default_rng(23)
LOGMM = Path(sys.executable).with_name("logmm")
ROOT = Path(__file__).resolve().parents[1]


def kron(*factors: Any) -> np.ndarray:
    """The explicit Kronecker product (Identity(n) as np.eye(n))."""
    mats = [np.eye(f.n) if isinstance(f, Identity) else np.asarray(f, np.float64)
            for f in factors]
    return functools.reduce(np.kron, mats)


def _read(address: str | Path) -> np.ndarray:
    with open_array(address) as r:
        return r.read_all()


def _attrs(path: Path, name: str = "data") -> dict:
    if path.suffix == ".npy":
        return json.loads(sidecar_path(path).read_text())
    with h5py.File(path, "r") as f:
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f[name].attrs.items()}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".logmm-" in p.name)


def _sparse_x(n: int = 29, width: int = 24, density: float = 0.2) -> sp.csr_matrix:
    dense = np.where(RNG.random((n, width)) < density, RNG.standard_normal((n, width)), 0.0)
    dense[3] = 0.0                                            # an empty row
    return sp.csr_matrix(dense)


def _write_sparse(path_or_address: str, M: sp.csr_matrix) -> str:
    """``x.npz``, ``x.h5:/name`` or ``x.zarr:name`` holding M as CSR."""
    text = str(path_or_address)
    if text.endswith(".npz"):
        sp.save_npz(text, M)
        return text
    path, _, name = text.partition(":")
    if path.endswith(".h5"):
        with h5py.File(path, "a") as f:
            g = f.create_group(name.strip("/"))
            for key in ("data", "indices", "indptr"):
                g.create_dataset(key, data=getattr(M, key))
            g.attrs["shape"] = list(M.shape)
    else:
        g = zarr.open_group(path, mode="a").create_group(name)
        for key in ("data", "indices", "indptr"):
            g.create_array(key, data=getattr(M, key))
        g.attrs["shape"] = list(M.shape)
    return text


# ----------------------------------------------------------------------------- engine: W


@pytest.mark.parametrize("fmt", ["npy", "h5", "zarr"])
def test_block_project_dense(tmp_path: Path, save, fmt: str) -> None:
    X = RNG.standard_normal((37, 24))
    W = RNG.standard_normal((5, 6))
    x = save(tmp_path / f"x.{fmt}", X, chunk_rows=None if fmt == "npy" else 8)
    w = save(tmp_path / "w.npy", W)
    result = project(x, tmp_path / "y.h5", w_address=w, blocks=4, block_rows=10)
    Y = _read(tmp_path / "y.h5")
    assert result.shape == (37, 20) and Y.dtype == np.float64 and not result.sparse
    np.testing.assert_allclose(Y, X @ kron(Identity(4), W).T, rtol=1e-12, atol=1e-12)
    assert result.plan.row_blocks()[:2] == [(0, 10), (10, 20)]
    attrs = _attrs(tmp_path / "y.h5")
    assert attrs["operation"] == "project" and attrs["semiring"] == "real"
    assert attrs["blocks"] == 4 and attrs["w_shape"] == [5, 6] and attrs["x_shape"] == [37, 24]
    assert attrs["x_sparse"] is False or attrs["x_sparse"] == 0
    assert attrs["block_rows"] == 10 and attrs["complete"]
    assert attrs["command"].startswith("logmm.project(")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["x.npz", "x.h5:/csr", "x.zarr:csr"])
def test_block_project_sparse(tmp_path: Path, save, where: str) -> None:
    M = _sparse_x()
    W = RNG.standard_normal((3, 8)).astype(np.float32)
    x = _write_sparse(f"{tmp_path}/{where}", M.astype(np.float32))
    result = project(x, tmp_path / "y.npy", w_address=save(tmp_path / "w.npy", W), blocks=3,
                     block_rows=7)
    Y = np.load(tmp_path / "y.npy")
    assert result.sparse and Y.dtype == np.float32 and Y.shape == (29, 9)
    np.testing.assert_allclose(Y, M.toarray() @ kron(Identity(3), W).T, rtol=1e-5, atol=1e-5)
    attrs = _attrs(tmp_path / "y.npy")
    assert attrs["x_sparse"] is True and attrs["x_nnz"] == M.nnz


# ----------------------------------------------------------------------------- engine: factors


@pytest.mark.parametrize("shapes", [
    [(3, 24)],
    [(3, 4), (5, 6)],
    [(2, 2), "I3", (4, 2), (1, 2)],
    ["I2", (3, 3), (2, 4)],
    [(5, 2), (2, 3), "I4"],
])
@pytest.mark.parametrize("sparse", [False, True])
def test_factors_against_np_kron(tmp_path: Path, save, shapes: list, sparse: bool) -> None:
    factors, specs = [], []
    for i, shape in enumerate(shapes):
        if isinstance(shape, str):
            factors.append(Identity(int(shape[1:])))
            specs.append(Identity(int(shape[1:])))
        else:
            F = RNG.standard_normal(shape)
            factors.append(F)
            specs.append(save(tmp_path / f"f{i}.npy", F))
    M = _sparse_x(width=24)
    x = (_write_sparse(f"{tmp_path}/x.npz", M) if sparse
         else save(f"{tmp_path}/x.h5:/x", M.toarray(), chunk_rows=5))
    result = project(x, tmp_path / "y.zarr", factors=specs, block_rows=6)
    expected = M.toarray() @ kron(*factors).T
    assert result.shape == expected.shape
    np.testing.assert_allclose(_read(tmp_path / "y.zarr"), expected, rtol=1e-12, atol=1e-12)
    attrs = dict(zarr.open_array(str(tmp_path / "y.zarr"), path="data", mode="r").attrs)
    assert len(attrs["factors"]) == len(shapes)
    assert [tuple(s) for s in attrs["factor_shapes"]] == [
        (f.n, f.n) if isinstance(f, Identity) else f.shape for f in factors]


def test_dtypes(tmp_path: Path, save) -> None:
    X = RNG.integers(-5, 5, (9, 6)).astype(np.int32)
    x = save(tmp_path / "x.npy", X)
    w32 = save(tmp_path / "w32.npy", RNG.standard_normal((2, 3)).astype(np.float32))
    assert project(x, tmp_path / "a.npy", w_address=w32, blocks=2).dtype == np.float64
    assert project(x, tmp_path / "b.npy", w_address=w32, blocks=2,
                   dtype="float32").dtype == np.float32
    x32 = save(tmp_path / "x32.npy", X.astype(np.float32))
    result = project(x32, tmp_path / "c.h5", factors=[w32, Identity(2)])
    assert result.dtype == np.float32 and _read(tmp_path / "c.h5").dtype == np.float32
    with pytest.raises(UsageError, match="float32 or float64"):
        project(x, tmp_path / "d.npy", w_address=w32, blocks=2, dtype="int8")


# ----------------------------------------------------------------------------- log semiring


def test_log_semiring_dense_matches_log_of_real(tmp_path: Path, save) -> None:
    P = RNG.random((21, 12)) + 0.01                         # probabilities
    F1, F2 = RNG.random((3, 3)) + 0.01, RNG.random((2, 4)) + 0.01
    x = save(tmp_path / "lx.npy", np.log(P))
    f1, f2 = save(tmp_path / "lf1.npy", np.log(F1)), save(tmp_path / "lf2.npy", np.log(F2))
    project(x, tmp_path / "ly.npy", factors=[f1, f2], semiring="log", block_rows=4)
    np.testing.assert_allclose(np.load(tmp_path / "ly.npy"), np.log(P @ kron(F1, F2).T),
                               rtol=1e-12, atol=1e-12)
    W = RNG.random((2, 4)) + 0.01
    project(x, tmp_path / "lw.npy", w_address=save(tmp_path / "lw_in.npy", np.log(W)),
            blocks=3, semiring="log")
    np.testing.assert_allclose(np.load(tmp_path / "lw.npy"),
                               np.log(P @ kron(Identity(3), W).T), rtol=1e-12, atol=1e-12)
    assert _attrs(tmp_path / "lw.npy")["semiring"] == "log"


def test_log_semiring_sparse_absent_is_log_zero(tmp_path: Path, save) -> None:
    M = _sparse_x()
    probs = sp.csr_matrix((RNG.random(M.nnz) + 0.1, M.indices, M.indptr), shape=M.shape)
    logx = sp.csr_matrix((np.log(probs.data), M.indices, M.indptr), shape=M.shape)
    W = RNG.random((3, 6)) + 0.1
    x = _write_sparse(f"{tmp_path}/lx.h5:/x", logx)
    project(x, tmp_path / "ly.npy", w_address=save(tmp_path / "lw.npy", np.log(W)), blocks=4,
            semiring="log", block_rows=8)
    with np.errstate(divide="ignore"):
        expected = np.log(probs.toarray() @ kron(Identity(4), W).T)
    Y = np.load(tmp_path / "ly.npy")
    assert np.array_equal(np.isneginf(Y), np.isneginf(expected)) and np.isneginf(Y[3]).all()
    np.testing.assert_allclose(Y[np.isfinite(Y)], expected[np.isfinite(expected)], rtol=1e-12)


def test_log_semiring_rejects_posinf(tmp_path: Path, save) -> None:
    X = np.zeros((12, 4))
    w_bad = np.zeros((2, 2))
    w_bad[1, 1] = np.inf
    x = save(tmp_path / "x.npy", X)
    with pytest.raises(InputError, match=r"W \(.*w.npy\).*\+inf"):
        project(x, tmp_path / "y.npy", w_address=save(tmp_path / "w.npy", w_bad), blocks=2,
                semiring="log")
    assert not (tmp_path / "y.npy").exists() and _leftovers(tmp_path) == []
    X[9, 2] = np.inf
    x = save(tmp_path / "x2.npy", X)
    with pytest.raises(InputError, match=r"X \(.*x2.npy, rows 8:12\)"):
        project(x, tmp_path / "y.npy", w_address=save(tmp_path / "w0.npy", np.zeros((2, 2))),
                blocks=2, semiring="log", block_rows=4)
    assert not (tmp_path / "y.npy").exists() and _leftovers(tmp_path) == []
    # the real semiring takes +inf as a number
    project(x, tmp_path / "y.npy", w_address=save(tmp_path / "w1.npy", np.ones((2, 2))),
            blocks=2)
    assert np.isposinf(np.load(tmp_path / "y.npy")[9]).sum() == 2


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("sparse", [False, True])
def test_resume_after_interrupt_is_bit_identical(tmp_path: Path, save, monkeypatch,
                                                 sparse: bool) -> None:
    M = _sparse_x(n=60)
    x = _write_sparse(f"{tmp_path}/x.npz", M) if sparse else save(tmp_path / "x.npy",
                                                                  M.toarray())
    w = save(tmp_path / "w.npy", RNG.standard_normal((4, 6)))
    kwargs = {"w_address": w, "blocks": 4, "block_rows": 8}
    project(x, tmp_path / "ref.h5", **kwargs)

    calls = {"n": 0}
    real = engine.block_project

    def flaky(*args: Any, **kw: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(engine, "block_project", flaky)
    with pytest.raises(KeyboardInterrupt):
        project(x, tmp_path / "out.h5", **kwargs)
    assert not (tmp_path / "out.h5").exists()
    assert ".out.h5.logmm-partial" in _leftovers(tmp_path)
    monkeypatch.setattr(engine, "block_project", real)

    with pytest.raises(LogmmError, match="cannot resume .*semiring"):
        project(x, tmp_path / "out.h5", semiring="log", resume=True, **kwargs)
    result = project(x, tmp_path / "out.h5", resume=True, **kwargs)
    assert result.resumed_blocks == 3
    np.testing.assert_array_equal(_read(tmp_path / "out.h5"), _read(tmp_path / "ref.h5"))
    assert _leftovers(tmp_path) == []


def test_plan_and_row_bytes(tmp_path: Path, save) -> None:
    dense = project_row_bytes(width=100, out_width=10, max_width=100, x_itemsize=4,
                              itemsize=4)
    sparse = project_row_bytes(width=100, out_width=10, max_width=100, x_itemsize=4,
                               itemsize=4, nnz_per_row=20)
    assert dense == 100 * 12 + 400 * 4 + 120 and sparse < dense + 20 * 100
    x = save(tmp_path / "x.npy", RNG.standard_normal((4000, 64)))
    w = save(tmp_path / "w.npy", RNG.standard_normal((8, 8)))
    result = project(x, tmp_path / "y.h5", w_address=w, blocks=8, memory=(8 << 20) + 400_000)
    assert isinstance(result.plan, RowPlan) and 1 < result.block_rows < 4000
    assert result.plan.estimate <= result.plan.memory
    with pytest.raises(UsageError, match="cannot hold one row"):
        project(x, tmp_path / "z.h5", w_address=w, blocks=8, memory=1 << 20)


# ----------------------------------------------------------------------------- errors


def test_errors_before_any_output(tmp_path: Path, save) -> None:
    x = save(tmp_path / "x.npy", np.zeros((5, 12)))
    w = save(tmp_path / "w.npy", np.zeros((2, 4)))
    f = save(tmp_path / "f.npy", np.zeros((2, 5)))
    out = tmp_path / "y.npy"
    cases = [
        ({"w_address": w, "blocks": 5}, InputError, "--blocks 5 does not divide X's width"),
        ({"w_address": w, "blocks": 2}, InputError, "needs W with 6 columns"),
        ({"w_address": w}, UsageError, "W needs --blocks"),
        ({"blocks": 3}, UsageError, "--blocks needs W"),
        ({"w_address": w, "blocks": 3, "factors": [f]}, UsageError, "not both"),
        ({}, UsageError, "nothing to project by"),
        ({"factors": [f, Identity(2)]}, InputError, r"widths 5 × 2 multiply to 10.*5×12"),
        ({"factors": [w], "semiring": "tropical"}, UsageError, "unknown semiring"),
        ({"factors": [w, 3]}, UsageError, "factor 2 is a int"),
        ({"factors": [w], "block_rows": 0}, UsageError, "block rows must be at least 1"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match) as info:
            project(x, out, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="not a CSR group: no data, indptr array"):
        g = h5py.File(tmp_path / "bad.h5", "w")
        g.create_group("m").create_dataset("indices", data=np.zeros(2, np.int32))
        g.close()
        project(f"{tmp_path}/bad.h5:/m", out, w_address=w, blocks=3)
    assert not out.exists() and _leftovers(tmp_path) == []
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        project(x, out, w_address=w, blocks=3)
    assert out.read_bytes() == b"keep"


# ----------------------------------------------------------------------------- CLI


def test_factor_order_from_command_line() -> None:
    assert factor_specs(("a.npy", "I:3", "b.npy"), (), None) == ["a.npy", Identity(3), "b.npy"]
    assert factor_specs(("a.npy", "b.npy"), (2,), ["identity", "factor", "factor"]) == [
        Identity(2), "a.npy", "b.npy"]
    assert factor_specs(("a.npy",), (2, 5), ["factor", "identity", "identity"]) == [
        "a.npy", Identity(2), Identity(5)]
    with pytest.raises(UsageError, match="at least 1"):
        factor_specs(("identity:0",), (), None)


def test_cli(tmp_path: Path, save) -> None:
    X = RNG.standard_normal((11, 12)).astype(np.float32)
    F = RNG.standard_normal((2, 3)).astype(np.float32)
    x, f = save(tmp_path / "x.npy", X), save(tmp_path / "f.npy", F)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["project", *args], catch_exceptions=False)

    res = run(x, "--identity", "4", "--factor", f, "-o", str(tmp_path / "a.h5"))
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "I_4 ⊗" in res.output
    np.testing.assert_allclose(_read(tmp_path / "a.h5"), X @ kron(Identity(4), F).T, rtol=1e-5,
                               atol=1e-5)
    res = run(x, "--factor", f, "--identity", "4", "-o", str(tmp_path / "b.h5"))
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_read(tmp_path / "b.h5"), X @ kron(F, Identity(4)).T, rtol=1e-5,
                               atol=1e-5)
    assert _attrs(tmp_path / "b.h5")["command"].startswith("logmm project ")
    res = run(x, "--factor", "I:2", "--factor", f, "--factor", "I:2", "-o",
              str(tmp_path / "c.npy"), "--quiet")
    assert res.exit_code == 0 and res.output == ""
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"),
                               X @ kron(Identity(2), F, Identity(2)).T, rtol=1e-5, atol=1e-5)
    res = run(x, f, "--blocks", "4", "-o", str(tmp_path / "d.npy"), "--semiring", "log")
    assert res.exit_code == 0, res.output
    for args, code, match in [
        ((x, f, "--blocks", "5"), 1, "does not divide"),
        ((x, "--factor", f), 1, "multiply to 3"),
        ((x, f), 2, "W needs --blocks"),
        ((x, "--blocks", "4"), 2, "--blocks needs W"),
        ((x, f, "--blocks", "4", "--factor", f), 2, "not both"),
        ((x, "--identity", "0"), 2, "0"),
        ((x, f, "--blocks", "4", "--semiring", "max"), 2, "max"),
    ]:
        res = run(*args, "-o", str(tmp_path / "e.npy"))
        assert res.exit_code == code, (args, res.output)
        assert match in res.output
    assert not (tmp_path / "e.npy").exists()


def test_cli_subprocess_on_sample_data(tmp_path: Path) -> None:
    sample = ROOT / "sample_data"
    out = tmp_path / "y.h5"
    proc = subprocess.run([str(LOGMM), "project", f"{sample}/x_sparse.h5:/x",
                           "--factor", str(sample / "f1.npy"), "--identity", "6",
                           "--factor", str(sample / "f2.npy"), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "wrote" in proc.stderr
    M = sp.load_npz(sample / "x_sparse.npz")
    F1, F2 = np.load(sample / "f1.npy"), np.load(sample / "f2.npy")
    np.testing.assert_allclose(_read(out), M.toarray() @ kron(F1, Identity(6), F2).T,
                               rtol=1e-5, atol=1e-5)
    proc = subprocess.run([str(LOGMM), "project", str(sample / "x_sparse.npz"),
                           str(sample / "w.npy"), "--blocks", "7", "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "does not divide" in proc.stderr
