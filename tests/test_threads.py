"""The thread policy of a training step: the work counted exactly, one thread below the
threshold, the user's --threads kept, and torch's own setting restored after training."""

import numpy as np
import pytest
import torch

from helpers import cli, metrics
from vaekit.compute.threads import SMALL_STEP, choose_threads, intra_op_threads, step_work
from vaekit.config.settings import RunConfig
from vaekit.models.build import build_model


def test_the_work_of_a_step_is_the_multiply_adds_of_its_layers():
    cfg = RunConfig().update({"hidden": (16,), "latent_dim": 2, "likelihood": "gaussian"})
    model = build_model(cfg.model, (30,))
    # encoder 30x16 + 16x(2x2), decoder 2x16 + 16x30 per example; x3 for the backward, x batch
    assert step_work(model, (30,), 128) == 3 * 128 * (30 * 16 + 16 * 4 + 2 * 16 + 16 * 30)


@pytest.mark.parametrize("options, shape", [
    ({"arch": "conv", "latent_dim": 4}, (1, 28, 28)),
    ({"arch": "resnet", "latent_dim": 4}, (3, 32, 32)),
    ({"hidden": (64, 32), "latent_dim": 3, "posterior": "full-covariance"}, (10,)),
])
def test_the_count_agrees_with_torchs_flop_counter(options, shape):
    """The hooks count what torch.utils.flop_counter counts (a multiply-add is 2 FLOPs there)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = RunConfig().update({**options, "likelihood": "gaussian"})
    model = build_model(cfg.model, shape).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.reconstruct(torch.zeros(1, *shape))
    assert step_work(model, shape, 128) == 3 * 128 * counter.get_total_flops() // 2


def test_one_thread_below_the_threshold_and_the_users_count_kept():
    assert choose_threads(SMALL_STEP / 2, 0)[0] == 1
    assert choose_threads(SMALL_STEP * 2, 0)[0] == torch.get_num_threads()
    assert choose_threads(SMALL_STEP * 2, 0, busy=1.0)[0] == 1  # a shared machine: one thread
    assert choose_threads(SMALL_STEP / 2, 3) == (3, "3 (as given)")


def test_the_setting_is_restored_after_the_block():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_run_with_one_thread_resumes_bit_identically(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((200, 6)).astype(np.float32))
    small = ["--hidden", "8", "--latent-dim", "2", "--no-report", "--precision", "fp32"]
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "a", "--epochs", "3", *small) == 0
    said = capsys.readouterr().err
    assert ("threads: 1 (a small model" in said) == (torch.get_num_threads() > 1)  # said when it changes
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "b", "--epochs", "1", *small) == 0
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "b", "--epochs", "3", "--resume") == 0
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(metrics(tmp_path / "a")) == drop(metrics(tmp_path / "b"))
