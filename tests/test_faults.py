"""Faults lose nothing: non-finite steps are skipped, crashes resume bit-exactly, disks that fail
give a clear error."""

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.training.callbacks import RunDirWriter
from vaekit.config.settings import ModelConfig, RunConfig, TrainConfig
from vaekit.data import Dataset
from vaekit.errors import VaekitError
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir
from vaekit.training.trainer import Trainer, TrainingDiverged

SRC = str(Path(__file__).resolve().parents[1] / "src")


def blob_data(n=256):
    rng = np.random.default_rng(0)
    x = rng.random((n, 12)).astype(np.float32)
    return Dataset.from_arrays("blobs", x[:224], x[224:])


def poisoned_trainer(poison_calls, **train_kw):
    """A trainer whose encoder sees NaN inputs on the given forward calls (0-based)."""
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(hidden=(16,), latent_dim=2), (12,))
    calls = {"n": 0}

    def hook(module, args):
        if not module.training:  # evaluation passes are not training steps
            return None
        k = calls["n"]
        calls["n"] += 1
        if k in poison_calls:
            return (torch.full_like(args[0], float("nan")),)

    model.encoder.register_forward_pre_hook(hook)
    cfg = TrainConfig(batch_size=32, precision="fp32", **train_kw)
    return Trainer(model, cfg, log=lambda s: None), model


def test_non_finite_steps_never_reach_the_weights():
    trainer, model = poisoned_trainer({1, 2, 9}, epochs=2)  # 7 steps per epoch: 0-6, 7-13
    weights = []
    trainer.optimizer.register_step_post_hook(
        lambda opt, a, k: weights.append([p.detach().clone() for p in model.parameters()]))
    history = trainer.fit(blob_data())
    assert [r["skipped_steps"] for r in history] == [2, 1]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # a skipped step leaves every weight exactly as it was
    for step in (1, 2, 9):
        assert all(torch.equal(a, b) for a, b in zip(weights[step - 1], weights[step]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[2], weights[3]))
    assert np.isfinite(history[0]["train_loss"])  # the skipped batches do not poison the mean


def test_consecutive_failures_stop_training_and_keep_the_checkpoint(tmp_path):
    data = blob_data()
    trainer, model = poisoned_trainer(set(range(7, 1000)), epochs=3, max_skips=5)  # epoch 2 on
    rd = RunDir(tmp_path / "run")
    rd.prepare(resume=False, overwrite=False)
    with pytest.raises(TrainingDiverged, match="steps in a row.*checkpoint of epoch 1"):
        trainer.fit(data, [RunDirWriter(rd, RunConfig(model=model.config, train=trainer.config))])
    meta = rd.checkpoint_info()
    assert meta["epoch"] == 1
    model2, _ = rd.load_model()
    assert all(torch.isfinite(p).all() for p in model2.parameters())
    assert len(rd.read_metrics()) == 1


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(hidden=(16,), latent_dim=2), (12,))
    trainer = Trainer(model, TrainConfig(clip_grad=1e-3, precision="fp32", epochs=1), log=lambda s: None)
    norms = []
    trainer.optimizer.register_step_pre_hook(lambda opt, a, k: norms.append(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()))
    trainer.fit(blob_data())
    assert max(norms) <= 1e-3 * (1 + 1e-4)


def test_full_disk_gives_a_clear_error(tmp_path, monkeypatch):
    from vaekit.io import files as fileio

    target = tmp_path / "x.json"
    target.write_text("old")

    with pytest.raises(VaekitError, match="No space left on device"):
        monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode: _NoSpace(fd))
        fileio.write_json(target, {"a": 1})
    assert target.read_text() == "old"  # the old file survives
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind


class _NoSpace:
    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *a):
        os.close(self.fd)

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_unwritable_output_directory_gives_a_clear_error(tmp_path, capsys):
    from vaekit.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a directory should be created
    assert main(["train", "digits", "--out", str(blocker / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def run_cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "vaekit", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


TRAIN = ["train", "digits", "--epochs", "6", "--hidden", "64", "--latent-dim", "4", "--seed", "2",
         "--no-report"]


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """kill -9 during training: the run directory always loads and --resume finishes exactly."""
    full = tmp_path / "full"
    assert run_cli(*TRAIN, "--out", full).wait(timeout=300) == 0
    reference = load_file(full / "model.safetensors")
    rng = random.Random(1234)
    for trial in range(2):
        out = tmp_path / f"killed{trial}"
        proc = run_cli(*TRAIN, "--out", out)
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))  # somewhere inside a later epoch or its writes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        rd = RunDir(out)
        if rd.has_checkpoint():
            rd.load_model()  # whatever moment it died, what is there loads
            assert rd.checkpoint_info()["epoch"] >= 1
            rd.read_metrics()
        args = [*TRAIN, "--out", out, "--resume"]  # before the first checkpoint too: it starts
        proc = run_cli(*args)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        got = load_file(out / "model.safetensors")
        assert all(torch.equal(reference[k], got[k]) for k in reference), f"trial {trial}"
        assert [r["epoch"] for r in rd.read_metrics()] == [1, 2, 3, 4, 5, 6]
        assert not list(out.glob(".*.tmp"))  # no temporary files left behind
