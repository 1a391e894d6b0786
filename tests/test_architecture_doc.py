"""docs/architecture.md stays true to the code: every module is named, every name exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("core", "cli")

#: a module path in backticks, e.g. `core/io/writers.py`
MODULE = re.compile(r"`((?:core|cli)/[\w/]+\.py)`")
#: a module path followed by a name in backticks, e.g. `core/engine.py` `open_output`
MODULE_NAME = re.compile(r"`((?:core|cli)/[\w/]+\.py)`\s+`(\w+)`")


def _modules() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix()
                  for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def test_modules_are_found() -> None:
    # the walk itself works: a broken glob would make the next test pass vacuously
    modules = _modules()
    assert "core/engine.py" in modules and "cli/main.py" in modules
    assert len(modules) > 30


@pytest.mark.parametrize("module", _modules())
def test_every_module_is_named(module: str) -> None:
    named = set(MODULE.findall(DOC.read_text(encoding="utf-8")))
    assert module in named, f"{module} is not named in docs/architecture.md; add a line for it"


def test_named_modules_exist() -> None:
    missing = sorted({m for m in MODULE.findall(DOC.read_text(encoding="utf-8"))
                      if not (ROOT / m).is_file()})
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_named_functions_exist() -> None:
    pairs = set(MODULE_NAME.findall(DOC.read_text(encoding="utf-8")))
    assert len(pairs) >= 10, "the path of a block names its functions by module"
    stale = sorted(f"{module} {name}" for module, name in pairs
                   if (ROOT / module).is_file()
                   and name not in _top_level_names(ROOT / module))
    assert not stale, f"docs/architecture.md names functions that are gone: {stale}"
