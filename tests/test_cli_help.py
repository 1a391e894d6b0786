"""Help texts and shell completion: every subcommand's --help has runnable-looking examples.

- ``logmm CMD --help`` exits 0 with an ``Examples:`` section for every subcommand;
- every example line (``logmm CMD ARGS``) in any help text parses: its options exist,
  take the values given and its arguments are complete (Click's own parser, no run);
- Click's completion script is produced for bash, zsh and fish, and completes
  subcommands and options.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import click
import pytest

from logmm.cli.main import cli

from cli_run import run_logmm

COMMANDS = sorted(cli.commands)


def test_every_command_is_listed() -> None:
    assert {"multiply", "project", "loglik", "einsum", "chain", "power", "info", "convert",
            "sample-data"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_examples(command: str | None) -> None:
    proc = run_logmm(*([command] if command else []), "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "Examples:" in proc.stdout
    examples = _examples(proc.stdout)
    assert examples, proc.stdout
    if command:
        assert any(e[0] == command for e in examples), examples


def _examples(text: str) -> list[list[str]]:
    """``logmm …`` lines of a help text, split as the shell would, comments dropped."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("logmm "):
            continue
        line = re.split(r"\s#\s|\s{3,}", line)[0]      # "# prints the total", aligned notes
        found.append(shlex.split(line)[1:])
    return found


def _all_examples() -> list[list[str]]:
    ctx = click.Context(cli, info_name="logmm")
    texts = [cli.get_help(ctx)]
    for name in COMMANDS:
        command = cli.commands[name]
        texts.append(command.get_help(click.Context(command, info_name=name, parent=ctx)))
    return [e for text in texts for e in _examples(text)]


@pytest.mark.parametrize("example", _all_examples(), ids=lambda e: " ".join(e)[:60])
def test_help_examples_parse(example: list[str]) -> None:
    """The example's options and arguments are what the command accepts."""
    name, *args = example
    command = cli.commands[name]
    if args == ["--help"]:
        return
    parent = click.Context(cli, info_name="logmm")
    with command.make_context(name, list(args), parent=parent) as ctx:
        assert ctx.command is command


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_produced(shell: str) -> None:
    env = dict(os.environ, _LOGMM_COMPLETE=f"{shell}_source")
    proc = subprocess.run([sys.executable, "-m", "logmm.cli.main"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "_logmm_completion" in proc.stdout and "_LOGMM_COMPLETE" in proc.stdout


def test_completion_completes_commands_and_options() -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = dict(os.environ, _LOGMM_COMPLETE="bash_complete", COMP_WORDS=words,
                   COMP_CWORD=str(cword))
        proc = subprocess.run([sys.executable, "-m", "logmm.cli.main"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line.split(",", 1)[1] for line in proc.stdout.splitlines()]

    assert complete("logmm mul", 1) == ["multiply"]
    assert set(complete("logmm multiply --me", 2)) == {"--method", "--memory"}
    assert complete("logmm loglik x.npy --reduce r", 4) == ["row"]


@pytest.mark.parametrize("words", [
    "logmm multiply sample", "logmm multiply a.npy b.npy -o ", "logmm chain a.npy ",
    "logmm power ", "logmm einsum ij,jk->ik a.npy ", "logmm project x.npz ",
    "logmm project x.npz --factor ", "logmm loglik x.npy --sigma ", "logmm info ",
    "logmm convert a.npy ", "logmm merge ",
])
def test_file_arguments_complete_as_file_names(words: str) -> None:
    # Click's bash script turns a "file" completion into `compopt -o default`, so TAB
    # lists file names; a plain STRING argument completes to nothing at all
    env = dict(os.environ, _LOGMM_COMPLETE="bash_complete", COMP_WORDS=words,
               COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    proc = subprocess.run([sys.executable, "-m", "logmm.cli.main"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(",", 1)[0] for line in proc.stdout.splitlines()] == ["file"]


def test_group_level_flags_and_python_m(tmp_path) -> None:
    import numpy as np

    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    np.save(tmp_path / "b.npy", np.zeros((2, 4)))

    def logmm(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "logmm", *map(str, args)],
                              capture_output=True, text=True, timeout=60)

    version = logmm("-V")
    assert version.returncode == 0 and version.stdout.startswith("logmm, version ")
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    quiet = logmm("-q", "multiply", a, b, "-o", tmp_path / "q.npy")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    for verbose in (logmm("-v", "multiply", a, b, "-o", tmp_path / "v.npy"),
                    logmm("multiply", a, b, "-o", tmp_path / "w.npy", "--verbose")):
        lines = verbose.stderr.splitlines()
        assert verbose.returncode == 0 and len(lines) == 3, verbose.stderr
        assert lines[0].startswith("plan    n=3 k=2 m=4 block_rows=3")
        assert lines[1] == "tiers   entries=12 fast=12 rebalanced=0 blocked=0 exact=0 unchecked=0"
        assert lines[2].startswith("wrote ")
    bad = logmm("-q", "multiply", b, b, "-o", tmp_path / "x.npy")       # 2×4 @ 2×4
    assert bad.returncode == 1 and bad.stderr.startswith("logmm: error: shape mismatch")
