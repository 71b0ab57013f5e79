"""torchrun with 2 CPU processes (gloo) trains exactly as 1 process with twice the batch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from helpers import metrics

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["train", "digits", "--hidden", "64", "--latent-dim", "4", "--precision", "fp32", "--seed", "3",
         "--no-report"]


def run(args, nproc=1):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={nproc}", "-m", "vaekit"] if nproc > 1 else [sys.executable, "-m", "vaekit"])
    res = subprocess.run([*launcher, *map(str, args)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    run([*TRAIN, "--epochs", "4", "--batch-size", "64", "--out", one])
    res = run([*TRAIN, "--epochs", "4", "--batch-size", "32", "--out", two], nproc=2)
    assert res.stderr.count("training on digits") == 1  # only rank 0 speaks
    run([*TRAIN, "--epochs", "2", "--batch-size", "32", "--out", resumed], nproc=2)
    run([*TRAIN, "--epochs", "4", "--batch-size", "32", "--out", resumed, "--resume"], nproc=2)
    ref = metrics(one)
    for other in (two, resumed):
        rows = metrics(other)
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
        for a, b in zip(ref, rows):
            for key in ("train_loss", "test_loss", "test_rec", "test_kl"):
                assert abs(a[key] - b[key]) <= 1e-3 * abs(a[key]), (key, a[key], b[key])
        wa, wb = load_file(one / "model.safetensors"), load_file(other / "model.safetensors")
        for k in wa:
            np.testing.assert_allclose(wa[k].numpy(), wb[k].numpy(), rtol=1e-3, atol=1e-4, err_msg=k)
    assert not list(two.glob(".*.tmp"))
