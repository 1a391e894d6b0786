"""What logmm's dask tasks and its own ``LocalCluster`` give the workers (docs/scaling.md,
"Workers on your own cluster"): a task's kernel runs on the task's thread alone, and the
workers of the cluster ``--scheduler dask`` starts run without dask's
``MALLOC_TRIM_THRESHOLD_`` unless the environment sets it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from logmm.dask_backend import TaskError, _apply, connect
from logmm.errors import InputError
from logmm.resources import one_thread_per_task, thread_limit, use_threads

pytest.importorskip("distributed")

TRIM = "MALLOC_TRIM_THRESHOLD_"


def _limits() -> tuple[int, int]:
    """This thread's limit inside a task, and another thread's meanwhile."""
    seen: list[int] = []
    other = threading.Thread(target=lambda: seen.append(thread_limit()))
    other.start()
    other.join()
    return thread_limit(), seen[0]


def _kernel_threads(_: object) -> int:
    return thread_limit()


def _bad_data(_: object) -> None:
    raise InputError("bad block")


def test_one_thread_per_task_holds_the_calling_thread_only() -> None:
    with use_threads(3):
        inside, elsewhere = one_thread_per_task(_limits)()
        assert (inside, elsewhere) == (1, 3)
        assert thread_limit() == 3                     # restored after the call
        nested = one_thread_per_task(lambda: one_thread_per_task(thread_limit)()
                                     + thread_limit())
        assert nested() == 2 and thread_limit() == 3


def test_one_thread_per_task_gives_the_same_bytes() -> None:
    from logmm.logmatmul import logmatmulexp

    rng = np.random.default_rng(7)
    A, B = rng.normal(size=(3000, 200)) * 30, rng.normal(size=(200, 90)) * 30
    with use_threads(2):
        assert one_thread_per_task(logmatmulexp)(A, B).tobytes() == logmatmulexp(A, B).tobytes()


def test_local_cluster_workers_run_untrimmed_single_threaded_tasks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIM, raising=False)    # an earlier cluster in this process sets it
    with connect("dask", None, 256 << 20) as client:
        assert set(client.run(os.environ.get, TRIM).values()) == {None}
        assert set(client.nthreads().values()) == {1}
        # a task's kernel sees one thread, and bad data comes back as data, not raised
        # the task as run_dask sends it: pickled once, unpickled by _apply
        pickled = cloudpickle.dumps(_kernel_threads)
        assert client.submit(_apply, pickled, None, pure=False).result() == 1
        error = client.submit(_apply, cloudpickle.dumps(_bad_data), None, pure=False).result()
        assert isinstance(error, TaskError) and str(error.error) == "bad block"


def test_local_cluster_keeps_a_trim_threshold_the_environment_sets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRIM, "131072")
    with connect("dask", None, 256 << 20) as client:
        assert set(client.run(os.environ.get, TRIM).values()) == {"131072"}


_USER_CLUSTER = """
import os
import dask, distributed

def locks():
    return (dask.config.get("distributed.scheduler.locks.lease-timeout"),
            dask.config.get("distributed.scheduler.locks.lease-validation-interval"))

if __name__ == "__main__":
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as c:
        print(repr((set(c.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()),
                    set(c.run(locks).values()), locks())))
"""


def _user_cluster(tmp_path: Path, **env: str) -> tuple[set, set, tuple]:
    """What a plain ``distributed.LocalCluster`` (a cluster of the user's own, not
    logmm's) gives its workers and scheduler under ``env``."""
    script = tmp_path / "cluster.py"
    script.write_text(_USER_CLUSTER)
    clean = {k: v for k, v in os.environ.items()
             if k != TRIM and not k.startswith("DASK_")}
    done = subprocess.run([sys.executable, str(script)], env={**clean, **env}, check=True,
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_the_documented_dask_config_file_reaches_workers_and_scheduler(tmp_path: Path) -> None:
    """docs/scaling.md's ``logmm.yaml``: no trim variable in the workers, the lock leases
    in the workers' and the scheduler's configuration; without it, dask's defaults."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text("utf-8")
    yaml_text = re.search(r"```yaml\n(distributed:\n.*?)```", doc, re.S)
    assert yaml_text is not None and "MALLOC_TRIM_THRESHOLD_: null" in yaml_text.group(1)
    config = tmp_path / "config"
    config.mkdir()
    (config / "logmm.yaml").write_text(yaml_text.group(1))
    assert _user_cluster(tmp_path) == ({"65536"}, {("30s", "10s")}, ("30s", "10s"))
    assert _user_cluster(tmp_path, DASK_CONFIG=str(config)) == (
        {None}, {("5s", "1s")}, ("5s", "1s"))
    # the lock keys as environment variables, as the doc says; the trim key cannot be
    env = {"DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "5s",
           "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "1s",
           "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_": "None"}
    assert _user_cluster(tmp_path, **env) == ({"65536"}, {("5s", "1s")}, ("5s", "1s"))
