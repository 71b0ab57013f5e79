"""Helpers the tests share: the CLI in-process, what a folder holds, a run's metrics and config,
and the one-error-line contract."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vaekit.cli.main import main
from vaekit.runs.layout import LOCK_NAME


def cli(*args) -> int:
    """Exit status of ``vaekit ARGS`` run in-process (argparse errors raise SystemExit)."""
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def snapshot(root: Path, lock: bool = True) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path; ``lock=False`` leaves out a run's
    lock file (its content is the last holder's pid)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*"))
            if p.is_file() and (lock or p.name != LOCK_NAME)}


def metrics(run: Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl``."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def config(run: Path) -> dict:
    return json.loads((Path(run) / "config.json").read_text())


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def assert_one_error(err: str, *needles: str, only: bool = False) -> str:
    """Exactly one ``error:`` line, no traceback, each needle in it (``only``: and nothing else
    on stderr); returns that line."""
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert not only or err.strip() == lines[0], err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
