"""The dask runner on a cluster of worker *processes* (issue 14): the same bytes as
``--scheduler local`` for plans with column panels and a K split, no result bytes through
the client for a Zarr output, lost workers or a lost client lose nothing ``--resume``
cannot finish, workers that join mid-run get tasks, and plans give every worker thread
several blocks.

One ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` serves the module
(conftest's ``process_cluster``, shared with test_dask_api.py);
tests that slow its tasks register :class:`SlowBlocks` (a worker plugin, so workers that a
nanny restarts or that join later are slowed too) and remove it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from logmm.errors import RunInterrupted
from logmm.io.readers import open_array
from logmm.io.resume import ResumeRecord
from logmm.loglik import loglik
from logmm.multiply import multiply
from logmm.project import project

from cli_run import one_error_line, run_logmm, start_logmm

distributed = pytest.importorskip("distributed")

#: the budget that makes multiply's plan of A (n × 2000) by B (2000 × 150) split B into
#: column panels of 64 and K into chunks of 1024 (see test_plan_has_panels_and_a_k_split)
SMALL_MEMORY = 56 << 20
KiB, MiB = 1 << 10, 1 << 20


def one_blas_thread():
    """BLAS on one thread, as in the workers (dask starts them with OMP_NUM_THREADS=1):
    OpenBLAS's GEMM gives different last bits on 1 and 2 threads for some shapes (here
    50 x 1024 @ 1024 x 22), so a local reference on the same BLAS thread count is what
    shows the runner's own bytes (see test_dask_equals_local_on_all_blas_threads)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def read(address: Path | str) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()


class SlowBlocks(distributed.WorkerPlugin):
    """Make every logmm task on a worker sleep ``seconds`` first (the task function,
    pickled by reference, is looked up in the worker's ``logmm.dask_backend``)."""

    name = "logmm-slow-blocks"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def setup(self, worker) -> None:
        from logmm import dask_backend

        original = getattr(dask_backend._apply, "original", dask_backend._apply)
        seconds = self.seconds

        def slow(task, block):
            time.sleep(seconds)
            return original(task, block)

        slow.original = original
        dask_backend._apply = slow

    def teardown(self, worker) -> None:
        from logmm import dask_backend

        dask_backend._apply = getattr(dask_backend._apply, "original", dask_backend._apply)


