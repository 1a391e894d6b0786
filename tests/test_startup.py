"""Start-up stays light: the command line imports heavy modules only where they are used.

``logmm --version`` and ``logmm --help`` need click and the command definitions, not
scipy.sparse, opt_einsum, h5py, zarr or threadpoolctl (together about 0.2 s to import);
each is imported on first use by the code that needs it. Checked by what a fresh
interpreter holds in ``sys.modules``, not by timing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("scipy", "scipy.sparse", "opt_einsum", "h5py", "zarr", "threadpoolctl",
         "importlib.metadata", "numba")


def _loaded_after(code: str) -> dict[str, object]:
    probe = (f"import json, sys\n{code}\n"
             f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_importing_the_cli_imports_no_heavy_module() -> None:
    assert _loaded_after("import logmm.cli.main") == []


def test_importing_the_cli_imports_no_engine_and_no_numpy() -> None:
    # the commands import their engine inside the command function, and logmm's public
    # names load on first use: defining the CLI needs click, the exceptions and the
    # Literal choices (logmm.typing), nothing else of logmm, and not numpy
    code = ("import json, sys\nimport logmm.cli.main\n"
            "print(json.dumps(sorted(m for m in sys.modules\n"
            "                        if m.split('.')[0] in ('logmm', 'numpy'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert {"logmm.cli.main", "logmm.cli.commands.multiply"} <= loaded   # the probe works
    core = {m for m in loaded if not m.startswith("logmm.cli")}
    assert core == {"logmm", "logmm.errors", "logmm.typing"}, sorted(core)


def test_lazy_public_names_are_the_documented_ones() -> None:
    import logmm
    table = logmm._LAZY
    assert set(table) == set(logmm.__all__)
    for name in logmm.__all__:                  # each resolves in the module the table names
        value = getattr(logmm, name)
        module = f"logmm.{table[name]}"
        assert name == "__version__" or value.__module__ == module, (name, value.__module__)
    assert set(logmm.__all__) <= set(dir(logmm))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["multiply", "--help"]])
def test_version_and_help_import_no_heavy_module(argv: list[str]) -> None:
    # the console script's code; click exits through SystemExit after printing
    code = ("from logmm.cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n")
    loaded = set(_loaded_after(code))
    # --version reads the installed version from the package metadata, nothing else
    assert loaded <= ({"importlib.metadata"} if argv == ["--version"] else set()), loaded


def test_heavy_modules_load_on_first_use() -> None:
    # the lazily imported modules still work: an einsum (opt_einsum picks the order) and a
    # sparse projection (scipy.sparse, imported here by the caller)
    code = ("import numpy as np, logmm\n"
            "a = np.log(np.full((2, 3), 0.5)); b = np.log(np.full((3, 2), 0.5))\n"
            "c = logmm.logeinsum('ij,jk->ik', a, b)\n"
            "assert np.allclose(c, logmm.logmatmulexp(a, b))\n"
            "assert 'opt_einsum' in sys.modules and 'scipy.sparse' not in sys.modules\n"
            "import scipy.sparse as sp\n"
            "y = logmm.block_project(sp.csr_matrix(np.eye(2)), np.ones((1, 1)), 2)\n"
            "assert y.shape == (2, 2)\n")
    assert {"opt_einsum", "scipy.sparse"} <= set(_loaded_after(code))


def test_version_is_the_installed_one() -> None:
    from importlib.metadata import version

    import logmm
    assert logmm.__version__ == version("logmm")
    with pytest.raises(AttributeError):
        logmm.no_such_name  # noqa: B018
