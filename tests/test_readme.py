"""The README's commands work as shown.

The README's tour promises its commands run as written after ``make demo``. So the
Makefile's ``demo`` commands run first, then every ``logmm …`` line of the README's ``sh``
blocks, in order, from a copy of the repository's ``sample_data/``; each exits 0, and
where the README shows what a command printed (``#  wrote …``), the output is exactly
those lines (blank lines aside), except for times and ``plan``'s memory budget and
threads (this machine's defaults). The README's Python blocks run too. About 55
commands, 40 s: run by default, so CI keeps every command the README shows working as
shown.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from cli_run import run_logmm

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def shell_commands() -> list[tuple[list[str], list[str]]]:
    """(arguments, the printed lines shown under it) for each ``logmm`` line of sh blocks."""
    found: list[tuple[list[str], list[str]]] = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            if line.startswith("logmm "):
                found.append((shlex.split(line, comments=True)[1:], []))
            elif line.startswith("#  ") and found:
                found[-1][1].append(line[3:])
    return found


def demo_commands() -> list[list[str]]:
    """The arguments of the Makefile's ``demo`` recipe lines ``$(BIN)/logmm …``, with
    ``$(DEMO_OUT)`` filled in."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    demo_out = re.search(r"^DEMO_OUT := (\S+)$", makefile, re.M)[1]
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)[1]
    return [shlex.split(line.strip().replace("$(DEMO_OUT)", demo_out))[1:]
            for line in recipe.splitlines() if line.strip().startswith("$(BIN)/logmm ")]


def _comparable(text: str) -> str:
    text = re.sub(r"\d+\.\d+ s\b", "T s", text)
    # plan's default memory budget and threads, and where they come from: the machine's
    text = re.sub(r"[\d.]+ [KMGT]iB budget( \(.*?\))?,", "M budget (...),", text)
    text = re.sub(r"^threads +\d+( \(.*\))?$", "threads N (...)", text)
    return re.sub(r"\s+\(on stdout\)$", "", text.rstrip())


def test_readme_commands_run_as_shown_after_make_demo(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    demo = demo_commands()
    assert len(demo) >= 5
    (tmp_path / demo[0][demo[0].index("-o") + 1]).parent.mkdir(parents=True)  # mkdir -p
    for args in demo:
        proc = run_logmm(*args, cwd=tmp_path)
        assert proc.returncode == 0, ("make demo", args, proc.stderr)
    commands = shell_commands()
    assert len(commands) > 30
    for args, shown in commands:
        proc = run_logmm(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        if shown:
            printed = [_comparable(line) for line in (proc.stderr + proc.stdout).splitlines()]
            assert [p for p in printed if p] == [_comparable(s) for s in shown if s.strip()], (
                args, printed)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    (tmp_path / "demo_output").mkdir()
    monkeypatch.chdir(tmp_path)
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        if block.lstrip().startswith(">>>"):
            continue                        # the doctest-style block: see below
        exec(compile(block, "README.md", "exec"), {})


def test_readme_textbook_failures_are_as_shown() -> None:
    """The five lines of "Why": both shifts give -inf, logmatmulexp 400 + log 2."""
    import numpy as np

    import logmm

    A = np.array([[-500.0, 900.0]])
    B = np.array([[900.0], [-500.0]])
    with np.errstate(divide="ignore"):
        glob = np.log(np.exp(A - A.max()) @ np.exp(B - B.max())) + A.max() + B.max()
        a, b = A.max(1, keepdims=True), B.max(0, keepdims=True)
        rowcol = np.log(np.exp(A - a) @ np.exp(B - b)) + a + b
    assert glob.tolist() == [[-np.inf]] and rowcol.tolist() == [[-np.inf]]
    assert logmm.logmatmulexp(A, B).tolist() == [[400 + np.log(2)]]
    assert "array([[400.69314718]])" in README


def test_scaling_doc_plan_is_what_plan_prints(tmp_path: Path) -> None:
    """docs/scaling.md's ``$ logmm plan …`` example (a.npy 1000×64, b.npy 64×30)."""
    import numpy as np

    doc = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    block = re.search(r"```\n\$ (logmm plan .*?)\n(.*?)```", doc, re.S)
    assert block is not None
    np.save(tmp_path / "a.npy", np.zeros((1000, 64)))
    np.save(tmp_path / "b.npy", np.zeros((64, 30)))
    proc = run_logmm(*shlex.split(block[1])[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [_comparable(line) for line in (proc.stderr + proc.stdout).splitlines()]
    assert printed == [_comparable(line) for line in block[2].splitlines()]
