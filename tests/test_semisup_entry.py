"""M2 and the stacked M1+M2 through every entry point: the CLI (train, evaluate, sample, embed,
report), bad input as one error line, the estimator's fit(X, y) with -1 and predict, save and
load, a bit-identical resume, and torchrun with two processes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Normal

from test_distributed import run as torchrun  # the launcher of the DDP test (tests/ is on the path)
from vaekit import pipeline
from vaekit.config.settings import RunConfig
from vaekit.data import load_data
from vaekit.data.base import Dataset
from vaekit.errors import DataError
from vaekit.estimator import VAE
from vaekit.runs.directory import RunDir
from helpers import assert_one_error, cli, metrics

TINY = ["--hidden", "16", "--latent-dim", "2", "--precision", "fp32", "--batch-size", "64"]
M2 = ["--semi-supervised", "--labelled", "5", "--epochs", "2", "--val-fraction", "0.1", *TINY]


@pytest.fixture(scope="module")
def m2_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("m2") / "run"
    assert cli("train", "digits", *M2, "--out", run) == 0
    return run


def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_data("digits", log=lambda s: None)
    return ds.x_test, ds.y_test


def test_cli_trains_m2_and_reports_its_error(m2_run, tmp_path, capsys):
    cfg = json.loads((m2_run / "config.json").read_text())
    assert cfg["model"]["semi_supervised"] and cfg["model"]["num_classes"] == 10
    assert cfg["data"]["labelled"] == 5
    rows = metrics(m2_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_error"] <= 1 and 0 <= r["test_error"] <= 1 for r in rows)
    # evaluate: the error is the share of test rows whose most probable class is wrong
    assert cli("evaluate", m2_run, "-k", "4", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    model, _ = pipeline.load_run(m2_run, "cpu")
    x, y = digits_test()
    wrong = (model.predict_proba(x).argmax(1) != y).double().mean().item()
    assert res["classification_error"] == pytest.approx(wrong, abs=1e-12)
    assert res["n_labelled"] == len(y) == 179
    # the bound of a test row is U(x): the labels play no part in it
    assert res["elbo"] <= res["log_likelihood"] + 1.0
    assert cli("evaluate", m2_run, "-k", "4") == 0
    assert "% of 179 labelled rows misclassified" in capsys.readouterr().out
    html = (m2_run / "report.html").read_text()
    assert "classification error" in html
    # sampling a class, or classes drawn from p(y); embedding without labels: the code [z, y]
    assert cli("sample", m2_run, "--label", "3", "-n", "4", "--out", tmp_path / "s.npy") == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)
    assert cli("sample", m2_run, "-n", "4", "--out", tmp_path / "t.npy") == 0
    assert cli("sample", m2_run, "--label", "10", "--out", tmp_path / "u.npy") == 2
    assert_one_error(capsys.readouterr().err, "--label 10 is out of range")
    assert cli("embed", m2_run, "digits", "--split", "test", "--out", tmp_path / "z.npy") == 0
    assert np.load(tmp_path / "z.npy").shape == (179, 2 + 10)
    assert cli("export", m2_run, "--out", tmp_path / "onnx") == 2  # refused, not half-done
    line = assert_one_error(capsys.readouterr().err)
    assert "no ONNX export" in line or "onnx" in line.lower()
    assert not (tmp_path / "onnx").exists()


def npz(path: Path, y_train, y_test=None, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((n, 5)).astype(np.float32),
             x_test=rng.random((10, 5)).astype(np.float32), y_train=np.asarray(y_train),
             y_test=np.asarray(y_test if y_test is not None else np.arange(10) % 2))
    return path


@pytest.mark.parametrize("case,needles", [
    ("labelled-alone", ["--labelled", "--semi-supervised"]),
    ("no-labels", ["has no labels"]),
    ("too-few", ["fewer than the 500 per class"]),
    ("minus-two", ["got -2"]),
    ("all-unlabelled", ["every row is unlabelled"]),
    ("test-label-out-of-range", ["labels must lie in 0..1", "-1 (unlabelled)"]),
    ("missing-class", ["classes [1] have no labelled row"]),
    ("stack-on-nothing", ["--stack-on", "does not exist"]),
])
def test_bad_input_is_one_error_line(case, needles, tmp_path, capsys):
    y = np.where(np.arange(60) < 6, np.arange(60) % 2, -1)
    files = {"minus-two": (np.where(y == 1, -2, y), None), "all-unlabelled": (np.full(60, -1), None),
             "test-label-out-of-range": (y, np.arange(10) % 3),
             "missing-class": (np.where(y == 1, 2, y), None)}
    args = [npz(tmp_path / "a.npz", *files[case]), "--semi-supervised"] if case in files else {
        "labelled-alone": ["digits", "--labelled", "5"],
        "no-labels": [tmp_path / "x.npy", "--semi-supervised"],
        "too-few": ["digits", "--semi-supervised", "--labelled", "500"],
        "stack-on-nothing": ["digits", "--semi-supervised", "--stack-on", tmp_path / "none"],
    }[case]
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((30, 4)).astype(np.float32))
    assert cli("train", *args, *TINY, "--epochs", "1", "--out", tmp_path / "run") == 2
    assert_one_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "run").exists()


def test_user_files_mark_unlabelled_rows_with_minus_one(tmp_path):
    y = np.where(np.arange(60) < 6, np.arange(60) % 2, -1)
    data = npz(tmp_path / "a.npz", y)
    assert cli("train", data, "--semi-supervised", *TINY, "--epochs", "1", "--out", tmp_path / "r") == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["num_classes"] == 2
    assert "test_error" in metrics(tmp_path / "r")[0]


# -- the estimator ----------------------------------------------------------------------------
def test_estimator_fits_partly_labelled_rows_and_predicts(tmp_path):
    x, y = digits_test()
    rng = np.random.default_rng(0)
    X = load_data("digits", log=lambda s: None).x_train.numpy().reshape(-1, 64)
    Y = load_data("digits", log=lambda s: None).y_train.numpy().copy()
    Y[rng.random(len(Y)) < 0.9] = -1
    est = VAE(semi_supervised=True, hidden=(16,), latent_dim=2, epochs=2, random_state=0,
              precision="fp32", likelihood="bernoulli").fit(X, Y)
    assert not hasattr(VAE(), "predict") and hasattr(est, "predict")
    xt = x.numpy().reshape(-1, 64)
    p = est.predict_proba(xt)
    assert p.shape == (179, 10) and np.allclose(p.sum(1), 1, atol=1e-6)
    assert np.array_equal(est.predict(xt), p.argmax(1)) and list(est.classes_) == list(range(10))
    assert est.transform(xt).shape == (179, 12)
    est.save(tmp_path / "est")
    again = VAE.load(tmp_path / "est")
    np.testing.assert_array_equal(again.predict_proba(xt), p)
    with pytest.raises(DataError, match="every row is unlabelled"):
        VAE(semi_supervised=True, epochs=1, likelihood="bernoulli").fit(X, np.full(len(X), -1))
    with pytest.raises(DataError, match="-1 for labels"):
        VAE(semi_supervised=True, epochs=1).fit(X)
    with pytest.raises(DataError, match="got -3"):
        VAE(semi_supervised=True, epochs=1).fit(X, np.full(len(X), -3))


# -- resume, stacking -------------------------------------------------------------------------
def tiny(**kw) -> RunConfig:
    cfg = RunConfig().update({"semi_supervised": True, "labelled": 5, "hidden": (16,),
                              "latent_dim": 2, "precision": "fp32", "batch_size": 64,
                              "val_fraction": 0.1, **kw})
    cfg.data.data = "digits"
    return cfg


@pytest.fixture(scope="module")
def m1_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("m1") / "run"
    cfg = RunConfig().update({"hidden": (32,), "latent_dim": 6, "epochs": 10, "lr": 3e-3,
                              "precision": "fp32"})  # every unit active
    cfg.data.data = "digits"
    pipeline.train(cfg, out=run, log=lambda s: None)
    return run


@pytest.mark.parametrize("stacked", [False, True])
def test_resume_is_bit_identical(stacked, m1_run, tmp_path):
    extra = {"stack_on": str(m1_run), "likelihood": "gaussian-predicted"} if stacked else {}
    quiet = dict(log=lambda s: None)
    full = pipeline.train(tiny(epochs=4, **extra), out=tmp_path / "full", **quiet)
    pipeline.train(tiny(epochs=2, **extra), out=tmp_path / "part", **quiet)
    cfg = pipeline.resume_config(RunDir(tmp_path / "part"), {"epochs": 4}, None)
    part = pipeline.train(cfg, out=tmp_path / "part", resume=True, **quiet)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(part.history) == drop(full.history)
    a, b = (load_file(tmp_path / n / "checkpoint.safetensors") for n in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stacked_model_is_the_front_frozen_under_the_top_and_stands_alone(m1_run, tmp_path, capsys):
    run = tmp_path / "m1m2"
    assert cli("train", "digits", *M2, "--stack-on", m1_run, "--out", run) == 0
    assert "likelihood: gaussian-predicted (the stacked model's data" in capsys.readouterr().err
    front = load_file(m1_run / "model.safetensors")
    stacked = load_file(run / "model.safetensors")
    assert all(torch.equal(stacked[f"front.{k}"], v) for k, v in front.items())  # frozen
    model, cfg = pipeline.load_run(run, "cpu")
    keep = json.loads(cfg.model.stack)["keep"]
    assert model.top.data_shape == (len(keep),) and cfg.model.stack_on == str(m1_run.resolve())
    x, y = digits_test()
    p = model.predict_proba(x)
    shutil.rmtree(m1_run.parent / "gone", ignore_errors=True)
    shutil.move(m1_run, m1_run.parent / "gone")  # the run stands on its own
    try:
        again, _ = pipeline.load_run(run, "cpu")
        torch.testing.assert_close(again.predict_proba(x), p)
        assert cli("evaluate", run, "-k", "3") == 0
        assert "labelled rows misclassified" in capsys.readouterr().out
    finally:
        shutil.move(m1_run.parent / "gone", m1_run)


def test_stacked_bound_is_the_front_terms_plus_the_tops_bound(m1_run):
    """-loss = log p1(x|z1) + U_top(z1_active) + log N(z1_rest) - log q1(z1|x) on the same draws."""
    cfg = tiny(stack_on=str(m1_run), likelihood="gaussian-predicted", alpha=0.0, epochs=1)
    res = pipeline.train(cfg, log=lambda s: None)
    model = res.model.double()
    x = res.data.x_test[:6].double()
    L1 = model.front.latent_dim
    noise = torch.randn(1, 6, model.noise_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = model(x, noise=noise)
        q1 = model.front.encode(x)
        z1 = q1.mean + noise[0, :, :L1] * q1.stddev
        keep = torch.tensor(json.loads(cfg.model.stack)["keep"])
        rest = torch.tensor(sorted(set(range(L1)) - set(keep.tolist())), dtype=torch.long)
        top = model.top(z1[:, keep], noise=noise[:, :, L1:])  # the top's own -U(z1_active)
        log_px = model.front.decode(z1).log_prob(x)
        log_rest = Normal(0.0, 1.0).log_prob(z1[:, rest]).sum(-1)
        want = log_px - top.loss + log_rest - q1.log_prob(z1)
    torch.testing.assert_close(-t.loss, want)
    torch.testing.assert_close(-(t.rec + t.kl), want)
    torch.testing.assert_close(t.rec, -log_px)


def test_stack_on_refuses_a_model_that_is_not_a_plain_vae(m2_run, tmp_path, capsys):
    assert cli("train", "digits", *M2, "--stack-on", m2_run, "--out", tmp_path / "r") == 2
    assert_one_error(capsys.readouterr().err, "one-layer VAE without labels")


# -- several processes ------------------------------------------------------------------------
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_train_m2_as_one_with_the_global_batch(tmp_path):
    base = ["train", "digits", "--semi-supervised", "--labelled", "5", "--epochs", "2",
            "--hidden", "16", "--latent-dim", "2", "--precision", "fp32", "--no-report"]
    torchrun([*base, "--batch-size", "64", "--out", tmp_path / "one"])
    torchrun([*base, "--batch-size", "32", "--out", tmp_path / "two"], nproc=2)
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two")):
        for key in ("train_loss", "test_loss", "test_error"):
            assert math.isclose(a[key], b[key], rel_tol=1e-3, abs_tol=1e-3), (key, a[key], b[key])
    wa, wb = (load_file(tmp_path / n / "model.safetensors") for n in ("one", "two"))
    for k in wa:
        np.testing.assert_allclose(wa[k].numpy(), wb[k].numpy(), rtol=1e-3, atol=1e-4, err_msg=k)


def test_dataset_from_arrays_keeps_minus_one():
    ds = Dataset.from_arrays("a", np.zeros((3, 2)), np.zeros((1, 2)), np.array([0, -1, 1]), np.array([1]))
    assert ds.y_train.tolist() == [0, -1, 1]
