"""The read-ahead / write-behind pipeline."""

from __future__ import annotations

import threading
import time

import pytest

from logmm.stream import run_pipeline


def test_results_are_stored_in_order_with_on_stored_after_each() -> None:
    events: list[tuple[str, int]] = []
    run_pipeline(list(range(10)), load=lambda i: i * 10, compute=lambda i, x: x + 1,
                 store=lambda i, r: events.append(("store", r)),
                 on_stored=lambda i: events.append(("done", i)))
    assert events == [e for i in range(10) for e in (("store", i * 10 + 1), ("done", i))]


def test_stages_overlap() -> None:
    threads: dict[str, set[str]] = {"load": set(), "compute": set(), "store": set()}

    def tracked(stage: str, fn):
        def run(*args):
            threads[stage].add(threading.current_thread().name)
            time.sleep(0.02)
            return fn(*args)
        return run

    started = time.perf_counter()
    run_pipeline(list(range(8)), tracked("load", lambda i: i), tracked("compute", lambda i, x: x),
                 tracked("store", lambda i, r: None))
    elapsed = time.perf_counter() - started
    assert threads["load"] == {"logmm-read"} and threads["store"] == {"logmm-write"}
    assert threads["compute"] == {threading.current_thread().name}
    assert elapsed < 8 * 3 * 0.02       # serial would take 0.48 s; overlapped about 0.2 s


@pytest.mark.parametrize("stage", ["load", "compute", "store"])
def test_first_error_in_any_stage_is_raised_and_stops_the_rest(stage: str) -> None:
    stored: list[int] = []

    def maybe_fail(where: str, i: int) -> None:
        if where == stage and i == 3:
            raise ValueError(f"{where} failed at {i}")

    with pytest.raises(ValueError, match=f"{stage} failed at 3"):
        run_pipeline(list(range(100)),
                     load=lambda i: maybe_fail("load", i) or i,
                     compute=lambda i, x: maybe_fail("compute", i) or x,
                     store=lambda i, r: maybe_fail("store", i) or stored.append(i))
    assert stored == sorted(stored) and len(stored) < 10
    assert not [t for t in threading.enumerate() if t.name.startswith("logmm-")]


def test_keyboard_interrupt_in_compute_propagates() -> None:
    def compute(i: int, x: int) -> int:
        if i == 2:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(list(range(5)), lambda i: i, compute, lambda i, r: None)


def test_empty_item_list() -> None:
    run_pipeline([], lambda i: i, lambda i, x: x, lambda i, r: pytest.fail("nothing to store"))
