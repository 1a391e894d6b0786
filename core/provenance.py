"""The provenance every logmm output carries, built in one place.

:func:`run_provenance` gives the attributes common to all outputs: the tool version and
command, when and where the run happened (UTC time, host), the versions of the libraries
that computed and stored the result, and each input's address, size and modification
time. Each engine adds what is particular to its operation (method, shapes, repairs).
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .io.addresses import ArrayAddress, parse_address

__all__ = ["input_record", "run_provenance"]

#: the libraries whose versions an output records
_LIBRARIES = ("numpy", "h5py", "zarr")


def run_provenance(command: str, inputs: Iterable[str | Path | ArrayAddress]
                   ) -> dict[str, Any]:
    """``logmm_version``, ``command``, ``created`` (UTC, ISO 8601), ``host``, ``python``,
    ``numpy``/``h5py``/``zarr`` versions, and ``inputs`` with ``input_bytes`` and
    ``input_modified`` (UTC) in the same order: plain strings, numbers and lists, which
    HDF5, Zarr and JSON attributes all hold."""
    from . import __version__

    records = [input_record(address) for address in inputs]
    attrs: dict[str, Any] = {
        "logmm_version": __version__,
        "command": command,
        "created": _utc(datetime.now(timezone.utc).timestamp()),
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
    for name in _LIBRARIES:
        try:
            attrs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    attrs["inputs"] = [r["address"] for r in records]
    attrs["input_bytes"] = [r["bytes"] for r in records]
    attrs["input_modified"] = [r["modified"] for r in records]
    return attrs


def input_record(address: str | Path | ArrayAddress) -> dict[str, Any]:
    """``{"address", "bytes", "modified"}`` of one input: the file's size and modification
    time, or for a Zarr array the bytes under its directory and its metadata's time
    (-1 and "" when it cannot be read)."""
    addr = parse_address(address)
    path = addr.path
    try:
        if addr.format == "zarr":
            node = path / (addr.dataset or "")
            meta = next((node / doc for doc in ("zarr.json", ".zarray") if (node / doc).exists()),
                        node)
            size = sum(entry.stat().st_size for entry in node.rglob("*") if entry.is_file())
            modified = meta.stat().st_mtime
        else:
            stat = path.stat()
            size, modified = stat.st_size, stat.st_mtime
    except OSError:
        return {"address": str(addr), "bytes": -1, "modified": ""}
    return {"address": str(addr), "bytes": int(size), "modified": _utc(modified)}


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
