"""The shape of ``core/io``: no private names borrowed across modules, and readers and
writers whose state is all set by their constructors."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from logmm.io import create_writer, open_array
from logmm.io.base import ArrayReader, ArrayWriter

ROOT = Path(__file__).resolve().parents[1]
#: the modules this layout covers: every file module and its two users
MODULES = sorted([*(ROOT / "core" / "io").glob("*.py"), ROOT / "core" / "shards.py",
                  ROOT / "core" / "inspect.py"])


def test_the_modules_are_found() -> None:
    names = {p.name for p in MODULES}
    assert {"base.py", "layout.py", "npy.py", "hdf5.py", "zarr.py", "sparse.py",
            "shards.py", "inspect.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_private_name_is_imported_from_another_module(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    borrowed = [f"{node.module}.{alias.name}" for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module != "__future__"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert borrowed == []


# the attributes ArrayWriter.__init__ sets: every writer has them, however made
BASE_STATE = {"zarr_format", "address", "path", "shape", "dtype", "overwrite", "compression",
              "chunk_rows", "in_container", "row_offset", "tmp_path", "contiguous", "attrs",
              "committed", "aborted", "suspended", "resumed"}


@pytest.mark.parametrize("name", ["c.npy", "c.h5", "c.zarr"])
def test_writers_and_readers_set_their_state_in_init(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    with create_writer(out, (4, 3), np.float64, row_offset=10) as writer:
        assert isinstance(writer, ArrayWriter)
        assert BASE_STATE <= set(vars(writer))
        assert writer.row_offset == 10 and not writer.resumed and not writer.in_container
        writer.write_rows(10, np.ones((4, 3)))      # rows addressed in the whole result
        with pytest.raises(ValueError, match="does not fit"):
            writer.write_rows(0, np.ones((4, 3)))
        writer.commit()
    with open_array(out) as reader:
        assert isinstance(reader, ArrayReader)
        assert {"address", "shape", "dtype", "chunks"} <= set(vars(reader))
        np.testing.assert_array_equal(reader.read_all(), np.ones((4, 3)))
