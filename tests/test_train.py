"""The trainer: learning, determinism, bit-exact resume, run-directory contents."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.config.settings import ModelConfig, RunConfig, TrainConfig
from vaekit.data import Dataset, load_data
from vaekit.errors import ConfigError
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir
from vaekit.training.callbacks import EpochLog, RunDirWriter, TensorBoardLogger
from vaekit.parts.objectives import summed_loss
from vaekit.compute.runtime import cpu_has_native_bf16
from vaekit.training.trainer import Trainer


def train(tmp_path, name, epochs, resume=False, data=None, **kw):
    data = data or load_data("digits")
    cfg = RunConfig(ModelConfig(hidden=(64,), latent_dim=4), TrainConfig(epochs=epochs, seed=3, **kw))
    torch.manual_seed(cfg.train.seed)
    model = VAEModel(cfg.model, data.shape)
    rd = RunDir(tmp_path / name)
    rd.prepare(resume=resume, overwrite=False)
    callbacks = [RunDirWriter(rd, cfg, resume)] + ([TensorBoardLogger(rd)] if cfg.train.tensorboard else [])
    history = Trainer(model, cfg.train, log=lambda s: None).fit(data, callbacks)
    return rd, history


def weights(rd):
    return load_file(rd.model)


def test_training_lowers_the_test_loss(tmp_path):
    _, h = train(tmp_path, "a", 8)
    assert h[-1]["test_loss"] < h[0]["test_loss"] - 3.0
    metric_names = {"epoch", "train_loss", "test_loss", "test_rec", "test_kl", "seconds"}
    assert metric_names <= set(h[0])  # the metrics.jsonl contract (names only)


def test_same_seed_same_weights_and_metrics(tmp_path):
    a, ha = train(tmp_path, "a", 2)
    b, hb = train(tmp_path, "b", 2)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(ha) == strip(hb)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    full, h_full = train(tmp_path, "full", 4)
    part, _ = train(tmp_path, "part", 2)
    # A crash after the checkpoint but before metrics.jsonl was rewritten leaves stale metrics:
    part.metrics.write_text(part.metrics.read_text().splitlines()[0] + "\n")
    resumed, h_res = train(tmp_path, "part", 4, resume=True)
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    rows = [json.loads(line) for line in resumed.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, h_full):
        assert a["test_loss"] == b["test_loss"] and a["train_loss"] == b["train_loss"]


def test_checkpoint_holds_optimizer_and_rng_state(tmp_path):
    rd, _ = train(tmp_path, "a", 1)
    ck = load_file(rd.checkpoint)
    assert "rng.shuffle" in ck and "rng.noise" in ck
    assert any(k.endswith("exp_avg_sq") for k in ck)
    meta = rd.checkpoint_info()  # the metadata travels inside checkpoint.safetensors
    assert meta["epoch"] == 1 and len(meta["history"]) == 1


def test_dynamic_binarization_resamples_training_batches(tmp_path):
    """With binarize, two epochs see different 0/1 images of the same grey data."""
    x = np.full((64, 4), 0.5, np.float32)
    seen = []

    class Spy(VAEModel):
        def forward(self, xb, beta=1.0, generator=None, noise=None, **kw):
            seen.append(xb.detach().clone())
            return super().forward(xb, beta, generator, noise, **kw)

    data = Dataset.from_arrays("grey", x, x[:0], binarize=True)
    torch.manual_seed(0)
    model = Spy(ModelConfig(hidden=(8,), latent_dim=2), (4,))
    Trainer(model, TrainConfig(epochs=2, batch_size=64), log=lambda s: None).fit(data)
    first, second = seen
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    assert abs(torch.cat(seen).mean().item() - 0.5) < 0.05  # Bernoulli(0.5) draws


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU without native bf16")
def test_bf16_trains_to_the_fp32_loss(tmp_path):
    _, h32 = train(tmp_path, "fp32", 3, precision="fp32")
    _, h16 = train(tmp_path, "bf16", 3, precision="bf16")
    assert abs(h16[-1]["test_loss"] - h32[-1]["test_loss"]) < 0.5


def test_images_are_written_each_epoch(tmp_path):
    from PIL import Image

    rd, _ = train(tmp_path, "a", 2)
    rec = Image.open(rd.images / "reconstruction_2.png")
    smp = Image.open(rd.images / "samples_1.png")
    # digits are 8x8 drawn 7x larger with 2-pixel separators (scaled): 8 columns, 2 rows
    assert rec.size[0] > rec.size[1] * 3
    assert smp.size[0] == smp.size[1]


def test_auto_precision_is_recorded_as_what_ran(tmp_path):
    rd, _ = train(tmp_path, "a", 1)
    assert json.loads(rd.config.read_text())["train"]["precision"] == "auto"  # as asked
    ran = rd.checkpoint_info()["precision"]
    assert ran == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_tensorboard_logs_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rd, h = train(tmp_path, "tb", 2, tensorboard=True)
    acc = EventAccumulator(str(rd.path / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("loss/test")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([r["test_loss"] for r in h], rel=1e-6)
    assert {"reconstruction", "samples"} <= set(acc.Tags()["images"])


def test_kl_warmup_ramps_the_weight_step_by_step():
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    model = VAEModel(ModelConfig(hidden=(8,), latent_dim=2), (6,))
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=16, kl_warmup=2, beta=0.5,
                                         precision="fp32"), log=lambda s: None)
    weights = []
    original = model.forward
    model.forward = lambda xb, beta=1.0, generator=None, noise=None, **kw: (
        weights.append(beta), original(xb, beta, generator, noise, **kw))[1]
    h = trainer.fit(Dataset.from_arrays("x", x, x[:0]))
    assert weights == pytest.approx([0.5 * k / 8 for k in range(1, 9)])  # 4 steps x 2 epochs
    assert h[0]["train_loss"] == pytest.approx(h[0]["train_rec"] + 0.5 * h[0]["train_kl"])


def test_free_bits_remove_the_kl_gradient_below_the_threshold():
    """With every dimension's KL under the threshold, the gradient is the reconstruction's alone."""
    x = torch.from_numpy(np.random.default_rng(1).random((32, 6)).astype(np.float32))
    noise = torch.randn(1, 32, 2, generator=torch.Generator().manual_seed(0))  # (k, batch, latent)

    def grads(free_bits, rec_only=False):
        torch.manual_seed(0)
        model = VAEModel(ModelConfig(hidden=(8,), latent_dim=2), (6,))
        trainer = Trainer(model, TrainConfig(free_bits=free_bits, precision="fp32"), log=lambda s: None)
        terms = model(x, 1.0, noise=noise)
        assert terms.kl_dims.mean(0).max() < 100.0
        loss = terms.rec.sum() if rec_only else summed_loss(terms, 1.0, trainer.config.free_bits)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(100.0), grads(0.0, rec_only=True)):
        torch.testing.assert_close(a, b)
    plain = grads(0.0)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, grads(0.0, rec_only=True)))


def test_cosine_schedule_anneals_the_learning_rate_step_by_step():
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    model = VAEModel(ModelConfig(hidden=(8,), latent_dim=2), (6,))
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=16, lr=0.01, lr_schedule="cosine",
                                         precision="fp32"), log=lambda s: None)
    lrs = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (lrs.append(trainer.optimizer.param_groups[0]["lr"]),
                                              step(*a, **k))[1]
    trainer.fit(Dataset.from_arrays("x", x, x[:0]))
    expected = [0.005 * (1 + math.cos(math.pi * s / 8)) for s in range(8)]  # 4 steps x 2 epochs
    assert lrs == pytest.approx(expected)
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear").validate()


def test_resume_continues_the_cosine_schedule_bit_identically(tmp_path):
    full, _ = train(tmp_path, "full", 4, lr_schedule="cosine")
    data = load_data("digits")
    cfg = RunConfig(ModelConfig(hidden=(64,), latent_dim=4), TrainConfig(epochs=4, seed=3, lr_schedule="cosine"))

    def crash_after_epoch_2(line):
        if line.startswith("epoch   2/"):
            raise KeyboardInterrupt  # as if killed once epoch 2's checkpoint is written

    torch.manual_seed(3)
    rd = RunDir(tmp_path / "part")
    rd.prepare(resume=False, overwrite=False)
    with pytest.raises(KeyboardInterrupt):
        Trainer(VAEModel(cfg.model, data.shape), cfg.train).fit(
            data, [RunDirWriter(rd, cfg), EpochLog(crash_after_epoch_2)])
    resumed, _ = train(tmp_path, "part", 4, resume=True, lr_schedule="cosine")
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
