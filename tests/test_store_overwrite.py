"""--overwrite replaces a run atomically: a failure at any point leaves the old run intact, and
only vaekit's own files are ever removed. A run with no finished epoch resumes by starting."""

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from vaekit.cli.main import main
from vaekit.errors import RunDirError
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import STAGING_NAME
from helpers import snapshot
from vaekit.io.files import lock_writers

TINY = ["--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--no-report", "--precision", "fp32"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npy"
    np.save(path, np.random.default_rng(0).random((64, 8, 8)).astype(np.float32))  # grey 8x8 images
    return path


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, images) -> Path:
    run = tmp_path_factory.mktemp("runs") / "old"
    assert main(["train", str(images), "--out", str(run), *TINY, "--epochs", "3"]) == 0
    return run


def copy_run(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())
    return dst


def test_overwrite_replaces_the_whole_run_and_keeps_nothing_old(tmp_path, old_run, images, capsys):
    run = copy_run(old_run, tmp_path / "run")
    assert (run / "latent" / "epoch_3.npy").exists() and (run / "images" / "samples_3.png").exists()
    assert main(["train", str(images), "--out", str(run), *TINY, "--epochs", "1", "--seed", "5",
                 "--overwrite"]) == 0
    assert not (run / STAGING_NAME).exists()  # committed by the first checkpoint
    assert not (run / "latent" / "epoch_3.npy").exists() and not (run / "images" / "samples_2.png").exists()
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1]
    assert RunDir(run).read_config()[0].train.seed == 5


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_a_rename_that_fails_leaves_the_old_run_intact(tmp_path, old_run, monkeypatch, fail_at):
    """As if one file could not be moved (permissions, a busy mount): one error, nothing changed."""
    run = copy_run(old_run, tmp_path / "run")
    before = snapshot(run, lock=False)
    real, calls = os.rename, []

    def flaky(src, dst, *a, **k):
        calls.append(src)
        if len(calls) == fail_at:
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", flaky)
    with pytest.raises(RunDirError, match="cannot overwrite .*Permission denied.*old run is unchanged"):
        RunDir(run).prepare(resume=False, overwrite=True)
    monkeypatch.undo()
    assert snapshot(run, lock=False) == before
    assert not (run / STAGING_NAME).exists()


def test_a_read_only_mount_gives_one_error_and_changes_nothing(tmp_path, old_run, monkeypatch):
    run = copy_run(old_run, tmp_path / "run")
    before = snapshot(run, lock=False)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(run / STAGING_NAME))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RunDirError, match="Read-only file system"):
        RunDir(run).prepare(resume=False, overwrite=True)
    monkeypatch.undo()
    assert snapshot(run, lock=False) == before


