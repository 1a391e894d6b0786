"""The checks every operation makes of its options and data, in one place.

One exception class per kind of mistake (see :mod:`logmm.errors`): a bad *option*
(unknown method, a size below 1, a ``--dtype`` other than float32/float64) is a
:class:`~logmm.errors.UsageError` (exit 2) wherever it is given; bad *data* (an input
dtype that cannot hold log-values, ``+inf`` in a log-probability input, a value a
narrowing cast would overflow) is an :class:`~logmm.errors.InputError` (exit 1).

- :func:`resolve_dtype`: the result dtype of an operation on inputs of given dtypes
  (float32 stays float32, float64 stays float64, integers become float64), or the one
  asked for;
- :func:`checked_cast`: an array as another float dtype, refusing a narrowing that turns
  finite values into infinities;
- :func:`check_no_posinf` (from the kernel): ``+inf`` in a log-probability input;
- :func:`check_method`, :func:`check_choice`, :func:`check_at_least_one`: options.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import InputError, UsageError
from .logmatmul import METHODS, check_no_posinf, compute_dtype, result_dtype

__all__ = ["check_at_least_one", "check_choice", "check_method", "check_no_posinf",
           "checked_cast", "resolve_dtype", "resolve_dtypes"]

#: how sizes are named in messages (``block rows must be at least 1, got 0``)
_SIZE_NAMES = {"block_rows": "block rows", "chunk_rows": "chunk rows",
               "memory": "memory budget"}


def check_choice(kind: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``, or a :class:`UsageError`
    (``unknown method 'x'; choose one of auto, fast, exact``)."""
    if value not in choices:
        raise UsageError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


def check_method(method: str) -> None:
    """A kernel method (:data:`logmm.logmatmul.METHODS`), or a :class:`UsageError`."""
    check_choice("method", method, METHODS)


def check_at_least_one(**sizes: int | None) -> None:
    """Every size given (not None) is at least 1, or a :class:`UsageError`
    (``check_at_least_one(block_rows=0)``: ``block rows must be at least 1, got 0``)."""
    for key, value in sizes.items():
        if value is not None and value < 1:
            name = _SIZE_NAMES.get(key, key.replace("_", " "))
            raise UsageError(f"{name} must be at least 1, got {value}")


def resolve_dtype(a_dtype: np.dtype, b_dtype: np.dtype,
                  dtype: np.dtype | type | str | None = None) -> np.dtype:
    """The result dtype of an operation on two inputs, as
    :func:`logmm.logmatmul.result_dtype` decides it.

    Raises
    ------
    UsageError
        ``dtype`` is not float32 or float64 (a bad option, not bad data).
    InputError
        An input's dtype cannot hold log-values.
    """
    if dtype is not None:
        try:
            return result_dtype(a_dtype, b_dtype, dtype)
        except InputError as exc:
            raise UsageError(str(exc)) from None
    return result_dtype(a_dtype, b_dtype)


def resolve_dtypes(dtypes: Iterable[np.dtype], dtype: Any = None) -> np.dtype:
    """The result dtype of an operation on any number of log-valued inputs (float64 for
    none), or ``dtype`` when given.

    Raises
    ------
    UsageError
        ``dtype`` is not float32 or float64.
    InputError
        An input's dtype cannot hold log-values.
    """
    if dtype is not None:
        return resolve_dtype(np.dtype(np.float64), np.dtype(np.float64), dtype)
    own = []
    for dt in dtypes:
        try:
            own.append(compute_dtype(dt))
        except InputError:
            raise InputError(f"dtype {dt} is not supported; log-space inputs must be "
                             "float32 or float64 (integers are read as float64)") from None
    return np.result_type(*own) if own else np.dtype(np.float64)


def checked_cast(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` as ``dtype``; a narrowing cast of finite values beyond ``dtype``'s range is
    an :class:`InputError` naming ``name`` (``operand 2 (b.h5:/x) holds 1e+300, beyond
    the range of float32``). Infinities and NaN pass as they are."""
    if x.dtype == dtype:
        return x
    if x.dtype.kind == "f" and x.dtype.itemsize > dtype.itemsize and x.size:
        finite = x[np.isfinite(x)]
        top = float(np.abs(finite).max(initial=0.0))
        if top > float(np.finfo(dtype).max):
            raise InputError(f"{name} holds {top:.6g}, beyond the range of {dtype}")
    return x.astype(dtype)
