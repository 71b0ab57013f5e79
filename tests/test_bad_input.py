"""More bad input, for the commands beyond train: one `error:` line, exit 2, nothing changed."""

import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from vaekit.cli.main import main
from helpers import assert_one_error, snapshot


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "r"
    assert main(["train", "digits", "--out", str(run), "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--no-report"]) == 0
    return run


def wrong_shape_tensor(run, d):
    t = load_file(run / "model.safetensors")
    key = next(k for k in t if k.endswith("weight"))
    t[key] = t[key][:, :1].contiguous()
    save_file(t, run / "model.safetensors")
    return "has shape"


def half_written(run, d):
    (run / "model.safetensors").unlink()
    return "no model.safetensors"


def no_config(run, d):
    (run / "config.json").unlink()
    return "no config.json"


def garbage_config(run, d):
    (run / "config.json").write_text("{not json")
    return "not readable JSON"


def missing_tensor(run, d):
    t = load_file(run / "model.safetensors")
    t.pop(next(iter(t)))
    save_file(t, run / "model.safetensors")
    return "missing tensors"


DAMAGES = [wrong_shape_tensor, half_written, no_config, garbage_config, missing_tensor]
COMMANDS = {
    "evaluate": lambda run, d: ["evaluate", run, "-k", "2"],
    "score": lambda run, d: ["score", run, "digits", "-k", "2", "--out", d / "s.csv"],
    "report": lambda run, d: ["report", run],
    "interpolate": lambda run, d: ["interpolate", run, "--from", "0", "--to", "1", "--out", d / "i.png"],
    "traverse": lambda run, d: ["traverse", run, "--out", d / "t.png"],
}


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_damaged_runs(good_run, tmp_path, capsys, damage, command):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    needle = damage(run, tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main([str(a) for a in COMMANDS[command](run, tmp_path)]) == 2
    assert needle in assert_one_error(capsys.readouterr().err, only=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv,needle", [
    (["score", "{run}", "{npz}", "--out", "{d}/s.csv"], "cannot read this .npz"),
    (["evaluate", "{run}", "{wide}"], "model was trained on shape"),
    (["score", "{run}", "{d}/missing.csv", "--out", "{d}/s.csv"], "no dataset or file"),
    (["score", "{run}", "digits", "--out", "{d}/s.txt"], "--out must end in .csv"),
    (["evaluate", "{run}", "-k", "0"], "positive integer"),
    (["report", "{run}", "--out", "{d}/r.pdf"], "--out must end in .html"),
    (["baseline", "{wide}", "--model", "gmm", "--test-fraction", "0"], "no test split"),
])
def test_bad_arguments_and_data(good_run, tmp_path, capsys, argv, needle):
    npz = tmp_path / "trunc.npz"
    buf = tmp_path / "full.npz"
    np.savez(buf, x_train=np.zeros((10, 64), np.float32))
    npz.write_bytes(buf.read_bytes()[:100])
    np.save(tmp_path / "wide.npy", np.zeros((20, 3), np.float32))
    before = snapshot(tmp_path)
    fill = dict(run=good_run, npz=npz, wide=tmp_path / "wide.npy", d=tmp_path)
    capsys.readouterr()
    assert main([a.format(**fill) for a in argv]) == 2
    assert needle in assert_one_error(capsys.readouterr().err, only=True)
    assert snapshot(tmp_path) == before
