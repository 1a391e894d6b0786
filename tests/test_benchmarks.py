"""The benchmark script runs and prints a ratio table (tiny shapes; timings not asserted)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_logmatmul.py"


def test_bench_logmatmul_quick_prints_tables(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))      # as when run as a script
    spec = importlib.util.spec_from_file_location("bench_logmatmul", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("## ") == 6
    for method in ("naive", "global_max", "rowcol_max", "fast", "auto", "exact", "broadcast"):
        assert re.search(rf"^{method}\s+\d", out, re.MULTILINE), method
    # auto's sampled error is small on every case (float32 included); the textbook
    # recipes fail on the banded cases.
    auto_errors = [float(line.split()[-1]) for line in out.splitlines()
                   if line.startswith("auto ")]
    assert auto_errors and max(auto_errors) < 1e-4
    assert re.search(r"^rowcol_max\s.*\sinf$", out, re.MULTILINE)


def torch_imports() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_bench_grad_quick_prints_table(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = BENCH.parent / "bench_grad.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_grad", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--n", "48", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    methods = [m for m in module.METHODS if "torch" not in m or torch_imports()]
    rows = [line for line in out.splitlines() if any(line.startswith(m) for m in methods)]
    assert len(rows) == len(methods)
    for line in rows:               # every method's gradient agrees with the f64 one
        assert float(line.split()[-1]) < 1e-4, line
        assert "-" not in line.split()[-3:-1], line      # peak memory was measured
