"""The package as a user installs it: ``python -m build`` makes an sdist and, from it, a
wheel; the wheel installs into a fresh virtual environment (no checkout on the path) and
runs ``make demo``'s commands on sample data it writes itself. ``make test`` runs this
(``pytest -m packaging``); it is left out of the default run (it builds and installs)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.packaging]

ROOT = Path(__file__).resolve().parents[1]


def demo_commands() -> list[str]:
    """``make demo``'s logmm command lines, as the Makefile has them."""
    makefile = (ROOT / "Makefile").read_text()
    body = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    return [line.strip().removeprefix("$(BIN)/logmm ") for line in body.splitlines()
            if line.strip().startswith("$(BIN)/logmm ")]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def test_sdist_and_wheel_install_and_run_the_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)      # sdist, then wheel from it
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    with tarfile.open(sdist) as tar:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames()
                 if len(Path(n).parts) > 1}
    assert {"pyproject.toml", "README.md", "core/__init__.py", "cli/main.py"} <= names
    with zipfile.ZipFile(wheel) as whl:
        modules = set(whl.namelist())
    for module in ("logmm/__init__.py", "logmm/__main__.py", "logmm/io/writers.py",
                   "logmm/cli/main.py", "logmm/cli/commands/multiply.py",
                   "logmm/py.typed"):     # PEP 561: type checkers use logmm's annotations
        assert module in modules

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    work = tmp_path / "work"                         # away from the checkout
    work.mkdir()
    logmm = venv / "bin" / "logmm"
    assert run(logmm, "--version", cwd=work).stdout.startswith("logmm, version ")
    run(logmm, "sample-data", "sample_data", cwd=work)
    commands = demo_commands()
    assert len(commands) >= 5
    for command in commands:
        line = re.sub(r"\$\(DEMO_OUT\)", "out", command)
        (work / "out").mkdir(exist_ok=True)
        args = [a.strip("'") for a in re.findall(r"'[^']*'|\S+", line)]
        run(logmm, *args, cwd=work)
    where = run(venv / "bin" / "python", "-c", "import logmm; print(logmm.__file__)", cwd=work)
    assert str(venv) in where.stdout                  # the installed package, not the checkout
