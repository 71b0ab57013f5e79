"""The battery of issue 24 (tests/test_battery_*.py): helpers and the contract every case meets.

The battery drives vaekit only through its command line (``python -m vaekit``) and the public
estimator ``from vaekit import VAE``, so that it survives the move of every module into
subpackages. Each case asserts the store's contract: a correct success, or exactly one
``error:`` line on stderr with exit status 2; never a traceback, a hang or a crash signal, and
no file that vaekit did not write changed or removed.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Tiny and fast: 8x8 two-class images, so the image commands (reconstruct, traverse, ...) run too.
SMALL = ["--epochs", "1", "--latent-dim", "2", "--batch-size", "32", "--precision", "fp32",
         "--device", "cpu", "--no-report"]
# Flags of each model kind; "stacked" also gets --stack-on the plain run (see battery_runs).
KINDS: dict[str, list[str]] = {
    "plain": ["--hidden", "8"],
    "conditional": ["--hidden", "8", "--conditional"],
    "ladder": ["--hidden", "8", "--top-latent-dims", "2"],
    "semi-supervised": ["--hidden", "8", "--semi-supervised"],
    "stacked": ["--hidden", "8"],
    "vaegan": ["--hidden", "8", "--objective", "vaegan"],
    "linear": ["--arch", "linear", "--likelihood", "gaussian", "--learn-obs-std"],
    "vq": ["--hidden", "8", "--latent", "vq", "--codebook-size", "8", "--code-dim", "2"],
    "deep": ["--hidden", "8", "--latent", "deep", "--top-latent-dims", "2,2"],
}
TIMEOUT = 60.0  # a generous bound for one command on a loaded 2-core machine; a hang fails
MEMORY = 8 * 2**30  # address-space cap of each child: an unbounded read fails there, not the host


def limit_memory(proc: subprocess.Popen) -> subprocess.Popen:
    """Cap the address space of a child just started (prlimit: no preexec_fn under threads)."""
    resource.prlimit(proc.pid, resource.RLIMIT_AS, (MEMORY, MEMORY))
    return proc


@dataclass
class Result:
    """What one vaekit command did."""

    args: list[str]
    returncode: int | None  # None: killed by the timeout
    stdout: str
    stderr: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def describe(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-6:])
        return f"vaekit {' '.join(self.args)} -> rc {self.returncode} in {self.seconds:.1f} s\n{tail}"


def env() -> dict[str, str]:
    """The inherited environment, unbuffered, one thread (the machine is shared)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: object, timeout: float = TIMEOUT, cwd: Path | str | None = None,
        stdin: int | None = subprocess.DEVNULL) -> Result:
    """Run ``python -m vaekit ARGS``; a run past ``timeout`` is killed and reported as a hang."""
    argv = [str(a) for a in args]
    t0 = time.monotonic()
    proc = limit_memory(subprocess.Popen(
        [sys.executable, "-m", "vaekit", *argv], env=env(), cwd=cwd, stdin=stdin,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        start_new_session=True))
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: children (workers) go too
        out, err = proc.communicate()
        rc = None
    return Result(argv, rc, out, err, time.monotonic() - t0)


def in_process(*args: object) -> Result:
    """``vaekit ARGS`` through its entry point in this process: the same contract as :func:`cli`
    without a child's 2-3 s start-up (for commands that cannot hang; a bug's traceback is
    caught and reported as the child would print it, with status 1)."""
    import contextlib
    import io
    import traceback

    from vaekit.cli.main import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
        except Exception:  # a bug: what the child would print
            traceback.print_exc()
            rc = 1
    return Result(argv, rc, out.getvalue(), err.getvalue(), time.monotonic() - t0)


