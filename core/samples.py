"""Write logmm's small, deterministic sample inputs (seeded; under 1 MB in all).

``logmm sample-data DIR`` and ``python sample_data/make_sample_data.py [--out DIR]`` both
call :func:`write_sample_data`. Files:

- ``a.npy``, ``a.h5:/a``, ``a.zarr:a`` - A, 200×64 float64: log of a row-stochastic matrix
  whose rows range from flat to very peaked (entries down to about -800; ``exp`` of
  anything below about -745 underflows to 0 in float64)
- ``b.npy``, ``b.h5:/b``, ``b.zarr:b`` - B, 64×32 float64: log of a row-stochastic matrix,
  so every row of ``log(exp(A) @ exp(B))`` has logsumexp 0
- ``adversarial.h5:/a`` (8×6) and ``adversarial.h5:/b`` (6×4) - a pair on which the textbook
  recipes fail: entry (0, 0) is ``log(e^(-500+900) + e^(900-500)) = 400 + log 2``, but
  ``exp`` overflows, and shifting by A's row maximum and B's column maximum leaves
  ``e^-1400 * 1 + 1 * e^-1400 = 0``, i.e. ``-inf``. Also contains ``-inf`` (log 0) entries.

For ``logmm project`` (Kronecker-free projection; X's width 48 = 6·8 = 2·6·4):

- ``x.h5:/x`` - X, 60×48 float32, dense
- ``x_sparse.npz`` (``scipy.sparse.save_npz``), ``x_sparse.h5:/x`` and ``x_sparse.zarr:x``
  (CSR groups: ``data``, ``indices``, ``indptr`` and a ``shape`` attribute) - the same X
  with about 80% of its entries set to zero
- ``w.npy`` - W, 5×8 float32: ``--blocks 6`` maps each row to 6·5 = 30 values
- ``f1.npy`` (3×2) and ``f2.npy`` (4×4) float32: with ``--identity 6`` between or before
  them, ``(F1 ⊗ I_6 ⊗ F2)`` maps each row to 3·6·4 = 72 values

For ``logmm chain``, ``logmm power`` and ``logmm einsum`` (log-probabilities):

- ``trans.npy`` - the 3×3 log transition matrix of a left-to-right HMM (rows sum to 1 in
  probability space; the last state is absorbing, so the entries below the diagonal are
  ``-inf`` and stay so in every power)
- ``chain.h5:/m1`` (40×30), ``chain.h5:/m2`` (30×50), ``chain.h5:/m3`` (50×5) float64 -
  log row-stochastic matrices whose cheapest order is ``(M1 (M2 M3))``
- ``batch.h5:/x`` (4×6×8) and ``batch.h5:/y`` (4×8×5) float64 - log row-stochastic
  batches for ``'bij,bjk->bik'``; x's rows are peaked (logits of scale 200), so ``exp``
  of the smallest entries underflows

Usage::

    python sample_data/make_sample_data.py [--out DIR]
    logmm multiply sample_data/a.h5 sample_data/b.h5 -o c.h5
    logmm multiply sample_data/adversarial.h5:/a sample_data/adversarial.h5:/b -o adv.npy
    logmm project sample_data/x_sparse.npz sample_data/w.npy --blocks 6 -o y.h5
    logmm power sample_data/trans.npy -n 16 -o trans16.npy
    logmm chain sample_data/chain.h5:/m1 sample_data/chain.h5:/m2 sample_data/chain.h5:/m3 -o c.h5
    logmm einsum 'bij,bjk->bik' sample_data/batch.h5:/x sample_data/batch.h5:/y -o z.h5
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SEED", "main", "write_sample_data"]

SEED = 20240611


def log_row_stochastic(rng: np.random.Generator, shape: tuple[int, int],
                       scale: float | np.ndarray) -> np.ndarray:
    """log of a random row-stochastic matrix: rows of ``scale * N(0, 1)`` logits, normalised.

    ``scale`` may be an array of shape (rows, 1) for rows of different peakedness.
    """
    logits = scale * rng.standard_normal(shape)
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


def adversarial_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (8×6), B (6×4) with the public counterexample ``[[-500, 900]] @ [[900], [-500]]``
    embedded at A[0, :2] and B[:2, 0], a few ``-inf`` entries, and moderate values elsewhere."""
    a = -5.0 + rng.standard_normal((8, 6))
    b = -5.0 + rng.standard_normal((6, 4))
    a[0, :] = [-500.0, 900.0, -1000.0, -1000.0, -1000.0, -1000.0]
    b[:, 0] = [900.0, -500.0, -1000.0, -1000.0, -1000.0, -1000.0]
    a[3, 2] = -np.inf
    b[4, :] = -np.inf  # a row of zeros in probability space
    return a, b


