"""The bad-input battery: every command × every bad input, through the real command line.

Each case runs ``logmm`` in a fresh interpreter (:mod:`cli_run`) and checks the error
contract: exit 1 (bad data, bad files, unwritable outputs) or 2 (bad usage), nothing on
stdout, exactly one ``logmm: error: …`` line on stderr naming the file or option at
fault, no traceback, and nothing left behind: the output directory and the input
directory list the same files (hidden ones included) before and after.

Inputs are built once per module in ``inp/``; every case writes into its own ``out/``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from cli_run import inject, listing, one_error_line, run_logmm

RNG = np.random.default_rng(8)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _logp(n: int, k: int, seed: int) -> np.ndarray:
    return np.log(np.random.default_rng(seed).dirichlet(np.ones(k), size=n))


def _zarr(path: Path, arr: np.ndarray) -> Path:
    """A Zarr v3 group with array ``x`` in chunks of 20 rows; returns the chunk (1, 0)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    z = group.create_array("x", shape=arr.shape, dtype=arr.dtype, chunks=(20, arr.shape[1]))
    z[...] = arr
    return path / "x" / "c" / "1" / "0"


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture(scope="module")
def inp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_inputs(tmp_path_factory.mktemp("inp"))


def build_inputs(d: Path) -> Path:
    """Every input of the battery, good and bad, in ``d``."""
    a, b = _logp(6, 4, 0), _logp(4, 3, 1)
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    np.save(d / "b5.npy", _logp(5, 3, 2))
    np.save(d / "p.npy", _logp(4, 4, 3))
    np.save(d / "w.npy", RNG.random((3, 2)))
    np.save(d / "vec.npy", a[0])
    np.save(d / "cube.npy", np.stack([a, a]))
    np.save(d / "text.npy", np.array([["x"] * 4] * 6))
    np.save(d / "cplx.npy", np.ones((4, 3), np.complex128))
    posinf = a.copy()
    posinf[4, 1] = np.inf
    np.save(d / "posinf.npy", posinf)
    p_inf = _logp(4, 4, 3)
    p_inf[2, 2] = np.inf
    np.save(d / "p_inf.npy", p_inf)
    np.save(d / "huge.npy", np.full((6, 4), 1e300))
    with h5py.File(d / "several.h5", "w") as f:
        f["alpha"] = a
        f["beta"] = b
        f["names"] = np.array([b"x"] * 4 * 6).reshape(6, 4)
    # a long A (200 rows, 10 row blocks of 20) so that damage lies past the first block
    long = _logp(200, 4, 4)
    np.save(d / "trunc.npy", long)
    _truncate(d / "trunc.npy", 0.5)                     # header intact, data short
    (d / "garbage.npy").write_bytes(RNG.bytes(3000))
    (d / "garbage.h5").write_bytes(RNG.bytes(3000))
    with h5py.File(d / "trunc.h5", "w") as f:
        f.create_dataset("x", data=long)
    _truncate(d / "trunc.h5", 0.6)                      # HDF5 cut mid-file
    _zarr(d / "badjson.zarr", long)
    (d / "badjson.zarr" / "x" / "zarr.json").write_text("{not json")
    chunk = _zarr(d / "badchunk.zarr", long)
    chunk.write_bytes(RNG.bytes(chunk.stat().st_size))  # chunk (1, 0) is noise
    chunk = _zarr(d / "shortchunk.zarr", long)
    _truncate(chunk, 0.5)                               # chunk (1, 0) cut in half
    return d


