"""examples/ run as users run them: the Makefile, the Snakemake workflow, the SLURM array
script (its body, once per array task id) and the dask-jobqueue snippet (compiled only).

Slow (subprocesses, a dozen logmm starts each), so deselected by plain ``pytest``;
``make test`` runs them as a second step (``pytest -m examples``).
"""

from __future__ import annotations

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


def logmm_command() -> str:
    """The logmm of this environment (its console script, or ``python -m``)."""
    script = BIN / "logmm"
    return str(script) if script.exists() else f"{sys.executable} -m logmm.cli.main"


def read(address: Path | str) -> np.ndarray:
    with open_array(address) as reader:
        return reader.read_all()


def reference_pipeline(tmp: Path) -> np.ndarray:
    """The examples' pipeline through the Python API, unsharded, on the same blocks."""
    data = tmp / "data"
    write_sample_data(data)
    multiply(f"{data}/a.h5:/a", f"{data}/b.h5:/b", tmp / "ab.h5", block_rows=25, chunk_rows=25)
    project(tmp / "ab.h5", tmp / "projected.h5", w_address=data / "w.npy", blocks=4)
    loglik(tmp / "projected.h5", tmp / "loglik.h5", mu=0, sigma=1, reduce="row")
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
    run = subprocess.run(["make", "-C", str(EXAMPLES), f"OUT={out}", f"LOGMM={logmm_command()}",
                          "-j2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    check_pipeline(out, reference)
    again = subprocess.run(["make", "-C", str(EXAMPLES), f"OUT={out}",
                            f"LOGMM={logmm_command()}", "-q"], capture_output=True, text=True)
    assert again.returncode == 0                           # everything is up to date


def test_snakemake_workflow(tmp_path: Path, reference: np.ndarray) -> None:
    snakemake = BIN / "snakemake"
    if not snakemake.exists():
        pytest.skip("snakemake is not installed (pip install 'logmm[test]')")
    run = subprocess.run([str(snakemake), "-s", str(EXAMPLES / "Snakefile"), "--cores", "1",
                          "--directory", str(tmp_path), "--config", f"logmm={logmm_command()}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    check_pipeline(tmp_path, reference)


@pytest.mark.parametrize("ext", ["h5", "zarr"])
def test_slurm_array_script_body(tmp_path: Path, ext: str) -> None:
    """Every task of ``--array=0-15`` in turn, as SLURM would set its variables."""
    data = tmp_path / "data"
    write_sample_data(data)
    a, b = f"{data}/a.h5:/a", f"{data}/b.h5:/b"
    multiply(a, b, tmp_path / f"whole.{ext}", block_rows=10, chunk_rows=10)
    out = tmp_path / f"c.{ext}"
    for task in range(16):
        env = dict(os.environ, A=a, B=b, OUT=str(out), LOGMM=logmm_command(),
                   SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="16",
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


def test_dask_jobqueue_snippet_compiles(tmp_path: Path) -> None:
    py_compile.compile(str(EXAMPLES / "dask_jobqueue.py"), cfile=str(tmp_path / "x.pyc"),
                       doraise=True)
    assert subprocess.run(["bash", "-n", str(EXAMPLES / "slurm_array.sh")]).returncode == 0
