"""Property: whatever happens to the files of a run directory (truncation, flipped bytes, values
of the wrong type, deleted files, stray files), a command either works or fails with exit
status 2 and exactly one ``error:`` line; never a traceback or a crash signal, and a failed
command changes no file that was there before."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaekit.cli.main import main
from helpers import snapshot

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--hidden", "8", "--latent-dim", "2", "--likelihood", "gaussian", "--no-report",
        "--precision", "fp32", "--batch-size", "16"]
FILES = ["config.json", "model.safetensors", "metrics.jsonl", "checkpoint.safetensors",
         "evaluation.json", "latent/epoch_1.npy", "latent/epoch_2.npy"]
STRAY = ["latent/epoch_x.npy", "latent/epoch_7.npy", "notes.txt", "images/samples_x.png",
         "images/samples_1.png", "evaluation_old.json", "checkpoint.json"]
WRONG = [None, "x", "", [], {}, [1, 2], -1, 0, 1e308, True, 10 ** 30, {"a": {"b": []}}]
SETTINGS = dict(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pristine")
    data = root / "x.npy"
    np.save(data, np.random.default_rng(0).random((64, 6)).astype(np.float32))
    run = root / "run"
    assert main(["train", str(data), "--out", str(run), "--epochs", "2", *TINY]) == 0
    assert main(["evaluate", str(run), "-k", "3"]) == 0
    return run, data


def json_paths(obj, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from json_paths(v, prefix + (i,))


@st.composite
def damage(draw):
    """One random change to a run directory, as a function of the run's path."""
    kind = draw(st.sampled_from(["truncate", "flip", "wrong_type", "delete", "stray"]))
    target = draw(st.sampled_from(FILES))
    if kind == "truncate":
        frac = draw(st.floats(0.0, 0.999))
        return kind, target, lambda p: p.write_bytes(p.read_bytes()[: int(len(p.read_bytes()) * frac)])
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.floats(0.0, 0.9999), st.integers(1, 255)), min_size=1, max_size=4))

        def flip(p):
            b = bytearray(p.read_bytes())
            for where, mask in flips:
                b[int(where * len(b))] ^= mask
            p.write_bytes(bytes(b))
        return kind, target, flip
    if kind == "wrong_type":
        target = draw(st.sampled_from(["config.json", "evaluation.json", "metrics.jsonl"]))
        pick, value = draw(st.floats(0.0, 0.9999)), draw(st.sampled_from(WRONG))

        def wrong(p):
            lines = p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]
            line = int(pick * len(lines))
            doc = json.loads(lines[line])
            paths = list(json_paths(doc))
            path = paths[int(pick * len(paths))]
            if not path:
                doc = value
            else:
                parent = doc
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = value
            lines[line] = json.dumps(doc)
            p.write_text("\n".join(lines) + "\n")
        return kind, target, wrong
    if kind == "delete":
        return kind, target, lambda p: p.unlink()
    stray = draw(st.sampled_from(STRAY))
    content = draw(st.binary(max_size=64))

    def add(p):  # p is the run's config.json
        q = p.parent / stray
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_bytes(content)
    return kind, stray, add


def check(rc: int, err: str, before: dict, after: dict, allowed: set[str]) -> None:
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err, err
    if rc == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert after == before, "a failed command changed files"
    else:
        changed = {k for k in before if after.get(k) != before[k]}
        assert changed <= allowed, changed


COMMANDS = {
    # evaluate also rewrites the model card and refreshes an existing report
    "evaluate": (lambda run, out: ["evaluate", str(run), "-k", "3"],
                 {"evaluation.json", "README.md", "report.html"}),
    "evaluate-json": (lambda run, out: ["evaluate", str(run), "-k", "3", "--json"],
                      {"evaluation.json", "README.md", "report.html"}),
    "report": (lambda run, out: ["report", str(run)], {"report.html"}),
    "sample": (lambda run, out: ["sample", str(run), "-n", "4", "--out", str(out / "s.npy")], set()),
}


@settings(**SETTINGS)
@given(change=damage(), command=st.sampled_from(sorted(COMMANDS)))
def test_commands_on_a_damaged_run_fail_cleanly(pristine, capsys, change, command):
    kind, target, apply = change
    src, _ = pristine
    with tempfile.TemporaryDirectory() as tmp:
        run, out = Path(tmp) / "run", Path(tmp) / "out"
        shutil.copytree(src, run)
        out.mkdir()
        apply(run / (target if kind != "stray" else "config.json"))
        before = snapshot(run, lock=False)
        args, allowed = COMMANDS[command]
        capsys.readouterr()
        rc = main(args(run, out))
        check(rc, capsys.readouterr().err, before, snapshot(run, lock=False), allowed)


@settings(**{**SETTINGS, "max_examples": 8})
@given(change=damage())
def test_resume_of_a_damaged_run_never_crashes(pristine, change):
    """In a subprocess: a crafted tensor that reached the optimizer could kill it with a signal."""
    kind, target, apply = change
    src, data = pristine
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(src, run)
        apply(run / (target if kind != "stray" else "config.json"))
        before = snapshot(run, lock=False)
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "vaekit", "train", str(data), "--out", str(run),
                               "--epochs", "3", *TINY, "--resume"], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr}"
        check(proc.returncode, proc.stderr, before, snapshot(run, lock=False), set(before))
