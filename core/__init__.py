"""logmm: stable log-space matrix products, out of core.

Public API: :func:`logmatmulexp` (``log(exp(A) @ exp(B))`` without overflow or underflow)
and :func:`logmatmulexp_report` (the same, with how many entries each tier handled).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    FormatError,
    InputError,
    LogmmError,
    MissingInputError,
    OutputExistsError,
    UsageError,
)
from .logmatmul import ProductReport, logmatmulexp, logmatmulexp_report

try:
    __version__ = version("logmm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "FormatError",
    "InputError",
    "LogmmError",
    "MissingInputError",
    "OutputExistsError",
    "ProductReport",
    "UsageError",
    "__version__",
    "logmatmulexp",
    "logmatmulexp_report",
]
