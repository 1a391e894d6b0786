"""Names for the closed sets of strings logmm's functions take, for type checkers.

Each alias is a :class:`typing.Literal` of exactly the values the matching runtime tuple
holds (tests/test_typing.py keeps the two equal); functions still check their arguments
at run time, since a caller without a type checker can pass any string.

- ``Method``: ``"auto"``, ``"fast"``, ``"exact"`` (``logmatmul.METHODS``)
- ``Semiring``: ``"log"``, ``"max"``, ``"real"`` (``einsum.SEMIRINGS``)
- ``KronSemiring``: ``"real"``, ``"log"`` (``kron.SEMIRINGS``)
- ``Reduce``: ``"none"``, ``"row"``, ``"sum"`` (``gaussian.REDUCTIONS``)
- ``Scheduler``: ``"local"``, ``"dask"`` (``dask_backend.SCHEDULERS``)
- ``Format``: ``"npy"``, ``"hdf5"``, ``"zarr"``, ``"npz"`` (``io.addresses.FORMATS``)
- ``Compression``: ``"gzip"``, ``"lzf"``, ``"zstd"``, ``"blosc"``, ``"none"``
  (``io.compression.COMPRESSIONS``)

``Address`` is what every file-level function accepts as an array address: a string
(``x.h5:/a``), a path, or a parsed :class:`logmm.io.addresses.ArrayAddress`. This module
imports nothing from logmm at run time (``ArrayAddress`` only for type checkers), so any
module may import it without a cycle or the cost of the I/O layer.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from .io.addresses import ArrayAddress

__all__ = ["Address", "Compression", "Format", "KronSemiring", "Method", "Reduce", "Scheduler",
           "Semiring"]

#: how :func:`logmm.logmatmulexp` computes: tiered (``auto``), GEMM only, or per entry
Method: TypeAlias = Literal["auto", "fast", "exact"]
#: the semiring of :func:`logmm.logeinsum`: log-sum-exp, max-plus, or ordinary sums
Semiring: TypeAlias = Literal["log", "max", "real"]
#: the semiring of :func:`logmm.kron_matvec` and :func:`logmm.block_project`
KronSemiring: TypeAlias = Literal["real", "log"]
#: what :func:`logmm.diag_gaussian_logpdf` and ``logmm loglik`` return per row
Reduce: TypeAlias = Literal["none", "row", "sum"]
#: where a file operation's blocks run
Scheduler: TypeAlias = Literal["local", "dask"]
#: the storage formats an address can name (``npz``: sparse, input only)
Format: TypeAlias = Literal["npy", "hdf5", "zarr", "npz"]
#: an output's ``--compression`` (HDF5 filter or Zarr codec; ``"none"``: stored raw)
Compression: TypeAlias = Literal["gzip", "lzf", "zstd", "blosc", "none"]
#: an array address: ``"x.h5:/a"``, a path, or a parsed ``ArrayAddress``
Address: TypeAlias = "str | os.PathLike[str] | ArrayAddress"