def projection_example(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """X (60×48) dense and 20%-dense, W (5×8), F1 (3×2), F2 (4×4), all float32."""
    x = rng.standard_normal((60, 48)).astype(np.float32)
    mask = rng.random((60, 48)) < 0.2
    return {"x": x, "x_sparse": np.where(mask, x, np.float32(0)),
            "w": rng.standard_normal((5, 8)).astype(np.float32),
            "f1": rng.standard_normal((3, 2)).astype(np.float32),
            "f2": rng.standard_normal((4, 4)).astype(np.float32)}


def write_csr_group(group: Any, matrix: Any) -> None:
    """Store a CSR matrix in an h5py or zarr group: data, indices, indptr, attrs shape."""
    for name in ("data", "indices", "indptr"):
        arr = getattr(matrix, name)
        if hasattr(group, "create_array"):                        # zarr
            group.create_array(name, data=arr)
        else:                                                     # h5py
            group.create_dataset(name, data=arr)
    group.attrs["shape"] = [int(s) for s in matrix.shape]


def make_sample_data(out: Path) -> list[Path]:
    """Write the sample files into ``out`` (created if needed); return their paths."""
    import h5py
    import zarr

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    a = log_row_stochastic(rng, (200, 64), scale=rng.uniform(1.0, 150.0, size=(200, 1)))
    b = log_row_stochastic(rng, (64, 32), scale=3.0)
    adv_a, adv_b = adversarial_pair(rng)

    written: list[Path] = []
    for name, arr in (("a", a), ("b", b)):
        np.save(out / f"{name}.npy", arr)
        with h5py.File(out / f"{name}.h5", "w") as f:
            f.create_dataset(name, data=arr, chunks=(min(50, arr.shape[0]), arr.shape[1]))
        store = out / f"{name}.zarr"
        if store.exists():
            shutil.rmtree(store)
        group = zarr.open_group(str(store), mode="w", zarr_format=3)
        z = group.create_array(name, shape=arr.shape, dtype=arr.dtype,
                               chunks=(min(50, arr.shape[0]), arr.shape[1]))
        z[:] = arr
        written += [out / f"{name}.npy", out / f"{name}.h5", store]
    with h5py.File(out / "adversarial.h5", "w") as f:
        f.create_dataset("a", data=adv_a)
        f.create_dataset("b", data=adv_b)
    written.append(out / "adversarial.h5")
    written += make_projection_data(out)
    written += make_chain_data(out)
    return written


#: a left-to-right HMM: stay or move one state on; the last state is absorbing
HMM_TRANSITIONS = np.array([[0.90, 0.10, 0.00],
                            [0.00, 0.80, 0.20],
                            [0.00, 0.00, 1.00]])


def chain_example(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The HMM transitions (log), a chain of three log row-stochastic matrices of
    different shapes, and a pair of log row-stochastic batches."""
    with np.errstate(divide="ignore"):
        trans = np.log(HMM_TRANSITIONS)
    x = np.stack([log_row_stochastic(rng, (6, 8), scale=200.0) for _ in range(4)])
    y = np.stack([log_row_stochastic(rng, (8, 5), scale=2.0) for _ in range(4)])
    return {"trans": trans,
            "m1": log_row_stochastic(rng, (40, 30), scale=3.0),
            "m2": log_row_stochastic(rng, (30, 50), scale=3.0),
            "m3": log_row_stochastic(rng, (50, 5), scale=3.0),
            "x": x, "y": y}


def make_chain_data(out: Path) -> list[Path]:
    """Write the ``chain``, ``power`` and ``einsum`` sample files into ``out``."""
    import h5py

    arrays = chain_example(np.random.default_rng(SEED + 2))
    np.save(out / "trans.npy", arrays["trans"])
    with h5py.File(out / "chain.h5", "w") as f:
        for name in ("m1", "m2", "m3"):
            f.create_dataset(name, data=arrays[name])
    with h5py.File(out / "batch.h5", "w") as f:
        for name in ("x", "y"):
            f.create_dataset(name, data=arrays[name])
    return [out / "trans.npy", out / "chain.h5", out / "batch.h5"]


def make_projection_data(out: Path) -> list[Path]:
    """Write the ``logmm project`` sample files into ``out``; return their paths."""
    import h5py
    import scipy.sparse as sp
    import zarr

    arrays = projection_example(np.random.default_rng(SEED + 1))
    with h5py.File(out / "x.h5", "w") as f:
        f.create_dataset("x", data=arrays["x"], chunks=(20, 48))
    csr = sp.csr_matrix(arrays["x_sparse"])
    sp.save_npz(out / "x_sparse.npz", csr)
    with h5py.File(out / "x_sparse.h5", "w") as f:
        write_csr_group(f.create_group("x"), csr)
    store = out / "x_sparse.zarr"
    if store.exists():
        shutil.rmtree(store)
    write_csr_group(zarr.open_group(str(store), mode="w", zarr_format=3).create_group("x"), csr)
    for name in ("w", "f1", "f2"):
        np.save(out / f"{name}.npy", arrays[name])
    return [out / "x.h5", out / "x_sparse.npz", out / "x_sparse.h5", store,
            *(out / f"{name}.npy" for name in ("w", "f1", "f2"))]


def write_sample_data(out: str | Path) -> list[Path]:
    """Write every sample file into ``out`` (created if needed); return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return make_sample_data(out)


def main(argv: list[str] | None = None, default_out: Path | None = None) -> None:
    """Command line: ``python sample_data/make_sample_data.py [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out or Path.cwd(),
                        help="directory to write into")
    args = parser.parse_args(argv)
    for path in write_sample_data(args.out):
        print(path)
