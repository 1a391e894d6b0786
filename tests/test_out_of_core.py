"""Out-of-core multiply: memory budget, B panels and contraction splits, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import logmm.multiply as engine
from logmm import adversarial, logmatmulexp
from logmm.errors import LogmmError
from logmm.io import open_array
from logmm.io.resume import lock_path, record_path
from logmm.io.writers import partial_path
from logmm.multiply import multiply
from logmm.plan import KERNEL_OVERHEAD

from cli_run import kill_after_blocks
from exact_reference import error_bound, max_abs_error

MiB = 1 << 20


def read(address: str | Path) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


# ---------------------------------------------------------------- panels and K-splits

def test_b_larger_than_budget_streams_panels(tmp_path: Path) -> None:
    A, B = adversarial.banded(300, 2000, 600, fraction=0.1, seed=1)
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    result = multiply(tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.h5",
                      memory=KERNEL_OVERHEAD + 16 * MiB)
    assert not result.plan.b_resident and result.plan.k_chunk == 2000
    assert len(result.plan.col_panels()) > 1
    C = read(tmp_path / "c.h5")
    assert max_abs_error(C, logmatmulexp(A, B)) <= error_bound(A, B, np.float64)
    assert result.report.repaired > 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tall_b_splits_the_contraction_and_combines_partials(tmp_path: Path, dtype) -> None:
    # K = 6000 is 12 chunks of 512 and B 2 column panels under the budget (20000: 40
    # chunks, and its exact reference took 3x as long)
    A, B = adversarial.banded(200, 6000, 100, fraction=0.2, dtype=dtype, seed=2)
    B[:, 7] = -np.inf                               # an all -inf column survives the split
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    result = multiply(tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy",
                      memory=KERNEL_OVERHEAD + 4 * MiB)
    assert len(result.plan.k_chunks()) > 1 and len(result.plan.col_panels()) > 1
    C = read(tmp_path / "c.npy")
    assert C.dtype == dtype
    expected = logmatmulexp(A, B, method="exact")
    assert np.all(C[:, 7] == -np.inf)
    assert max_abs_error(C, expected) <= 2 * error_bound(A, B, dtype)


# ---------------------------------------------------------------- memory, measured

def _peak_anon_kib(code: str, cwd: Path) -> tuple[int, str]:
    """Run ``code`` in a fresh interpreter; sample its RssAnon; return (peak KiB, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stderr=subprocess.PIPE,
                            text=True)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    return peak, err


IMPORTS = "import numpy, h5py, zarr, logmm, logmm.multiply, logmm.io, threadpoolctl\n"


def _memory_case(tmp_path: Path, rows: int, budget: int, out: str) -> tuple[int, int]:
    k = m = 64
    a = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32,
                                  shape=(rows, k))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1 << 18):
        stop = min(rows, start + (1 << 18))
        a[start:stop] = np.log(rng.dirichlet(np.ones(k), size=stop - start))
    a.flush()
    del a
    np.save(tmp_path / "b.npy", np.log(rng.dirichlet(np.ones(m), size=k)).astype(np.float32))
    baseline, _ = _peak_anon_kib(IMPORTS + "numpy.zeros(1)", tmp_path)
    code = IMPORTS + textwrap.dedent(f"""
        from logmm.multiply import multiply
        r = multiply("a.npy", "b.npy", "{out}", memory={budget})
        assert r.shape == ({rows}, {m})
    """)
    peak, _ = _peak_anon_kib(code, tmp_path)
    return baseline * 1024, peak * 1024


@pytest.mark.parametrize("out", ["c.npy", "c.h5"])
def test_peak_anonymous_memory_stays_within_budget(tmp_path: Path, out: str) -> None:
    """A (and C) are 2x the budget, so holding either whole breaks the bound; peak RssAnon
    (sampled) stays within baseline + budget. (4x took twice as long; -m slow runs
    test_large_input_with_small_budget, 1.2 GB of A.)"""
    budget = 64 * MiB
    rows = 2 * budget // (64 * 4)
    baseline, peak = _memory_case(tmp_path, rows, budget, out)
    assert peak - baseline <= budget, (peak - baseline) / MiB


