"""The benchmark script runs and prints a ratio table (tiny shapes; timings not asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_logmatmul.py"


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/NAME.py`` as a module, imported as when run as a script (its folder on
    ``sys.path``, itself in ``sys.modules`` for its dataclasses)."""
    script = BENCH.parent / f"{name}.py"
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_bench_logmatmul_quick_prints_tables(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_benchmark("bench_logmatmul", monkeypatch)
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


def test_bench_plots_quick_draws_figures_from_measurements(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (test extra) is not installed")
    module = load_benchmark("bench_plots", monkeypatch)
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    for name in ("time_vs_size.png", "accuracy.png", "memory_vs_size.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    data = json.loads((tmp_path / "bench_plots.json").read_text())
    # The accuracy panel shows logmm within the tests' bound on every family and dtype,
    # and the textbook recipes failing on the public counterexamples.
    for dtype, per_family in data["accuracy"].items():
        for family, row in per_family.items():
            assert row["logmm auto"] <= row["bound"], (dtype, family)
        assert math.isinf(per_family["counterexample 2"]["row/col max shift"]), dtype
        assert math.isinf(per_family["counterexample 1"]["global max shift"]), dtype
    # Every timed method has one point per size it ran at; streaming stays under budget.
    assert {len(v) for v in data["time"]["banded"].values()} == {2}
    streamed = data["memory"]["streamed"]["logmm multiply --memory 64MB"]
    assert all(mib < 64 for _, mib in streamed)


def torch_imports() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_bench_grad_quick_prints_table(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_benchmark("bench_grad", monkeypatch)
    assert module.main(["--n", "48", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    methods = [m for m in module.METHODS if "torch" not in m or torch_imports()]
    rows = [line for line in out.splitlines() if any(line.startswith(m) for m in methods)]
    assert len(rows) == len(methods)
    for line in rows:               # every method's gradient agrees with the f64 one
        assert float(line.split()[-1]) < 1e-4, line
        assert "-" not in line.split()[-3:-1], line      # peak memory was measured


def test_bench_latency_quick_prints_the_target_table(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_benchmark("bench_latency", monkeypatch)
    assert module.main(["--quick", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.search(r"\s(yes|NO)$", line)]
    # one row per target of issue 15 (quick shapes), each with a ratio and a verdict
    assert len(rows) == 13, out
    for case in ("1x8x8 float64", "1x64x64 float64", "64x64x64 float64", "batched",
                 "bimd,bind->bimn", "exact vs broadcast", "HMM forward", "logmm --version"):
        assert any(row.startswith(case) for row in rows), case
    assert all(re.search(r"\d+\.\d\dx", row) for row in rows)
    first = next(row for row in rows if row.startswith("1x8x8"))
    assert (" n/a " in first) == (module.torch is None), first


def test_bench_latency_plot_draws_the_size_sweep(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (test extra) is not installed")
    module = load_benchmark("bench_latency", monkeypatch)
    png = tmp_path / "latency.png"
    assert module.main(["--quick", "--repeats", "1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("n=")] == \
        [f"n={n}" for n in (1, 2, 4, 8, 16, 32, 64)]


def test_bench_dask_api_quick_prints_the_ratio_table(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed", reason="dask (logmm[dask]) is not installed")
    module = load_benchmark("bench_dask_api", monkeypatch)
    assert module.main(["--quick", "--rows", "9000", "--k", "32"]) == 0
    out = capsys.readouterr().out
    # the graph gave multiply's bytes on both schedulers, as did multiply on the cluster,
    # and each run has its ratios to multiply and to multiply on the cluster
    assert ("bytes identical to multiply: {'dask-threads': True, 'dask-2procs': True, "
            "'multiply-dask': True}") in out
    for run in ("multiply", "dask-threads", "dask-2procs", "multiply-dask"):
        assert re.search(rf"^{run}\s+\d+\.\d+\s+\d+\.\d\s+\d+\.\d\dx\s+\d+\.\d\dx$", out,
                         re.MULTILINE), run


def test_bench_scaling_quick_prints_throughput_and_client_bytes(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_benchmark("bench_scaling", monkeypatch)
    # K = M = 64 (not 256): the same 2 blocks per run and every code path, 11.4 s -> 6.9 s
    assert module.main(["--quick", "--k", "64"]) == 0
    out = capsys.readouterr().out
    assert "results identical across ways and formats: True" in out
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()
            if re.match(r"(zarr|h5)\s+(local-2|local-1|dask-2)\s", line)}
    ways = ["local-2", "local-1"]
    try:
        import distributed  # noqa: F401
        ways.append("dask-2")
    except ImportError:
        pass
    assert set(rows) == {(ext, way) for ext in ("zarr", "h5") for way in ways}, out
    if "dask-2" in ways:
        # workers write a Zarr output's chunks, and an HDF5 output's blocks under the
        # file's lock: the client gets the summaries only
        for ext in ("zarr", "h5"):
            assert float(rows[ext, "dask-2"][-2]) < 1 and float(rows[ext, "dask-2"][-1]) < 1
        assert "## estimate, --scheduler dask" in out and "an HDF5 output instead" in out
