"""logmm: stable log-space matrix products, out of core.

Public API: :func:`logmatmulexp` (``log(exp(A) @ exp(B))`` without overflow or underflow),
:func:`logmatmulexp_report` (the same, with how many entries each tier handled),
:func:`kron_matvec` and :func:`block_project` (rows times Kronecker-structured operators,
never formed; real or log semiring, dense or sparse rows), :func:`logeinsum` (einsum in
the log, max or real semiring, pairwise contractions through the stable kernel),
:func:`logmatmulexp_vjp` and :func:`logeinsum_vjp` (their gradients, through the same
kernel; ``logmm.torch`` wraps both as autograd functions, imported only on request).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("logmm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

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
    "logeinsum",
    "logeinsum_vjp",
    "logmatmulexp",
    "logmatmulexp_report",
    "logmatmulexp_vjp",
    "softplus",
]
