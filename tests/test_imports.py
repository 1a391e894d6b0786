"""Import hygiene between logmm's modules, read from the source (``ast``, nothing imported).

Every ``import`` and ``from … import`` in every module under ``core/`` (``logmm``) and
``cli/`` (``logmm.cli``) counts, at module level and inside functions alike (a
function-level import is a dependency that runs later, not no dependency); only imports
under ``if TYPE_CHECKING:`` are left out (they never run). Relative imports are resolved
to full ``logmm.…`` names. Two rules:

(a) no module imports a ``_private`` name (one leading underscore, not a dunder) from
    another logmm module: a name another module needs is public and documented;
(b) the import graph between logmm modules has no cycle;
(c) a name another logmm module imports from a module that has ``__all__`` is in it
    (``__all__`` says what the module offers; what others use is what it offers).

Packages and their ``__init__``: importing ``logmm.io.readers`` makes Python run
``logmm/io/__init__.py`` first, yet that is not counted as a dependency on the package:
an ``__init__`` that imports (or lazily re-exports) its own submodules is a facade over
them, and counting it would make every submodule that imports a sibling part of a cycle
through its package. An ``__init__``'s own imports are edges like any other module's, and
``from logmm.io import open_array`` (a name taken from the package, not a submodule) is an
edge to the package: so a submodule that takes names from its own package while the
package imports that submodule is still reported as a cycle (a real order hazard).

Known violations in modules being refactored elsewhere are listed in
``KNOWN_VIOLATIONS``; each entry must still occur, so the list can only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"core": "logmm", "cli": "logmm.cli"}

#: violations allowed while a refactor is under way (empty since #13); each entry must
#: still occur. "private: IMPORTER imports MODULE.NAME", "cycle: A, B, …" (the modules of one
#: strongly connected component, sorted) or "__all__: MODULE lacks NAME"
KNOWN_VIOLATIONS: set[str] = set()


def module_files() -> dict[str, Path]:
    """``{"logmm.io.readers": core/io/readers.py, …}`` for every module of the package."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` except those in ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


@cache
def imports(module: str) -> list[tuple[str, str | None]]:
    """``(target module, name or None)`` for each logmm import of ``module``: the module a
    name comes from and the name, or the module imported whole (name None)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names
                      if alias.name.split(".")[0] == "logmm"]
            continue
        if node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != "logmm":
            continue
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            found.append((submodule, None) if submodule in MODULES else (source, alias.name))
    return found


@cache
def declared_all(module: str) -> set[str] | None:
    """The names in ``module``'s ``__all__`` (a literal list), or None without one."""
    for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


@cache
def missing_from_all() -> set[str]:
    found = set()
    for module in MODULES:
        for source, name in imports(module):
            offered = declared_all(source) if name is not None and source != module else None
            if offered is not None and not _private(name) and name not in offered:
                found.add(f"__all__: {source} lacks {name}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@cache
def private_imports() -> set[str]:
    return {f"private: {module} imports {source}.{name}"
            for module in MODULES for source, name in imports(module)
            if name is not None and _private(name) and source != module}


def graph() -> dict[str, set[str]]:
    """Edges between logmm modules (see the module docstring for packages)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in imports(module):
            assert target in MODULES, f"{module} imports {target}, which does not exist"
            if target != module:
                edges[module].add(target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (the cycles), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def cycle_path(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the component's first module: ``[a, b, …, a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(f"no cycle through {start}")


@cache
def cycles() -> dict[str, list[str]]:
    edges = graph()
    return {"cycle: " + ", ".join(c): cycle_path(edges, c) for c in strongly_connected(edges)}


def test_the_walk_sees_the_modules_and_their_imports() -> None:
    # the scan itself works: a broken walk would make the other tests pass vacuously
    assert {"logmm", "logmm.io", "logmm.io.readers", "logmm.cli.main",
            "logmm.cli.commands.plan"} <= set(MODULES)
    edges = graph()
    assert "logmm.logmatmul" in edges["logmm.grad"]                  # module level
    assert "logmm.multiply" in edges["logmm.cli.commands.multiply"]  # inside the command
    assert "logmm.cli.options" in edges["logmm.cli.commands.plan"]   # relative, two dots
    # under `if TYPE_CHECKING:` only: not an edge
    assert "logmm.multiply" not in edges["logmm.cli.options"]
    assert "logmm.chain" not in edges["logmm.cli.options"]


def test_the_checks_detect_what_they_look_for() -> None:
    assert _private("_parse") and not _private("__version__") and not _private("parse")
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    (component,) = strongly_connected(edges)
    assert component == ["a", "b", "c"]
    assert cycle_path(edges, component) == ["a", "b", "c", "a"]


def test_no_module_imports_a_private_name_of_another() -> None:
    new = sorted(private_imports() - KNOWN_VIOLATIONS)
    assert not new, "import a public name instead (make it public, documented):\n" + \
        "\n".join(new)


def test_the_import_graph_has_no_cycle() -> None:
    new = {key: path for key, path in cycles().items() if key not in KNOWN_VIOLATIONS}
    assert not new, "import cycles:\n" + "\n".join(" -> ".join(p) for p in new.values())


def test_what_other_modules_import_is_in_all() -> None:
    new = sorted(missing_from_all() - KNOWN_VIOLATIONS)
    assert not new, "add these to the module's __all__:\n" + "\n".join(new)


def test_every_known_violation_still_occurs() -> None:
    # fixed ones leave the list: it only shrinks
    found = private_imports() | set(cycles()) | missing_from_all()
    stale = sorted(KNOWN_VIOLATIONS - found)
    assert not stale, f"{stale} no longer occur; remove them from KNOWN_VIOLATIONS"
