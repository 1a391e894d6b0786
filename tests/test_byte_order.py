"""Big-endian inputs (``>f8``/``>f4`` from HDF5, Zarr v2 or ``.npy``, as files written on
other machines or by other tools hold them) are accepted by every command, and give the
same bytes as the same values in native order. Runs the real command line, in this
process (click's runner: the same parsing and commands; a fresh interpreter for each of
the 32 runs cost ~0.5 s a run, and only the results are compared here)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from logmm.cli.main import cli
from logmm.io import open_array

RNG = np.random.default_rng(2026)


def write(path: Path, name: str, values: np.ndarray, fmt: str) -> str:
    """``values`` stored as given (any byte order) in ``path`` (a .npy, .h5 or Zarr v2)."""
    if fmt == "npy":
        target = path / f"{name}.npy"
        np.save(target, values)
        return str(target)
    if fmt == "h5":
        with h5py.File(path / "in.h5", "a") as f:
            f.create_dataset(name, data=values)
        return f"{path / 'in.h5'}:/{name}"
    group = zarr.open_group(str(path / "in.zarr"), mode="a", zarr_format=2)
    group.create_array(name, shape=values.shape, dtype=values.dtype)[...] = values
    return f"{path / 'in.zarr'}:{name}"


COMMANDS = {
    "multiply": lambda i: ["multiply", i["a"], i["b"]],
    "einsum": lambda i: ["einsum", "ij,jk->ik", i["a"], i["b"]],
    "chain": lambda i: ["chain", i["a"], i["b"], i["c"]],
    "power": lambda i: ["power", i["p"], "-n", "5"],
    "project": lambda i: ["project", i["a"], "--factor", i["f"]],
    "loglik": lambda i: ["loglik", i["a"], "--mu", i["mu"], "--sigma", "2"],
    "convert": lambda i: ["convert", i["a"]],
}


#: each command reads one format (all three are covered), each in both float widths
CASES = [(command, ("npy", "h5", "zarr")[i % 3]) for i, command in enumerate(sorted(COMMANDS))]


@pytest.mark.parametrize(("command", "fmt"), CASES)
@pytest.mark.parametrize("dtype", ["f8", "f4"])
def test_big_endian_inputs_give_the_native_result(tmp_path: Path, fmt: str, command: str,
                                                  dtype: str):
    values = {"a": RNG.standard_normal((12, 4)), "b": RNG.standard_normal((4, 3)),
              "c": RNG.standard_normal((3, 5)), "p": RNG.standard_normal((4, 4)),
              "f": RNG.standard_normal((2, 4)), "mu": RNG.standard_normal(4)}
    results = {}
    for order in ("<", ">"):
        where = tmp_path / ("little" if order == "<" else "big")
        where.mkdir()
        inputs = {name: write(where, name, v.astype(order + dtype), fmt)
                  for name, v in values.items()}
        out = where / "out.npy"
        args = COMMANDS[command](inputs) + ([out] if command == "convert" else ["-o", out])
        res = CliRunner().invoke(cli, [*map(str, args), "-q"])
        assert res.exit_code == 0, (res.output, res.exception)
        with open_array(out) as reader:
            results[order] = reader.read_all()
    little, big = results["<"], results[">"]
    assert big.dtype == little.dtype and big.dtype.isnative
    assert big.dtype.itemsize == np.dtype(dtype).itemsize        # float32 stays float32
    assert big.tobytes() == little.tobytes()
