"""File input and output: array addresses, block readers, atomic chunked writers.

``address`` → :func:`open_array` (a reader with ``read_rows``) → … →
:func:`create_writer` (``write_rows``, ``set_attrs``, ``commit``).
"""

from __future__ import annotations

from .addresses import EXTENSIONS, FORMATS, ArrayAddress, detect_format, parse_address
from .readers import ArrayReader, list_arrays, open_array, require_matrix
from .writers import (
    COMPRESSIONS,
    DEFAULT_DATASET,
    ArrayWriter,
    check_output,
    create_writer,
    output_address,
    sidecar_path,
)

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_DATASET",
    "EXTENSIONS",
    "FORMATS",
    "ArrayAddress",
    "ArrayReader",
    "ArrayWriter",
    "check_output",
    "create_writer",
    "detect_format",
    "list_arrays",
    "open_array",
    "output_address",
    "parse_address",
    "require_matrix",
    "sidecar_path",
]