@pytest.fixture(scope="module")
def by_value():
    """This module's worker plugins (SlowBlocks, ...) travel to workers by value."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster(process_cluster, by_value):
    yield process_cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as client:
        client.get_task_stream()           # starts the scheduler's task stream record
        yield client


@pytest.fixture
def slow_blocks(client):
    """``slow_blocks(seconds)`` slows every task of the cluster until the test ends; the
    cluster is back to 2 workers afterwards."""
    def slow(seconds: float) -> None:
        client.register_plugin(SlowBlocks(seconds))

    yield slow
    client.unregister_worker_plugin(SlowBlocks.name)
    client.cluster.scale(2)
    client.wait_for_workers(2, timeout=60)


def block_tasks(client, since: float = 0) -> list[dict]:
    """The logmm block tasks the scheduler saw finish since ``since`` (time.time())."""
    stream = client.get_task_stream(start=since) if since else client.get_task_stream()
    return [t for t in stream if str(t["key"]).startswith("logmm-block-")]


def wait_for_tasks(client, since: float, count: int, proc=None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(block_tasks(client, since)) < count:
        assert time.monotonic() < deadline, "the run's tasks did not start"
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def write_h5(path: Path, name: str, values: np.ndarray, chunk_rows: int | None = None) -> str:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=values,
                         chunks=(chunk_rows, values.shape[1]) if chunk_rows else None)
    return f"{path}:/{name}"


@pytest.fixture
def wide(tmp_path: Path) -> dict[str, str]:
    """A (400 × 2000) and B (2000 × 150): under SMALL_MEMORY B is read in panels and K
    chunks; entries spread over ±40 so that the exact repair has work."""
    rng = np.random.default_rng(14)
    a = rng.normal(size=(400, 2000)) * 40
    a[7] = -np.inf
    b = rng.normal(size=(2000, 150)) * 40
    np.save(tmp_path / "b.npy", b)
    return {"a": write_h5(tmp_path / "a.h5", "a", a, chunk_rows=50),
            "b": str(tmp_path / "b.npy")}


# ----------------------------------------------------------------------------- 1. bytes


@pytest.mark.parametrize("ext", ["zarr", "h5"])
def test_plan_has_panels_and_a_k_split(tmp_path: Path, wide, client, ext: str) -> None:
    """Workers write a Zarr output (by chunk) or an HDF5 one (under a lock): the local
    bytes."""
    on_dask = multiply(wide["a"], wide["b"], tmp_path / f"dask.{ext}", memory=SMALL_MEMORY,
                       scheduler=client)
    plan = on_dask.plan
    assert plan.col_panel < plan.m and plan.k_chunk < plan.k, plan
    assert len(plan.row_blocks()) >= 4 * 2, plan          # 4 blocks per worker thread
    with one_blas_thread():
        local = multiply(wide["a"], wide["b"], tmp_path / f"local.{ext}",
                         memory=SMALL_MEMORY, block_rows=plan.block_rows)
    assert (local.plan.col_panel, local.plan.k_chunk) == (plan.col_panel, plan.k_chunk)
    assert same_bits(read(tmp_path / f"dask.{ext}"), read(tmp_path / f"local.{ext}"))
    assert on_dask.report == local.report


def panel_tasks(client, since: float) -> set[tuple[int, int]]:
    """(block, first column) of the (block, panel) tasks the scheduler saw since ``since``."""
    keys = {tuple(str(t["key"]).split("-")[2:4]) for t in block_tasks(client, since)}
    return {(int(i), int(c0)) for i, c0 in keys}


def test_column_panels_are_tasks_writing_their_own_chunks(tmp_path: Path, wide,
                                                          client) -> None:
    """A plan with column panels and a K split runs as one task per (block, panel), K
    folded in k order inside it, each writing whole chunks of a store chunked by panel."""
    import zarr

    since = time.time()
    on_dask = multiply(wide["a"], wide["b"], tmp_path / "dask.zarr", memory=SMALL_MEMORY,
                       scheduler=client)
    plan = on_dask.plan
    assert len(plan.col_panels()) >= 3 and len(plan.k_chunks()) >= 2, plan
    tiles = {(i, c0) for i, _ in enumerate(plan.row_blocks()) for c0, _ in plan.col_panels()}
    assert panel_tasks(client, since) == tiles
    assert zarr.open_array(tmp_path / "dask.zarr", path="data").chunks == (plan.chunk_rows,
                                                                          plan.col_panel)
    with one_blas_thread():
        local = multiply(wide["a"], wide["b"], tmp_path / "local.zarr", memory=SMALL_MEMORY,
                         block_rows=plan.block_rows)
    assert same_bits(read(tmp_path / "dask.zarr"), read(tmp_path / "local.zarr"))
    assert on_dask.report == local.report


def test_panel_tasks_killed_client_then_resume(tmp_path: Path, wide, client, cluster,
                                               slow_blocks) -> None:
    """SIGKILL the client of a (block, panel) run: the record holds only blocks whose
    every panel is stored, and ``--resume`` on dask finishes with the local bytes."""
    args = ("multiply", wide["a"], wide["b"], "--memory", str(SMALL_MEMORY))
    local = tmp_path / "local.zarr"
    assert run_logmm(*args, "-o", local, "--threads", "1", "--block-rows", "50").returncode == 0
    slow_blocks(0.2)
    out = tmp_path / "dask.zarr"
    since = time.time()
    proc = start_logmm(*args, "-o", out, "--dask-address", cluster.scheduler_address)
    wait_for_tasks(client, since, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert partial_kept(out) and not out.exists()
    record_file = out.parent / f".{out.name}.logmm-partial.json"
    plan = json.loads(record_file.read_text().splitlines()[0])["plan"]
    assert plan["chunk_rows"] == plan["block_rows"]
    panels = -(-150 // plan["col_panel"])
    chunks = out.parent / f".{out.name}.logmm-partial" / "data" / "c"
    done = ResumeRecord.load(record_file).done
    for i in done:                         # a block is marked once all its panels are
        assert len(list((chunks / str(i)).iterdir())) == panels, (i, done)
    slow_blocks(0)                         # the resumed run's ~24 tasks at full speed
    resumed = run_logmm(*args, "-o", out, "--resume", "--dask-address",
                        cluster.scheduler_address)
    assert resumed.returncode == 0, resumed.stderr
    assert same_bits(read(out), read(local))


def test_dask_equals_local_on_all_blas_threads(tmp_path: Path, wide, client) -> None:
    # the kernel holds every GEMM to one BLAS thread (issue 14 item 4), so a local run
    # on all of this machine's threads gives the workers' bytes
    on_dask = multiply(wide["a"], wide["b"], tmp_path / "dask.zarr", memory=SMALL_MEMORY,
                       scheduler=client)
    multiply(wide["a"], wide["b"], tmp_path / "local.zarr", memory=SMALL_MEMORY,
             block_rows=on_dask.plan.block_rows, threads=2)
    assert same_bits(read(tmp_path / "dask.zarr"), read(tmp_path / "local.zarr"))


def test_cli_dask_address_with_panels_equals_local(tmp_path: Path, wide, cluster) -> None:
    common = ("multiply", wide["a"], wide["b"], "--memory", str(SMALL_MEMORY),
              "--block-rows", "60")
    # --threads 1 holds BLAS to one thread too, as in the workers
    assert run_logmm(*common, "-o", tmp_path / "local.zarr", "--threads", "1").returncode == 0
    res = run_logmm(*common, "-o", tmp_path / "dask.zarr", "--dask-address",
                    cluster.scheduler_address)
    assert res.returncode == 0, res.stderr
    assert same_bits(read(tmp_path / "dask.zarr"), read(tmp_path / "local.zarr"))


@pytest.mark.parametrize("ext", ["zarr", "h5"])
def test_project_and_loglik_equal_local(tmp_path: Path, client, ext: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(900, 48)) * 10
    x[3] = -np.inf
    xa = write_h5(tmp_path / "x.h5", "x", x, chunk_rows=30)
    np.save(tmp_path / "w.npy", rng.normal(size=(5, 8)))
    np.save(tmp_path / "mu.npy", rng.normal(size=48))
    x_ok = write_h5(tmp_path / "xf.h5", "x", np.where(np.isinf(x), 0.0, x), chunk_rows=30)
    runs = {}
    for tag, sched in (("dask", client), ("local", "local")):
        rows = {} if tag == "dask" else {"block_rows": runs["p"].plan.block_rows}
        with one_blas_thread():
            runs["p"] = project(xa, tmp_path / f"p-{tag}.{ext}", w_address=tmp_path / "w.npy",
                                blocks=6, semiring="log", scheduler=sched, **rows)
        rows = {} if tag == "dask" else {"block_rows": runs["l"].plan.block_rows}
        with one_blas_thread():
            runs["l"] = loglik(x_ok, tmp_path / f"l-{tag}.{ext}", mu=tmp_path / "mu.npy",
                               sigma=1.5, scheduler=sched, **rows)
        if tag == "dask":
            assert len(runs["p"].plan.row_blocks()) >= 8
            assert len(runs["l"].plan.row_blocks()) >= 8
    for op in ("p", "l"):
        assert same_bits(read(tmp_path / f"{op}-dask.{ext}"), read(tmp_path / f"{op}-local.{ext}"))


def test_local_partial_resumed_on_dask_keeps_one_task_per_block(tmp_path: Path, wide,
                                                               client, monkeypatch) -> None:
    """A partial store a local run left (chunks of whole rows) is resumed on dask with one
    task per block (panels looped inside), never with panel tasks sharing a chunk."""
    from logmm import engine

    real = engine.run_pipeline

    def interrupted(blocks, load, compute, store, on_stored):
        def stop_after_two(block):
            on_stored(block)
            if block[0] == 1:
                raise KeyboardInterrupt
        return real(blocks, load, compute, store, on_stored=stop_after_two)

    out = tmp_path / "c.zarr"
    monkeypatch.setattr(engine, "run_pipeline", interrupted)
    with one_blas_thread(), pytest.raises(KeyboardInterrupt):
        multiply(wide["a"], wide["b"], out, memory=SMALL_MEMORY, block_rows=50)
    monkeypatch.setattr(engine, "run_pipeline", real)
    assert partial_kept(out)
    since = time.time()
    res = multiply(wide["a"], wide["b"], out, memory=SMALL_MEMORY, block_rows=50,
                   resume=True, scheduler=client)
    assert res.resumed_blocks == 2 and len(res.plan.col_panels()) >= 3
    keys = [str(t["key"]) for t in block_tasks(client, since)]
    assert len(keys) == len(res.plan.row_blocks()) - 2, keys    # one task per block
    with one_blas_thread():
        multiply(wide["a"], wide["b"], tmp_path / "local.zarr", memory=SMALL_MEMORY,
                 block_rows=50)
    assert same_bits(read(out), read(tmp_path / "local.zarr"))


def test_tasks_writing_piece_by_piece_give_local_bytes(tmp_path: Path, client) -> None:
    """A task whose block spans several output chunks computes and writes it in pieces
    (a piece's write overlapping the next one's compute): the bytes stay the local ones,
    for multiply and project (pieces) and loglik (one piece)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1500, 48)) * 30
    x[5] = -np.inf
    xa = write_h5(tmp_path / "x.h5", "x", x, chunk_rows=300)
    np.save(tmp_path / "b.npy", rng.normal(size=(48, 40)) * 30)
    np.save(tmp_path / "w.npy", rng.normal(size=(5, 8)))
    x_ok = write_h5(tmp_path / "xf.h5", "x", np.where(np.isinf(x), 0.0, x), chunk_rows=300)
    rows = {"block_rows": 300, "chunk_rows": 30}
    for tag, sched in (("dask", client), ("local", "local")):
        with one_blas_thread():
            multiply(xa, tmp_path / "b.npy", tmp_path / f"m-{tag}.zarr", scheduler=sched,
                     **rows)
            project(xa, tmp_path / f"p-{tag}.zarr", w_address=tmp_path / "w.npy", blocks=6,
                    semiring="log", scheduler=sched, **rows)
            loglik(x_ok, tmp_path / f"l-{tag}.zarr", mu=0.5, sigma=1.5, scheduler=sched,
                   **rows)
    for op in "mpl":
        assert same_bits(read(tmp_path / f"{op}-dask.zarr"), read(tmp_path / f"{op}-local.zarr"))


