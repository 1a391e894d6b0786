"""The streaming pipeline: read ahead, compute, write behind.

:func:`run_pipeline` takes a list of work items (row blocks) and three functions. A reader
thread loads item ``i + 1`` while the caller's thread computes item ``i`` and a writer
thread stores item ``i - 1``; each hand-over queue holds one item, so at most two loaded
inputs and two or three results are alive at once (what :mod:`logmm.plan` budgets for).
numpy, BLAS, h5py's decompression and file I/O release the GIL, so the three overlap.

The first exception in any stage stops the others and is re-raised in the caller's thread
(KeyboardInterrupt included); items are stored in order, and ``on_stored`` runs after an
item is stored, which is where a resume record is updated.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["run_pipeline"]

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Result = TypeVar("Result")

_DONE = object()


def _put(q: queue.Queue, value: object, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; True if put."""
    while not stop.is_set():
        try:
            q.put(value, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """Get unless the pipeline is stopping (then ``_DONE``)."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue
    return _DONE


def run_pipeline(items: Sequence[Item], load: Callable[[Item], Loaded],
                 compute: Callable[[Item, Loaded], Result],
                 store: Callable[[Item, Result], None],
                 on_stored: Callable[[Item], None] | None = None) -> None:
    """Run ``store(item, compute(item, load(item)))`` for every item, overlapped.

    ``load`` runs on a reader thread, ``compute`` on the calling thread, ``store`` and
    ``on_stored`` on a writer thread, each in item order. When reading or computing fails
    (or is interrupted), results already computed are still stored before the error is
    raised, so a resumed run has less to redo; when storing fails, everything stops.
    """
    errors: list[BaseException] = []
    stop_reading = threading.Event()
    stop_writing = threading.Event()
    loaded: queue.Queue = queue.Queue(maxsize=1)
    computed: queue.Queue = queue.Queue(maxsize=1)

    def read() -> None:
        try:
            for item in items:
                if not _put(loaded, (item, load(item)), stop_reading):
                    return
            _put(loaded, _DONE, stop_reading)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop_reading.set()

    def write() -> None:
        try:
            while (entry := _get(computed, stop_writing)) is not _DONE:
                item, result = entry
                store(item, result)
                if on_stored is not None:
                    on_stored(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop_writing.set()
            stop_reading.set()

    reader = threading.Thread(target=read, name="logmm-read", daemon=True)
    writer = threading.Thread(target=write, name="logmm-write", daemon=True)
    reader.start()
    writer.start()
    try:
        while (entry := _get(loaded, stop_reading)) is not _DONE:
            item, data = entry
            result = compute(item, data)
            del entry, data
            if not _put(computed, (item, result), stop_writing):
                break
            del result
    except BaseException as exc:
        errors.insert(0, exc)
    finally:
        stop_reading.set()                      # a reader blocked on a full queue returns
        _put(computed, _DONE, stop_writing)     # the writer stores what is computed, then ends
        writer.join()
        reader.join()
    if errors:
        raise errors[0]
