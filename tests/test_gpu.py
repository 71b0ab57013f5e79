"""CUDA: the same training on the GPU, data and model on the device (skips without a GPU)."""

import json

import pytest
import torch

from vaekit.cli.main import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_cuda_training_matches_cpu(tmp_path):
    common = ["train", "digits", "--epochs", "2", "--hidden", "64", "--latent-dim", "4",
              "--precision", "fp32", "--no-report"]
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert main([*common, "--device", "cuda", "--out", str(tmp_path / "gpu")]) == 0
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("cpu", "gpu")]
    for a, b in zip(*rows):
        assert abs(a["test_loss"] - b["test_loss"]) < 0.05 * abs(a["test_loss"])


def test_cuda_bf16_and_evaluate(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "digits", "--epochs", "1", "--device", "cuda", "--precision", "bf16",
                 "--out", str(run), "--no-report"]) == 0
    assert main(["evaluate", str(run), "-k", "20", "--device", "cuda", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_examples"] == 179
