"""A validation split carved from the training data, early stopping, and the kept weights."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit import pipeline
from vaekit.training.callbacks import EarlyStopping
from vaekit.config.settings import RunConfig
from vaekit.data import Dataset
from vaekit.errors import ConfigError
from vaekit.runs.directory import RunDir
from vaekit.training.trainer import Callback, Trainer
from vaekit.models.build import build_model


def small_data(n=200, d=6, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.clip(rng.random((n, d)) * 0.3 + 0.6 * (rng.random((n, 1)) > 0.5), 0, 1).astype(np.float32)
    return Dataset.from_arrays("blobs", x[:160], x[160:])


ALL = set(RunConfig().flat())  # every option given: no data-chosen defaults in these tests


def config(**flat) -> RunConfig:
    cfg = RunConfig().update({"hidden": (16,), "latent_dim": 2, "batch_size": 32, "precision": "fp32",
                              "device": "cpu", **flat})
    cfg.data.data = "blobs"
    return cfg


class Snapshots(Callback):
    """The weights after every epoch, to compare with what was kept."""

    def __init__(self):
        self.states = {}

    def on_epoch_end(self, trainer, data, row):
        self.states[row["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def fake_trainer(epochs):
    return SimpleNamespace(history=[], config=SimpleNamespace(epochs=epochs), stop_reason=None,
                           model=torch.nn.Linear(1, 1), epoch=0)


def test_early_stopping_follows_the_validation_curve():
    es, t = EarlyStopping(patience=2), fake_trainer(10)
    es.on_fit_start(t, None)
    for epoch, val in enumerate([3.0, 2.0, 2.5, 2.6, 2.7, 1.0], start=1):
        row = {"epoch": epoch, "val_loss": val}
        es.on_epoch_end(t, None, row)
        assert row["best_epoch"] == (1 if epoch == 1 else 2)
        if t.stop_reason:
            break
    assert epoch == 4 and "2 epochs" in t.stop_reason  # epochs 3 and 4 did not beat epoch 2


def test_a_resumed_run_rebuilds_the_record_from_its_metrics():
    es, t = EarlyStopping(patience=3), fake_trainer(10)
    t.history = [{"epoch": 1, "val_loss": 5.0}, {"epoch": 2, "val_loss": 4.0}, {"epoch": 3, "val_loss": 4.5}]
    es.on_fit_start(t, None)
    assert (es.best_epoch, es.best) == (2, 4.0)


def test_validation_rows_come_from_the_training_split_and_the_best_weights_are_kept(tmp_path):
    data = small_data()
    res = pipeline.train(config(epochs=8, lr=0.05, val_fraction=0.25), data, out=tmp_path / "run",
                         log=lambda s: None, given=ALL)
    h = res.history
    assert all("val_loss" in r and "test_loss" in r for r in h)
    best = 1 + int(np.argmin([r["val_loss"] for r in h]))
    assert h[-1]["best_epoch"] == best
    # 160 training rows: 40 held out for validation, 120 trained on; the test part untouched
    assert len(res.data.x_train) == 120 and len(res.data.x_test) == 40
    saved = load_file(tmp_path / "run" / "model.safetensors")
    kept = res.model.state_dict()
    assert all(torch.equal(saved[k], kept[k].cpu()) for k in saved)


def test_the_kept_weights_are_those_of_the_best_epoch():
    data = small_data(seed=1)
    cfg = config(epochs=10, lr=0.05, val_fraction=0.25, patience=3)
    snaps = Snapshots()
    d, val = pipeline.validation_split(data, 0.25)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.shape)
    if hasattr(model, "preprocess"):
        model.preprocess.fit(d.x_train)
    trainer = Trainer(model, cfg.train, log=lambda s: None)
    h = trainer.fit(d, [EarlyStopping(patience=3), snaps], val)
    best = h[-1]["best_epoch"]
    assert best == 1 + int(np.argmin([r["val_loss"] for r in h]))
    assert all(torch.equal(v, snaps.states[best][k]) for k, v in model.state_dict().items())
    if len(h) < 10:  # stopped early: exactly `patience` epochs after the best one
        assert len(h) - best == 3 and trainer.stop_reason.startswith("early stopping")


def test_resume_with_a_validation_split_is_bit_identical(tmp_path):
    data = small_data(seed=2)
    full = pipeline.train(config(epochs=4, val_fraction=0.2), data, out=tmp_path / "full",
                          log=lambda s: None, given=ALL)
    pipeline.train(config(epochs=2, val_fraction=0.2), data, out=tmp_path / "part", log=lambda s: None,
                   given=ALL)
    cfg = pipeline.resume_config(RunDir(tmp_path / "part"), {"epochs": 4}, None)
    part = pipeline.train(cfg, data, out=tmp_path / "part", resume=True, log=lambda s: None)
    assert [r["best_epoch"] for r in part.history] == [r["best_epoch"] for r in full.history]
    a, b = (load_file(tmp_path / n / "checkpoint.safetensors") for n in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_patience_needs_a_validation_split():
    with pytest.raises(ConfigError, match="val_fraction"):
        config(patience=3).validate()
