"""Battery, family 2 (issue 24): inputs read without a guard.

Configuration files and data files that are FIFOs, devices, folders, huge, nested very deep,
truncated, pickled or not UTF-8. Each must be refused at once with one ``error:`` line (a FIFO
must not block: the command runs under a timeout) or read correctly; never a hang or traceback.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from battery import (
    SMALL,
    assert_refused,
    assert_unchanged,
    cli,
    snapshot,
)

HANG = 20.0  # seconds: a guarded read of a FIFO or device ends at once


def config_fifo(d: Path) -> Path:
    os.mkfifo(d / "c.toml")
    return d / "c.toml"


def config_dir(d: Path) -> Path:
    (d / "c.toml").mkdir()
    return d / "c.toml"


def config_huge(d: Path) -> Path:
    with open(d / "c.toml", "wb") as f:  # 1 GiB, sparse: a comment line, then NULs
        f.write(b"# settings\n")
        f.truncate(2**30)
    return d / "c.toml"


def config_text(text: bytes):
    def make(d: Path) -> Path:
        (d / "c.toml").write_bytes(text)
        return d / "c.toml"
    return make


DEEP = 10_000
CONFIGS = {
    "fifo": config_fifo,
    "dev-zero": lambda d: Path("/dev/zero"),
    "directory": config_dir,
    "huge": config_huge,
    "nested-arrays": config_text(b"epochs = " + b"[" * DEEP + b"]" * DEEP + b"\n"),
    "nested-tables": config_text(b"epochs = " + b"{a = " * DEEP + b"1" + b"}" * DEEP + b"\n"),
    "nested-headers": config_text(b"[" + b".".join([b"a"] * DEEP) + b"]\nx = 1\n"),
    "invalid-utf8": config_text(b"epochs = 1\n# \xff\xfe\xc3\x28\n"),
    "nul-bytes": config_text(b"epochs = 1\x00\n"),
}


def data_fifo(suffix: str):
    def make(d: Path, good: Path) -> Path:
        os.mkfifo(d / f"x{suffix}")
        return d / f"x{suffix}"
    return make


def data_truncated(d: Path, good: Path) -> Path:
    raw = good.read_bytes()
    (d / "x.npz").write_bytes(raw[: len(raw) // 2])
    return d / "x.npz"


def data_truncated_npy(d: Path, good: Path) -> Path:
    np.save(d / "x.npy", np.load(good)["x_train"])
    raw = (d / "x.npy").read_bytes()
    (d / "x.npy").write_bytes(raw[: len(raw) - 1000])
    return d / "x.npy"


def data_pickled(d: Path, good: Path) -> Path:
    x = np.empty(200, dtype=object)  # an object array is stored pickled: never to be loaded
    x[:] = [np.zeros(64) for _ in range(200)]
    np.savez(d / "x.npz", x_train=x)
    return d / "x.npz"


def data_zip_in_zip(d: Path, good: Path) -> Path:
    inner = good.read_bytes()
    for _ in range(30):  # x_train.npy is itself a zip holding a zip ... 30 deep
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x_train.npy", inner)
        inner = buf.getvalue()
    (d / "x.npz").write_bytes(inner)
    return d / "x.npz"


def data_lying_header(d: Path, good: Path) -> Path:
    # an .npy header that declares 10^12 x 64 float32 values over a few bytes of data
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 64), }"
    header += " " * (118 - len(header)) + "\n"
    (d / "x.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                              + header.encode() + b"\x00" * 256)
    return d / "x.npy"


def data_long_line(d: Path, good: Path) -> Path:
    cells = ",".join(["0.5"] * 2_500_000)  # a 10 MB line
    (d / "x.csv").write_text("a,b,c\n0.1,0.2,0.3\n" + cells + "\n0.3,0.2,0.1\n")
    return d / "x.csv"


def data_deep_folder(d: Path, good: Path) -> Path:
    p = d / "imgs"
    deep = p
    for i in range(60):  # an image folder whose only content lies 60 folders deep
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return p


DATA = {
    "fifo-npy": data_fifo(".npy"),
    "fifo-npz": data_fifo(".npz"),
    "fifo-csv": data_fifo(".csv"),
    "truncated-npz": data_truncated,
    "truncated-npy": data_truncated_npy,
    "pickled-npz": data_pickled,
    "zip-in-zip-npz": data_zip_in_zip,
    "lying-npy-header": data_lying_header,
    "csv-10mb-line": data_long_line,
    "deep-image-folder": data_deep_folder,
}

G = "unguarded read: "
TODAY: dict[str, str] = {}


def marked(table: dict, prefix: str, commands: tuple[str, ...]):
    for name in table:
        for command in commands:
            cid = f"{prefix}-{name}-{command}"
            marks = [pytest.mark.xfail(strict=True, reason=TODAY[cid])] if cid in TODAY else []
            yield pytest.param(name, command, id=cid, marks=marks)


@pytest.mark.parametrize("name, command", list(marked(CONFIGS, "config", ("train",))))
def test_a_config_file_is_read_through_the_guard(battery_runs, tmp_path, name, command):
    config = CONFIGS[name](tmp_path)
    r = cli("train", battery_runs["data"], "--out", tmp_path / "run", "--config", config, *SMALL,
            "--hidden", "8", timeout=HANG)
    assert_refused(r)  # none of these is a usable configuration
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("name, command", list(marked(DATA, "data", ("train", "evaluate"))))
def test_a_data_file_is_read_through_the_guard(battery_runs, run_copy, tmp_path, name, command):
    data = DATA[name](tmp_path, battery_runs["data"])
    if command == "train":
        r = cli("train", data, "--out", tmp_path / "run", *SMALL, "--hidden", "8", timeout=HANG)
    else:
        run = run_copy("plain")
        before = snapshot(run)
        r = cli("evaluate", run, data, "--importance-samples", "10", timeout=HANG)
        assert_unchanged({k: v for k, v in before.items() if k != ".vaekit.lock"}, run)
    assert_refused(r)
