"""Job limits: detection from cgroup v1/v2 fixture trees, SLURM variables and MemAvailable;
``logmm plan`` under each source; ``--threads`` holding compute and BLAS threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from logmm.resources import detect_memory, detect_threads, use_threads

from cli_run import inject, listing, one_error_line, run_logmm

GIB, MIB = 1 << 30, 1 << 20
V1_UNLIMITED = "9223372036854771712"


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


@pytest.fixture
def meminfo(tmp_path: Path) -> Path:
    """A /proc/meminfo with 64 GiB available: larger than every fixture limit."""
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal: {128 << 20} kB\nMemAvailable: {64 << 20} kB\n")
    return path


def proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc_cgroup"
    path.write_text(text)
    return path


def memory(tmp_path: Path, meminfo: Path, files: dict[str, str], cgroup: str,
           env: dict[str, str] | None = None):
    root = write_tree(tmp_path / "cg", files)
    return detect_memory(cgroup_root=root, proc_cgroup=proc(tmp_path, cgroup), meminfo=meminfo,
                         env=env or {})


def test_v2_limit_less_usage(tmp_path: Path, meminfo: Path) -> None:
    found = memory(tmp_path, meminfo, {"cgroup.controllers": "cpu memory",
                                       "memory.max": str(GIB), "memory.current": str(100 * MIB)},
                   "0::/\n")
    assert found.value == GIB - 100 * MIB
    assert found.source == "the cgroup limit 1.0 GiB less 100.0 MiB in use"


def test_v2_max_is_no_limit(tmp_path: Path, meminfo: Path) -> None:
    found = memory(tmp_path, meminfo, {"cgroup.controllers": "memory", "memory.max": "max",
                                       "memory.current": "5"}, "0::/\n")
    assert found.value == 64 * GIB and found.source == "MemAvailable 64.0 GiB"


def test_v2_nested_limits_smallest_level_wins(tmp_path: Path, meminfo: Path) -> None:
    files = {"cgroup.controllers": "memory", "memory.max": "max",
             "job/memory.max": str(2 * GIB), "job/memory.current": str(GIB + 512 * MIB),
             "job/step/memory.max": "max", "job/step/memory.current": str(GIB)}
    found = memory(tmp_path, meminfo, files, "0::/job/step\n")
    # the job's 2 GiB, 1.5 GiB of it in use: 512 MiB left, though the step has no limit
    assert found.value == 512 * MIB
    files["job/step/memory.max"] = str(256 * MIB)
    files["job/step/memory.current"] = "0"
    assert memory(tmp_path, meminfo, files, "0::/job/step\n").value == 256 * MIB


def test_v1_layout_and_unlimited_value(tmp_path: Path, meminfo: Path) -> None:
    files = {"memory/memory.limit_in_bytes": V1_UNLIMITED, "memory/memory.usage_in_bytes": "1",
             "memory/slurm/job_7/memory.limit_in_bytes": str(3 * GIB),
             "memory/slurm/job_7/memory.usage_in_bytes": "0", "cpu,cpuacct/cpu.cfs_quota_us": "-1"}
    cgroup = "5:cpu,cpuacct:/\n4:memory:/slurm/job_7\n0::/\n"
    found = memory(tmp_path, meminfo, files, cgroup)
    assert (found.value, found.source) == (3 * GIB, "the cgroup limit 3.0 GiB")
    # the process's own directory absent (a container's view): the root's limit applies
    assert memory(tmp_path, meminfo, files, "4:memory:/elsewhere\n").value == 64 * GIB


def test_slurm_memory_variables(tmp_path: Path, meminfo: Path) -> None:
    found = memory(tmp_path, meminfo, {}, "", {"SLURM_MEM_PER_NODE": "2048"})
    assert (found.value, found.source) == (2 * GIB, "SLURM_MEM_PER_NODE 2.0 GiB")
    found = memory(tmp_path, meminfo, {}, "", {"SLURM_MEM_PER_CPU": "1000",
                                               "SLURM_CPUS_ON_NODE": "3"})
    assert found.value == 3000 * MIB and "SLURM_CPUS_ON_NODE 3" in found.source
    found = memory(tmp_path, meminfo, {}, "", {"SLURM_MEM_PER_CPU": "500",
                                               "SLURM_CPUS_PER_TASK": "2"})
    assert found.value == 1000 * MIB and "SLURM_CPUS_PER_TASK 2" in found.source
    # the smallest source wins: a cgroup tighter than the allocation
    found = memory(tmp_path, meminfo, {"cgroup.controllers": "memory",
                                       "memory.max": str(GIB)}, "0::/\n",
                   {"SLURM_MEM_PER_NODE": "4096"})
    assert found.value == GIB and found.source.startswith("the cgroup limit")


def test_cpu_sources(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "v2", {"cgroup.controllers": "cpu", "cpu.max": "max 100000",
                                        "job/cpu.max": "150000 100000"})
    cg = proc(tmp_path, "0::/job\n")
    found = detect_threads(cgroup_root=root, proc_cgroup=cg, env={}, affinity=16)
    assert (found.value, found.source) == (2, "the cgroup CPU quota 1.5")
    found = detect_threads(cgroup_root=root, proc_cgroup=cg, env={"SLURM_CPUS_PER_TASK": "1"},
                           affinity=16)
    assert (found.value, found.source) == (1, "SLURM_CPUS_PER_TASK")
    found = detect_threads(cgroup_root=root, proc_cgroup=proc(tmp_path, "0::/\n"), env={},
                           affinity=3)
    assert (found.value, found.source) == (3, "the CPU affinity")
    v1 = write_tree(tmp_path / "v1", {"cpu,cpuacct/cpu.cfs_quota_us": "400000",
                                      "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    found = detect_threads(cgroup_root=v1, proc_cgroup=proc(tmp_path, "2:cpu,cpuacct:/\n"),
                           env={}, affinity=8)
    assert found.value == 4


def test_use_threads_limits_blas() -> None:
    from threadpoolctl import threadpool_info

    with use_threads(1) as n:
        assert n == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")


# ------------------------------------------------------------------------- through the CLI


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(400, 64)))
    np.save(tmp_path / "b.npy", rng.normal(size=(64, 8)))
    return tmp_path


def plan_lines(data: Path, *extra: str) -> dict[str, str]:
    run = run_logmm("plan", "multiply", data / "a.npy", data / "b.npy", "-o", data / "c.h5",
                    *extra)
    assert run.returncode == 0, run.stderr
    return {line[:12].strip(): line[12:] for line in run.stdout.splitlines()}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("LOGMM_MEMORY", "LOGMM_THREADS", "LOGMM_COMPRESSION", "SLURM_MEM_PER_NODE",
                 "SLURM_MEM_PER_CPU", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_plan_follows_slurm_allocation(data: Path, clean_env: pytest.MonkeyPatch) -> None:
    if detect_memory(env={}).value < 1000 * MIB:
        pytest.skip("this machine's own limit is below the SLURM allocation tested")
    clean_env.setenv("SLURM_MEM_PER_NODE", "1000")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "1")
    lines = plan_lines(data)
    assert lines["memory"].startswith("250.0 MiB budget (a quarter of SLURM_MEM_PER_NODE "
                                      "1000.0 MiB), ")
    assert lines["threads"] == "1 (SLURM_CPUS_PER_TASK)"


def test_environment_over_detection_option_over_environment(
        data: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_MEM_PER_NODE", "1000")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "1")
    clean_env.setenv("LOGMM_MEMORY", "200MiB")
    clean_env.setenv("LOGMM_THREADS", "3")
    lines = plan_lines(data)
    assert lines["memory"].startswith("200.0 MiB budget (LOGMM_MEMORY), ")
    assert lines["threads"] == "3 (LOGMM_THREADS)"
    lines = plan_lines(data, "--memory", "300MiB", "--threads", "2")
    assert lines["memory"].startswith("300.0 MiB budget (--memory), ")
    assert lines["threads"] == "2 (--threads)"


def test_help_shows_the_environment_variables() -> None:
    text = " ".join(run_logmm("multiply", "--help").stdout.split())
    for name in ("LOGMM_MEMORY", "LOGMM_THREADS", "LOGMM_COMPRESSION"):
        assert f"env var: {name}" in text


def test_compression_from_environment(data: Path, clean_env: pytest.MonkeyPatch) -> None:
    import h5py

    clean_env.setenv("LOGMM_COMPRESSION", "gzip")
    run = run_logmm("multiply", data / "a.npy", data / "b.npy", "-o", data / "c.h5", "-q")
    assert run.returncode == 0, run.stderr
    with h5py.File(data / "c.h5") as f:
        assert f["data"].compression == "gzip"


def test_memory_limit_below_minimum_is_one_line(data: Path,
                                                clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_MEM_PER_NODE", "40")        # 40 MiB: less than the kernel scratch
    before = listing(data)
    message = one_error_line(run_logmm("multiply", data / "a.npy", data / "b.npy", "-o",
                                       data / "c.h5"), codes=(1,))
    assert "SLURM_MEM_PER_NODE 40.0 MiB" in message and "too small" in message
    assert listing(data) == before                       # nothing written


# a spy around the kernel: the BLAS threads in force and the widest thread pool it opened
SPY = """
import json, atexit
import concurrent.futures, logmm.logmatmul as lm, logmm.multiply as mm
from threadpoolctl import threadpool_info
seen = {"blas": set(), "pool": 0}
class Pool(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, workers=None, *args, **kwargs):
        seen["pool"] = max(seen["pool"], workers or 0)
        super().__init__(workers, *args, **kwargs)
lm.ThreadPoolExecutor = Pool
kernel = mm.logmatmulexp_report
def spy(*args, **kwargs):
    seen["blas"].update(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    return kernel(*args, **kwargs)
mm.logmatmulexp_report = spy
atexit.register(lambda: print(json.dumps({"blas": sorted(seen["blas"]), "pool": seen["pool"]})))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_hold_compute_and_blas(tmp_path: Path, clean_env: pytest.MonkeyPatch,
                                       threads: int) -> None:
    # skinny and large enough (n*k*m >= 4M) for the kernel's parallel row blocks
    rng = np.random.default_rng(1)
    np.save(tmp_path / "a.npy", rng.normal(size=(4096, 256)))
    np.save(tmp_path / "b.npy", rng.normal(size=(256, 8)))
    run = inject("multiply", tmp_path / "a.npy", tmp_path / "b.npy", "-o", tmp_path / "c.npy",
                 "--threads", str(threads), "-q", patch=SPY, timeout=300)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["blas"] and max(seen["blas"]) <= threads
    assert seen["pool"] == (threads if threads > 1 else 0)   # 1: no pool at all
