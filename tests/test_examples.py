"""examples/ run as users run them: the Makefile, the Snakemake workflow, the SLURM array
script (its body, once per array task id, 0- and 1-based, and one task resubmitted alone)
and the dask-jobqueue script (against a LocalCluster standing in for the SLURM cluster).

Slow (subprocesses, a dozen logmm starts each), so deselected by plain ``pytest``;
``make test`` runs them as a second step (``pytest -m examples``).
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from logmm import logmatmulexp
from logmm.io.readers import open_array
from logmm.loglik import loglik
from logmm.multiply import multiply
from logmm.project import project
from logmm.samples import write_sample_data

pytestmark = [pytest.mark.slow, pytest.mark.examples]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent


#: the reference pipeline's blocks, given to the examples as their PLAN parameter
PLAN = "--block-rows 25 --chunk-rows 25"


def logmm_command() -> str:
    """The logmm of this environment (its console script, or ``python -m``)."""
    script = BIN / "logmm"
    return str(script) if script.exists() else f"{sys.executable} -m logmm.cli.main"


def read(address: Path | str) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


def reference_pipeline(tmp: Path) -> np.ndarray:
    """The examples' pipeline through the Python API, unsharded, on the same blocks and
    threads (the kernel's row split follows the thread count: bits may too)."""
    data = tmp / "data"
    write_sample_data(data)
    multiply(f"{data}/a.h5:/a", f"{data}/b.h5:/b", tmp / "ab.h5", block_rows=25, chunk_rows=25,
             threads=1)
    project(tmp / "ab.h5", tmp / "projected.h5", w_address=data / "w.npy", blocks=4, threads=1)
    loglik(tmp / "projected.h5", tmp / "loglik.h5", mu=0, sigma=1, reduce="row", threads=1)
    return read(tmp / "loglik.h5")


def check_pipeline(out: Path, reference: np.ndarray) -> None:
    a, b = read(f"{out}/data/a.h5:/a"), read(f"{out}/data/b.h5:/b")
    np.testing.assert_allclose(read(out / "ab.h5"), logmatmulexp(a, b), rtol=1e-12)
    result = read(out / "loglik.h5")
    assert result.shape == (200,)
    assert result.tobytes() == reference.tobytes()          # sharded == unsharded, bit for bit
    assert not [p.name for p in out.iterdir() if ".logmm-" in p.name]   # no work files left


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return reference_pipeline(tmp_path_factory.mktemp("reference"))


def test_makefile_pipeline(tmp_path: Path, reference: np.ndarray) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = tmp_path / "out"
    params = [f"OUT={out}", f"LOGMM={logmm_command()}", "SHARDS=8", "THREADS=1",
              "MEMORY=256MiB", f"PLAN={PLAN}"]
    run = subprocess.run(["make", "-C", str(EXAMPLES), *params, "-j2"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "--threads 1 --memory 256MiB" in run.stdout           # the parameters reach logmm
    check_pipeline(out, reference)
    assert len(list(out.glob("ab.shard-*-of-0008.h5"))) == 8
    again = subprocess.run(["make", "-C", str(EXAMPLES), *params, "-q"], capture_output=True,
                           text=True)
    assert again.returncode == 0                           # everything is up to date


def test_snakemake_workflow(tmp_path: Path, reference: np.ndarray) -> None:
    snakemake = BIN / "snakemake"
    if not snakemake.exists():
        pytest.skip("snakemake is not installed (pip install 'logmm[test]')")
    run = subprocess.run([str(snakemake), "-s", str(EXAMPLES / "Snakefile"), "--cores", "1",
                          "--directory", str(tmp_path), "--printshellcmds", "--config",
                          f"logmm={logmm_command()}", f"plan={PLAN}", "shards=5", "mem_mb=400"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    # threads: and resources: mem_mb reach logmm (threads scaled down to --cores 1)
    assert "--threads 1 --memory 300MB" in run.stdout + run.stderr
    check_pipeline(tmp_path, reference)
    assert len(list(tmp_path.glob("ab.shard-*-of-0005.h5"))) == 5


@pytest.mark.parametrize("ext", ["h5", "zarr"])
def test_slurm_array_script_body(tmp_path: Path, ext: str) -> None:
    """Every task of ``--array=0-15`` in turn, as SLURM would set its variables."""
    data = tmp_path / "data"
    write_sample_data(data)
    a, b = f"{data}/a.h5:/a", f"{data}/b.h5:/b"
    multiply(a, b, tmp_path / f"whole.{ext}", block_rows=10, chunk_rows=10, threads=1)
    out = tmp_path / f"c.{ext}"
    for task in range(16):
        env = dict(os.environ, A=a, B=b, OUT=str(out), LOGMM=logmm_command(),
                   SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="16",
                   SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="15",
                   SLURM_MEM_PER_NODE="1024", SLURM_CPUS_PER_TASK="1",
                   EXTRA_ARGS="--block-rows 10 --chunk-rows 10")
        run = subprocess.run(["bash", str(EXAMPLES / "slurm_array.sh")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert out.exists() == (ext == "zarr" and task == 15)   # a store appears when whole
    if ext == "h5":
        merge = subprocess.run([*logmm_command().split(), "merge", str(out)],
                               capture_output=True, text=True)
        assert merge.returncode == 0, merge.stderr
    assert read(out).tobytes() == read(tmp_path / f"whole.{ext}").tobytes()


def test_slurm_script_needs_its_variables(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("A", "B", "OUT")}
    run = subprocess.run(["bash", str(EXAMPLES / "slurm_array.sh")], env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0 and "set A to the address of A" in run.stderr


def slurm_task(tmp_path: Path, out: Path, task: int, low: int, high: int,
               **extra: str) -> subprocess.CompletedProcess:
    """The script as SLURM runs task ``task`` of ``--array=low-high``."""
    data = tmp_path / "data"
    env = dict(os.environ, A=f"{data}/a.h5:/a", B=f"{data}/b.h5:/b", OUT=str(out),
               LOGMM=logmm_command(), SHARDS="4", SLURM_ARRAY_TASK_ID=str(task),
               SLURM_ARRAY_TASK_MIN=str(low), SLURM_ARRAY_TASK_MAX=str(high),
               SLURM_ARRAY_TASK_COUNT=str(high - low + 1), SLURM_MEM_PER_CPU="256",
               SLURM_CPUS_PER_TASK="1", EXTRA_ARGS="--block-rows 25 --chunk-rows 25", **extra)
    return subprocess.run(["bash", str(EXAMPLES / "slurm_array.sh")], env=env,
                          capture_output=True, text=True, timeout=120)


def test_slurm_one_based_array_and_one_task_resubmitted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_sample_data(data)
    multiply(f"{data}/a.h5:/a", f"{data}/b.h5:/b", tmp_path / "whole.h5", block_rows=25,
             chunk_rows=25, threads=1)
    for first, out in ((0, tmp_path / "c0.h5"), (1, tmp_path / "c1.h5")):
        for task in range(first, first + 4):                  # --array=0-3, --array=1-4
            run = slurm_task(tmp_path, out, task, first, first + 3)
            assert run.returncode == 0, run.stderr
        shards = sorted(tmp_path.glob(f"{out.stem}.shard-*-of-0004.h5"))
        assert len(shards) == 4
        # the third shard lost (a failed task): resubmitted alone, --array=2 or --array=3
        shards[2].unlink()
        again = slurm_task(tmp_path, out, 2 + first, 2 + first, 2 + first,
                           **({"FIRST": "1"} if first else {}))
        assert again.returncode == 0, again.stderr
        assert shards[2].exists() and not list(tmp_path.glob(f"{out.stem}.shard-*-of-0001*"))
        # a finished task requeued (preemption, a resubmitted array): nothing to do, exit 0
        done = shards[1].stat().st_mtime_ns
        rerun = slurm_task(tmp_path, out, 1 + first, first, first + 3)
        assert rerun.returncode == 0, rerun.stderr          # -q: silent
        assert shards[1].stat().st_mtime_ns == done
        merge = subprocess.run([*logmm_command().split(), "merge", str(out)],
                               capture_output=True, text=True)
        assert merge.returncode == 0, merge.stderr
        assert read(out).tobytes() == read(tmp_path / "whole.h5").tobytes()
    outside = slurm_task(tmp_path, tmp_path / "c2.h5", 9, 0, 9)
    assert outside.returncode == 2 and "outside 0-3" in outside.stderr


def load_jobqueue_example():
    """examples/jobqueue_cluster.py as a module (its name hides no package)."""
    spec = importlib.util.spec_from_file_location("jobqueue_cluster",
                                                  EXAMPLES / "jobqueue_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jobqueue_example_on_a_local_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    example = load_jobqueue_example()
    data = tmp_path / "data"
    write_sample_data(data)
    a, b = f"{data}/a.h5:/a", f"{data}/b.h5:/b"
    multiply(a, b, tmp_path / "whole.h5", block_rows=25, chunk_rows=25)
    # a LocalCluster stands in for SLURMCluster: the same run() drives logmm on its workers
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster:
        status = example.run(a, b, str(tmp_path / "c.h5"), cluster,
                             extra=[*PLAN.split(), "-q"], logmm=logmm_command().split())
    assert status == 0
    assert read(tmp_path / "c.h5").tobytes() == read(tmp_path / "whole.h5").tobytes()


def test_jobqueue_example_graph_path_with_late_workers(tmp_path: Path) -> None:
    """--graph: the run waits for its workers (none at first, two join a second later),
    the workers write the Zarr chunks, and the store appears only when complete."""
    import threading

    distributed = pytest.importorskip("distributed")
    example = load_jobqueue_example()
    data = tmp_path / "data"
    write_sample_data(data)
    a, b = f"{data}/a.h5:/a", f"{data}/b.h5:/b"
    A, B = read(a), read(b)
    with distributed.LocalCluster(n_workers=0, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=40) as cluster:
        late = threading.Timer(1.0, cluster.scale, args=(2,))
        late.start()
        try:
            status = example.run_graph(a, b, str(tmp_path / "c.zarr"), cluster, chunks=(25, -1),
                                       min_workers=2, timeout=120)
        finally:
            late.cancel()
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr", "data"]
    ref = np.concatenate([logmatmulexp(A[r:r + 25], B) for r in range(0, A.shape[0], 25)])
    assert read(f"{tmp_path}/c.zarr").tobytes() == ref.tobytes()
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster:
        assert example.run_graph(a, b, str(tmp_path / "d.zarr"), cluster, timeout=1) == 1
        assert example.run_graph(a, b, str(tmp_path / "c.zarr"), cluster, timeout=1) == 1
    assert not (tmp_path / "d.zarr").exists()


def test_jobqueue_example_without_arguments_prints_usage() -> None:
    run = subprocess.run([sys.executable, str(EXAMPLES / "jobqueue_cluster.py")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("usage: ")
    assert "Traceback" not in run.stderr


def test_examples_compile(tmp_path: Path) -> None:
    py_compile.compile(str(EXAMPLES / "jobqueue_cluster.py"), cfile=str(tmp_path / "x.pyc"),
                       doraise=True)
    assert subprocess.run(["bash", "-n", str(EXAMPLES / "slurm_array.sh")]).returncode == 0
