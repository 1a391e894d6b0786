"""logmm.dask: lazy dask graphs over the kernels (issue 14, item 1).

References are the in-memory kernels on the same blocks (bit for bit), with a chunked
contraction axis folded by one float64 ``LogSumAccumulator`` in k order (what ``logmm
multiply`` does), and the 200-bit mpmath product within the documented bound. Most tests
run on the threaded scheduler; one runs a ``distributed.LocalCluster`` of two worker
processes end to end (file → product → Zarr).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import logmm  # noqa: E402
import logmm.dask as ld  # noqa: E402
from logmm.accumulate import LogSumAccumulator  # noqa: E402
from logmm.adversarial import banded, log_probabilities, neg_inf_mask  # noqa: E402

from exact_reference import error_bound, exact_logmatmul, max_abs_error  # noqa: E402


def bounds(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    edges = np.cumsum((0, *chunks))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def tiled_reference(A: np.ndarray, B: np.ndarray, row_chunks: tuple[int, ...],
                    k_chunks: tuple[int, ...], col_chunks: tuple[int, ...],
                    dtype: np.dtype | None = None) -> np.ndarray:
    """Each (i, j) tile by the in-memory kernel; several k chunks folded in k order by one
    float64 LogSumAccumulator, as ``logmm multiply`` combines a contraction split."""
    out_dtype = logmm.logmatmul.result_dtype(A.dtype, B.dtype, dtype)
    C = np.empty((A.shape[0], B.shape[1]), out_dtype)
    for r0, r1 in bounds(row_chunks):
        for c0, c1 in bounds(col_chunks):
            if len(k_chunks) == 1:
                C[r0:r1, c0:c1] = logmm.logmatmulexp(A[r0:r1], B[:, c0:c1], dtype=out_dtype)
                continue
            acc = LogSumAccumulator((r1 - r0, c1 - c0), np.float64)
            for k0, k1 in bounds(k_chunks):
                acc.add(logmm.logmatmulexp(A[r0:r1, k0:k1], B[k0:k1, c0:c1], dtype=out_dtype))
            C[r0:r1, c0:c1] = acc.result(out_dtype)
    return C


def compute(x: da.Array) -> np.ndarray:
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("error")          # no RuntimeWarning from any task
        return x.compute()


# ------------------------------------------------------------------------ import rules

def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_logmm_does_not_import_dask() -> None:
    proc = _run("import json, sys, numpy as np, logmm\n"
                "logmm.logmatmulexp(np.zeros((2, 2)), np.zeros((2, 2)))\n"
                "print(json.dumps([m for m in ('dask', 'distributed') if m in sys.modules]))")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    proc = _run("import sys, logmm.dask\nassert 'dask.array' in sys.modules")
    assert proc.returncode == 0, proc.stderr


def test_missing_dask_names_the_extra() -> None:
    proc = _run("import sys\nsys.modules['dask'] = None\nimport logmm.dask")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: logmm.dask needs dask"), last
    assert "pip install 'logmm[dask]'" in last


# ------------------------------------------------------------------------ logmatmulexp

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunked_k_is_the_in_order_accumulator_bit_for_bit(dtype: type) -> None:
    # banded: about a third of the entries need the rebalanced/blocked/exact tiers
    A, B = banded(37, 50, 23, fraction=0.3, dtype=dtype, seed=4)
    rows, ks, cols = (16, 16, 5), (7, 20, 13, 10), (10, 13)
    C = ld.logmatmulexp(da.from_array(A, chunks=(rows, ks)), da.from_array(B, chunks=(ks, cols)))
    assert C.dtype == dtype and C.chunks == (rows, cols)
    got = compute(C)
    assert got.dtype == dtype
    ref = tiled_reference(A, B, rows, ks, cols)
    assert got.tobytes() == ref.tobytes()
    # the partial products are tasks of their own: one per (i, j, k) block
    four = [k for k in C.__dask_graph__() if isinstance(k, tuple) and len(k) == 4]
    partials = [k for k in four if not k[0].startswith("logmatmulexp-fold")]
    assert len(partials) == len(rows) * len(cols) * len(ks)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunked_k_within_the_documented_bound_of_the_exact_product(dtype: type) -> None:
    A, B = banded(9, 30, 7, fraction=0.5, dtype=dtype, seed=1)
    got = compute(ld.logmatmulexp(da.from_array(A, chunks=(4, 8)), da.from_array(B, chunks=(8, 3))))
    exact = exact_logmatmul(A, B)
    assert max_abs_error(got, exact) <= error_bound(A, B, np.dtype(dtype))


def test_one_k_chunk_tile_is_the_kernel_on_the_tile() -> None:
    A, B = log_probabilities(30, 40, 20, seed=2)
    C = ld.logmatmulexp(da.from_array(A, chunks=(7, 40)), da.from_array(B, chunks=(40, 6)))
    assert compute(C).tobytes() == tiled_reference(A, B, C.chunks[0], (40,), C.chunks[1]).tobytes()
    # numpy operands are accepted (one chunk each: the kernel on the whole arrays)
    assert compute(ld.logmatmulexp(A, B)).tobytes() == logmm.logmatmulexp(A, B).tobytes()


def test_mismatched_k_chunks_are_unified() -> None:
    A, B = log_probabilities(10, 30, 8, seed=3)
    C = ld.logmatmulexp(da.from_array(A, chunks=(5, 10)), da.from_array(B, chunks=(15, 8)))
    # the common refinement of (10, 10, 10) and (15, 15): (10, 5, 5, 10)
    ref = tiled_reference(A, B, (5, 5), (10, 5, 5, 10), (8,))
    assert compute(C).tobytes() == ref.tobytes()


def test_dtype_argument_and_mixed_dtypes() -> None:
    A, B = log_probabilities(12, 20, 6, seed=5)
    A32 = A.astype(np.float32)
    C = ld.logmatmulexp(da.from_array(A32, chunks=(6, 10)), da.from_array(B, chunks=(10, 6)))
    assert C.dtype == np.float64                               # result_type(f32, f64)
    C32 = ld.logmatmulexp(da.from_array(A, chunks=(6, 10)), da.from_array(B, chunks=(10, 6)),
                          dtype=np.float32)
    got = compute(C32)
    assert got.dtype == np.float32
    assert got.tobytes() == tiled_reference(A, B, (6, 6), (10, 10), (6,), np.float32).tobytes()


def test_neg_inf_rows_and_columns_give_neg_inf_without_warnings() -> None:
    A, B = neg_inf_mask(20, 24, 9, density=0.5, seed=6)
    A[3] = -np.inf                                # a dead row
    A[5, :12] = -np.inf                           # dead in the first k chunks only
    B[:, 4] = -np.inf                             # a dead column
    got = compute(ld.logmatmulexp(da.from_array(A, chunks=(10, 6)),
                                  da.from_array(B, chunks=(6, 5))))
    assert np.all(got[3] == -np.inf) and np.all(got[:, 4] == -np.inf)
    assert not np.isnan(got).any()
    assert max_abs_error(got, exact_logmatmul(A, B)) <= error_bound(A, B, np.dtype(np.float64))
    assert got.tobytes() == tiled_reference(A, B, (10, 10), (6,) * 4, (5, 4)).tobytes()


def test_nan_reaches_exactly_the_entries_it_enters() -> None:
    A, B = log_probabilities(8, 18, 5, seed=7)
    A[2, 13] = np.nan                             # k chunk 2 of 3
    B[4, 3] = np.nan                              # k chunk 0
    got = compute(ld.logmatmulexp(da.from_array(A, chunks=(4, 6)),
                                  da.from_array(B, chunks=(6, 5))))
    expected = np.zeros(got.shape, bool)
    expected[2, :] = True
    expected[:, 3] = True
    assert np.array_equal(np.isnan(got), expected)


def test_posinf_is_refused_when_computed() -> None:
    A, B = log_probabilities(8, 12, 4, seed=8)
    A[6, 10] = np.inf
    C = ld.logmatmulexp(da.from_array(A, chunks=(4, 6)), da.from_array(B, chunks=(6, 4)))
    with pytest.raises(logmm.InputError, match=r"A contains \+inf, which is not a "
                                               r"log-probability"):
        compute(C)
    B[0, 0] = np.inf
    C = ld.logmatmulexp(A[:4], da.from_array(B, chunks=(6, 4)))
    with pytest.raises(logmm.InputError, match=r"B contains \+inf"):
        compute(C)


def test_bad_operands_are_refused_when_building() -> None:
    A = da.zeros((4, 5), chunks=2)
    with pytest.raises(logmm.InputError, match=r"shape mismatch: A is \(4, 5\) and B is "
                                               r"\(4, 3\)"):
        ld.logmatmulexp(A, da.zeros((4, 3)))
    with pytest.raises(logmm.InputError, match="2-D operands"):
        ld.logmatmulexp(da.zeros((2, 4, 5)), da.zeros((5, 3)))
    with pytest.raises(logmm.InputError, match="unknown method"):
        ld.logmatmulexp(A, da.zeros((5, 3)), method="quick")
    with pytest.raises(logmm.InputError, match="dtype complex128 is not supported"):
        ld.logmatmulexp(A.astype(complex), da.zeros((5, 3)))
    with pytest.raises(logmm.InputError, match="not supported; use float32 or float64"):
        ld.logmatmulexp(A, da.zeros((5, 3)), dtype=np.float16)


def test_empty_contraction_is_log_zero() -> None:
    got = compute(ld.logmatmulexp(da.zeros((3, 0)), da.zeros((0, 2))))
    assert got.shape == (3, 2) and np.all(got == -np.inf)


# ------------------------------------------------------------------------ from_address

@pytest.fixture()
def stored(tmp_path: Path) -> dict[str, object]:
    import h5py
    import zarr

    A, B = banded(60, 48, 20, fraction=0.2, seed=9)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("a", data=A, chunks=(8, 48))
    z = zarr.create_array(str(tmp_path / "b.zarr"), name="b", shape=B.shape, dtype=B.dtype,
                          chunks=(16, 10))
    z[...] = B
    np.save(tmp_path / "a32.npy", A.astype(np.float32))
    return {"A": A, "B": B, "a": f"{tmp_path}/a.h5:/a", "b": f"{tmp_path}/b.zarr:b",
            "a32": str(tmp_path / "a32.npy"), "dir": tmp_path}


def test_from_address_reads_every_format(stored) -> None:
    a = ld.from_address(stored["a"])
    assert a.shape == (60, 48) and a.dtype == np.float64
    assert a.chunks[1] == (48,) and all(c % 8 == 0 for c in a.chunks[0][:-1])  # chunk_rows
    assert compute(a).tobytes() == stored["A"].tobytes()
    b = ld.from_address(stored["b"], chunks=(16, 5))
    assert b.chunks == ((16, 16, 16), (5,) * 4)
    assert compute(b).tobytes() == stored["B"].tobytes()
    a32 = ld.from_address(stored["a32"], chunks={0: 25})
    assert a32.dtype == np.float32 and a32.chunks == ((25, 25, 10), (48,))
    assert compute(a32).tobytes() == stored["A"].astype(np.float32).tobytes()


def test_from_address_graph_pickles_by_address_and_runs_elsewhere(stored, tmp_path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    A_d = ld.from_address(stored["a"], chunks=(20, 16))
    B_d = ld.from_address(stored["b"], chunks=(16, 10))
    C = ld.logmatmulexp(A_d, B_d)
    graph = dict(C.__dask_graph__())
    # plain pickle refuses h5py and zarr handles: the graph holds addresses only
    blob = pickle.dumps(graph)
    assert cloudpickle.loads(cloudpickle.dumps(graph)).keys() == graph.keys()
    (tmp_path / "graph.pkl").write_bytes(pickle.dumps((graph, C.__dask_keys__())))
    code = ("import pickle, sys, numpy as np, dask\n"
            "graph, keys = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            "tiles = dask.get(graph, keys)\n"
            "np.save(sys.argv[2], np.block([list(row) for row in tiles]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "graph.pkl"),
                           str(tmp_path / "c.npy")], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    ref = tiled_reference(stored["A"], stored["B"], (20, 20, 20), (16, 16, 16), (10, 10))
    assert np.load(tmp_path / "c.npy").tobytes() == ref.tobytes()
    assert b"h5py" not in blob and len(blob) < 100_000


def test_from_address_sees_a_rewritten_file(stored) -> None:
    first = ld.from_address(stored["a32"])
    np.save(stored["a32"], np.zeros((60, 48), np.float32))
    second = ld.from_address(stored["a32"])
    assert first.name != second.name
    assert np.all(compute(second) == 0)


def test_from_address_refusals(stored, tmp_path) -> None:
    import scipy.sparse as sp

    sp.save_npz(tmp_path / "x.npz", sp.random(5, 4, density=0.5, format="csr", random_state=0))
    with pytest.raises(logmm.InputError, match=r"holds a sparse matrix; give "
                                               r"logmm.dask.from_address\(..., sparse=True\)"):
        ld.from_address(tmp_path / "x.npz")
    with pytest.raises(logmm.InputError, match="is sparse; from_address chunks such arrays by "
                                               "rows only"):
        ld.from_address(tmp_path / "x.npz", chunks=(2, 2), sparse=True)
    with pytest.raises(logmm.MissingInputError, match="no such file"):
        ld.from_address(tmp_path / "nope.h5:/a")
    np.save(tmp_path / "t.npy", np.zeros((4, 3, 2)))
    with pytest.raises(logmm.InputError, match="by rows only"):
        ld.from_address(tmp_path / "t.npy", chunks=(2, 1, 2))
    t = ld.from_address(tmp_path / "t.npy", chunks=(2, -1, -1))
    assert compute(t).shape == (4, 3, 2)


@pytest.mark.parametrize("name", ["x_sparse.h5", "x_sparse.zarr", "x_sparse.npz"])
@pytest.mark.parametrize("semiring", ["real", "log"])
def test_from_address_sparse_rows_feed_block_project(tmp_path: Path, name: str,
                                                     semiring: str) -> None:
    from logmm.io.readers import open_array
    from logmm.samples import write_sample_data

    write_sample_data(tmp_path)
    X = ld.from_address(tmp_path / name, chunks=(7, -1), sparse=True)
    assert X.chunks == ((7,) * 8 + (4,), (48,))
    with open_array(tmp_path / name, sparse=True) as reader:
        Xs = reader.read_all()
    assert (compute(X) != Xs).nnz == 0                  # CSR blocks, joined by dask
    W = np.load(tmp_path / "w.npy")
    P = ld.block_project(X, W, 6, semiring=semiring)
    ref = row_blocks(lambda x: logmm.block_project(x, W, 6, semiring=semiring), Xs, X.chunks[0])
    got = compute(P)
    assert got.dtype == ref.dtype == P.dtype and got.tobytes() == ref.tobytes()
    # a dense file with sparse=True is an ordinary dense array
    dense = ld.from_address(tmp_path / "a.npy", sparse=True)
    assert isinstance(dense._meta, np.ndarray)


# ------------------------------------------------------------- row-blockwise kernels

def row_blocks(fn, X: np.ndarray, rows: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([fn(X[r0:r1]) for r0, r1 in bounds(rows)])


@pytest.mark.parametrize("semiring", ["real", "log"])
def test_kron_matvec_and_block_project_per_row_chunk(semiring: str) -> None:
    rng = np.random.default_rng(10)
    X = rng.normal(size=(45, 24)).astype(np.float32)
    F1, F2 = rng.normal(size=(3, 4)), rng.normal(size=(5, 6)).astype(np.float32)
    W = rng.normal(size=(2, 8)).astype(np.float32)
    Xd = da.from_array(X, chunks=(20, 12))          # two column chunks: rechunked
    K = ld.kron_matvec([F1, F2], Xd, semiring=semiring)
    assert K.chunks == ((20, 20, 5), (15,)) and K.dtype == np.float64
    ref = row_blocks(lambda x: logmm.kron_matvec([F1, F2], x, semiring=semiring), X, (20, 20, 5))
    assert compute(K).tobytes() == ref.tobytes()
    P = ld.block_project(Xd, W, 3, semiring=semiring)
    assert P.dtype == np.float32 and P.chunks == ((20, 20, 5), (6,))
    ref = row_blocks(lambda x: logmm.block_project(x, W, 3, semiring=semiring), X, (20, 20, 5))
    assert compute(P).tobytes() == ref.tobytes()
    with pytest.raises(logmm.InputError, match="does not divide"):
        ld.block_project(Xd, W, 5)
    with pytest.raises(logmm.InputError, match="multiply to"):
        ld.kron_matvec([F1, F1], Xd)


def test_log_project_neg_inf_and_posinf() -> None:
    X = np.log(np.random.default_rng(11).dirichlet(np.ones(12), size=10))
    X[4] = -np.inf
    W = np.log(np.full((2, 4), 0.25))
    got = compute(ld.block_project(da.from_array(X, chunks=(3, 12)), W, 3, semiring="log"))
    assert np.all(got[4] == -np.inf) and np.isfinite(np.delete(got, 4, axis=0)).all()
    X[7, 2] = np.inf
    with pytest.raises(logmm.InputError, match=r"\+inf"):
        compute(ld.block_project(da.from_array(X, chunks=(3, 12)), W, 3, semiring="log"))


@pytest.mark.parametrize("reduce", ["none", "row", "sum"])
def test_diag_gaussian_logpdf_per_row_chunk(reduce: str) -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    mu = rng.normal(size=6).astype(np.float32)
    rho = rng.normal(size=(50, 6)).astype(np.float32)       # full array: follows x's chunks
    xd = da.from_array(x, chunks=(16, 3))
    got = compute(ld.diag_gaussian_logpdf(xd, mu, rho=da.from_array(rho, chunks=(25, 6)),
                                          reduce=reduce))
    whole = logmm.diag_gaussian_logpdf(x, mu, rho=rho, reduce=reduce)
    if reduce == "sum":
        assert got.dtype == np.float64 and abs(float(got) - whole) <= 1e-12 * abs(whole)
        return
    rows = (16, 16, 16, 2)
    ref = np.concatenate([logmm.diag_gaussian_logpdf(x[a:b], mu, rho=rho[a:b], reduce=reduce)
                          for a, b in bounds(rows)])
    assert got.dtype == np.float32 and got.tobytes() == ref.tobytes()
    per_row = np.linspace(0.5, 3.0, 50).astype(np.float32)[:, None]      # (r, 1) sigma
    got = compute(ld.diag_gaussian_logpdf(xd, mu, sigma=per_row, reduce=reduce))
    assert got.tobytes() == np.concatenate([logmm.diag_gaussian_logpdf(
        x[a:b], mu, sigma=per_row[a:b], reduce=reduce) for a, b in bounds(rows)]).tobytes()
    scalar = compute(ld.diag_gaussian_logpdf(xd, 0.5, sigma=2.0, reduce=reduce))
    assert scalar.dtype == np.float32
    assert scalar.tobytes() == np.concatenate([logmm.diag_gaussian_logpdf(
        x[a:b], 0.5, sigma=2.0, reduce=reduce) for a, b in bounds(rows)]).tobytes()


def test_diag_gaussian_logpdf_refusals() -> None:
    x = da.zeros((10, 3), chunks=5)
    with pytest.raises(logmm.UsageError, match="exactly one of sigma and rho"):
        ld.diag_gaussian_logpdf(x, 0.0)
    with pytest.raises(logmm.UsageError, match="unknown reduce"):
        ld.diag_gaussian_logpdf(x, 0.0, sigma=1.0, reduce="mean")
    with pytest.raises(logmm.InputError, match="do not broadcast"):
        ld.diag_gaussian_logpdf(x, np.zeros(4), sigma=1.0)
    sigma = np.ones((10, 3))
    sigma[7, 1] = 0.0                    # found when its block is computed
    lazy = ld.diag_gaussian_logpdf(x, 0.0, sigma=sigma)
    with pytest.raises(logmm.InputError, match="sigma must be finite and > 0"):
        compute(lazy)


# ------------------------------------------------------------- a cluster of processes

def test_local_cluster_from_address_product_to_zarr(stored, tmp_path, process_cluster) -> None:
    distributed = pytest.importorskip("distributed")
    import zarr

    A_d = ld.from_address(stored["a"], chunks=(24, 16))
    B_d = ld.from_address(stored["b"], chunks=(16, 10))
    C = ld.logmatmulexp(A_d, B_d)
    with distributed.Client(process_cluster):        # 2 worker processes (conftest)
        C.to_zarr(str(tmp_path / "c.zarr"))
    got = zarr.open_array(str(tmp_path / "c.zarr"), mode="r")
    assert got.chunks == (24, 10)
    ref = tiled_reference(stored["A"], stored["B"], (24, 24, 12), (16, 16, 16), (10, 10))
    assert got[...].tobytes() == ref.tobytes()


def test_scaling_doc_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import zarr

    doc = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text("utf-8")
    section = doc[doc.index("## `logmm.dask`: lazy graphs"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)[1]
    monkeypatch.chdir(tmp_path)
    with dask.config.set(scheduler="threads"):
        exec(compile(block, "docs/scaling.md", "exec"), {})
    assert capsys.readouterr().out.startswith("(2000, 40) float64 ")
    with logmm.io.open_array("a.h5:/a") as reader:
        A = reader.read_all()
    B = np.load("b.npy")
    ref = tiled_reference(A, B, (500,) * 4, (100,) * 3, (40,))
    assert zarr.open_array("c.zarr", mode="r")[...].tobytes() == ref.tobytes()