def test_a_cli_overwrite_that_fails_prints_one_error_line(tmp_path, old_run, images, monkeypatch, capsys):
    run = copy_run(old_run, tmp_path / "run")
    before = snapshot(run, lock=False)
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda s, d, *a, **k: (_ for _ in ()).throw(
        OSError(errno.EBUSY, "Device or resource busy", str(s))) if "latent" in str(s) else real(s, d))
    assert main(["train", str(images), "--out", str(run), *TINY, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "old run is unchanged" in err[0]
    monkeypatch.undo()
    assert snapshot(run, lock=False) == before


def test_rollback_restores_the_old_run_if_training_fails_before_its_first_checkpoint(tmp_path, old_run):
    run = copy_run(old_run, tmp_path / "run")
    before = snapshot(run, lock=False)
    rd = RunDir(run)
    rd.prepare(resume=False, overwrite=True)
    assert set(os.listdir(run)) <= {STAGING_NAME, ".vaekit.lock"}  # the old run, moved aside
    (run / "config.json").write_text('{"format": "vaekit-run"}')  # the new run's first writes
    (run / "latent").mkdir()
    (run / "latent" / "epoch_1.npy").write_bytes(b"partial")
    assert rd.rollback() is True
    assert snapshot(run, lock=False) == before
    assert rd.rollback() is False  # nothing left to restore: a no-op


def test_rollback_is_a_no_op_after_the_first_checkpoint_and_for_new_runs(tmp_path, old_run, images):
    run = copy_run(old_run, tmp_path / "run")
    assert main(["train", str(images), "--out", str(run), *TINY, "--epochs", "1", "--overwrite"]) == 0
    after = snapshot(run, lock=False)
    assert RunDir(run).rollback() is False and snapshot(run, lock=False) == after
    assert RunDir(tmp_path / "nothing").rollback() is False


def test_a_killed_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path, old_run):
    """kill -9 between prepare and the first checkpoint: no rollback ran. A second --overwrite
    replaces only the partial attempt; rollback still brings back the original run."""
    run = copy_run(old_run, tmp_path / "run")
    before = snapshot(run, lock=False)
    RunDir(run).prepare(resume=False, overwrite=True)
    (run / "config.json").write_text('{"format": "vaekit-run", "format_version": 1}')  # partial
    RunDir(run).prepare(resume=False, overwrite=True)  # again: the staged old run stays staged
    assert not (run / "config.json").exists() and (run / STAGING_NAME / "config.json").exists()
    assert RunDir(run).rollback() is True
    assert snapshot(run, lock=False) == before


def test_resume_of_a_run_with_no_finished_epoch_simply_starts_it(tmp_path, images):
    """Ctrl-C (or out of memory, a full disk) in epoch 1 leaves config.json alone: --resume starts."""
    fresh, cut = tmp_path / "fresh", tmp_path / "cut"
    assert main(["train", str(images), "--out", str(fresh), *TINY]) == 0
    assert main(["train", str(images), "--out", str(cut), *TINY]) == 0
    for name in os.listdir(cut):
        if name != "config.json":
            shutil.rmtree(cut / name) if (cut / name).is_dir() else (cut / name).unlink()
    rd = RunDir(cut)
    rd.prepare(resume=True, overwrite=False)
    assert not rd.has_checkpoint()
    assert main(["train", str(images), "--out", str(cut), *TINY, "--resume"]) == 0
    a, b = load_file(fresh / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # bit-identical
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2]


def test_resume_needs_a_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist.*without --resume"):
        RunDir(tmp_path / "none").prepare(resume=True, overwrite=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"latent_dim": 3}')
    with pytest.raises(RunDirError, match="not a vaekit run"):
        RunDir(tmp_path / "mine").prepare(resume=True, overwrite=False)


def test_save_onto_an_existing_run_replaces_it_whole_or_not_at_all(tmp_path, old_run):
    """VAE.save onto a CLI run must never leave the old checkpoint and metrics beside a new model."""
    run = copy_run(old_run, tmp_path / "run")
    before = snapshot(run, lock=False)
    rd = RunDir(run)
    model, cfg = rd.load_model()
    shape = rd.read_config()[1]
    with pytest.raises(RunDirError, match="already exists"):
        rd.save(cfg, shape, model)
    assert snapshot(run, lock=False) == before
    rd.save(cfg, shape, model, overwrite=True)
    assert sorted(snapshot(run, lock=False)) == ["config.json", "model.safetensors"]
    assert not rd.has_checkpoint() and rd.read_metrics() == []
    rd.load_model()


def test_resume_refuses_a_run_whose_checkpoint_was_removed(tmp_path, old_run, images, capsys):
    """metrics.jsonl says epochs finished: starting over would silently replace their model."""
    run = copy_run(old_run, tmp_path / "run")
    (run / "checkpoint.safetensors").unlink()
    before = snapshot(run, lock=False)
    assert main(["train", str(images), "--out", str(run), *TINY, "--epochs", "3", "--resume"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no checkpoint.safetensors" in err[0] and "--overwrite" in err[0]
    assert snapshot(run, lock=False) == before


def test_resume_removes_the_temp_files_a_kill_left_and_nothing_else(tmp_path, old_run):
    """SIGKILL in the middle of an atomic write leaves its temp file; the next writer, holding
    the lock, deletes vaekit's temp files only."""
    run = copy_run(old_run, tmp_path / "run")
    mark = sorted(lock_writers(run, ".vaekit.lock"))[0]  # a process that wrote this run
    stale = [run / f".model.safetensors.{mark}-k2j4_x9a.tmp", run / "latent" / f".epoch_2.npy.{mark}-abcd1234.tmp"]
    kept = [run / ".notes.txt.abc.tmp", run / "latent" / ".mine.q1w2e3r4.tmp",
            run / ".model.safetensors.k2j4_x9a.tmp",  # named like an older temp file: no proof
            run / ".model.safetensors.ffffffff-k2j4_x9a.tmp"]  # a mark no writer of this run had
    for p in stale + kept:
        p.write_bytes(b"partial")
    RunDir(run).prepare(resume=True, overwrite=False)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
