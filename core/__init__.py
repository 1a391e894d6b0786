"""logmm: stable log-space matrix products, out of core.

Public API: :func:`logmatmulexp` (``log(exp(A) @ exp(B))`` without overflow or underflow),
:func:`logmatmulexp_report` (the same, with how many entries each tier handled),
:func:`kron_matvec` and :func:`block_project` (rows times Kronecker-structured operators,
never formed; real or log semiring, dense or sparse rows), :func:`logeinsum` (einsum in
the log, max or real semiring, pairwise contractions through the stable kernel),
:func:`logmatmulexp_vjp` and :func:`logeinsum_vjp` (their gradients, through the same
kernel; ``logmm.torch`` wraps both as autograd functions, imported only on request),
:func:`log_chain` and :func:`log_power` (chains in the cheapest order, powers by squaring).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:       # what the lazy table below gives, spelled out for type checkers
    from ._version import __version__
    from .chain import log_chain, log_identity, log_power
    from .einsum import contraction_info, logeinsum
    from .errors import (
        FormatError,
        InputError,
        LogmmError,
        MissingInputError,
        OutputExistsError,
        UsageError,
    )
    from .gaussian import diag_gaussian_logpdf, softplus
    from .grad import logeinsum_vjp, logmatmulexp_vjp
    from .kron import Identity, block_project, kron_matvec
    from .logmatmul import ProductReport, logmatmulexp, logmatmulexp_report, set_compiled

#: public name -> the submodule that defines it. Imported on first use, so that
#: ``import logmm.cli.main`` (every ``logmm`` command line) loads neither numpy nor the
#: kernels before a command needs them, and ``__version__`` (importlib.metadata, about
#: 50 ms) only when asked for.
_LAZY = {
    "__version__": "_version",
    "log_chain": "chain", "log_identity": "chain", "log_power": "chain",
    "contraction_info": "einsum", "logeinsum": "einsum",
    "FormatError": "errors", "InputError": "errors", "LogmmError": "errors",
    "MissingInputError": "errors", "OutputExistsError": "errors", "UsageError": "errors",
    "diag_gaussian_logpdf": "gaussian", "softplus": "gaussian",
    "logeinsum_vjp": "grad", "logmatmulexp_vjp": "grad",
    "Identity": "kron", "block_project": "kron", "kron_matvec": "kron",
    "ProductReport": "logmatmul", "logmatmulexp": "logmatmul", "logmatmulexp_report": "logmatmul",
    "set_compiled": "logmatmul",
}


def __getattr__(name: str) -> Any:
    """A public name on first use: its submodule is imported then (see ``_LAZY``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "FormatError",
    "Identity",
    "InputError",
    "LogmmError",
    "MissingInputError",
    "OutputExistsError",
    "ProductReport",
    "UsageError",
    "__version__",
    "block_project",
    "contraction_info",
    "diag_gaussian_logpdf",
    "kron_matvec",
    "log_chain",
    "log_identity",
    "log_power",
    "logeinsum",
    "logeinsum_vjp",
    "logmatmulexp",
    "logmatmulexp_report",
    "logmatmulexp_vjp",
    "set_compiled",
    "softplus",
]
