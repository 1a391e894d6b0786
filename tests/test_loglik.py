"""logmm loglik: streamed diagonal-Gaussian log-likelihood against the in-memory function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import logmm.loglik as engine
from logmm import diag_gaussian_logpdf
from logmm.cli.main import cli
from logmm.io import open_array
from logmm.loglik import loglik


def read(address) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


@pytest.fixture
def data(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    mu = rng.normal(size=6).astype(np.float32)
    rho = rng.normal(size=(500, 6)).astype(np.float32)
    for name, arr in (("x", x), ("mu", mu), ("rho", rho)):
        np.save(tmp_path / f"{name}.npy", arr)
    return {"x": x, "mu": mu, "rho": rho, "dir": tmp_path}


@pytest.mark.parametrize("reduce", ["none", "row"])
@pytest.mark.parametrize("out", ["y.npy", "y.h5", "y.zarr"])
def test_streamed_equals_in_memory(data: dict, reduce: str, out: str) -> None:
    d = data["dir"]
    result = loglik(d / "x.npy", d / out, mu=d / "mu.npy", rho=d / "rho.npy", reduce=reduce,
                    block_rows=64)
    assert len(result.plan.row_blocks()) == 8 and result.dtype == np.float32
    expected = diag_gaussian_logpdf(data["x"], data["mu"], rho=data["rho"], reduce=reduce)
    np.testing.assert_array_equal(read(d / out), expected)


def test_sum_is_returned_and_optionally_written(data: dict) -> None:
    d = data["dir"]
    result = loglik(d / "x.npy", None, mu=0.5, sigma=2.0, reduce="sum", block_rows=100)
    expected = diag_gaussian_logpdf(data["x"], 0.5, sigma=2.0, reduce="sum")
    assert result.total == pytest.approx(expected, rel=1e-12)
    loglik(d / "x.npy", d / "t.npy", mu=0.5, sigma=2.0, reduce="sum")
    assert read(d / "t.npy")[0] == pytest.approx(expected, rel=1e-6)


def test_resume_after_an_interrupt_is_bit_identical(data: dict,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    d = data["dir"]
    loglik(d / "x.npy", d / "ref.h5", mu=d / "mu.npy", rho=d / "rho.npy", block_rows=50)
    real, calls = engine.diag_gaussian_logpdf, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "diag_gaussian_logpdf", flaky)
    with pytest.raises(KeyboardInterrupt):
        loglik(d / "x.npy", d / "y.h5", mu=d / "mu.npy", rho=d / "rho.npy", block_rows=50)
    monkeypatch.undo()
    loglik(d / "x.npy", d / "y.h5", mu=d / "mu.npy", rho=d / "rho.npy", block_rows=50,
           resume=True)
    np.testing.assert_array_equal(read(d / "y.h5"), read(d / "ref.h5"))


def test_cli(data: dict) -> None:
    d = data["dir"]
    runner = CliRunner()
    res = runner.invoke(cli, ["loglik", str(d / "x.npy"), "--mu", "0", "--sigma", "1",
                              "--reduce", "sum"])
    assert res.exit_code == 0, res.output
    assert float(res.stdout) == pytest.approx(
        diag_gaussian_logpdf(data["x"], 0.0, sigma=1.0, reduce="sum"), rel=1e-12)
    res = runner.invoke(cli, ["loglik", str(d / "x.npy"), "--mu", str(d / "mu.npy"), "--rho",
                              str(d / "rho.npy"), "-o", str(d / "c.h5"), "--block-rows", "7"])
    assert res.exit_code == 0 and res.stdout == "" and res.stderr.startswith("wrote ")
    np.save(d / "sig.npy", np.abs(data["mu"]) + 0.1)
    cases = [
        (["--mu", "0"], 2, "exactly one of --sigma and --rho"),
        (["--mu", "0", "--sigma", "1", "--rho", "0", "-o", str(d / "e.npy")], 2,
         "exactly one"),
        (["--mu", "0", "--sigma", "1"], 2, "an output (-o) is needed"),
        (["--mu", str(d / "rho.npy"), "--sigma", str(d / "sig.npy"), "-o", str(d / "e.npy")],
         0, ""),
        (["--mu", "0", "--sigma", "0", "-o", str(d / "f.npy")], 1, "sigma must be finite"),
        (["--mu", str(d / "x.npy"), "--sigma", "1", "--reduce", "sum"], 0, ""),
    ]
    np.save(d / "bad.npy", np.zeros(5))
    np.save(d / "sig.npy", np.abs(data["mu"]) + 0.1)
    cases.append((["--mu", str(d / "bad.npy"), "--sigma", "1", "--reduce", "sum"], 1,
                  "has shape (5,)"))
    for extra, code, message in cases:
        res = runner.invoke(cli, ["loglik", str(d / "x.npy"), *extra])
        assert res.exit_code == code, (extra, res.output)
        assert message in res.stderr
        assert "Traceback" not in res.output
    assert not (d / "f.npy").exists()