# (command, case, arguments, exit code, fragment the line must contain)
# {i} is the input directory, {o} the output directory of the case.
OUT = ["-o", "{o}/c.h5"]
CASES: list[tuple[str, str, list[str], int, str]] = [
    # ---- multiply
    ("multiply", "missing file", ["{i}/nope.npy", "{i}/b.npy", *OUT], 1, "nope.npy"),
    ("multiply", "missing dataset", ["{i}/several.h5:/gamma", "{i}/b.npy", *OUT], 1,
     "/alpha, /beta, /names"),
    ("multiply", "several datasets, none named", ["{i}/several.h5", "{i}/b.npy", *OUT], 1,
     "several.h5"),
    ("multiply", "1-D input", ["{i}/vec.npy", "{i}/b.npy", *OUT], 1, "vec.npy"),
    ("multiply", "3-D input", ["{i}/cube.npy", "{i}/b.npy", *OUT], 1, "cube.npy"),
    ("multiply", "shape mismatch", ["{i}/a.npy", "{i}/b5.npy", *OUT], 1, "b5.npy"),
    ("multiply", "string dtype", ["{i}/text.npy", "{i}/b.npy", *OUT], 1, "text.npy"),
    ("multiply", "HDF5 string dtype", ["{i}/several.h5:/names", "{i}/b.npy", *OUT], 1,
     "several.h5"),
    ("multiply", "complex dtype", ["{i}/a.npy", "{i}/cplx.npy", *OUT], 1, "cplx.npy"),
    ("multiply", "truncated .npy", ["{i}/trunc.npy", "{i}/b.npy", *OUT], 1, "trunc.npy"),
    ("multiply", "garbage .npy", ["{i}/a.npy", "{i}/garbage.npy", *OUT], 1, "garbage.npy"),
    ("multiply", "garbage .h5", ["{i}/garbage.h5", "{i}/b.npy", *OUT], 1, "garbage.h5"),
    ("multiply", "truncated .h5", ["{i}/trunc.h5", "{i}/b.npy", *OUT], 1, "trunc.h5"),
    ("multiply", "corrupt zarr.json", ["{i}/badjson.zarr:x", "{i}/b.npy", *OUT], 1,
     "badjson.zarr"),
    ("multiply", "corrupt Zarr chunk", ["{i}/badchunk.zarr:x", "{i}/b.npy", *OUT], 1,
     "badchunk.zarr"),
    ("multiply", "truncated Zarr chunk", ["{i}/shortchunk.zarr:x", "{i}/b.npy", *OUT], 1,
     "shortchunk.zarr"),
    ("multiply", "+inf input", ["{i}/posinf.npy", "{i}/b.npy", *OUT], 1, "posinf.npy"),
    ("multiply", "output directory missing", ["{i}/a.npy", "{i}/b.npy", "-o",
                                              "{o}/nodir/c.h5"], 1, "nodir"),
    ("multiply", "output parent is a file", ["{i}/a.npy", "{i}/b.npy", "-o",
                                             "{o}/afile/c.h5"], 1, "afile"),
    ("multiply", "existing output", ["{i}/a.npy", "{i}/b.npy", "-o", "{o}/exists.h5"], 1,
     "exists.h5"),
    ("multiply", "unknown output format", ["{i}/a.npy", "{i}/b.npy", "-o", "{o}/c.txt"], 2,
     "c.txt"),
    ("multiply", "unparsable --memory", ["{i}/a.npy", "{i}/b.npy", *OUT, "--memory", "lots"],
     2, "--memory"),
    ("multiply", "zero --memory", ["{i}/a.npy", "{i}/b.npy", *OUT, "--memory", "0"], 2,
     "--memory"),
    ("multiply", "--block-rows 0", ["{i}/a.npy", "{i}/b.npy", *OUT, "--block-rows", "0"], 2,
     "--block-rows"),
    ("multiply", "unknown --method", ["{i}/a.npy", "{i}/b.npy", *OUT, "--method", "best"], 2,
     "--method"),
    ("multiply", "missing argument", ["{i}/a.npy", *OUT], 2, "B"),
    ("multiply", "--shard 3/2", ["{i}/a.npy", "{i}/b.npy", *OUT, "--shard", "3/2"], 2,
     "--shard"),
    ("multiply", "--shard into a .npy output", ["{i}/a.npy", "{i}/b.npy", "-o", "{o}/c.npy",
                                               "--shard", "0/2"], 2, "c.npy"),
    ("loglik", "--shard a/b", ["{i}/a.npy", "--mu", "0", "--sigma", "1", *OUT, "--shard",
                               "a/b"], 2, "--shard"),
    ("merge", "no shard files", ["{o}/c.h5"], 1, "c.shard-*-of-*.h5"),
    # ---- project
    ("project", "missing file", ["{i}/nope.npy", "{i}/w.npy", "--blocks", "2", *OUT], 1,
     "nope.npy"),
    ("project", "1-D input", ["{i}/vec.npy", "{i}/w.npy", "--blocks", "2", *OUT], 1, "vec.npy"),
    ("project", "W width mismatch", ["{i}/a.npy", "{i}/b.npy", "--blocks", "2", *OUT], 1,
     "b.npy"),
    ("project", "--blocks not dividing", ["{i}/a.npy", "{i}/w.npy", "--blocks", "3", *OUT], 1,
     "--blocks"),
    ("project", "string dtype", ["{i}/text.npy", "{i}/w.npy", "--blocks", "2", *OUT], 1,
     "text.npy"),
    ("project", "truncated .npy", ["{i}/trunc.npy", "{i}/w.npy", "--blocks", "2", *OUT], 1,
     "trunc.npy"),
    ("project", "corrupt Zarr chunk", ["{i}/badchunk.zarr:x", "{i}/w.npy", "--blocks", "2",
                                       *OUT, "--block-rows", "20"], 1, "badchunk.zarr"),
    ("project", "+inf input (log semiring)", ["{i}/posinf.npy", "{i}/w.npy", "--blocks", "2",
                                              "--semiring", "log", *OUT], 1, "posinf.npy"),
    ("project", "existing output", ["{i}/a.npy", "{i}/w.npy", "--blocks", "2", "-o",
                                    "{o}/exists.h5"], 1, "exists.h5"),
    ("project", "unparsable --memory", ["{i}/a.npy", "{i}/w.npy", "--blocks", "2", *OUT,
                                        "--memory", "12XB"], 2, "--memory"),
    ("project", "no operator", ["{i}/a.npy", *OUT], 2, "--factor"),
    # ---- loglik
    ("loglik", "missing file", ["{i}/nope.npy", "--mu", "0", "--sigma", "1", *OUT], 1,
     "nope.npy"),
    ("loglik", "missing dataset for --mu", ["{i}/a.npy", "--mu", "{i}/several.h5:/mu",
                                            "--sigma", "1", *OUT], 1, "/alpha, /beta, /names"),
    ("loglik", "--mu shape mismatch", ["{i}/a.npy", "--mu", "{i}/b.npy", "--sigma", "1", *OUT],
     1, "b.npy"),
    ("loglik", "3-D input", ["{i}/cube.npy", "--mu", "0", "--sigma", "1", *OUT], 1, "cube.npy"),
    ("loglik", "string dtype", ["{i}/text.npy", "--mu", "0", "--sigma", "1", *OUT], 1,
     "text.npy"),
    ("loglik", "truncated .h5", ["{i}/trunc.h5", "--mu", "0", "--sigma", "1", *OUT], 1,
     "trunc.h5"),
    ("loglik", "corrupt Zarr chunk", ["{i}/badchunk.zarr:x", "--mu", "0", "--sigma", "1", *OUT,
                                      "--block-rows", "20"], 1, "badchunk.zarr"),
    ("loglik", "+inf in --sigma", ["{i}/a.npy", "--mu", "0", "--sigma", "{i}/posinf.npy", *OUT],
     1, "posinf.npy"),
    ("loglik", "--sigma and --rho", ["{i}/a.npy", "--mu", "0", "--sigma", "1", "--rho", "0",
                                     *OUT], 2, "--rho"),
    ("loglik", "no output without --reduce sum", ["{i}/a.npy", "--mu", "0", "--sigma", "1"],
     2, "-o"),
    ("loglik", "unparsable --memory", ["{i}/a.npy", "--mu", "0", "--sigma", "1", *OUT,
                                       "--memory", "-5MB"], 2, "--memory"),
    ("loglik", "existing output", ["{i}/a.npy", "--mu", "0", "--sigma", "1", "-o",
                                   "{o}/exists.h5"], 1, "exists.h5"),
    ("loglik", "--sigma neither number nor file", ["{i}/a.npy", "--mu", "0", "--sigma",
                                                   "{i}/one.npy", *OUT], 1, "one.npy"),
    # ---- einsum
    ("einsum", "missing file", ["ij,jk->ik", "{i}/a.npy", "{i}/nope.npy", *OUT], 1, "nope.npy"),
    ("einsum", "dimension mismatch", ["ij,jk->ik", "{i}/a.npy", "{i}/b5.npy", *OUT], 1,
     "b5.npy"),
    ("einsum", "operand count", ["ij,jk->ik", "{i}/a.npy", *OUT], 2, "ij,jk->ik"),
    ("einsum", "+inf input", ["ij,jk->ik", "{i}/posinf.npy", "{i}/b.npy", *OUT], 1,
     "posinf.npy"),
    ("einsum", "+inf input, streamed by rows", ["ij,jk->ik", "{i}/posinf.npy", "{i}/b.npy",
                                                *OUT, "--block-rows", "2"], 1,
     "posinf.npy, rows 4:6"),
    ("einsum", "corrupt zarr.json", ["ij->i", "{i}/badjson.zarr:x", *OUT], 1, "badjson.zarr"),
    ("einsum", "corrupt Zarr chunk", ["ij->i", "{i}/badchunk.zarr:x", *OUT], 1,
     "badchunk.zarr"),
    ("einsum", "bad subscripts", ["ij,jk->iz", "{i}/a.npy", "{i}/b.npy", *OUT], 2, "z"),
    ("einsum", "unknown --semiring", ["ij->i", "{i}/a.npy", *OUT, "--semiring", "min"], 2,
     "--semiring"),
    ("einsum", "existing output", ["ij->i", "{i}/a.npy", "-o", "{o}/exists.h5"], 1,
     "exists.h5"),
    # ---- chain
    ("chain", "missing file", ["{i}/a.npy", "{i}/nope.npy", *OUT], 1, "nope.npy"),
    ("chain", "1-D input", ["{i}/a.npy", "{i}/vec.npy", *OUT], 1, "vec.npy"),
    ("chain", "shape mismatch", ["{i}/a.npy", "{i}/b5.npy", *OUT], 1, "b5.npy"),
    ("chain", "+inf input", ["{i}/posinf.npy", "{i}/b.npy", *OUT], 1, "posinf.npy"),
    ("chain", "truncated Zarr chunk", ["{i}/shortchunk.zarr:x", "{i}/b.npy", *OUT], 1,
     "shortchunk.zarr"),
    ("chain", "garbage .h5", ["{i}/garbage.h5", "{i}/b.npy", *OUT], 1, "garbage.h5"),
    ("chain", "existing output", ["{i}/a.npy", "{i}/b.npy", "-o", "{o}/exists.h5"], 1,
     "exists.h5"),
    ("chain", "unparsable --memory", ["{i}/a.npy", "{i}/b.npy", *OUT, "--memory", "2 parsecs"],
     2, "--memory"),
    # ---- power
    ("power", "not square", ["{i}/a.npy", "-n", "3", *OUT], 1, "a.npy"),
    ("power", "3-D input", ["{i}/cube.npy", "-n", "3", *OUT], 1, "cube.npy"),
    ("power", "+inf input", ["{i}/p_inf.npy", "-n", "3", *OUT], 1, "p_inf.npy"),
    ("power", "negative -n", ["{i}/p.npy", "-n", "-1", *OUT], 2, "-n"),
    ("power", "truncated .npy", ["{i}/trunc.npy", "-n", "2", *OUT], 1, "trunc.npy"),
    ("power", "-n not a number", ["{i}/p.npy", "-n", "many", *OUT], 2, "-n"),
    ("power", "existing output", ["{i}/p.npy", "-n", "2", "-o", "{o}/exists.h5"], 1,
     "exists.h5"),
    # ---- info
    ("info", "missing file", ["{i}/nope.h5"], 1, "nope.h5"),
    ("info", "missing dataset", ["{i}/several.h5:/gamma"], 1, "/alpha, /beta, /names"),
    ("info", "garbage .h5", ["{i}/garbage.h5"], 1, "garbage.h5"),
    ("info", "garbage .npy", ["{i}/garbage.npy"], 1, "garbage.npy"),
    ("info", "truncated .h5", ["{i}/trunc.h5"], 1, "trunc.h5"),
    ("info", "corrupt zarr.json", ["{i}/badjson.zarr"], 1, "badjson.zarr"),
    # ---- convert
    ("convert", "missing file", ["{i}/nope.npy", "{o}/c.h5"], 1, "nope.npy"),
    ("convert", "truncated .npy", ["{i}/trunc.npy", "{o}/c.h5"], 1, "trunc.npy"),
    ("convert", "truncated .h5", ["{i}/trunc.h5", "{o}/c.zarr"], 1, "trunc.h5"),
    ("convert", "corrupt Zarr chunk", ["{i}/badchunk.zarr:x", "{o}/c.h5", "--block-rows",
                                       "20"], 1, "badchunk.zarr"),
    ("convert", "truncated Zarr chunk", ["{i}/shortchunk.zarr:x", "{o}/c.npy",
                                         "--block-rows", "20"], 1, "shortchunk.zarr"),
    ("convert", "float32 overflow", ["{i}/huge.npy", "{o}/c.npy", "--dtype", "float32"], 1,
     "huge.npy"),
    ("convert", "existing output", ["{i}/a.npy", "{o}/exists.h5"], 1, "exists.h5"),
    ("convert", "output directory missing", ["{i}/a.npy", "{o}/nodir/c.h5"], 1, "nodir"),
    ("convert", "unparsable --memory", ["{i}/a.npy", "{o}/c.h5", "--memory", "1.5.5G"], 2,
     "--memory"),
]


