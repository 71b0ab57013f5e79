"""A run directory is recognised by its content, and has one writer at a time."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vaekit.errors import RunDirError
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import OWNED_DIRS, is_owned

SRC = str(Path(__file__).resolve().parents[1] / "src")
MARKED = '{"format": "vaekit-run", "format_version": 1}'


def fake_run(path: Path, *extra: str) -> Path:
    """A folder holding a marked config.json, vaekit-named files, and ``extra`` files."""
    for rel in ("model.safetensors", "metrics.jsonl", "checkpoint.safetensors", "report.html",
                "images/samples_1.png", "images/reconstruction_12.png", "latent/epoch_3.npy",
                "latent/labels.npy", "evaluation.json", "tensorboard/events.out.tfevents.1.host.9.0",
                ".model.safetensors.0123abcd-k3j_x9ab.tmp", "images/.samples_2.png.0123abcd-abcd1234.tmp",
                *extra):
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(b"x")
    (path / ".vaekit.lock").write_text("1\nwriters 0123abcd\n")  # the writer whose temp files these are
    (path / "config.json").write_text(MARKED)
    return path


@pytest.mark.parametrize("rel,owned", [
    ("config.json", True), ("checkpoint.safetensors", True), ("checkpoint.json", True),
    ("evaluation.json", True), ("evaluation_test.json", True), ("report.html", True),
    ("images/samples_10.png", True), ("images/reconstruction_1.png", True),
    ("latent/epoch_2.npy", True), ("latent/labels.npy", True), (".vaekit.lock", True),
    ("tensorboard/events.out.tfevents.17.h.1.0", True), (".config.json.0123abcd-ab12cd_3.tmp", True),
    ("latent/.epoch_2.npy.0123abcd-zz99aa00.tmp", True), ("sample_quality.json", True),
    ("samplers/expost.safetensors", True), ("samplers/two-stage.json", True),
    ("samplers/.expost.json.0123abcd-ab12cd_3.tmp", True),
    # not ours
    ("README.md", False), ("images/photo_of_my_cat.png", False), ("latent/notes.txt", False),
    ("images/samples_x.png", False), ("latent/epoch_x.npy", False), ("notes.json", False),
    (".notes.txt.abc.tmp", False), ("images/samples_1.png.bak", False), ("model.safetensors/x", False),
    # a temp file's name without the mark of a writer the lock file recorded proves nothing
    (".config.json.ab12cd_3.tmp", False), (".config.json.ffffffff-ab12cd_3.tmp", False),
    ("tensorboard/notes.txt", False), ("images/sub/samples_1.png", False),
    ("samplers/notes.txt", False), ("samplers/Expost.json", False), ("samplers/a/b.json", False),
])
def test_the_names_vaekit_writes(rel, owned):
    assert is_owned(rel, {"0123abcd"}) is owned
    assert OWNED_DIRS == {"images", "latent", "tensorboard", "onnx", "samplers"}


def test_a_run_with_only_vaekit_files_has_nothing_foreign(tmp_path):
    rd = RunDir(fake_run(tmp_path / "run"))
    assert rd.foreign_files() == []
    rd.check_replaceable()


def test_config_json_without_the_marker_is_not_a_run(tmp_path):
    """The case from issue 14: proj holds a config.json (not vaekit's), a photo, notes, a report."""
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    (proj / "latent").mkdir()
    (proj / "config.json").write_text('{"latent_dim": 2}')
    (proj / "images" / "photo_of_my_cat.png").write_bytes(b"meow")
    (proj / "latent" / "notes.txt").write_text("mine")
    (proj / "report.html").write_text("<p>my report</p>")
    before = {p: p.read_bytes() for p in proj.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="marker.*not a vaekit run"):
        RunDir(proj).prepare(resume=False, overwrite=True)
    assert {p: p.read_bytes() for p in proj.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("stray", ["images/photo_of_my_cat.png", "latent/notes.txt", "README.md",
                                   "data/x.csv", ".DS_Store", "images/samples_x.png"])
def test_overwrite_refuses_a_run_holding_any_foreign_file_and_names_it(tmp_path, stray):
    run = fake_run(tmp_path / "run", stray)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="did not write") as e:
        RunDir(run).prepare(resume=False, overwrite=True)
    assert stray.split("/")[0] in str(e.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_symlinks_and_fifos_are_foreign(tmp_path):
    run = fake_run(tmp_path / "run")
    (tmp_path / "elsewhere").mkdir()
    (run / "images" / "samples_5.png").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(run / "latent" / "epoch_9.npy")
    assert RunDir(run).foreign_files() == ["images/samples_5.png", "latent/epoch_9.npy"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "other"}', ""])
def test_an_unreadable_or_unmarked_config_is_not_a_run(tmp_path, text):
    run = fake_run(tmp_path / "run")
    (run / "config.json").write_text(text)
    with pytest.raises(RunDirError, match="not a vaekit run"):
        RunDir(run).prepare(resume=False, overwrite=True)


def test_without_overwrite_an_existing_run_is_refused(tmp_path):
    with pytest.raises(RunDirError, match="already exists.*--resume.*--overwrite"):
        RunDir(fake_run(tmp_path / "run")).prepare(resume=False, overwrite=False)


# -- the lock -----------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from vaekit.runs.directory import RunDir
    with RunDir(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run = tmp_path / "run"
    proc = hold_lock(run, 30)
    try:
        with pytest.raises(RunDirError, match=rf"in use by another vaekit process \(pid {proc.pid}\)"):
            with RunDir(run).lock():
                pass
        with pytest.raises(RunDirError, match="in use"):  # prepare takes the lock too
            fake_run(run)
            RunDir(run).prepare(resume=False, overwrite=True)
    finally:
        proc.kill()
        proc.wait()
    with RunDir(run).lock():  # the holder is gone: the lock is free (flock dies with it)
        pass


RACER = textwrap.dedent("""
    import os, sys, time
    from vaekit.errors import RunDirError
    from vaekit.runs.directory import RunDir
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):  # start together
        time.sleep(0.001)
    try:
        with RunDir(sys.argv[1]).lock():
            time.sleep(1.0)
    except RunDirError as e:
        sys.exit(f"error: {e}")
""")


def test_two_writers_started_together_one_wins_one_is_refused(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(run), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    go.touch()
    results = sorted((p.wait(timeout=60), p.stderr.read()) for p in procs)
    assert results[0] == (0, "")
    assert results[1][0] == 1 and "in use by another vaekit process" in results[1][1]


def test_the_lock_is_reentrant_in_one_process_and_tidies_a_folder_it_created(tmp_path):
    rd = RunDir(tmp_path / "new")
    with rd.lock():
        with rd.lock():  # e.g. training that writes its report inside the same lock
            assert rd.lock_file.exists()
        assert rd.lock_file.exists()
    assert not rd.path.exists()  # nothing but the lock was there: nothing is left
    existing = fake_run(tmp_path / "run")
    with RunDir(existing).lock():
        pass
    assert (existing / "config.json").exists()


def test_an_unwritable_place_gives_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot lock run directory"):
        with RunDir(blocker / "run").lock():
            pass