def python(code: str, timeout: float = TIMEOUT) -> Result:
    """Run a Python snippet in a fresh interpreter (for estimator calls that may hang or blow up)."""
    t0 = time.monotonic()
    proc = limit_memory(subprocess.Popen(
        [sys.executable, "-c", code], env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True))
    try:
        out, err = proc.communicate(timeout=timeout)
        return Result(["-c"], proc.returncode, out, err, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Result(["-c"], None, out, err, time.monotonic() - t0)


def contract_problem(r: Result) -> str | None:
    """Why ``r`` breaks the contract, or None: success, or one ``error:`` line and status 2."""
    if r.timed_out:
        return "hang (killed by the test's timeout)"
    if r.returncode < 0:
        return f"killed by signal {-r.returncode}"
    if "Traceback" in r.stderr:
        return "traceback on stderr"
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    if r.returncode == 0:
        return f"exit 0 with an error line: {errors[0]}" if errors else None
    if r.returncode != 2:
        return f"exit status {r.returncode}, not 2"
    if len(errors) != 1:
        return f"{len(errors)} 'error:' lines, not one"
    if r.stderr.strip().splitlines()[-1] != errors[0]:
        return "the error line is not the last line"
    return None


def assert_contract(r: Result) -> None:
    problem = contract_problem(r)
    assert problem is None, f"{problem}: {r.describe()}"


def assert_refused(r: Result) -> None:
    """The command must refuse: one ``error:`` line, status 2."""
    assert_contract(r)
    assert r.returncode == 2, f"accepted, not refused: {r.describe()}"


def assert_ok(r: Result) -> None:
    assert_contract(r)
    assert r.returncode == 0, f"refused: {r.describe()}"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): kind, size, mtime and content hash."""
    found: dict[str, tuple] = {}
    root = Path(root)
    entries = [root] + sorted(root.rglob("*")) if root.is_dir() and not root.is_symlink() else [root]
    for p in entries:
        st = os.lstat(p)
        rel = str(p.relative_to(root)) if p != root else "."
        if p.is_symlink():
            found[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            found[rel] = ("dir", st.st_mode)
        else:
            found[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return found


def assert_unchanged(before: dict[str, tuple], root: Path) -> None:
    """No entry of ``before`` changed or removed (new entries are allowed: they are vaekit's)."""
    after = snapshot(root) if Path(root).exists() or Path(root).is_symlink() else {}
    damaged = [k for k, v in before.items() if after.get(k) != v]
    assert not damaged, f"user's entries changed or removed under {root}: {damaged}"


def user_folder(path: Path, names: list[str]) -> Path:
    """A user's folder holding files of the given names (distinct contents, old mtimes)."""
    path.mkdir(parents=True)
    for i, name in enumerate(names):
        f = path / name
        f.write_bytes(f"the user's own {name} #{i}\n".encode())
        os.utime(f, ns=(10**18, 10**18))
    return path


def make_data(folder: Path) -> Path:
    """(240, 8, 8) two-class images in [0, 1] with labels, split 200/40: an .npz."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 240)
    base = np.zeros((2, 8, 8))
    base[0, :, :4] = 1
    base[1, :4, :] = 1
    x = np.clip(0.8 * base[y] + 0.1 + 0.05 * rng.standard_normal((240, 8, 8)), 0, 1)
    path = folder / "img.npz"
    np.savez(path, x_train=x[:200].astype(np.float32), y_train=y[:200],
             x_test=x[200:].astype(np.float32), y_test=y[200:])
    return path


def train_flags(kind: str, runs: dict[str, Path]) -> list[str]:
    """The flags that train ``kind`` (a stacked model stacks on the plain run)."""
    extra = ["--stack-on", str(runs["plain"])] if kind == "stacked" else []
    return [*KINDS[kind], *extra]


@pytest.fixture(scope="session")
def battery_runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run per model kind (plus ``data``: the .npz they learnt), made once."""
    root = tmp_path_factory.mktemp("battery")
    runs: dict[str, Path] = {"data": make_data(root)}
    for kind in KINDS:  # plain first: the stacked run needs it
        out = root / f"run-{kind}"
        r = cli("train", runs["data"], "--out", out, *SMALL, *train_flags(kind, runs), timeout=120)
        assert r.returncode == 0, r.describe()
        runs[kind] = out
    return runs


@pytest.fixture
def run_copy(battery_runs, tmp_path):
    """``run_copy(kind)``: a private copy of the trained run of ``kind``, for one test to damage."""
    def copy(kind: str) -> Path:
        dst = tmp_path / f"run-{kind}"
        shutil.copytree(battery_runs[kind], dst, symlinks=True)
        return dst
    return copy