def _ids() -> list[str]:
    return [f"{command}: {case}" for command, case, *_ in CASES]


def _prepare_out(out: Path) -> None:
    out.mkdir()
    (out / "exists.h5").write_bytes(b"do not touch")
    (out / "afile").write_bytes(b"a regular file")


@pytest.mark.parametrize(("command", "case", "args", "code", "fragment"), CASES, ids=_ids())
def test_bad_input(inp: Path, tmp_path: Path, command: str, case: str, args: list[str],
                   code: int, fragment: str) -> None:
    out = tmp_path / "out"
    _prepare_out(out)
    before_out, before_inp = listing(out), listing(inp)
    argv = [a.format(i=inp, o=out) for a in args]
    proc = run_logmm(command, *argv)
    message = one_error_line(proc, codes=(code,))
    assert fragment in message, message
    assert listing(out) == before_out, "a failed run left something behind"
    assert listing(inp) == before_inp, "a failed run touched its inputs"
    assert (out / "exists.h5").read_bytes() == b"do not touch"


# ----------------------------------------------------------------------------- NaN


def test_nan_is_allowed_and_propagates(inp: Path, tmp_path: Path) -> None:
    """NaN is data, not an error: it reaches exactly the results whose sums it enters."""
    a = np.load(inp / "a.npy")
    a[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", a)
    for command, args in [
        ("multiply", [tmp_path / "nan.npy", inp / "b.npy", "-o", tmp_path / "m.npy"]),
        ("project", [tmp_path / "nan.npy", inp / "w.npy", "--blocks", "2", "--semiring", "log",
                     "-o", tmp_path / "p.npy"]),
        ("loglik", [tmp_path / "nan.npy", "--mu", "0", "--sigma", "1", "-o",
                    tmp_path / "l.npy"]),
    ]:
        proc = run_logmm(command, *args, "-q")
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    m, p, ll = (np.load(tmp_path / f"{n}.npy") for n in ("m", "p", "l"))
    assert np.isnan(m[2]).all() and np.isfinite(np.delete(m, 2, axis=0)).all()
    assert np.isnan(p[2, 3:]).all() and np.isfinite(p[2, :3]).all()   # second block of X
    assert np.isfinite(np.delete(p, 2, axis=0)).all()
    assert np.isnan(ll[2, 3]) and np.isfinite(np.delete(ll.ravel(), 2 * 4 + 3)).all()


# ----------------------------------------------------------------------------- unwritable


@pytest.mark.skipif(IS_ROOT, reason="running as root: a chmod 555 directory is still "
                                    "writable (the read-only filesystem case covers it)")
def test_read_only_output_directory(inp: Path, tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        proc = run_logmm("multiply", inp / "a.npy", inp / "b.npy", "-o", out / "c.h5")
        assert "ro" in one_error_line(proc, codes=(1,))
        assert listing(out) == []
    finally:
        out.chmod(0o755)


def _mount_tmpfs(where: Path, options: str) -> None:
    """Mount a tmpfs at ``where`` or skip (needs root and a kernel that lets us)."""
    where.mkdir()
    if not IS_ROOT:
        pytest.skip("mounting a small filesystem needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=False, capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 4 MiB filesystem (a real disk-full), unmounted afterwards."""
    where = tmp_path / "small"
    _mount_tmpfs(where, "size=4M")
    yield where
    _umount(where)


@pytest.fixture
def read_only_fs(tmp_path: Path):
    where = tmp_path / "rofs"
    _mount_tmpfs(where, "ro,size=1M")
    yield where
    _umount(where)


@pytest.mark.parametrize("fmt", ["npy", "h5", "zarr"])
def test_read_only_filesystem(inp: Path, read_only_fs: Path, fmt: str) -> None:
    proc = run_logmm("multiply", inp / "a.npy", inp / "b.npy", "-o", read_only_fs / f"c.{fmt}")
    message = one_error_line(proc, codes=(1,))
    assert str(read_only_fs) in message and "read-only" in message.lower(), message
    assert listing(read_only_fs) == []


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (20000×64) · B (64×64) float64: a 10 MB result, 2.5 times the small filesystem."""
    d = tmp_path_factory.mktemp("big")
    np.save(d / "a.npy", _logp(20000, 64, 5))
    np.save(d / "b.npy", _logp(64, 64, 6))
    return d


DISK_FULL_RUNS = {
    "multiply": lambda d, out: ["multiply", d / "a.npy", d / "b.npy", "-o", out],
    "project": lambda d, out: ["project", d / "a.npy", "--factor", d / "b.npy", "-o", out],
    "loglik": lambda d, out: ["loglik", d / "a.npy", "--mu", "0", "--sigma", "1", "-o", out],
    "convert": lambda d, out: ["convert", d / "a.npy", out],
    "chain": lambda d, out: ["chain", d / "a.npy", d / "b.npy", d / "b.npy", "-o", out],
}


@pytest.mark.parametrize("fmt", ["npy", "h5", "zarr"])
@pytest.mark.parametrize("command", sorted(DISK_FULL_RUNS))
def test_disk_full_on_a_real_small_filesystem(big: Path, small_fs: Path, command: str,
                                              fmt: str) -> None:
    """ENOSPC from the kernel: exit 1, one line naming the output, the filesystem empty
    again (a failed run removes its partial output; there is nothing to resume)."""
    out = small_fs / f"c.{fmt}"
    proc = run_logmm(*DISK_FULL_RUNS[command](big, out), "--memory", "64MB")
    message = one_error_line(proc, codes=(1,))
    assert f"c.{fmt}" in message and "No space left on device" in message, message
    assert listing(small_fs) == []


# ENOSPC injected into every writer's block store, after the first block went through
ENOSPC_PATCH = f"""
import errno, os
from logmm.io import writers
_calls = []
def _full(real):
    def write(self, key, block):
        _calls.append(1)
        if len(_calls) > 1:
            raise OSError({errno.ENOSPC}, os.strerror({errno.ENOSPC}))
        return real(self, key, block)
    return write
for _cls in (writers.NpyWriter, writers.HDF5Writer, writers.ZarrWriter):
    _cls._write = _full(_cls._write)
writers.NpyWriter.region_view = lambda self, row, col, shape: None
"""


@pytest.mark.parametrize("fmt", ["npy", "h5", "zarr"])
@pytest.mark.parametrize("command", ["multiply", "loglik", "convert"])
def test_disk_full_injected_in_the_writer(big: Path, tmp_path: Path, command: str,
                                          fmt: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = inject(*DISK_FULL_RUNS[command](big, out / f"c.{fmt}"), "--block-rows", "2000",
                  "--chunk-rows", "1000", patch=ENOSPC_PATCH)
    message = one_error_line(proc, codes=(1,))
    assert f"c.{fmt}" in message and "No space left on device" in message, message
    assert listing(out) == []


# chain streams a large M1 against M2 … Mn saved beside the output: a full disk there
SCRATCH_FULL_PATCH = f"""
import errno, os, numpy as np
def _full(path, arr, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"half a file")
    raise OSError({errno.ENOSPC}, os.strerror({errno.ENOSPC}))
np.save = _full
"""


def test_disk_full_while_chain_saves_its_scratch(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = inject(*DISK_FULL_RUNS["chain"](big, out / "c.h5"), patch=SCRATCH_FULL_PATCH)
    message = one_error_line(proc, codes=(1,))
    assert "c.h5" in message and "No space left on device" in message, message
    assert listing(out) == []
