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

from typing import Any

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
from .logmatmul import ProductReport, logmatmulexp, logmatmulexp_report


def __getattr__(name: str) -> Any:
    """``__version__`` on first use: importlib.metadata costs about 50 ms at start-up."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            value = version("logmm")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "softplus",
]
