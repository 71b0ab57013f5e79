"""Samplers of codes (prior, ex-post mixture, two-stage VAE): numbers against scikit-learn and
closed forms, the run directory's rules for their files, the CLI (sample, fit-sampler,
evaluate --samples), the estimator and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkMixture

from vaekit.evaluation import featurenet, quality
from vaekit import pipeline
from vaekit.sampling import samplers
from vaekit.config.settings import SAMPLER_NAMES
from vaekit.config.settings import ModelConfig
from vaekit.errors import DataError, RunDirError
from vaekit.estimator import VAE
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir
from vaekit.sampling.samplers import ExPostSampler, TwoStageSampler
from helpers import assert_one_error, cli

SMALL = ["--hidden", "32", "--latent-dim", "2", "--epochs", "2", "--no-report"]


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    """A second VAE and a metric classifier small enough for tests (same code paths)."""
    monkeypatch.setattr(TwoStageSampler, "OPTIONS", {**TwoStageSampler.OPTIONS, "hidden": (32,),
                                                     "epochs": 4, "patience": 2})
    monkeypatch.setattr(featurenet, "TRAIN_STEPS", 150)


@pytest.fixture
def run(tmp_path):
    assert cli("train", "digits", "--out", tmp_path / "run", "--seed", "3", *SMALL) == 0
    return tmp_path / "run"


def clusters(n: int = 3000) -> torch.Tensor:
    """Codes from three separated Gaussians in 2-D."""
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    return torch.from_numpy(centres[rng.integers(0, 3, n)] + rng.standard_normal((n, 2)) * [0.5, 1.0]).float()


def tiny_model(latent: int = 2) -> VAEModel:
    m = VAEModel(ModelConfig(hidden=(8,), latent_dim=latent), (4,))
    m.preprocess.fit(torch.zeros(2, 4))
    return m


# -- the ex-post mixture -----------------------------------------------------------------------
def test_expost_mixture_is_chosen_on_held_out_codes_and_rebuilt_exactly():
    codes = clusters()
    s = ExPostSampler.fit(tiny_model(), codes, seed=5, log=lambda s: None, train=None)
    d = s.record["details"]
    scores = dict(zip(d["candidates"], d["held_out_log_likelihood"]))
    assert d["components"] == max(scores, key=scores.get) >= 2  # three clusters need more than one
    fit_rows, held_rows = samplers.held_out_split(len(codes))
    z = codes.double().numpy()
    oracle = SkMixture(d["components"], covariance_type="full", max_iter=300, random_state=5).fit(z[fit_rows])
    np.testing.assert_allclose(s.means.numpy(), oracle.means_)  # fitted on the fit rows only
    assert scores[d["components"]] == pytest.approx(oracle.score(z[held_rows]))
    # the torch mixture rebuilt from the stored tensors has scikit-learn's density
    np.testing.assert_allclose(s.mixture.log_prob(torch.from_numpy(z[:50])).numpy(),
                               oracle.score_samples(z[:50]), rtol=1e-10)


def test_expost_draws_have_the_mixtures_moments():
    codes = clusters()
    s = ExPostSampler.fit(tiny_model(), codes, seed=5, log=lambda s: None, train=None)
    w, mu, cov = s.weights.numpy(), s.means.numpy(), s.covariances.numpy()
    mean = w @ mu  # closed form: sum w_k mu_k, and sum w_k (C_k + mu_k mu_k^T) - mean mean^T
    second = np.einsum("k,kij->ij", w, cov + np.einsum("ki,kj->kij", mu, mu))
    z = s.codes(200_000, torch.Generator().manual_seed(0)).double().numpy()
    np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(z.T), second - np.outer(mean, mean), atol=0.08, rtol=0.01)
    again = s.codes(10, torch.Generator().manual_seed(0))
    assert torch.equal(again, s.codes(10, torch.Generator().manual_seed(0)))


# -- the two-stage VAE -------------------------------------------------------------------------
def test_two_stage_is_a_vaekit_vae_trained_by_the_pipeline():
    model = tiny_model(latent=3)
    s = pipeline.fit_sampler("two-stage", model, torch.rand(600, 4), seed=2, log=lambda s: None)
    assert isinstance(s.stage2, VAEModel)
    m = s.config.model
    assert (m.arch, m.hidden, m.likelihood, m.learn_obs_std, m.latent_dim) == ("mlp", (32,), "gaussian", True, 3)
    d = s.record["details"]
    assert 1 <= d["best_epoch"] <= d["epochs"] <= 4 and np.isfinite(d["held_out_loss"])
    assert s.record["n_fit"] + s.record["n_held_out"] == 600 and s.record["n_held_out"] == 60
    assert s.codes(7, torch.Generator().manual_seed(0)).shape == (7, 3)


# -- in the run directory ----------------------------------------------------------------------
def test_fitted_samplers_are_stored_validated_and_owned(run, capsys):
    model, cfg = pipeline.load_run(run)
    fitted = {n: pipeline.run_sampler(run, model, cfg, n, log=print) for n in ("expost", "two-stage")}
    assert "fitted now (it was never fitted)" in capsys.readouterr().out
    assert RunDir(run).foreign_files() == []  # every file is vaekit's: --overwrite may remove them
    for name, s in fitted.items():
        loaded = pipeline.run_sampler(run, model, cfg, name, fit="never")
        assert torch.equal(loaded.codes(20, torch.Generator().manual_seed(1)),
                           s.codes(20, torch.Generator().manual_seed(1)))
    tensors, record = samplers.paths(run, "expost")
    blob = bytearray(tensors.read_bytes())
    blob[-3] ^= 0x01
    tensors.write_bytes(bytes(blob))
    with pytest.raises(RunDirError, match="SHA-256"):
        pipeline.run_sampler(run, model, cfg, "expost", fit="never")
    pipeline.run_sampler(run, model, cfg, "expost", log=print)  # damaged: fitted again
    assert "it is damaged" in capsys.readouterr().out
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({**rec, "extra": 1}))
    with pytest.raises(RunDirError, match="does not have the keys vaekit writes"):
        samplers.load(run, "expost", model)
    record.write_text(json.dumps({**rec, "n_fit": "many"}))
    with pytest.raises(RunDirError, match="'n_fit' must be int"):
        samplers.load(run, "expost", model)
    record.write_text(json.dumps(rec))
    with torch.no_grad():
        next(model.parameters()).add_(0.1)  # other weights: the stored fit is stale
    s, why = samplers.load(run, "two-stage", model)
    assert s is None and "other weights" in why
    assert cli("train", "digits", "--out", run, "--overwrite", *SMALL) == 0
    assert not (run / "samplers").exists()


def test_cli_sample_fit_sampler_and_errors(run, capsys):
    assert cli("sample", run, "-n", 9, "--out", run.parent / "prior.npy") == 0
    model, _ = pipeline.load_run(run)
    prior = np.load(run.parent / "prior.npy")
    np.testing.assert_array_equal(prior, pipeline.sample(model, 9, 0).numpy())  # unchanged default
    assert cli("sample", run, "-n", 9, "--sampler", "expost", "--out", run.parent / "e.npy") == 0
    out, err = capsys.readouterr()
    assert "expost sampler" in out and "fitting the expost sampler" in err
    e = np.load(run.parent / "e.npy")
    assert e.shape == prior.shape and not np.array_equal(e, prior)
    assert cli("fit-sampler", run, "--sampler", "two-stage") == 0
    assert "fitted the two-stage sampler" in capsys.readouterr().out
    assert cli("sample", run, "--sampler", "two-stage", "--out", run.parent / "t.png") == 0
    assert cli("sample", run, "--sampler", "gmm", "--out", run.parent / "x.png") == 2
    assert_one_error(capsys.readouterr().err, "--sampler")
    assert cli("fit-sampler", run, "--sampler", "prior") == 2
    assert_one_error(capsys.readouterr().err, "--sampler")


def test_cli_names_are_the_registry():
    assert list(SAMPLER_NAMES) == samplers.SAMPLERS.names()


def test_resumed_run_refits_a_stale_sampler(run, capsys):
    assert cli("fit-sampler", run, "--sampler", "expost") == 0
    assert cli("train", "digits", "--out", run, "--resume", "--epochs", 3, "--no-report") == 0
    capsys.readouterr()
    assert cli("sample", run, "--sampler", "expost", "--out", run.parent / "s.npy") == 0
    assert "fitted to other weights" in capsys.readouterr().err


# -- the metric end to end ---------------------------------------------------------------------
def test_evaluate_samples_measures_keeps_and_reports(run, capsys):
    assert cli("report", run) == 0
    capsys.readouterr()
    assert cli("evaluate", run, "-k", 2, "--samples", 40, "--sampler", "all", "--draws", 2,
               "--json") == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    doc = res["sample_quality"]
    assert set(doc["results"]) == {"prior", "expost", "two-stage"}
    assert doc["samples"] == 40 and doc["draws"] == 2 and doc["k"] == 3 and doc["n_reference"] == 179
    for e in doc["results"].values():
        assert len(e["classifier_fd_draws"]) == 2 and e["classifier_fd"] > 0
        assert e["classifier_fd"] == pytest.approx(np.mean(e["classifier_fd_draws"]))
        assert e["classifier_fd_sd"] == pytest.approx(np.std(e["classifier_fd_draws"], ddof=1))
    assert quality.read(run) == doc
    assert "sample_quality.json" in err and "report.html refreshed" in err
    html = (run / "report.html").read_text()
    assert 'id="sample-quality"' in html and "not Inception FID" in html
    assert html.count('alt="samples, ') == 3  # a grid per sampler
    # the same settings keep the other samplers' entries; other settings start afresh
    assert cli("evaluate", run, "-k", 2, "--samples", 40, "--draws", 2) == 0
    assert set(quality.read(run)["results"]) == {"prior", "expost", "two-stage"}
    assert cli("evaluate", run, "-k", 2, "--samples", 41, "--draws", 2) == 0
    assert set(quality.read(run)["results"]) == {"prior"}
    capsys.readouterr()
    (run / "sample_quality.json").write_text(json.dumps({**doc, "k": "three"}))
    with pytest.raises(RunDirError, match="'k' must be int"):
        quality.read(run)
    assert cli("report", run) == 2
    assert_one_error(capsys.readouterr().err, "sample_quality.json")


def test_evaluate_samples_needs_labels(tmp_path, capsys):
    x = np.random.default_rng(0).random((200, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "r", *SMALL) == 0
    assert cli("evaluate", tmp_path / "r", "-k", 1, "--samples", 20) == 2
    assert_one_error(capsys.readouterr().err, "needs labelled data")


def test_conditional_model_samples_from_a_fitted_sampler(tmp_path, capsys):
    assert cli("train", "digits", "--conditional", "--out", tmp_path / "c", *SMALL) == 0
    assert cli("sample", tmp_path / "c", "--sampler", "expost", "--label", 3, "-n", 4,
               "--out", tmp_path / "c3.npy") == 0
    assert cli("evaluate", tmp_path / "c", "-k", 1, "--samples", 30, "--draws", 1,
               "--sampler", "prior,expost") == 0
    assert "expost" in capsys.readouterr().out


# -- the estimator -----------------------------------------------------------------------------
def test_estimator_sample_with_fitted_samplers(tmp_path, blobs):
    vae = VAE(hidden=(16,), latent_dim=2, epochs=2, random_state=0).fit(blobs)
    with pytest.raises(DataError, match="fit_sampler"):
        vae.sample(5, sampler="expost")
    with pytest.raises(ValueError, match="sampler must be"):
        vae.sample(5, sampler="gmm")
    vae.fit_sampler(blobs, sampler="expost")
    a = vae.sample(5, random_state=1, sampler="expost")
    assert a.shape == (5, 6) and not np.allclose(a, vae.sample(5, random_state=1))
    vae.save(tmp_path / "v")
    assert (tmp_path / "v" / "samplers" / "expost.json").exists()
    loaded = VAE.load(tmp_path / "v")
    np.testing.assert_array_equal(loaded.sample(5, random_state=1, sampler="expost"), a)
    with pytest.raises(DataError, match="VAE.fit_sampler"):  # its data are not on disk
        loaded.sample(5, sampler="two-stage")
    vae.fit(blobs)  # a new model: the old fit no longer applies
    with pytest.raises(DataError, match="fit_sampler"):
        vae.sample(5, sampler="expost")
