"""Array addresses: ``"file.h5:/group/name"`` → a typed :class:`ArrayAddress`.

Grammar (the format follows the file's extension, case-insensitively)::

    path.npy                   a NumPy file (one array; no dataset part)
    path.h5[:/group/name]      an HDF5 file (also .hdf5), optional dataset path
    path.zarr[:group/name]     a Zarr directory store (v3; v2 readable), optional array path
    path.npz                   a scipy.sparse matrix (``scipy.sparse.save_npz``; input only)

An HDF5 or Zarr address may also name a group holding a CSR matrix (``data``,
``indices``, ``indptr`` and a ``shape`` attribute); see :mod:`logmm.io.readers`.

Only a ``:`` that directly follows a recognised extension separates the dataset, so
``C:/data/x.h5:/a``, ``./x.h5`` and ``run:3/x.npy`` all parse as expected.

An existing file whose name does not say its format (``.h5ad``, ``.loom``, ``.nc``,
``.he5``, no extension at all) is recognised by its content: the HDF5 signature, the
``.npy`` magic string, or a directory holding Zarr metadata (``zarr.json``, ``.zarray``,
``.zgroup``). The file is then the shortest prefix of the address, ending before a
``:`` or at its end, that exists on disk; what follows the ``:`` is the dataset
(``cells.h5ad:/X``). A name that does not exist still needs a known extension.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "INPUT_ONLY_FORMATS",
    "ArrayAddress",
    "detect_format",
    "parse_address",
    "sniff_format",
]

#: file extension (lower case, with dot) → format name
EXTENSIONS: dict[str, str] = {
    ".npy": "npy",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".zarr": "zarr",
    ".npz": "npz",
}
FORMATS: tuple[str, ...] = ("npy", "hdf5", "zarr", "npz")
#: formats logmm reads but never writes
INPUT_ONLY_FORMATS: tuple[str, ...] = ("npz",)

_EXT_ALTERNATION = "|".join(re.escape(e[1:]) for e in sorted(EXTENSIONS, key=len, reverse=True))
# Shortest prefix ending in a recognised extension (a zarr directory may carry a trailing
# slash) that is followed by the end of the text or by ":DATASET".
_ADDRESS_RE = re.compile(
    rf"^(?P<path>.*?\.(?P<ext>{_EXT_ALTERNATION}))(?P<slash>[/\\]?)(?::(?P<dataset>.*))?$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class ArrayAddress:
    """A parsed array address.

    Attributes
    ----------
    path : Path
        The file (or, for Zarr, directory) on disk.
    format : str
        One of :data:`FORMATS`: ``"npy"``, ``"hdf5"``, ``"zarr"`` or ``"npz"`` (sparse).
    dataset : str or None
        The array inside the file, without a leading ``/`` (``"group/name"``), or None
        when the address names no dataset.
    """

    path: Path
    format: str
    dataset: str | None = None

    @property
    def dataset_name(self) -> str:
        """The dataset part, for an address known to have one (an output's, filled in by
        :func:`logmm.io.writers.output_address`); ValueError otherwise."""
        if self.dataset is None:
            raise ValueError(f"{self} names no dataset")
        return self.dataset

    def with_dataset(self, dataset: str | None) -> ArrayAddress:
        """The same file with another dataset part."""
        return ArrayAddress(self.path, self.format, _normalise_dataset(dataset))

    def __str__(self) -> str:
        if self.dataset is None:
            return str(self.path)
        if self.format == "hdf5":
            return f"{self.path}:/{self.dataset}"
        return f"{self.path}:{self.dataset}"


def detect_format(path: str | Path) -> str:
    """The format name for ``path`` from its extension.

    Raises
    ------
    UsageError
        The extension is not one logmm reads or writes.
    """
    suffix = Path(str(path).rstrip("/\\")).suffix.lower()
    try:
        return EXTENSIONS[suffix]
    except KeyError:
        raise UsageError(_unknown_extension_message(str(path))) from None


def parse_address(text: str | Path | ArrayAddress) -> ArrayAddress:
    """Parse ``"path.ext[:dataset]"`` into an :class:`ArrayAddress`.

    >>> parse_address("runs/x.h5:/g/a")
    ArrayAddress(path=PosixPath('runs/x.h5'), format='hdf5', dataset='g/a')

    Raises
    ------
    UsageError
        Empty address, unknown extension, or a dataset part on a ``.npy`` file.
    """
    if isinstance(text, ArrayAddress):
        return text
    if isinstance(text, Path):
        text = str(text)
    if not text:
        raise UsageError("empty array address")
    match = _ADDRESS_RE.match(text)
    if match is None:
        path, fmt, dataset = _by_content(text)
    else:
        path, fmt = match["path"], EXTENSIONS["." + match["ext"].lower()]
        dataset = _normalise_dataset(match["dataset"])
    if fmt in ("npy", "npz") and dataset is not None:
        kind = "array" if fmt == "npy" else "sparse matrix"
        raise UsageError(
            f"{text}: a .{fmt} file holds a single {kind}, so the address takes no "
            f"':{dataset}' part"
        )
    return ArrayAddress(Path(path), fmt, dataset)


#: where HDF5 looks for its signature: offset 0, then 512, 1024, 2048, ... (a user block)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)
_ZARR_DOCUMENTS = ("zarr.json", ".zarray", ".zgroup")


def _by_content(text: str) -> tuple[str, str, str | None]:
    """``(path, format, dataset)`` of an address whose file name does not say its format:
    the shortest prefix (whole text, or up to a ``:``) that exists and whose content is
    HDF5, ``.npy`` or a Zarr store.

    Raises
    ------
    UsageError
        No such prefix exists, or its content is none of those.
    """
    cuts = [len(text)] + [i for i, c in enumerate(text) if c == ":"]
    for cut in sorted(cuts):
        candidate = text[:cut].rstrip("/\\") if cut == len(text) else text[:cut]
        if candidate and os.path.exists(candidate):
            fmt = sniff_format(candidate)
            if fmt is None:
                break
            dataset = _normalise_dataset(text[cut + 1:]) if cut < len(text) else None
            return candidate, fmt, dataset
    raise UsageError(_unknown_extension_message(text))


def sniff_format(path: str | Path) -> str | None:
    """The format of an existing file or directory by its content (``"hdf5"``, ``"npy"``,
    ``"zarr"``), or None when it is none of them or cannot be read."""
    path = Path(path)
    if path.is_dir():
        return "zarr" if any((path / doc).exists() for doc in _ZARR_DOCUMENTS) else None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:6] == b"\x93NUMPY":
                return "npy"
            for offset in _HDF5_OFFSETS:
                if offset:
                    f.seek(offset)
                    head = f.read(8)
                if head == _HDF5_SIGNATURE:
                    return "hdf5"
    except OSError:
        return None
    return None


def _normalise_dataset(dataset: str | None) -> str | None:
    """``"/g/a/"`` → ``"g/a"``; ``""`` and ``"/"`` → None (no dataset named)."""
    if dataset is None:
        return None
    dataset = dataset.strip("/")
    return dataset or None


def _unknown_extension_message(text: str) -> str:
    written = ", ".join(e for e, fmt in EXTENSIONS.items() if fmt not in INPUT_ONLY_FORMATS)
    read_only = ", ".join(e for e, fmt in EXTENSIONS.items() if fmt in INPUT_ONLY_FORMATS)
    return (
        f"{text}: cannot tell the format; array addresses end in one of {written} "
        f"(inputs also {read_only}: sparse matrices, read only; "
        "e.g. x.npy, x.h5:/group/name, x.zarr:name, sparse.npz)"
    )