def test_shards_into_one_zarr_store_on_dask(tmp_path: Path, wide, client) -> None:
    out = tmp_path / "c.zarr"
    first = multiply(wide["a"], wide["b"], out, memory=SMALL_MEMORY, shard="0/2",
                     scheduler=client)
    assert first.plan.col_panel < first.plan.m and first.plan.k_chunk < first.plan.k
    assert not out.exists()
    multiply(wide["a"], wide["b"], out, memory=SMALL_MEMORY, shard="1/2", scheduler=client)
    with one_blas_thread():
        multiply(wide["a"], wide["b"], tmp_path / "local.zarr", memory=SMALL_MEMORY,
                 block_rows=first.plan.block_rows)
    assert same_bits(read(out), read(tmp_path / "local.zarr"))


# ----------------------------------------------------------------------------- 2. transfer


def outgoing_bytes(client) -> int:
    """Bytes the cluster's workers have sent (to the client or each other) so far."""
    sent = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    return sum(sent.values())


def results_through_client(monkeypatch, client, tmp_path: Path, rows: int, ext: str):
    """Multiply A (rows × 64) by B (64 × 256) on the cluster; return (result bytes the
    client's ``store`` received, bytes the workers sent, nbytes(C), blocks)."""
    from dask.sizeof import sizeof

    from logmm import dask_backend

    rng = np.random.default_rng(2)
    tmp_path.mkdir(exist_ok=True)
    a = write_h5(tmp_path / "a.h5", "a", rng.normal(size=(rows, 64)), chunk_rows=256)
    np.save(tmp_path / "b.npy", rng.normal(size=(64, 256)))
    received: list[int] = []
    real = getattr(dask_backend.run_dask, "real", dask_backend.run_dask)

    def spy(pending, task, store, on_stored, *, client):
        def counting(block, result):
            received.append(sizeof(result))
            store(block, result)
        return real(pending, task, counting, on_stored, client=client)

    spy.real = real
    monkeypatch.setattr(dask_backend, "run_dask", spy)
    before = outgoing_bytes(client)
    res = multiply(a, tmp_path / "b.npy", tmp_path / f"c.{ext}", scheduler=client)
    sent = outgoing_bytes(client) - before
    assert len(received) == len(res.plan.row_blocks())
    return sum(received), sent, rows * 256 * 8, len(received)


