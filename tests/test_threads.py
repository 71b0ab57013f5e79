"""The thread policy of a training step: the work counted exactly, one thread below the
threshold, the user's --threads kept, and torch's own setting restored after training."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cli, metrics
from vaekit.compute.threads import SMALL_STEP, choose_threads, intra_op_threads, step_work
from vaekit.config.settings import RunConfig
from vaekit.models.build import build_model

SRC = str(Path(__file__).resolve().parents[1] / "src")


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


def test_busy_cores_leaves_out_this_process_and_counts_others(monkeypatch):
    """The arithmetic on scripted /proc/stat samples: 2 cores over 1 s, 150 of 200 ticks busy,
    1 s of them this process's own: 0.5 cores kept busy by others."""
    from vaekit.compute import load

    samples = iter([(101.0, 1200, 450, 11.0)])
    monkeypatch.setattr(load, "_window", (100.0, 1000, 400, 10.0))
    monkeypatch.setattr(load, "_sample", lambda: next(samples))
    monkeypatch.setattr(load.time, "monotonic", lambda: 101.0)
    monkeypatch.setattr(load.os, "cpu_count", lambda: 2)
    assert load.busy_cores() == pytest.approx(0.5)
    assert load._window == (101.0, 1200, 450, 11.0)  # the next window opens here


def test_busy_cores_sees_a_competing_process_while_this_one_works():
    """Live: a spinning process beside this one (which spins through the window too, as a
    command's start-up does) counts as at least half a core; this process's own time does not
    hide it."""
    import subprocess
    import sys

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    code = ("import time, vaekit.compute.load as L\n"
            "t = time.monotonic()\n"
            "while time.monotonic() - t < 0.6: pass\n"
            "print(L.busy_cores())")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    finally:
        hog.kill()
    assert float(out.stdout) >= 0.5, out.stderr
