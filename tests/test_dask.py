"""--scheduler dask: the same blocks as dask tasks give the local result bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from logmm.cli.main import cli
from logmm.errors import AlreadyComplete, LogmmError, OutputExistsError, UsageError
from logmm.io.readers import open_array
from logmm.loglik import loglik
from logmm.multiply import multiply
from logmm.project import project

from cli_run import inject, one_error_line, run_logmm

distributed = pytest.importorskip("distributed")


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def read(address: Path | str) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()


@pytest.fixture(scope="module")
def cluster():
    """Two in-process workers reachable over TCP (so the CLI's --dask-address works too)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": ":0"},  # no port clash
                                  silence_logs=40) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def data(tmp_path: Path) -> dict[str, str]:
    import h5py

    rng = np.random.default_rng(11)
    a = rng.normal(size=(230, 40)) * 40
    a[5] = -np.inf
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("a", data=a, chunks=(16, 40))
    np.save(tmp_path / "b.npy", rng.normal(size=(40, 17)) * 40)
    np.save(tmp_path / "w.npy", rng.normal(size=(3, 8)))
    np.save(tmp_path / "mu.npy", rng.normal(size=40))
    return {"a": f"{tmp_path}/a.h5:/a", "b": str(tmp_path / "b.npy"),
            "w": str(tmp_path / "w.npy"), "mu": str(tmp_path / "mu.npy")}


@pytest.mark.parametrize("ext", ["npy", "h5", "zarr"])
def test_multiply_on_dask_equals_local(tmp_path: Path, data, client, ext: str) -> None:
    local = multiply(data["a"], data["b"], tmp_path / f"local.{ext}", block_rows=32)
    on_dask = multiply(data["a"], data["b"], tmp_path / f"dask.{ext}", block_rows=32,
                       scheduler=client)
    assert same_bits(read(tmp_path / f"dask.{ext}"), read(tmp_path / f"local.{ext}"))
    assert on_dask.report == local.report and on_dask.report.entries == 230 * 17


def test_multiply_with_b_in_panels_on_dask(tmp_path: Path, data, client) -> None:
    """A budget too small for B: panels and a contraction split run inside the tasks."""
    kw = {"block_rows": 64, "memory": (48 << 20) + 40 * 17 * 8}
    multiply(data["a"], data["b"], tmp_path / "local.h5", **kw)
    result = multiply(data["a"], data["b"], tmp_path / "dask.h5", scheduler=client, **kw)
    assert not result.plan.b_resident
    assert same_bits(read(tmp_path / "dask.h5"), read(tmp_path / "local.h5"))


def test_project_and_loglik_on_dask_equal_local(tmp_path: Path, data, client) -> None:
    for sched, tag in (("local", "local"), (client, "dask")):
        project(data["a"], tmp_path / f"p-{tag}.zarr", w_address=data["w"], blocks=5,
                block_rows=50, scheduler=sched)
        loglik(data["a"], tmp_path / f"l-{tag}.h5", mu=data["mu"], rho=0.3, block_rows=50,
               scheduler=sched)
    assert same_bits(read(tmp_path / "p-dask.zarr"), read(tmp_path / "p-local.zarr"))
    assert same_bits(read(tmp_path / "l-dask.h5"), read(tmp_path / "l-local.h5"))


def test_shards_on_dask_and_local_fill_one_store(tmp_path: Path, data, client) -> None:
    multiply(data["a"], data["b"], tmp_path / "full.zarr", block_rows=32, chunk_rows=16)
    out = tmp_path / "c.zarr"
    multiply(data["a"], data["b"], out, block_rows=32, chunk_rows=16, shard="0/2",
             scheduler=client)
    multiply(data["a"], data["b"], out, block_rows=32, chunk_rows=16, shard="1/2")
    assert same_bits(read(out), read(tmp_path / "full.zarr"))


def test_cli_dask_address(tmp_path: Path, data, cluster) -> None:
    assert invoke("multiply", data["a"], data["b"], "-o", tmp_path / "local.h5",
                  "--block-rows", "40").exit_code == 0
    res = invoke("multiply", data["a"], data["b"], "-o", tmp_path / "dask.h5", "--block-rows",
                 "40", "--dask-address", cluster.scheduler_address)
    assert res.exit_code == 0, res.output
    assert same_bits(read(tmp_path / "dask.h5"), read(tmp_path / "local.h5"))


def test_unreachable_address_is_one_line(tmp_path: Path, data) -> None:
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = invoke("multiply", data["a"], data["b"], "-o", tmp_path / "c.h5", "--scheduler",
                     "dask", "--dask-address", "tcp://127.0.0.1:9")
    assert res.exit_code == 1
    assert res.stderr.startswith("logmm: error: cannot reach the dask scheduler at "
                                 "tcp://127.0.0.1:9") and res.stderr.count("\n") == 1
    assert not (tmp_path / "c.h5").exists()


