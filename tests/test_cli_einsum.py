"""``logmm einsum``, ``logmm chain`` and ``logmm power`` on the command line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from logmm import logmatmulexp
from logmm.chain import log_chain, log_power
from logmm.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
LOGMM = Path(sys.executable).with_name("logmm")

#: the einsum tests need the numerics of :mod:`logmm.einsum`
needs_einsum = pytest.mark.skipif(importlib.util.find_spec("logmm.einsum") is None,
                                  reason="logmm.einsum (logeinsum) is not available yet")


def log_stochastic(shape: tuple[int, ...], scale: float = 3.0, seed: int = 0) -> np.ndarray:
    """log of random arrays whose last axis sums to 1 in probability space."""
    logits = scale * np.random.default_rng(seed).standard_normal(shape)
    top = logits.max(axis=-1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _read(address: str | Path) -> np.ndarray:
    from logmm.io import open_array

    with open_array(address) as r:
        return r.read_all()


def _h5_attrs(path: Path) -> dict:
    with h5py.File(path) as f:
        return dict(f["data"].attrs)


def _one_error_line(res: Any, code: int, match: str) -> None:
    assert res.exit_code == code, res.output
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert match in res.stderr, res.stderr
    if code == 1:          # our own errors: one line; Click's usage errors: its 3-line form
        assert len(lines) == 1 and lines[0].startswith("logmm: error: "), res.stderr


# ----------------------------------------------------------------------------- chain


def test_chain_cli(tmp_path: Path, save) -> None:
    mats = [log_stochastic(s, seed=i) for i, s in enumerate([(12, 30), (30, 2), (2, 9)])]
    addrs = [save(f"{tmp_path}/m.h5:/m1", mats[0]), save(f"{tmp_path}/m.h5:/m2", mats[1]),
             save(tmp_path / "m3.npy", mats[2])]
    out = tmp_path / "c.h5"
    res = run("chain", *addrs, "-o", out, "--explain")
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    assert "cheapest order: ((M1 M2) M3)" in res.stderr
    assert "cost: 936 multiply-adds (left to right: 936; right to left: 3,780)" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"wrote {out}:/data (12×9 float64; "
                                                          "((M1 M2) M3), method auto")
    np.testing.assert_array_equal(_read(out), log_chain(mats))
    attrs = _h5_attrs(out)
    assert attrs["command"].startswith("logmm chain ") and attrs["operation"] == "chain"
    assert attrs["order"] == "((M1 M2) M3)" and attrs["complete"]
    # quiet, dtype, method, zarr output, existing output refused then replaced
    res = run("chain", *addrs, "-o", tmp_path / "c.zarr", "--quiet", "--dtype", "float32",
              "--method", "exact", "--compression", "gzip", "--chunk-rows", "5")
    assert res.exit_code == 0 and res.output == ""
    got = _read(f"{tmp_path}/c.zarr:data")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, log_chain(mats), rtol=1e-5, atol=1e-5)
    _one_error_line(run("chain", *addrs, "-o", out), 1, "exists")
    assert run("chain", *addrs, "-o", out, "--overwrite", "-q").exit_code == 0


def test_chain_cli_errors(tmp_path: Path, save) -> None:
    a = save(tmp_path / "a.npy", log_stochastic((4, 3)))
    b = save(tmp_path / "b.npy", log_stochastic((4, 2)))
    t = save(tmp_path / "t.npy", log_stochastic((2, 3, 4)))
    out = tmp_path / "c.npy"
    _one_error_line(run("chain", a, b, "-o", out), 1, "M1's columns (3) must equal M2's rows")
    _one_error_line(run("chain", a, t, "-o", out), 1, "3-D")
    _one_error_line(run("chain", a, tmp_path / "nope.npy", "-o", out), 1, "no such file")
    _one_error_line(run("chain", "-o", out), 2, "Missing argument")
    _one_error_line(run("chain", a, "-o", out, "--method", "slow"), 2, "--method")
    _one_error_line(run("chain", a, b), 2, "-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "t.npy"]


# ----------------------------------------------------------------------------- power


def test_power_cli(tmp_path: Path, save) -> None:
    P = log_stochastic((5, 5), seed=3)
    P[0, 3] = P[4, 0] = -np.inf
    p = save(tmp_path / "p.npy", P)
    res = run("power", p, "-n", "13", "-o", tmp_path / "p13.npy", "--explain")
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("P^13 = P^8 · P^4 · P: 3 squarings, 2 products of 5×5 "
                                 "matrices")
    expected = log_power(P, 13)
    np.testing.assert_array_equal(np.load(tmp_path / "p13.npy"), expected)
    reference = P
    for _ in range(12):
        reference = logmatmulexp(reference, P, method="exact")
    np.testing.assert_allclose(expected, reference, rtol=1e-12, atol=1e-12)
    meta = json.loads((tmp_path / "p13.npy.json").read_text())
    assert meta["steps"] == 13 and meta["operation"] == "power"
    assert meta["command"].startswith("logmm power ")
    res = run("power", p, "-n", "5", "-o", tmp_path / "p5.npy", "--progress")
    assert res.exit_code == 0 and "product" in res.stderr         # the bar's unit
    np.testing.assert_array_equal(np.load(tmp_path / "p5.npy"), log_power(P, 5))
    res = run("power", p, "--steps", "0", "-o", tmp_path / "eye.h5", "-q")
    assert res.exit_code == 0 and res.output == ""
    eye = _read(tmp_path / "eye.h5")
    assert (np.diag(eye) == 0).all() and np.isneginf(eye[~np.eye(5, dtype=bool)]).all()


def test_power_cli_errors(tmp_path: Path, save) -> None:
    p = save(tmp_path / "p.npy", log_stochastic((3, 4)))
    q = save(tmp_path / "q.npy", np.array([[0.0, np.inf], [0.0, 0.0]]))
    out = tmp_path / "o.npy"
    _one_error_line(run("power", p, "-n", "2", "-o", out), 1, "square")
    _one_error_line(run("power", q, "-n", "2", "-o", out), 1, "+inf")
    _one_error_line(run("power", q, "-n", "-1", "-o", out), 2, "-1 is not in the range")
    _one_error_line(run("power", q, "-n", "two", "-o", out), 2, "two")
    _one_error_line(run("power", q, "-o", out), 2, "Missing option '-n'")
    assert not out.exists()


# ----------------------------------------------------------------------------- einsum


@needs_einsum
def test_einsum_cli(tmp_path: Path, save) -> None:
    from logmm.einsum import logeinsum

    x, y = log_stochastic((3, 4, 6), scale=50.0, seed=1), log_stochastic((3, 6, 2), seed=2)
    xa, ya = save(f"{tmp_path}/b.h5:/x", x), save(f"{tmp_path}/b.h5:/y", y)
    out = tmp_path / "z.h5"
    res = run("einsum", "bij,bjk->bik", xa, ya, "-o", out, "--explain")
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and "Complete contraction:  bij,bjk->bik" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(
        f"wrote {out}:/data (3×4×2 float64; bij,bjk->bik, log semiring, method auto)")
    got = _read(out)
    np.testing.assert_array_equal(got, logeinsum("bij,bjk->bik", x, y))
    np.testing.assert_allclose(got, logmatmulexp(x, y, method="exact"), rtol=1e-12,
                               atol=1e-12)
    attrs = _h5_attrs(out)
    assert attrs["subscripts"] == "bij,bjk->bik" and attrs["semiring"] == "log"
    assert json.loads(attrs["input_shapes"]) == [[3, 4, 6], [3, 6, 2]]
    assert attrs["operation"] == "einsum" and attrs["command"].startswith("logmm einsum ")
    # max and real semirings, implicit output, float32
    res = run("einsum", "bij,bjk", xa, ya, "-o", tmp_path / "m.npy", "--semiring", "max",
              "-q", "--dtype", "float32")
    assert res.exit_code == 0 and res.output == ""
    best = np.load(tmp_path / "m.npy")
    assert best.dtype == np.float32
    # implicit output: the labels that occur once (i, k); b and j are maxed over
    np.testing.assert_allclose(best, (x[:, :, :, None] + y[:, None, :, :]).max(axis=(0, 2)),
                               rtol=1e-6)
    res = run("einsum", "bij,bjk->bik", xa, ya, "-o", tmp_path / "r.zarr", "--semiring",
              "real", "-q")
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_read(f"{tmp_path}/r.zarr:data"),
                               np.einsum("bij,bjk->bik", x, y), rtol=1e-12)
    # a scalar result: .npy and .h5 hold it
    res = run("einsum", "bij->", xa, "-o", tmp_path / "s.npy", "-q")
    assert res.exit_code == 0, res.output
    total = np.load(tmp_path / "s.npy")
    assert total.shape == () and np.isclose(total, np.log(12.0))


@needs_einsum
def test_einsum_cli_errors(tmp_path: Path, save) -> None:
    a = save(tmp_path / "a.npy", log_stochastic((3, 4)))
    b = save(tmp_path / "b.npy", log_stochastic((5, 2)))
    bad = save(tmp_path / "bad.npy", np.array([[0.0, np.inf], [0.0, 0.0]]))
    out = tmp_path / "o.npy"
    _one_error_line(run("einsum", "ij,jk->ik", a, "-o", out), 2, "operand")
    _one_error_line(run("einsum", "ij->ik", a, "-o", out), 2, "k")
    _one_error_line(run("einsum", "ij,jk->ik", a, b, "-o", out), 1, "j")
    _one_error_line(run("einsum", "ij,jk->ik", bad, bad, "-o", out), 1, "+inf")
    _one_error_line(run("einsum", "ij->", a, "-o", tmp_path / "s.zarr"), 1, "scalar")
    _one_error_line(run("einsum", "ij->i", a, "-o", out, "--semiring", "min"), 2, "min")
    _one_error_line(run("einsum", "ij->i", "-o", out), 2, "Missing argument")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "bad.npy"]


@needs_einsum
def test_einsum_semirings_match_the_engine() -> None:
    from logmm.einsum import SEMIRINGS
    from logmm.einsum_files import EINSUM_SEMIRINGS

    assert tuple(EINSUM_SEMIRINGS) == tuple(SEMIRINGS)


# ----------------------------------------------------------------------------- subprocess


def test_subprocess_on_sample_data(tmp_path: Path) -> None:
    sample = ROOT / "sample_data"
    out = tmp_path / "t16.h5"
    proc = subprocess.run([str(LOGMM), "power", str(sample / "trans.npy"), "-n", "16",
                           "-o", str(out), "--explain"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("P^16: 4 squarings of 3×3 matrices") and len(lines) == 2
    P = np.load(sample / "trans.npy")
    got = _read(out)
    np.testing.assert_allclose(np.exp(got), np.linalg.matrix_power(np.exp(P), 16),
                               rtol=1e-12, atol=1e-15)
    assert np.isneginf(got[np.tril_indices(3, -1)]).all()     # left-to-right stays so
    proc = subprocess.run([str(LOGMM), "chain", f"{sample}/chain.h5:/m1",
                           f"{sample}/chain.h5:/m3", "-o", str(tmp_path / "c.h5")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "must equal" in proc.stderr and not (tmp_path / "c.h5").exists()
