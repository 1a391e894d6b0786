"""What ``chain`` and ``einsum`` stream: their ``--help`` and docs/cli.md say the same, and
it is what they do (the ``streamed`` and ``block_rows`` provenance of their outputs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_logmm

#: the command-line reference, where the README's reference sections moved
CLI_DOC = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
#: the condition under which chain streams M1, as both texts state it
CHAIN_STREAMS = ("streams M1's rows when it is the large one (more bytes than the rest "
                 "together) and the cheapest order is (M1 (M2 … Mn))")
EINSUM_STREAMS = ("--block-rows, --memory, --resume, --shard and --scheduler")


def _flat(text: str) -> str:
    """Whitespace runs as one space, no Markdown backticks, no 'or'/'and' list glue."""
    text = " ".join(text.replace("`", "").split())
    return re.sub(r",? (?:or|and) --", ", --", text)


def _help(command: str) -> str:
    proc = run_logmm(command, "--help")
    assert proc.returncode == 0, proc.stderr
    return _flat(proc.stdout)


def test_chain_help_and_cli_doc_state_the_same_streaming() -> None:
    help_text = _help("chain")
    assert CHAIN_STREAMS in help_text
    assert CHAIN_STREAMS in _flat(CLI_DOC)
    assert "Otherwise the inputs are read whole into memory" in help_text
    assert "The inputs are read whole into memory;" not in help_text   # the old claim


def test_einsum_help_and_cli_doc_list_the_same_streaming_options() -> None:
    flat = _flat(EINSUM_STREAMS)
    assert flat in _help("einsum")
    assert flat in _flat(CLI_DOC)
    assert "and for power and einsum, inputs are read whole" not in _flat(CLI_DOC)


def _attrs(path: Path) -> dict:
    proc = run_logmm("info", f"{path}:/data", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["arrays"][0]["attrs"]


@pytest.fixture()
def mats(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    np.save(tmp_path / "big.npy", rng.normal(size=(300, 8)))
    np.save(tmp_path / "s1.npy", rng.normal(size=(8, 3)))
    np.save(tmp_path / "s2.npy", rng.normal(size=(3, 2)))
    np.save(tmp_path / "small.npy", rng.normal(size=(2, 8)))
    np.save(tmp_path / "wide.npy", rng.normal(size=(8, 300)))
    return tmp_path


def test_chain_streams_as_its_help_says(mats: Path) -> None:
    t = mats
    streamed = run_logmm("chain", t / "big.npy", t / "s1.npy", t / "s2.npy", "-o",
                         t / "c.h5", "--block-rows", "7")
    assert streamed.returncode == 0, streamed.stderr
    attrs = _attrs(t / "c.h5")
    assert attrs["streamed"] == "M1" and attrs["order"] == "(M1 (M2 M3))"
    assert attrs["block_rows"] == 7                          # --block-rows took effect
    whole = run_logmm("chain", t / "small.npy", t / "wide.npy", "-o", t / "w.h5",
                      "--block-rows", "7")                   # M1 is not the large one
    assert whole.returncode == 0, whole.stderr
    attrs = _attrs(t / "w.h5")
    assert "streamed" not in attrs and "block_rows" not in attrs


def test_einsum_streams_only_when_asked(mats: Path) -> None:
    t = mats
    for extra, out in (([], "e.h5"), (["--block-rows", "7"], "s.h5")):
        proc = run_logmm("einsum", "ij,jk->ik", t / "big.npy", t / "s1.npy", "-o", t / out,
                         *extra)
        assert proc.returncode == 0, proc.stderr
    assert "block_rows" not in _attrs(t / "e.h5")
    assert _attrs(t / "s.h5")["block_rows"] == 7
