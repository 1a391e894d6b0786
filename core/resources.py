"""The job's memory and CPU limits: cgroups (v1, v2), SLURM, CPU affinity, MemAvailable.

Inside a SLURM job or a container the machine's figures (``MemAvailable``, the CPUs in
the affinity mask) overstate what the process may use: going past the cgroup's memory
limit gets it OOM-killed, and threads beyond the CPU quota only contend. The detection
functions read every source and keep the smallest, saying which one it was:

- memory: cgroup v2 ``memory.max`` less ``memory.current`` (every level from the process's
  cgroup up to the root, nested limits included), cgroup v1 ``memory.limit_in_bytes``
  less ``memory.usage_in_bytes``, ``SLURM_MEM_PER_NODE`` (MB), ``SLURM_MEM_PER_CPU`` (MB)
  times ``SLURM_CPUS_ON_NODE`` (or ``SLURM_CPUS_PER_TASK``), and ``MemAvailable``;
- threads: ``SLURM_CPUS_PER_TASK``, the cgroup CPU quota (v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up) and the affinity mask.

The cgroup root, ``/proc/self/cgroup``, ``/proc/meminfo`` and the environment are
parameters, so tests point them at fixture directories.

The thread count in force (:func:`thread_limit`) is the detected one unless
:func:`use_threads` (``--threads``, ``threads=``) sets another; the kernels run at most
that many compute threads, and BLAS is held to it as well. A dask task runs its kernel on
its own thread alone (:func:`one_thread_per_task`): the cluster's worker threads are the
parallelism, and a kernel that also started a thread per core in every task would
oversubscribe the node and pay a thread pool's start-up per task.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

from .errors import UsageError

__all__ = ["Limit", "accepts_threads", "detect_memory", "detect_threads", "format_size",
           "one_thread_per_task", "thread_limit", "use_threads"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
#: cgroup v1 reports "no limit" as a huge page-rounded number; anything above 2**60 is that
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Limit:
    """A detected limit: ``value`` (bytes or CPUs) and where it came from, in words."""

    value: int
    source: str


def format_size(nbytes: int) -> str:
    """``1073741824`` → ``"1.0 GiB"``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _cgroup_dirs(root: Path, proc_cgroup: Path, controller: str) -> tuple[str, list[Path]]:
    """``(version, directories)``: the process's cgroup directory for ``controller`` and
    every parent up to the root (innermost first); ``("", [])`` when there is none."""
    text = _read(proc_cgroup) or ""
    v1_path = v2_path = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif controller in parts[1].split(","):
            v1_path = parts[2]
    if (root / "cgroup.controllers").exists():
        base, rel, version = root, v2_path or "/", "v2"
    elif v1_path is not None or (root / controller).is_dir():
        v1_dir = next((root / name for name in (controller, "cpu,cpuacct", "cpuacct,cpu")
                       if (root / name).is_dir()), root / controller)
        base, rel, version = v1_dir, v1_path or "/", "v1"
    else:
        return "", []
    dirs, here = [], base / rel.lstrip("/")
    # a container sees its own cgroup as the root: a path from the host's view may be absent
    while True:
        if here.is_dir():
            dirs.append(here)
        if here == base or base not in here.parents:
            break
        here = here.parent
    if base not in dirs:
        dirs.append(base)
    return version, dirs


def _cgroup_memory(root: Path, proc_cgroup: Path) -> Limit | None:
    version, dirs = _cgroup_dirs(root, proc_cgroup, "memory")
    names = (("memory.max", "memory.current") if version == "v2"
             else ("memory.limit_in_bytes", "memory.usage_in_bytes"))
    best: Limit | None = None
    for d in dirs:
        limit = _int(_read(d / names[0]))          # "max" (v2 unlimited) is not an int
        if limit is None or limit >= _UNLIMITED:
            continue
        used = _int(_read(d / names[1])) or 0
        free = max(0, limit - used)
        source = f"the cgroup limit {format_size(limit)}"
        if used:
            source += f" less {format_size(used)} in use"
        if best is None or free < best.value:
            best = Limit(free, source)
    return best


def _cgroup_cpus(root: Path, proc_cgroup: Path) -> Limit | None:
    version, dirs = _cgroup_dirs(root, proc_cgroup, "cpu")
    best: Limit | None = None
    for d in dirs:
        if version == "v2":
            fields = (_read(d / "cpu.max") or "max").split()
            quota = _int(fields[0]) if fields[0] != "max" else None
            period = _int(fields[1]) if len(fields) > 1 else 100000
        else:
            quota = _int(_read(d / "cpu.cfs_quota_us"))        # -1: no quota
            period = _int(_read(d / "cpu.cfs_period_us"))
        if quota is None or quota <= 0 or not period:
            continue
        cpus = max(1, math.ceil(quota / period))
        if best is None or cpus < best.value:
            best = Limit(cpus, f"the cgroup CPU quota {quota / period:g}")
    return best


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = _int(env.get(name))
    return value if value is not None and value > 0 else None


