"""Modules imported on first use, so that ``logmm --version`` and ``--help`` stay fast.

scipy.sparse, opt_einsum and threadpoolctl together cost about 0.2 s to import; the
command line needs none of them until a command computes something.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stands in for the module ``name`` and imports it on the first attribute access.

    ``sp = LazyModule("scipy.sparse")`` then ``sp.issparse(x)`` behaves as with
    ``import scipy.sparse as sp``; until then the module is not in ``sys.modules``.
    """

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"