def test_missing_dask_names_the_extra(tmp_path: Path, data, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed fails
    with pytest.raises(LogmmError, match=r"pip install 'logmm\[dask\]'"):
        multiply(data["a"], data["b"], tmp_path / "c.h5", scheduler="dask")
    res = invoke("multiply", data["a"], data["b"], "-o", tmp_path / "c.h5", "--scheduler",
                 "dask")
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert "logmm[dask]" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.npy", "mu.npy", "w.npy"]
    with pytest.raises(UsageError, match="unknown scheduler"):
        multiply(data["a"], data["b"], tmp_path / "c.h5", scheduler="spark")


def test_cli_local_cluster_in_worker_processes(tmp_path: Path, data) -> None:
    """No address: a LocalCluster of worker processes; readers travel as addresses."""
    invoke("loglik", data["a"], "--mu", data["mu"], "--sigma", "2", "-o",
           tmp_path / "local.zarr", "--block-rows", "100")
    res = invoke("loglik", data["a"], "--mu", data["mu"], "--sigma", "2", "-o",
                 tmp_path / "dask.zarr", "--block-rows", "100", "--scheduler", "dask",
                 "--memory", "128MB")
    assert res.exit_code == 0, res.output
    assert same_bits(read(tmp_path / "dask.zarr"), read(tmp_path / "local.zarr"))


def test_einsum_on_dask_equals_streamed_local(tmp_path: Path, data, client) -> None:
    from logmm.einsum_files import einsum_files

    for sched, tag in (("local", "local"), (client, "dask")):
        einsum_files("ij,jk->ik", [data["a"], data["b"]], tmp_path / f"{tag}.h5",
                     block_rows=60, scheduler=sched)
    assert same_bits(read(tmp_path / "dask.h5"), read(tmp_path / "local.h5"))
    multiply(data["a"], data["b"], tmp_path / "multiply.h5", block_rows=60)
    np.testing.assert_array_equal(read(tmp_path / "dask.h5"), read(tmp_path / "multiply.h5"))


def test_loglik_total_on_dask_equals_local(tmp_path: Path, data, client) -> None:
    x = np.random.default_rng(4).normal(size=(230, 40))
    np.save(tmp_path / "x.npy", x)
    local = loglik(tmp_path / "x.npy", None, mu=data["mu"], sigma=1.5, reduce="sum",
                   block_rows=40)
    on_dask = loglik(tmp_path / "x.npy", None, mu=data["mu"], sigma=1.5, reduce="sum",
                     block_rows=40, scheduler=client)
    assert on_dask.total == local.total
    mu = np.load(data["mu"])
    exact = np.sum(-0.5 * ((x - mu) / 1.5) ** 2 - np.log(1.5) - 0.5 * np.log(2 * np.pi))
    assert abs(local.total - exact) <= 1e-10 * abs(exact)


# ----------------------------------------------------------------------------- no cluster

#: run before the command line: a LocalCluster the run starts ends it with this line
NO_CLUSTER = ("import distributed\n"
              "def _no_cluster(*args, **kwargs):\n"
              "    raise SystemExit('logmm: error: the run started a LocalCluster')\n"
              "distributed.LocalCluster = _no_cluster\n")


def test_cli_refused_or_finished_dask_run_starts_no_cluster(tmp_path: Path, data) -> None:
    """``--scheduler dask`` on an existing output (refused) or a ``--resume`` of a complete
    one (nothing to do) decides before a cluster starts: same lines and exit codes as the
    local scheduler, and the cluster class is never called."""
    out = tmp_path / "c.h5"
    args = ["multiply", data["a"], data["b"], "-o", out, "--block-rows", "40"]
    dask = ["--scheduler", "dask"]
    started = inject(*args, *dask, patch=NO_CLUSTER)
    assert one_error_line(started) == "the run started a LocalCluster"    # the spy works
    assert run_logmm(*args).returncode == 0
    for extra in ([], ["--resume", "--dtype", "float32"]):          # refused, same line
        local = run_logmm(*args, *extra)
        on_dask = inject(*args, *extra, *dask, patch=NO_CLUSTER)
        assert one_error_line(on_dask, codes=(1,)) == one_error_line(local, codes=(1,))
        assert one_error_line(local).startswith(f"output exists: {out} (")
    finished = inject(*args, "--resume", *dask, patch=NO_CLUSTER)
    assert finished.returncode == 0 and finished.stdout == ""
    assert finished.stderr.splitlines() == [f"logmm: {out}:/data is already complete (same "
                                            "inputs and options): nothing to do"]


@pytest.mark.parametrize("shard", [None, "1/2"])
def test_api_finished_dask_run_starts_no_cluster(tmp_path: Path, data, monkeypatch,
                                                 shard: str | None) -> None:
    started: list[object] = []

    def spy(*args, **kwargs):
        started.append(kwargs)
        raise AssertionError("the run started a LocalCluster")

    out = tmp_path / "c.zarr"
    for index in ("0/2", "1/2") if shard else (None,):
        multiply(data["a"], data["b"], out, block_rows=40, shard=index)
    monkeypatch.setattr(distributed, "LocalCluster", spy)
    with pytest.raises(AlreadyComplete):
        multiply(data["a"], data["b"], out, block_rows=40, shard=shard, resume=True,
                 scheduler="dask")
    with pytest.raises(OutputExistsError):
        multiply(data["a"], data["b"], out, block_rows=40, shard=shard, resume=True,
                 dtype="float32", scheduler="dask")
    assert started == []
    with pytest.raises(AssertionError, match="LocalCluster"):     # the spy sees a cluster
        multiply(data["a"], data["b"], tmp_path / "d.zarr", scheduler="dask")
