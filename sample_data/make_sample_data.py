"""Write logmm's small, deterministic sample inputs (seeded; under 1 MB in all).

Files (in ``--out DIR``, default this script's directory):

- ``a.npy``, ``a.h5:/a``, ``a.zarr:a`` - A, 200×64 float64: log of a row-stochastic matrix
  whose rows range from flat to very peaked (entries down to about -800; ``exp`` of
  anything below about -745 underflows to 0 in float64)
- ``b.npy``, ``b.h5:/b``, ``b.zarr:b`` - B, 64×32 float64: log of a row-stochastic matrix,
  so every row of ``log(exp(A) @ exp(B))`` has logsumexp 0
- ``adversarial.h5:/a`` (8×6) and ``adversarial.h5:/b`` (6×4) - a pair on which the textbook
  recipes fail: entry (0, 0) is ``log(e^(-500+900) + e^(900-500)) = 400 + log 2``, but
  ``exp`` overflows, and shifting by A's row maximum and B's column maximum leaves
  ``e^-1400 * 1 + 1 * e^-1400 = 0``, i.e. ``-inf``. Also contains ``-inf`` (log 0) entries.

Usage::

    python sample_data/make_sample_data.py [--out DIR]
    logmm multiply sample_data/a.h5 sample_data/b.h5 -o c.h5
    logmm multiply sample_data/adversarial.h5:/a sample_data/adversarial.h5:/b -o adv.npy
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

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
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python make_sample_data.py [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="directory to write into (default: this script's directory)")
    args = parser.parse_args(argv)
    for path in make_sample_data(args.out):
        print(path)


if __name__ == "__main__":
    main()