@pytest.mark.slow
def test_large_input_with_small_budget(tmp_path: Path) -> None:
    """1.2 GB of float32 A with --memory 256MB stays below 600 MB of anonymous memory."""
    baseline, peak = _memory_case(tmp_path, 1200 * 10**6 // 256, 256 * MiB, "c.h5")
    assert peak <= 600 * MiB and peak - baseline <= 256 * MiB


# ---------------------------------------------------------------- resume

def _inputs(tmp_path: Path, rows: int = 6000) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    A, B = adversarial.banded(rows, 48, 40, fraction=0.2, seed=5)
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    return tmp_path / "a.npy", tmp_path / "b.npy", A, B


@pytest.mark.parametrize("fmt", ["npy", "h5", "zarr"])
def test_kill_9_then_resume_is_bit_identical(tmp_path: Path, fmt: str) -> None:
    a, b, _, _ = _inputs(tmp_path)
    out = tmp_path / f"c.{fmt}"
    reference = tmp_path / f"ref.{fmt}"
    multiply(a, b, reference, block_rows=64)
    code = (f"from logmm.multiply import multiply\n"
            f"multiply({str(a)!r}, {str(b)!r}, {str(out)!r}, block_rows=64)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    record = record_path(out)
    assert kill_after_blocks(proc, record, 3), "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run left something at the output path"
    assert partial_path(out).exists() and record.exists()

    result = multiply(a, b, out, block_rows=64, resume=True)
    assert result.resumed_blocks > 0
    assert np.array_equal(read(out), read(reference))
    assert not partial_path(out).exists() and not record.exists()
    assert not lock_path(out).exists()


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    real = engine.logmatmulexp_report
    seen = []

    def flaky(*args, **kwargs):
        seen.append(1)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "logmatmulexp_report", flaky)


def test_resume_refuses_changed_inputs_and_options(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, A, _ = _inputs(tmp_path, rows=600)
    out = tmp_path / "c.h5"
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        multiply(a, b, out, block_rows=100)
    monkeypatch.undo()
    with pytest.raises(LogmmError, match=r"cannot resume .*c.h5.*: method was \"auto\", now "
                                         r"\"exact\""):
        multiply(a, b, out, block_rows=100, method="exact", resume=True)
    time.sleep(0.01)
    np.save(a, A + 1.0)                               # same shape, new content and mtime
    with pytest.raises(LogmmError, match=r"cannot resume .*: a was .*now"):
        multiply(a, b, out, block_rows=100, resume=True)
    assert partial_path(out).exists()                 # a refusal touches nothing
    result = multiply(a, b, out, block_rows=100)     # without --resume: afresh
    assert result.resumed_blocks == 0 and not partial_path(out).exists()


def test_resume_without_an_interrupted_run_starts_afresh(tmp_path: Path) -> None:
    a, b, A, B = _inputs(tmp_path, rows=300)
    result = multiply(a, b, tmp_path / "c.zarr", resume=True)
    assert result.resumed_blocks == 0
    np.testing.assert_allclose(read(tmp_path / "c.zarr"), logmatmulexp(A, B), rtol=1e-14)


def test_resume_reuses_the_recorded_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _, _ = _inputs(tmp_path, rows=900)
    out = tmp_path / "c.npy"
    multiply(a, b, tmp_path / "ref.npy", block_rows=100)
    _interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        multiply(a, b, out, block_rows=100)
    monkeypatch.undo()
    result = multiply(a, b, out, resume=True)          # no --block-rows this time
    assert result.plan.block_rows == 100 and result.resumed_blocks == 3
    assert np.array_equal(read(out), read(tmp_path / "ref.npy"))


def test_a_live_lock_is_refused_and_a_stale_one_taken_over(tmp_path: Path) -> None:
    a, b, _, _ = _inputs(tmp_path, rows=50)
    out = tmp_path / "c.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path(out).write_text(str(holder.pid))
        with pytest.raises(LogmmError, match=rf"another logmm run \(pid {holder.pid}\)"):
            multiply(a, b, out)
        assert not out.exists() and not partial_path(out).exists()
    finally:
        holder.kill()
        holder.wait()
    multiply(a, b, out)                                 # the holder is gone: stale lock
    assert out.exists() and not lock_path(out).exists()
    assert not os.path.exists(record_path(out))


def test_project_memory_stays_within_budget(tmp_path: Path) -> None:
    """X (a 20%-sparse HDF5 CSR group, ~4x the budget as dense) streamed by project."""
    import h5py
    import scipy.sparse as sp

    budget = 64 * MiB
    rows, width, per_row = 40000, 30 * 64, 384                 # 20% of each row stored
    cols = np.arange(per_row) * 5 + (np.arange(rows) % 5)[:, None]   # sorted per row
    data = np.random.default_rng(0).random((rows, per_row), dtype=np.float32)
    X = sp.csr_matrix((data.ravel(), cols.ravel(), np.arange(rows + 1) * per_row),
                      shape=(rows, width))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        g = f.create_group("x")
        g.attrs["shape"] = X.shape
        for name in ("data", "indices", "indptr"):
            g.create_dataset(name, data=getattr(X, name))
    np.save(tmp_path / "w.npy", np.ones((30, 64), np.float32))
    del X
    baseline, _ = _peak_anon_kib(IMPORTS + "import scipy.sparse\nnumpy.zeros(1)", tmp_path)
    code = IMPORTS + textwrap.dedent(f"""
        from logmm.project import project
        r = project("x.h5:/x", "y.npy", w_address="w.npy", blocks=30, memory={budget})
        assert len(r.plan.row_blocks()) > 1
    """)
    peak, _ = _peak_anon_kib(code, tmp_path)
    assert (peak - baseline) * 1024 <= budget, (peak - baseline) / 1024