def test_zarr_and_hdf5_output_results_stay_on_the_workers(tmp_path: Path, monkeypatch,
                                                         client) -> None:
    """Workers write a Zarr output's chunks, and an HDF5 output's blocks under a cluster
    lock; only block summaries come back."""
    for ext in ("zarr", "h5"):
        through, sent, c_bytes, blocks = results_through_client(monkeypatch, client,
                                                                tmp_path / ext, 4096, ext)
        assert c_bytes == 8 * MiB and blocks >= 8
        assert through <= 4 * KiB * blocks, (ext, through)   # block index and tier counts
        assert sent <= 4 * KiB * blocks, (ext, sent)
    # the measure sees result bytes where they do travel: a .npy output (client writes)
    through, sent, c_bytes, _ = results_through_client(monkeypatch, client,
                                                       tmp_path / "npy", 4096, "npy")
    assert through >= c_bytes and sent >= c_bytes


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["zarr", "h5"])
def test_output_of_40_mib_sends_nothing_back(tmp_path: Path, monkeypatch, client,
                                             ext: str) -> None:
    through, sent, c_bytes, blocks = results_through_client(monkeypatch, client, tmp_path,
                                                            24576, ext)
    assert c_bytes >= 40 * MiB
    assert through <= 4 * KiB * blocks and sent <= 2 * 64 * 256 * 8 + 4 * MiB, (through, sent)


