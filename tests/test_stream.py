"""Memory-mapped .npy training: the same numbers as in memory, read batch by batch."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.cli.main import main
from vaekit.data import load_data
from vaekit.data.stream import open_npy


@pytest.fixture
def npy(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "x.npy"
    np.save(path, rng.integers(0, 256, size=(300, 6, 5), dtype=np.uint8))  # grey images
    return path


def test_mapped_rows_equal_loaded_rows(npy):
    mem = load_data(str(npy), 0.2)
    mapped = load_data(str(npy), 0.2, stream=True)
    assert mapped.shape == mem.shape == (1, 6, 5)
    assert len(mapped.x_train) == len(mem.x_train) and len(mapped.x_test) == len(mem.x_test)
    torch.testing.assert_close(mapped.x_train[:], mem.x_train, rtol=0, atol=0)
    idx = torch.tensor([5, 0, 17, 5, 239])  # any order, repeats allowed: the trainer's gathers
    torch.testing.assert_close(mapped.x_train[idx], mem.x_train[idx], rtol=0, atol=0)
    assert mapped.x_test.aminmax() == tuple(float(v) for v in mem.x_test.aminmax())


def test_training_with_mmap_matches_in_memory(npy, tmp_path):
    common = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--no-report", "--precision", "fp32"]
    assert main(["train", str(npy), "--out", str(tmp_path / "mem"), *common]) == 0
    assert main(["train", str(npy), "--out", str(tmp_path / "map"), "--stream", *common]) == 0
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                       for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "mem") == strip(tmp_path / "map")
    a, b = load_file(tmp_path / "mem" / "model.safetensors"), load_file(tmp_path / "map" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "map" / "config.json").read_text())["data"]["stream"] is True


def test_mmap_bad_input(tmp_path, capsys):
    bad = tmp_path / "nan.npy"
    x = np.zeros((10, 3), np.float32)
    x[7, 1] = np.nan
    np.save(bad, x)
    with pytest.raises(Exception, match="row 7"):
        open_npy(bad)
    assert main(["train", str(bad), "--stream", "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "digits", "--stream", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "row 7" in err[0] and "--stream reads an existing .npy" in err[1]
    assert not (tmp_path / "r").exists()


def test_streamed_image_folder_trains_like_the_loaded_one(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(40):
            Image.fromarray(rng.integers(0, 256, (7, 6), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{k}.png")
    folder = str(tmp_path / "imgs")
    mem, streamed = load_data(folder, 0.25), load_data(folder, 0.25, stream=True)
    torch.testing.assert_close(streamed.x_train[:], mem.x_train, rtol=0, atol=0)
    assert torch.equal(streamed.y_test, mem.y_test)
    common = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--no-report",
              "--precision", "fp32", "--batch-size", "16"]
    assert main(["train", folder, "--out", str(tmp_path / "mem"), *common]) == 0
    assert main(["train", folder, "--out", str(tmp_path / "str"), "--stream", *common]) == 0
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                       for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "mem") == strip(tmp_path / "str")
    a, b = load_file(tmp_path / "mem" / "model.safetensors"), load_file(tmp_path / "str" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