def _mem_available(meminfo: Path) -> Limit | None:
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemAvailable:"):
            kib = _int(line.split(":", 1)[1])
            if kib is not None:
                return Limit(kib * 1024, f"MemAvailable {format_size(kib * 1024)}")
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return Limit(free, f"available memory {format_size(free)}")
    except (ValueError, OSError, AttributeError):
        return None


def detect_memory(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                  meminfo: Path = MEMINFO, env: Mapping[str, str] | None = None) -> Limit:
    """The memory this process may still use, in bytes: the smallest source (see the
    module docstring). 16 GiB ("no source found") when nothing can be read."""
    env = os.environ if env is None else env
    found = [_cgroup_memory(cgroup_root, proc_cgroup), _mem_available(meminfo)]
    per_node = _env_int(env, "SLURM_MEM_PER_NODE")
    if per_node is not None:
        found.append(Limit(per_node << 20, f"SLURM_MEM_PER_NODE {format_size(per_node << 20)}"))
    per_cpu = _env_int(env, "SLURM_MEM_PER_CPU")
    if per_cpu is not None:
        for name in ("SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK"):
            cpus = _env_int(env, name)
            if cpus is not None:
                found.append(Limit((per_cpu * cpus) << 20, f"SLURM_MEM_PER_CPU {per_cpu} MB "
                                   f"× {name} {cpus}"))
                break
        else:
            found.append(Limit(per_cpu << 20, f"SLURM_MEM_PER_CPU {per_cpu} MB"))
    limits = [x for x in found if x is not None]
    return min(limits, key=lambda x: x.value) if limits else Limit(16 << 30, "no source found")


def detect_threads(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                   env: Mapping[str, str] | None = None,
                   affinity: int | None = None) -> Limit:
    """The CPUs this process may use: the smallest of ``SLURM_CPUS_PER_TASK``, the cgroup
    CPU quota and the affinity mask (``affinity``, default ``os.sched_getaffinity``)."""
    env = os.environ if env is None else env
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:   # not on Linux
            affinity = os.cpu_count() or 1
    found = [Limit(max(1, affinity), "the CPU affinity"),
             _cgroup_cpus(cgroup_root, proc_cgroup)]
    slurm = _env_int(env, "SLURM_CPUS_PER_TASK")
    if slurm is not None:
        found.append(Limit(slurm, "SLURM_CPUS_PER_TASK"))
    return min((x for x in found if x is not None), key=lambda x: x.value)


@cache
def _detected_threads() -> int:
    return detect_threads().value


_lock = threading.Lock()
_threads: int | None = None
_this_thread = threading.local()     # ``.threads``: the limit of a dask task's thread


def thread_limit() -> int:
    """Threads in force: this thread's (a dask task's), else set by :func:`use_threads`,
    else detected."""
    local: int | None = getattr(_this_thread, "threads", None)
    if local is not None:
        return local
    return _threads if _threads is not None else _detected_threads()


@contextmanager
def use_threads(threads: int | None) -> Iterator[int]:
    """Within the block, at most ``threads`` compute threads and BLAS threads (None:
    leave things as they are). Yields the thread count in force."""
    global _threads
    if threads is None:
        yield thread_limit()
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    from threadpoolctl import threadpool_limits

    with _lock:
        before, _threads = _threads, threads
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield threads
    finally:
        with _lock:
            _threads = before


_F = TypeVar("_F", bound=Callable[..., Any])


def one_thread_per_task(fn: _F) -> _F:
    """Run ``fn`` (a dask task's function) with one compute thread, on the calling thread
    only (other threads keep their limit). The results are the same bytes: the kernels'
    row split does not follow the thread count (:mod:`logmm.logmatmul`)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = getattr(_this_thread, "threads", None)
        _this_thread.threads = 1
        try:
            return fn(*args, **kwargs)
        finally:
            _this_thread.threads = before
    return cast(_F, wrapper)


def accepts_threads(fn: _F) -> _F:
    """Give an engine function a ``threads=`` keyword: the call runs under
    :func:`use_threads` (None: the job's CPUs, or what the caller already set)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, threads: int | None = None, **kwargs: Any) -> Any:
        with use_threads(threads):
            return fn(*args, **kwargs)
    return cast(_F, wrapper)
