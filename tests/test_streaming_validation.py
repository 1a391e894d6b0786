"""Input validation happens per block while streaming, never as a separate pass.

Every read of the streamed input (A of multiply, X of project and loglik, the source of
convert, a per-element parameter of loglik) is recorded. Whether the run succeeds or
meets bad data in its last block (``+inf``, a zero sigma, a float32 overflow), each row is
read exactly once, the whole array is never read, and the error names the last block's
rows: the check ran on the block as it streamed past.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from logmm.convert import convert
from logmm.errors import InputError
from logmm.io.readers import ArrayReader
from logmm.loglik import loglik
from logmm.multiply import multiply
from logmm.project import project

N, WIDTH, BLOCK = 40, 6, 8


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Rows read per (file name, row) and whole-array reads per file name."""
    seen: Counter = Counter()
    real_rows, real_region, real_all = (ArrayReader.read_rows, ArrayReader.read_region,
                                        ArrayReader.read_all)

    def read_rows(self, start, stop, **kwargs):
        for row in range(start, min(stop, self.shape[0])):
            seen[self.address.path.name, row] += 1
        return real_rows(self, start, stop, **kwargs)

    def read_region(self, row_start, row_stop, col_start, col_stop):
        for row in range(row_start, min(row_stop, self.shape[0])):
            seen[self.address.path.name, row] += 1
        return real_region(self, row_start, row_stop, col_start, col_stop)

    def read_all(self):
        seen[self.address.path.name, "all"] += 1
        return real_all(self)

    monkeypatch.setattr(ArrayReader, "read_rows", read_rows)
    monkeypatch.setattr(ArrayReader, "read_region", read_region)
    monkeypatch.setattr(ArrayReader, "read_all", read_all)
    return seen


def _streamed_once(seen: Counter, name: str) -> None:
    assert seen[name, "all"] == 0, f"{name} was read whole"
    counts = [seen[name, row] for row in range(N)]
    assert counts == [1] * N, counts


def _input(tmp_path: Path, name: str, bad: float | None = None,
           positive: bool = False) -> Path:
    """N×WIDTH log-probabilities (or, ``positive``, probabilities: loglik's sigma) in
    HDF5 chunks of one block, with ``bad`` at one entry of the last block."""
    import h5py

    x = np.log(np.random.default_rng(0).dirichlet(np.ones(WIDTH), size=N))
    if positive:
        x = np.exp(x)
    if bad is not None:
        x[-1, 2] = bad
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x, chunks=(BLOCK, WIDTH))
    return path


def _run(engine: str, tmp_path: Path, x: Path, out: str) -> None:
    np.save(tmp_path / "b.npy", np.zeros((WIDTH, 3)))
    np.save(tmp_path / "w.npy", np.zeros((2, 3)))
    if engine == "multiply":
        multiply(x, tmp_path / "b.npy", tmp_path / out, block_rows=BLOCK)
    elif engine == "project":
        project(x, tmp_path / out, w_address=tmp_path / "w.npy", blocks=2, semiring="log",
                block_rows=BLOCK)
    elif engine == "loglik":
        loglik(tmp_path / "x_ok.h5", tmp_path / out, mu=0.0, sigma=x, block_rows=BLOCK)
    else:
        convert(x, tmp_path / out, dtype="float32", block_rows=BLOCK)


ENGINES = {"multiply": np.inf, "project": np.inf, "loglik": 0.0, "convert": 1e300}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_good_input_is_read_once(tmp_path: Path, reads: Counter, engine: str) -> None:
    x = _input(tmp_path, "x.h5", positive=engine == "loglik")
    _input(tmp_path, "x_ok.h5")
    reads.clear()
    _run(engine, tmp_path, x, "out.h5")
    _streamed_once(reads, "x.h5")
    assert (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_bad_data_in_the_last_block_is_found_while_streaming(tmp_path: Path, reads: Counter,
                                                             engine: str) -> None:
    x = _input(tmp_path, "x.h5", bad=ENGINES[engine], positive=engine == "loglik")
    _input(tmp_path, "x_ok.h5")
    reads.clear()
    with pytest.raises(InputError) as info:
        _run(engine, tmp_path, x, "out.h5")
    _streamed_once(reads, "x.h5")
    assert f"{N - BLOCK}:{N}" in str(info.value) or f"[{N - 1}, 2]" in str(info.value), (
        str(info.value))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["x.h5", "x_ok.h5", "b.npy", "w.npy"])