# ----------------------------------------------------------------------------- 3. kills


@pytest.fixture(scope="module")
def many_blocks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A (1200 × 32) and B (32 × 24) in 30 blocks of 40 rows, and the local result: read
    only, so made once for the module's 6 tests (a CLI run each, ~0.9 s)."""
    tmp_path = tmp_path_factory.mktemp("many_blocks")
    rng = np.random.default_rng(3)
    a = write_h5(tmp_path / "a.h5", "a", rng.normal(size=(1200, 32)) * 20, chunk_rows=40)
    np.save(tmp_path / "b.npy", rng.normal(size=(32, 24)) * 20)
    args = ("multiply", a, str(tmp_path / "b.npy"), "--block-rows", "40")
    res = run_logmm(*args, "-o", tmp_path / "local.zarr")
    assert res.returncode == 0, res.stderr
    return {"args": args, "local": str(tmp_path / "local.zarr")}


def partial_kept(out: Path) -> bool:
    return (out.parent / f".{out.name}.logmm-partial").exists() and \
        (out.parent / f".{out.name}.logmm-partial.json").exists()


def kill_every_worker(client) -> list[int]:
    pids = list(client.run(os.getpid).values())
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def finish_or_resume(res, out: Path, args, expected: str) -> str:
    """A run whose workers were killed finished, or stopped keeping its partial output;
    then ``--resume`` (local) finishes it. The output has the local bytes either way."""
    if res.returncode == 0:
        outcome = "finished"
    else:
        message = one_error_line(res, codes=(1,))
        assert "--resume" in message, message
        assert partial_kept(out)
        resumed = run_logmm(*args, "-o", out, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        outcome = "resumed"
    assert same_bits(read(out), read(expected))
    assert not partial_kept(out)
    return outcome


def start_slow_run(out: Path, many_blocks, client, cluster,
                   slow_blocks) -> subprocess.Popen:
    """A CLI run on the fixture's cluster with slowed blocks, returned once at least 4 of
    its tasks have started (so that a kill lands mid-run)."""
    slow_blocks(0.25)
    since = time.time()
    proc = start_logmm(*many_blocks["args"], "-o", out, "--dask-address",
                       cluster.scheduler_address)
    wait_for_tasks(client, since, 4, proc)
    return proc


@pytest.mark.parametrize("ext", ["zarr", pytest.param("h5", marks=pytest.mark.slow)])
def test_sigkill_every_worker_mid_run(tmp_path: Path, many_blocks, client, cluster,
                                      slow_blocks, ext: str) -> None:
    """HDF5 too: a worker killed inside its locked write may tear the partial file;
    ``--resume`` then starts afresh (the writer cannot reopen it)."""
    out = tmp_path / f"dask.{ext}"
    proc = start_slow_run(out, many_blocks, client, cluster, slow_blocks)
    kill_every_worker(client)
    stdout, stderr = proc.communicate(timeout=120)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    print("workers killed mid-run:", finish_or_resume(res, out, many_blocks["args"],
                                                      many_blocks["local"]))


@pytest.mark.slow
def test_sigkill_every_worker_without_allowed_failures_stops_for_resume(
        tmp_path: Path, many_blocks, client, cluster, slow_blocks) -> None:
    """The scheduler gives up on a task at its first lost worker: the run stops (exit 1,
    one line naming --resume), keeps its partial output, and --resume finishes it."""
    scheduler = cluster.scheduler
    allowed, scheduler.allowed_failures = scheduler.allowed_failures, 0
    try:
        out = tmp_path / "dask.zarr"
        proc = start_slow_run(out, many_blocks, client, cluster, slow_blocks)
        for _ in range(3):          # every retry of a task meets a killed worker
            kill_every_worker(client)
            client.wait_for_workers(2, timeout=60)
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        scheduler.allowed_failures = allowed
    res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert finish_or_resume(res, out, many_blocks["args"], many_blocks["local"]) == "resumed"


@pytest.mark.parametrize("ext", ["zarr", "h5"])
def test_sigkill_the_client_then_resume(tmp_path: Path, many_blocks, client, cluster,
                                        slow_blocks, ext: str) -> None:
    out = tmp_path / f"dask.{ext}"
    proc = start_slow_run(out, many_blocks, client, cluster, slow_blocks)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not out.exists() and partial_kept(out)
    resumed = run_logmm(*many_blocks["args"], "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_bits(read(out), read(many_blocks["local"]))


def test_in_process_run_interrupted_keeps_partial_output(tmp_path: Path, many_blocks, client,
                                                         monkeypatch) -> None:
    """A cluster failure inside ``multiply(..., scheduler=client)`` raises RunInterrupted
    and keeps the partial output and record (simulated: the connection is lost at the third
    result)."""
    from logmm import dask_backend

    real, calls = dask_backend.run_dask, []

    def failing(pending, task, store, on_stored, *, client):
        def store_or_fail(block, result):
            calls.append(block)
            if len(calls) == 3:
                raise distributed.comm.CommClosedError("in <TCP (closed)>: Stream is closed")
            store(block, result)
        return real(pending, task, store_or_fail, on_stored, client=client)

    monkeypatch.setattr(dask_backend, "run_dask", failing)
    out = tmp_path / "dask.zarr"
    a, b = many_blocks["args"][1:3]
    with pytest.raises(RunInterrupted, match="--resume"):
        multiply(a, b, out, block_rows=40, scheduler=client)
    assert partial_kept(out) and not out.exists()
    monkeypatch.setattr(dask_backend, "run_dask", real)
    res = multiply(a, b, out, block_rows=40, resume=True, scheduler=client)
    assert res.resumed_blocks == 2
    assert same_bits(read(out), read(many_blocks["local"]))


class FailOnce(distributed.WorkerPlugin):
    """The first attempt of every block task raises OSError (a marker file per block, so
    exactly once across the workers): a transient read error."""

    name = "logmm-fail-once"

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def setup(self, worker) -> None:
        from logmm import dask_backend

        original = getattr(dask_backend._apply, "original", dask_backend._apply)
        directory = Path(self.directory)

        def flaky(task, block):
            try:
                (directory / f"{block[0]}").touch(exist_ok=False)
            except FileExistsError:
                return original(task, block)
            raise OSError(f"transient failure of block {block[0]}")

        flaky.original = original
        dask_backend._apply = flaky

    def teardown(self, worker) -> None:
        from logmm import dask_backend

        dask_backend._apply = getattr(dask_backend._apply, "original", dask_backend._apply)


def test_transient_errors_are_retried(tmp_path: Path, many_blocks, client) -> None:
    (tmp_path / "attempts").mkdir()
    client.register_plugin(FailOnce(str(tmp_path / "attempts")))
    try:
        a, b = many_blocks["args"][1:3]
        multiply(a, b, tmp_path / "dask.zarr", block_rows=40, scheduler=client)
    finally:
        client.unregister_worker_plugin(FailOnce.name)
    assert len(list((tmp_path / "attempts").iterdir())) == 30     # every block failed once
    assert same_bits(read(tmp_path / "dask.zarr"), read(many_blocks["local"]))


class HoldLockOnce(distributed.WorkerPlugin):
    """The first HDF5 write of the run (one across the workers: a marker file) takes the
    file's cluster lock, writes its worker's pid to ``holder`` and sleeps holding it."""

    name = "logmm-hold-lock-once"

    def __init__(self, holder: str) -> None:
        self.holder = holder

    def setup(self, worker) -> None:
        from logmm.io.hdf5_locked import LockedHDF5Rows

        original = getattr(LockedHDF5Rows.__setitem__, "original", LockedHDF5Rows.__setitem__)
        holder = Path(self.holder)

        def hold_once(rows, key, block) -> None:
            try:
                (holder.parent / "taken").touch(exist_ok=False)
            except FileExistsError:
                return original(rows, key, block)
            with distributed.Lock(rows.lock_name):
                holder.write_text(str(os.getpid()))
                time.sleep(120)

        hold_once.original = original
        LockedHDF5Rows.__setitem__ = hold_once


def test_killed_lock_holder_stalls_hdf5_writes_seconds_not_lease_default(
        tmp_path: Path, many_blocks, by_value) -> None:
    """On logmm's own LocalCluster a worker killed while it holds an HDF5 output's lock
    holds up the other workers' writes for about the lowered lease timeout (5 s, checked
    every 1 s; dask's 30 s and 10 s stalled them ~37 s), and the output is the local one."""
    from logmm import dask_backend
    from logmm.resources import use_threads

    holder = tmp_path / "holder" / "pid"
    holder.parent.mkdir()
    a, b = many_blocks["args"][1:3]
    out = tmp_path / "dask.h5"
    killed: list[float] = []

    def kill_the_holder() -> None:
        deadline = time.monotonic() + 60
        while not holder.exists() or not holder.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(int(holder.read_text()), signal.SIGKILL)
        killed.append(time.monotonic())

    with use_threads(2), dask_backend.connect("dask", None, 64 * MiB) as client:
        assert len(client.nthreads()) == 2
        client.register_plugin(HoldLockOnce(str(holder)))
        threading.Thread(target=kill_the_holder, daemon=True).start()
        multiply(a, b, out, block_rows=40, scheduler=client)
        finished = time.monotonic()
    assert killed, "no task held the lock"
    stalled = finished - killed[0]
    print(f"the run finished {stalled:.1f} s after the lock holder was killed")
    assert stalled < 15                     # the lease's default alone is 30 s
    assert same_bits(read(out), read(many_blocks["local"]))


# ----------------------------------------------------------------------------- 4. joining


def test_worker_joining_mid_run_gets_tasks(tmp_path: Path, many_blocks, client, cluster,
                                           slow_blocks) -> None:
    cluster.scale(1)
    deadline = time.monotonic() + 60
    while len(client.nthreads()) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first = set(client.nthreads())
    slow_blocks(0.2)
    a, b = many_blocks["args"][1:3]
    out = tmp_path / "dask.zarr"
    since = time.time()
    failure: list[BaseException] = []

    def go() -> None:
        try:
            multiply(a, b, out, block_rows=40, scheduler=client)
        except BaseException as exc:        # reported below
            failure.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    wait_for_tasks(client, since, 2)
    cluster.scale(2)
    thread.join(timeout=120)
    assert not thread.is_alive() and not failure, failure
    workers = {t["worker"] for t in block_tasks(client, since)}
    assert first < workers, (first, workers)                # the newcomer ran tasks too
    assert same_bits(read(out), read(many_blocks["local"]))


# ----------------------------------------------------------------------------- 5. planning


def test_plan_gives_every_worker_thread_blocks_and_logmm_plan_is_unaffected(
        tmp_path: Path, client) -> None:
    np.save(tmp_path / "a.npy", np.random.default_rng(1).normal(size=(3000, 16)))
    np.save(tmp_path / "b.npy", np.random.default_rng(2).normal(size=(16, 8)))
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    local = multiply(a, b, tmp_path / "local.zarr")
    assert len(local.plan.row_blocks()) == 1               # one process's budget: 1 block
    slots = sum(client.nthreads().values())
    on_dask = multiply(a, b, tmp_path / "dask.zarr", scheduler=client)
    assert len(on_dask.plan.row_blocks()) >= 4 * slots
    given = multiply(a, b, tmp_path / "given.zarr", scheduler=client, block_rows=1500)
    assert len(given.plan.row_blocks()) == 2                # --block-rows wins

    def blocks_line(*extra: str) -> str:
        res = run_logmm("plan", "multiply", a, b, "-o", tmp_path / "p.zarr", *extra)
        assert res.returncode == 0, res.stderr
        return next(line for line in res.stdout.splitlines() if line.startswith("blocks"))

    assert blocks_line() == blocks_line("--scheduler", "dask")
    assert blocks_line().startswith("blocks      1 of 3000 rows")
