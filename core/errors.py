"""logmm's exceptions. Each carries the exit code the command line uses for it."""

from __future__ import annotations

__all__ = [
    "install_hint",
    "RunInterrupted",
    "AlreadyComplete",
    "FormatError",
    "InputError",
    "LogmmError",
    "MissingInputError",
    "OutputExistsError",
    "UsageError",
]


class LogmmError(Exception):
    """Base class: a problem logmm reports as one line, with ``exit_code``."""

    exit_code: int = 1


class InputError(LogmmError, ValueError):
    """Bad data: shape mismatch, unsupported dtype, ``+inf`` in a log-probability input."""


class MissingInputError(LogmmError, FileNotFoundError):
    """A file or a dataset inside a file does not exist."""


class FormatError(LogmmError):
    """A file that cannot be read as the format its name promises (corrupt, truncated)."""


class OutputExistsError(LogmmError, FileExistsError):
    """The output exists and ``overwrite`` was not requested."""


class UsageError(LogmmError):
    """A malformed option or argument (exit code 2, like Click's own usage errors)."""

    exit_code = 2


class AlreadyComplete(LogmmError):
    """``--resume`` on an output that is complete and was made by the same inputs and
    options: nothing to do. Not a failure: the command line says so and exits 0."""

    exit_code = 0


def install_hint(extra: str) -> str:
    """How to install an optional extra, from a package index and from a checkout:
    ``pip install 'logmm[dask]' (from a checkout: pip install -e '.[dask]')``."""
    return f"pip install 'logmm[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


class RunInterrupted(LogmmError):
    """The run stopped for a reason outside its data (a lost dask cluster): the partial
    output and its resume record are kept, and ``--resume`` finishes the run."""
