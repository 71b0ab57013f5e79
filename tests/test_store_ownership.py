"""Ownership at every writer: every command that writes into a run takes its lock, and the lock
refuses a run whose own folders are links (or not folders) or whose staging folder lacks
vaekit's marker; temp files are removed only with their writer's mark in the lock file."""

import os
import shutil

import numpy as np
import pytest

from helpers import assert_one_error, cli, snapshot
from vaekit.errors import RunDirError
from vaekit.io.files import NONCE, exclusive_lock, lock_writers
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import OWNED_DIRS, STAGING_NAME

TINY = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-report", "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    np.save(root / "x.npy", np.random.default_rng(0).random((64, 8, 8)).astype(np.float32))
    assert cli("train", root / "x.npy", "--out", root / "run", *TINY) == 0
    return root


# the folder each writer writes into; a link there is refused, elsewhere it is left alone
WRITES = {"resume": ("images", "latent"), "fit-sampler": ("samplers",)}
COMMANDS = {"resume": ["train", "{data}", "--out", "{run}", "--epochs", "2", "--resume"],
            "fit-sampler": ["fit-sampler", "{run}", "--sampler", "expost"]}


@pytest.mark.parametrize("folder", sorted(OWNED_DIRS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_linked_folder_is_never_written_through(trained, tmp_path, capsys, folder, command):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("samples_2.png", "reconstruction_2.png", "epoch_2.npy", "expost.json"):
        (mine / name).write_bytes(b"the user's")
    shutil.rmtree(run / folder, ignore_errors=True)
    os.symlink(mine, run / folder)
    user = snapshot(mine)
    args = [a.format(data=trained / "x.npy", run=run) for a in COMMANDS[command]]
    status = cli(*args)
    err = capsys.readouterr().err
    if folder in WRITES[command]:
        assert status == 2
        assert_one_error(err, "link")
    else:
        assert status == 0, err
    assert snapshot(mine) == user


def test_a_users_folder_named_like_the_staging_folder_is_refused_and_kept(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / STAGING_NAME).mkdir()
    (run / STAGING_NAME / "thesis.tex").write_text("mine")
    assert cli("train", trained / "x.npy", "--out", run, "--epochs", "2", "--resume") == 2
    assert_one_error(capsys.readouterr().err, "not made by vaekit")
    assert (run / STAGING_NAME / "thesis.tex").read_text() == "mine"


def test_the_lock_file_records_each_writers_mark(tmp_path):
    with exclusive_lock(tmp_path, ".vaekit.lock", RunDirError):
        (tmp_path / "keep").write_text("x")
    assert lock_writers(tmp_path, ".vaekit.lock") == {NONCE}
    (tmp_path / ".vaekit.lock").write_text("1\nwriters 0123abcd\n")  # an earlier process's
    with RunDir(tmp_path).lock():
        pass
    assert lock_writers(tmp_path, ".vaekit.lock") == {"0123abcd", NONCE}
