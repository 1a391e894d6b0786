"""The README's and docs/'s commands and code work as shown.

Every fenced block of ``README.md`` and ``docs/*.md`` is tagged. ``sh`` and ``python``
blocks run; ``text`` and ``console`` blocks are illustrations (placeholders such as
``$I``, cluster addresses, output excerpts) and do not; any other tag, or none, fails
``test_every_block_is_tagged``, so no block goes unrun by accident.

Each file runs in its own temporary directory holding a copy of ``sample_data/`` and
what ``make demo`` wrote (the Makefile's ``demo`` commands, run once per session, each
exiting 0): the README's tour and ``docs/cli.md`` promise that their commands run as
written after ``make demo``. The blocks then run in the file's order. In an ``sh`` block
each ``logmm …`` line exits 0, and where the file shows what it printed (``#  wrote …``
lines under it) the output is exactly those lines (blank lines aside), except for times
and ``plan``'s memory budget and threads (this machine's defaults); ``make``, ``pip`` and
``source`` lines are shown, not run (``make demo`` is the fixture; the others install).
``python`` blocks run in one namespace per file (a ``>>>`` block as a doctest); a block
that mentions torch is left out when torch is not installed, and the file's test then
reports itself skipped after running the rest. About 60 commands, 40–60 s on 2 busy
cores: run by default, so CI keeps every command the docs show working as shown.
"""

from __future__ import annotations

import doctest
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_logmm

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
RUN = {"sh", "python"}
SHOWN = {"text", "console"}
#: configuration files, each read by its own test (docs/scaling.md's dask config: by
#: test_dask_workers.test_the_documented_dask_config_file_reaches_workers_and_scheduler)
CONFIG = {"yaml"}
#: first words of sh lines that are shown but not run
NOT_RUN = {"make", "pip", "source"}
FENCE = re.compile(r"^( *)```(.*)$")


@dataclass
class Block:
    tag: str
    body: str
    line: int                    # 1-based line of the block's first body line


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block (indented ones too, dedented), with its tag."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            indent, info = len(fence[1]), fence[2].strip()
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i])
                i += 1
            assert i < len(lines), f"unclosed block at line {start}"
            found.append(Block(info.split()[0] if info else "", "\n".join(body) + "\n",
                               start + 1))
        i += 1
    return found


def _read(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def shell_commands(block: Block, doc: str) -> list[tuple[list[str], list[str]]]:
    """(arguments, the printed lines shown under it) for each ``logmm`` line of a block."""
    found: list[tuple[list[str], list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("logmm "):
            found.append((shlex.split(line, comments=True)[1:], []))
        elif line.startswith("#  ") and found:
            found[-1][1].append(line[3:])
        elif line.strip() and not line.startswith("#"):
            assert line.split()[0] in NOT_RUN, (
                f"{doc}:{block.line}: {line!r} is neither a logmm command nor one of "
                f"{sorted(NOT_RUN)}; tag the block `text` if it is an illustration")
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


@pytest.fixture(scope="session")
def after_make_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``sample_data/`` and what ``make demo``'s commands wrote."""
    base = tmp_path_factory.mktemp("make-demo")
    shutil.copytree(ROOT / "sample_data", base / "sample_data")
    demo = demo_commands()
    assert len(demo) >= 5
    (base / demo[0][demo[0].index("-o") + 1]).parent.mkdir(parents=True)  # mkdir -p
    for args in demo:
        proc = run_logmm(*args, cwd=base)
        assert proc.returncode == 0, ("make demo", args, proc.stderr)
    return base


def _needs_missing_torch(block: Block) -> bool:
    if "torch" not in block.body:
        return False
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def _run_python(block: Block, doc: str, namespace: dict) -> None:
    if block.body.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.body, namespace, doc, doc,
                                                   block.line - 1)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        with np.errstate(divide="ignore"):      # the textbook recipes' log(0), on purpose
            runner.run(test, clear_globs=False)
        assert runner.summarize(verbose=False).failed == 0, f"{doc}:{block.line}: doctest"
        return
    exec(compile(block.body, f"{doc}:{block.line}", "exec"), namespace)


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_is_tagged(doc: str) -> None:
    untagged = [(b.line, b.tag) for b in fenced_blocks(_read(doc))
                if b.tag not in RUN | SHOWN | CONFIG]
    assert not untagged, (f"{doc}: blocks at lines {untagged} need a tag: sh or python "
                          "(run by this test) or text or console (illustrations)")


def test_blocks_are_found() -> None:
    # the parser works: a broken one would make the next test pass vacuously
    def count(doc: str, tag: str) -> int:
        blocks = [b for b in fenced_blocks(_read(doc)) if b.tag == tag]
        if tag == "sh":
            return sum(len(shell_commands(b, doc)) for b in blocks)
        return len(blocks)
    assert count("README.md", "sh") > 15 and count("README.md", "python") >= 2
    assert count("docs/cli.md", "sh") > 20 and count("docs/cli.md", "python") >= 1
    assert count("docs/gradients.md", "python") >= 4
    assert any(b.tag == "console" for b in fenced_blocks(_read("docs/scaling.md")))


@pytest.mark.parametrize("doc", DOCS)
def test_doc_blocks_run_as_shown(doc: str, after_make_demo: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "repo"
    shutil.copytree(after_make_demo, work)
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__doc__"}
    ran, left_out = 0, []
    for block in fenced_blocks(_read(doc)):
        if block.tag == "sh":
            for args, shown in shell_commands(block, doc):
                proc = run_logmm(*args, cwd=work)
                assert proc.returncode == 0, (doc, block.line, args, proc.stderr)
                if shown:
                    printed = [_comparable(line)
                               for line in (proc.stderr + proc.stdout).splitlines()]
                    assert [p for p in printed if p] == \
                        [_comparable(s) for s in shown if s.strip()], (doc, args, printed)
                ran += 1
        elif block.tag == "python":
            if _needs_missing_torch(block):
                left_out.append(block.line)
                continue
            _run_python(block, doc, namespace)
            ran += 1
    if left_out:
        pytest.skip(f"{doc}: ran {ran} commands and blocks; the blocks at lines {left_out} "
                    "need torch, which is not installed")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc: str) -> None:
    """Links between README.md and docs/ name files that exist and headings they hold."""
    links = re.findall(r"\]\(([^)\s]+)\)", _read(doc))
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue                                  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (ROOT / doc).parent / path if path else ROOT / doc
        assert target.exists(), f"{doc}: link to {link}: no such file"
        if anchor and target.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{doc}: no heading for {link}"


def test_readme_textbook_failures_are_as_shown() -> None:
    """The five lines of "Why": both shifts give -inf, logmatmulexp 400 + log 2."""
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
    doc = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    block = re.search(r"```console\n\$ (logmm plan .*?)\n(.*?)```", doc, re.S)
    assert block is not None
    np.save(tmp_path / "a.npy", np.zeros((1000, 64)))
    np.save(tmp_path / "b.npy", np.zeros((64, 30)))
    proc = run_logmm(*shlex.split(block[1])[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [_comparable(line) for line in (proc.stderr + proc.stdout).splitlines()]
    assert printed == [_comparable(line) for line in block[2].splitlines()]


def test_readme_stays_a_readme() -> None:
    """The reference lives in docs/ (issue #13): the README stays within 20 KB."""
    size = (ROOT / "README.md").stat().st_size
    assert size <= 20_000, f"README.md is {size} bytes; move reference material to docs/"
