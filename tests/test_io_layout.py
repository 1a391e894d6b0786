"""Every work-file name logmm builds is read back by the parser next to its builder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logmm.io import layout

NAMES = ["out.h5", "out.zarr", "c.npy", "odd.name.with.dots.h5", "sp ace.zarr",
         "x.logmm-partial.h5", "gl[o]b*?.h5"]


@pytest.mark.parametrize("name", NAMES)
def test_partial_output_round_trips(tmp_path: Path, name: str) -> None:
    partial = layout.partial_path(tmp_path / name)
    assert partial.parent == tmp_path and partial.name.startswith(".")
    assert layout.parse_work_file(partial.name) == layout.WorkFile(name, "partial", None)
    parsed = layout.parse_work_address(str(partial))
    assert parsed == (partial, name, None)
    assert layout.parse_work_address(f"{partial}:g/data") == (partial, name, "g/data")


@pytest.mark.parametrize("dataset", ["data", "g/data", "/g/h/data", "g/.x.logmm-partial"])
def test_partial_dataset_round_trips(dataset: str) -> None:
    hidden = layout.partial_dataset(dataset)
    head = dataset.strip("/").rpartition("/")[0]
    assert hidden.rpartition("/")[0] == head        # same group
    assert layout.parse_partial_dataset(hidden) == dataset.rpartition("/")[2]
    assert layout.parse_partial_dataset(dataset.rpartition("/")[2] + "x") is None


@pytest.mark.parametrize("name", NAMES)
def test_record_lock_and_temporaries_round_trip(tmp_path: Path, name: str) -> None:
    unit = tmp_path / name
    assert layout.parse_work_file(layout.record_file(unit).name) == layout.WorkFile(
        name, "record", None)
    assert layout.parse_work_file(layout.lock_file(unit).name) == layout.WorkFile(
        name, "lock", None)
    for tag in ("tmp", "old", "new"):
        tmp = layout.temporary_path(unit, tag)
        assert layout.parse_work_file(tmp.name) == layout.WorkFile(name, tag, os.getpid())
        assert layout.parse_work_address(str(tmp)) == (tmp, name, None)
    # the temporary of a record names the record as its output
    tmp = layout.temporary_path(layout.record_file(unit))
    assert layout.parse_work_file(tmp.name) == layout.WorkFile(
        layout.record_file(unit).name, "tmp", os.getpid())
    glob = layout.work_file_glob(name)
    for work in (layout.partial_path(unit), layout.record_file(unit), layout.lock_file(unit),
                 layout.temporary_path(unit)):
        work.touch()
    (tmp_path / "other.h5").touch()
    found = sorted(p.name for p in tmp_path.glob(glob))
    assert found == sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert len(found) == 4
    unique = layout.unique_temporary_path(unit, "new")
    assert unique.name.startswith(layout.temporary_path(unit, "new").name + ".")
    assert unique != layout.unique_temporary_path(unit, "new")


def test_dataset_unit_names_record_and_lock_per_dataset(tmp_path: Path) -> None:
    unit = layout.dataset_unit(tmp_path / "f.h5", "g/data")
    assert unit == tmp_path / "f.h5#g%data"
    assert layout.parse_work_file(layout.record_file(unit).name).output == "f.h5#g%data"
    assert layout.parse_work_file(layout.lock_file(unit).name).kind == "lock"


def test_sidecar_is_not_a_work_file(tmp_path: Path) -> None:
    assert layout.sidecar_path(tmp_path / "c.npy") == tmp_path / "c.npy.json"
    assert layout.parse_work_file("c.npy.json") is None
    assert layout.parse_work_file("c.npy") is None
    assert layout.parse_work_address(str(tmp_path / "c.npy")) is None


@pytest.mark.parametrize("name", ["out.h5", "run.1.h5", "out.zarr"])
@pytest.mark.parametrize(("index", "count"), [(0, 1), (3, 16), (15, 16), (9999, 10000)])
def test_shard_files_round_trip(tmp_path: Path, name: str, index: int, count: int) -> None:
    out = tmp_path / name
    shard = layout.shard_path(out, index, count)
    assert shard.parent == tmp_path and shard.suffix == out.suffix
    assert layout.parse_shard_file(out, shard.name) == (index, count, False)
    assert layout.parse_shard_file(out, layout.partial_path(shard).name) == (index, count, True)
    assert layout.parse_shard_file(tmp_path / ("other" + out.suffix), shard.name) is None
    assert layout.parse_shard_file(out, layout.record_file(shard).name) is None
    assert layout.shard_tag(index, count) in shard.name


@pytest.mark.parametrize(("index", "count"), [(0, 1), (3, 16), (12345, 20000)])
def test_shard_markers_round_trip(tmp_path: Path, index: int, count: int) -> None:
    marker = layout.marker_path(tmp_path / "data", index, count)
    assert marker.parent == tmp_path / "data" / layout.MARKER_DIR
    assert layout.parse_marker(marker.name) == (index, count)
    assert layout.parse_marker("zarr.json") is None
    assert layout.parse_marker(layout.temporary_path(marker).name) is None


def test_side_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "f[1].h5"
    side = layout.side_file(path, "g/data")
    assert side == tmp_path / ".f[1].h5#g%data.logmm-partial"
    assert layout.parse_side_file(path, side.name) == "g/data"
    assert layout.parse_side_file(path, layout.partial_path(path).name) is None
    assert layout.record_file(layout.dataset_unit(path, "g/data")).name == side.name + ".json"
    side.touch()
    layout.partial_path(path).touch()
    assert list(tmp_path.glob(layout.side_file_glob(path.name))) == [side]
