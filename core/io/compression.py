"""Output compression: option names → HDF5 filters and Zarr codecs, and back again.

=========  ==========================================  ===========================
name       HDF5                                        Zarr v3
=========  ==========================================  ===========================
gzip       deflate, level 4 (built in)                 ``GzipCodec(level=5)``
lzf        lzf (h5py's built-in filter)                (usage error: HDF5 only)
zstd       Zstandard level 3 (``hdf5plugin``)          ``ZstdCodec(level=3)``
blosc      Blosc lz4, byte shuffle (``hdf5plugin``)    ``BloscCodec`` lz4, shuffle
none       no filter                                   no compressor
=========  ==========================================  ===========================

``None`` (no option given) means each format's default: uncompressed HDF5, Zarr's own
default compressor (zstd). HDF5's zstd and blosc filters come from the optional
``hdf5plugin`` package (``pip install logmm[hdf5plugin]``), imported only when such a
filter is asked for or met in a file being read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LogmmError, UsageError, install_hint

__all__ = [
    "COMPRESSIONS",
    "HDF5_FILTER_NAMES",
    "check_compression",
    "describe_hdf5_filters",
    "describe_zarr_codecs",
    "ensure_hdf5_filters",
    "hdf5_filter_kwargs",
    "load_hdf5plugin",
    "zarr_compressors",
]

#: accepted values of ``compression`` (None means the format's default)
COMPRESSIONS: tuple[str, ...] = ("gzip", "lzf", "zstd", "blosc", "none")

_PLUGIN_COMPRESSIONS = ("zstd", "blosc")
_INSTALL_HINT = install_hint("hdf5plugin")

#: registered HDF5 filter id → short name (built-in filters and the common plugins)
HDF5_FILTER_NAMES: dict[int, str] = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32013: "zfp",
    32015: "zstd",
    32017: "sz",
    32026: "blosc2",
}
# Filters that only rearrange or checksum bytes: not called compression on their own.
_NON_COMPRESSING = {"shuffle", "fletcher32", "bytes", "transpose", "crc32c"}


def check_compression(fmt: str, path: str | Path, compression: str | None) -> None:
    """Check that ``compression`` exists and the format ``fmt`` offers it.

    Raises
    ------
    UsageError
        Unknown name, compression on ``.npy``, or lzf on Zarr.
    LogmmError
        HDF5 zstd/blosc asked for but ``hdf5plugin`` is not installed.
    """
    if compression is None:
        return
    if compression not in COMPRESSIONS:
        raise UsageError(
            f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}"
        )
    if fmt == "npy" and compression != "none":
        raise UsageError(f"{path}: .npy files are not compressed; use .h5 or .zarr")
    if fmt == "zarr" and compression == "lzf":
        raise UsageError(f"{path}: lzf is HDF5-only; for Zarr use gzip, zstd, blosc or none")
    if fmt == "hdf5" and compression in _PLUGIN_COMPRESSIONS:
        load_hdf5plugin(f"HDF5 {compression} compression")


def load_hdf5plugin(purpose: str = "this HDF5 filter") -> Any:
    """Import ``hdf5plugin`` (which registers its filters with HDF5) and return it.

    Raises
    ------
    LogmmError
        The package is not installed; the message says how to install it.
    """
    try:
        import hdf5plugin
    except ImportError:
        raise LogmmError(
            f"{purpose} needs the optional hdf5plugin package: {_INSTALL_HINT}"
        ) from None
    return hdf5plugin


def hdf5_filter_kwargs(compression: str | None) -> dict[str, Any]:
    """Keyword arguments for ``h5py.Group.create_dataset`` (chunked storage assumed)."""
    if compression in (None, "none"):
        return {}
    if compression in ("gzip", "lzf"):
        return {"compression": compression}
    plugin = load_hdf5plugin(f"HDF5 {compression} compression")
    if compression == "zstd":
        return dict(plugin.Zstd(clevel=3))
    if compression == "blosc":
        return dict(plugin.Blosc(cname="lz4", clevel=5, shuffle=plugin.Blosc.SHUFFLE))
    raise UsageError(f"unknown compression {compression!r}")


def zarr_compressors(compression: str | None) -> Any:
    """The ``compressors`` argument of ``zarr.create_array`` for ``compression``."""
    if compression is None:
        return "auto"
    if compression == "none":
        return None
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if compression == "gzip":
        return [GzipCodec(level=5)]
    if compression == "zstd":
        return [ZstdCodec(level=3)]
    if compression == "blosc":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    raise UsageError(f"{compression} compression is not available for Zarr")


def ensure_hdf5_filters(dataset: Any, where: str) -> None:
    """Make the filters ``dataset`` (an h5py Dataset) needs available before reading it.

    Loads ``hdf5plugin`` when a filter is not registered yet.

    Raises
    ------
    LogmmError
        A filter stays unavailable (hdf5plugin missing, or a filter it does not provide).
    """
    import h5py

    missing = [code for code, _, _ in _hdf5_pipeline(dataset)
               if not h5py.h5z.filter_avail(code)]
    if not missing:
        return
    names = ", ".join(f"{HDF5_FILTER_NAMES.get(c, 'filter')} ({c})" for c in missing)
    load_hdf5plugin(f"{where} uses the HDF5 filter {names}; reading it")
    still = [c for c in missing if not h5py.h5z.filter_avail(c)]
    if still:
        names = ", ".join(f"{HDF5_FILTER_NAMES.get(c, 'filter')} ({c})" for c in still)
        raise LogmmError(f"{where} uses the HDF5 filter {names}, which is not available here")


def describe_hdf5_filters(dataset: Any) -> tuple[str, list[dict[str, Any]]]:
    """``("shuffle+gzip", [{"name": "shuffle", "configuration": {...}}, ...])`` for a dataset.

    Only metadata is read; no plugin is needed to describe a filter.
    """
    codecs: list[dict[str, Any]] = []
    for code, options, label in _hdf5_pipeline(dataset):
        name = HDF5_FILTER_NAMES.get(code, label or f"filter-{code}")
        codecs.append({"name": name, "configuration": {"id": code, "options": options}})
    return _summary([c["name"] for c in codecs]), codecs


def describe_zarr_codecs(array: Any) -> tuple[str, list[dict[str, Any]]]:
    """``("zstd", [{"name": "bytes", ...}, {"name": "zstd", ...}])`` for a zarr Array (v3 or v2)."""
    codecs: list[dict[str, Any]] = []
    compressing: list[str] = []
    serializer = getattr(array, "serializer", None)
    parts = list(getattr(array, "filters", ()) or ())
    if serializer is not None:
        parts.append(serializer)
    parts.extend(getattr(array, "compressors", ()) or ())
    for codec in parts:
        entry = _codec_dict(codec)
        codecs.append(entry)
        if codec is not serializer:
            compressing.append(entry["name"])
    return _summary(compressing), codecs


# ----------------------------------------------------------------------------- helpers


def _hdf5_pipeline(dataset: Any) -> list[tuple[int, list[Any], str]]:
    """``[(filter id, options, name stored in the file), ...]`` of an h5py Dataset."""
    plist = dataset.id.get_create_plist()
    pipeline = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, label = plist.get_filter(i)[:4]
        if isinstance(label, bytes):
            label = label.decode("utf-8", "replace")
        pipeline.append((int(code), [int(v) for v in values], str(label).split(";")[0]))
    return pipeline


def _codec_dict(codec: Any) -> dict[str, Any]:
    """A zarr v3 codec or a numcodecs codec as ``{"name": ..., "configuration": {...}}``."""
    to_dict = getattr(codec, "to_dict", None)
    if callable(to_dict):
        try:
            d = dict(to_dict())
            return {"name": str(d.get("name", type(codec).__name__)),
                    "configuration": _plain(d.get("configuration", {}))}
        except Exception:  # noqa: S110 - fall back to the numcodecs form
            pass
    get_config = getattr(codec, "get_config", None)
    if callable(get_config):
        config = dict(get_config())
        name = str(config.pop("id", type(codec).__name__.lower()))
        return {"name": name, "configuration": _plain(config)}
    return {"name": type(codec).__name__.lower(), "configuration": {}}


def _plain(value: Any) -> Any:
    """Enums and tuples inside codec configurations → JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    inner = getattr(value, "value", None)
    return inner if isinstance(inner, (str, int, float)) else str(value)


def _summary(names: list[str]) -> str:
    compressing = [n for n in names if n not in _NON_COMPRESSING]
    return "+".join(names) if compressing else "none"
