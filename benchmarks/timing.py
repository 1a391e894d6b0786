"""The one timing helper every benchmark uses: interleaved runs, shuffled, medians."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


def timed(methods: dict[str, Callable[[], object]], repeats: int,
          seed: int = 0) -> dict[str, float]:
    """Median seconds per method.

    Each method runs once to warm up (page faults, thread pools); then, ``repeats`` times,
    every method runs once, in a freshly shuffled order, so that no method always follows
    the same neighbour (a big allocation slows the next call on this machine).
    """
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
