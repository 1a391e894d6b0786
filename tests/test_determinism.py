"""The kernel's bytes do not depend on the number of threads or cores (issue 14, item 4).

OpenBLAS's result for a row changes with the number of rows in the GEMM call and with its
thread count; the kernel cuts rows into tiles sized by the shape alone and runs every GEMM
on one BLAS thread. Each test computes one product under several forced thread counts
(``--threads``/``threads=``, and the detected core count of a bigger machine) and
compares the bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import logmm
import logmm.resources as resources
from logmm import adversarial
from logmm.resources import use_threads

from cli_run import run_logmm

THREADS = (1, 2, 3, 8, 16, 64)


def _log_probs(n: int, k: int, m: int, dtype: type, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (np.log(rng.dirichlet(np.ones(k), size=n)).astype(dtype),
            np.log(rng.dirichlet(np.ones(m), size=k)).astype(dtype))


def _bytes_under(threads: int, compute: Callable[[], np.ndarray]) -> bytes:
    with use_threads(threads):
        return compute().tobytes()


def _same_bytes_for_every_thread_count(compute: Callable[[], np.ndarray],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _bytes_under(1, compute)
    for threads in THREADS[1:]:
        assert _bytes_under(threads, compute) == reference, f"threads={threads}"
    # a machine with 16 or 64 cores, no --threads: the detected count, BLAS as it starts
    for cores in (16, 64):
        monkeypatch.setattr(resources, "_detected_threads", lambda cores=cores: cores)
        with threadpool_limits(limits=cores, user_api="blas"):
            assert compute().tobytes() == reference, f"{cores} cores"
    monkeypatch.undo()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_skinny_product_like_the_issue(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 102000x40x17 product differed by <= 2 ulp in ~0.5% of entries between 1 and 16
    cores; this is the same shape with fewer rows (the full one is marked slow)."""
    A, B = _log_probs(20000, 40, 17, dtype, seed=1)
    _same_bytes_for_every_thread_count(lambda: logmm.logmatmulexp(A, B), monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_issues_102000x40x17_product(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    A, B = _log_probs(102000, 40, 17, dtype, seed=1)
    _same_bytes_for_every_thread_count(lambda: logmm.logmatmulexp(A, B), monkeypatch)


@pytest.mark.parametrize(("n", "k", "m", "dtype"), [
    (600, 256, 256, np.float32),     # GEMM-bound: 256-row tiles (one 2-thread GEMM before)
    (600, 256, 256, np.float64),
    (300, 64, 64, np.float32),       # one tile, the lean path
    (1, 8, 8, np.float64),
    (1, 512, 512, np.float32),      # a gemv above its single-thread bound: pinned
    (30000, 300, 3, np.float32),
])
def test_shapes_and_dtypes(n: int, k: int, m: int, dtype: type,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    A, B = _log_probs(n, k, m, dtype, seed=2)
    _same_bytes_for_every_thread_count(lambda: logmm.logmatmulexp(A, B), monkeypatch)


@pytest.mark.parametrize(("family", "kwargs", "tier"), [
    ("banded", {"fraction": 0.3}, "rebalanced"),
    ("banded", {"fraction": 0.1}, "blocked"),
    ("huge_magnitudes", {}, "exact"),
])
def test_repair_tiers(family: str, kwargs: dict, tier: str,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Large enough for the fast tiles and the repair tiles to run on worker threads."""
    A, B = adversarial.FAMILIES[family](3000, 128, 40, seed=12, **kwargs)
    report = logmm.logmatmulexp_report(A, B)[1]
    assert getattr(report, tier) > 0, report
    _same_bytes_for_every_thread_count(lambda: logmm.logmatmulexp(A, B), monkeypatch)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_methods(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    A, B = adversarial.banded(2000, 96, 30, fraction=0.2, seed=4)
    _same_bytes_for_every_thread_count(lambda: logmm.logmatmulexp(A, B, method=method),
                                       monkeypatch)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batched_products(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of the batched fast tier, in runs of the leading axis shared by threads."""
    rng = np.random.default_rng(3)
    A = np.log(rng.dirichlet(np.ones(64), size=(40, 300))).astype(dtype)
    B = np.log(rng.dirichlet(np.ones(64), size=(40, 64))).astype(dtype)
    _same_bytes_for_every_thread_count(lambda: logmm.logmatmulexp(A, B), monkeypatch)


def test_kernel_in_a_thread_while_another_holds_blas_threads() -> None:
    """threadpoolctl lets only one thread set OpenBLAS's thread count: a kernel running in
    another thread (a Dask worker's, say) while the CLI's --threads limit is held by the
    main thread must still run its GEMMs on one BLAS thread."""
    A, B = _log_probs(600, 256, 256, np.float32, seed=5)
    reference = _bytes_under(1, lambda: logmm.logmatmulexp(A, B))
    got: list[bytes] = []
    with use_threads(2):
        worker = threading.Thread(target=lambda: got.append(logmm.logmatmulexp(A, B).tobytes()))
        worker.start()
        worker.join()
        # and the main thread's BLAS limit is restored after the kernel
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}
    assert got == [reference]


@pytest.mark.parametrize("plan", [[], ["--block-rows", "500"]])
def test_cli_threads_1_and_2_write_identical_files(tmp_path, plan: list[str]) -> None:
    """docs/scaling.md: the same block plan gives the same bytes whatever ``--threads``."""
    A, B = _log_probs(1200, 256, 256, np.float32, seed=6)
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    for threads in (1, 2):
        proc = run_logmm("multiply", tmp_path / "a.npy", tmp_path / "b.npy",
                         "-o", tmp_path / f"c{threads}.npy", "--threads", str(threads), *plan)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c1.npy").read_bytes() == (tmp_path / "c2.npy").read_bytes()
