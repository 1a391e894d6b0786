"""``logmm.typing``'s Literals name exactly the values the code accepts at run time.

Each alias must equal (values and order) the tuple its module checks arguments against;
the command line builds its ``click.Choice`` lists from the aliases, so a value added to
one side only fails here, not in a user's run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import get_args

import pytest

from logmm import typing as lt
from logmm.dask_backend import SCHEDULERS
from logmm.einsum import SEMIRINGS as EINSUM_SEMIRINGS
from logmm.gaussian import REDUCTIONS
from logmm.io.addresses import FORMATS
from logmm.io.compression import COMPRESSIONS
from logmm.kron import SEMIRINGS as KRON_SEMIRINGS
from logmm.logmatmul import METHODS


@pytest.mark.parametrize(("alias", "runtime"), [
    (lt.Method, METHODS),
    (lt.Semiring, EINSUM_SEMIRINGS),
    (lt.KronSemiring, KRON_SEMIRINGS),
    (lt.Reduce, REDUCTIONS),
    (lt.Scheduler, SCHEDULERS),
    (lt.Format, FORMATS),
    (lt.Compression, COMPRESSIONS),
])
def test_literal_matches_the_runtime_tuple(alias: object, runtime: tuple[str, ...]) -> None:
    assert get_args(alias) == tuple(runtime)


def test_address_alias_names_its_parts() -> None:
    # a string alias (ArrayAddress is imported for type checkers only): its text is the API
    assert lt.Address == "str | os.PathLike[str] | ArrayAddress"


def test_importing_logmm_typing_imports_no_other_logmm_module() -> None:
    code = ("import sys, logmm.typing\n"
            "print(sorted(m for m in sys.modules if m.startswith('logmm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "error"}).stdout
    assert out.strip() == "['logmm', 'logmm.typing']"
