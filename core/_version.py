"""``__version__``: the installed distribution's version, read once from its metadata.

Imported on first use only (``logmm.__version__``, ``logmm --version``, the provenance
of an output): ``importlib.metadata`` costs about 50 ms at start-up.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("logmm")
except PackageNotFoundError:     # a source tree that is not installed
    __version__ = "0+unknown"
