"""Tests for vaekit.estimator.VAE: the scikit-learn estimator contract and its numbers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.validation import check_is_fitted

from vaekit.errors import DataError
from vaekit.estimator import VAE

# Small and quick; device and precision fixed (not "auto") so that save/load round-trips every
# parameter and the numbers do not depend on whether this CPU has native bf16.
FAST = dict(hidden=(32,), latent_dim=2, epochs=2, batch_size=32, device="cpu", precision="fp32",
            likelihood="bernoulli")


def _relu_mlp(x: np.ndarray, linears: list[torch.nn.Linear]) -> np.ndarray:
    """Linear layers with ReLU between them, in float64 NumPy."""
    for i, lin in enumerate(linears):
        x = x @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()
        if i < len(linears) - 1:
            x = np.maximum(x, 0)
    return x


def _linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def resolved(est: VAE) -> dict:
    """``est``'s parameters with each "auto" (and threads 0, chosen at the fit) replaced by the
    value the fit chose."""
    flat = est.config_.flat()
    chosen = lambda k, v: (v == "auto" and k not in ("device", "precision")) or (k, v) == ("threads", 0)  # noqa: E731
    return {k: (flat["seed" if k == "random_state" else k] if chosen(k, v) else v)
            for k, v in est.get_params().items()}


@pytest.fixture(scope="module")
def blobs_m() -> np.ndarray:
    """Module-scoped copy of conftest's ``blobs``: (120, 6) two clusters in [0, 1]."""
    rng = np.random.default_rng(7)
    centers = np.array([[0.1, 0.2, 0.8, 0.9, 0.5, 0.3], [0.9, 0.7, 0.2, 0.1, 0.4, 0.6]])
    x = centers[rng.integers(0, 2, 120)] + 0.05 * rng.standard_normal((120, 6))
    return np.clip(x, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(blobs_m) -> VAE:
    return VAE(**FAST, random_state=0).fit(blobs_m)


# ----------------------------------------------------------------------------- parameters


ALL_PARAMS = dict(arch="mlp", hidden=(16, 8), latent_dim=3, top_latent_dims=(2,), posterior="full-covariance",
                  prior="mixture", prior_components=7, likelihood="gaussian", preprocess="standardize",
                  mixtures=3, obs_std=0.5,
                  learn_obs_std=True, min_obs_var=1e-4, min_var=1e-3, pixel_weight=0.5, conditional=True, epochs=4,
                  batch_size=7, lr=3e-3, lr_schedule="cosine", objective="iwae", k=3, beta=0.25,
                  kl_warmup=2, free_bits=0.5, gamma=0.3, clip_grad=5.0, max_skips=3, max_minutes=1.5,
                  random_state=11, device="cpu", threads=2, precision="fp32", patience=3, eval_batch_size=50,
                  test_fraction=0.2, val_fraction=0.1, verbose=True, semi_supervised=True,
                  stack_on="runs/m1", alpha=2.0, labelled_share=0.2, labelled=3, column="a=count",
                  cell_dropout=0.2, latent="vq", codebook_size=64, code_dim=8, commitment=0.5,
                  codebook_update="loss", codebook_decay=0.9, dead_code_steps=7)


def test_parameters_are_the_config_fields_with_their_defaults_and_help():
    """One source of truth: every estimator-scope field is a parameter, with the same default
    (or a documented estimator default) and its help text in the docstring."""
    from vaekit.config.settings import iter_options, option_fields
    from vaekit.estimator import ESTIMATOR_DEFAULTS, PARAM_OF_FIELD

    sig = inspect.signature(VAE.__init__).parameters
    fields = list(iter_options("estimator"))
    assert [PARAM_OF_FIELD.get(n, n) for n, _, _ in fields] + ["verbose"] == [p for p in sig if p != "self"]
    for name, f, _ in fields:
        if name == "seed":
            assert sig["random_state"].default is None
            continue
        expected = "auto" if f.metadata["auto"] else ESTIMATOR_DEFAULTS.get(name, f.default)
        assert sig[name].default == expected, name
        assert " ".join(f.metadata["help"].split()) in " ".join(VAE.__doc__.split()), name
    # every option field reaches users somewhere: a CLI flag, an estimator parameter, or vaekit
    scopes = {f.metadata["scope"] for _, f in option_fields().values()}
    assert scopes <= {"all", "cli", "internal"}


def test_a_loaded_run_describes_itself_and_clone_refits_the_same_model(tmp_path, blobs_m):
    est = VAE(hidden=(8,), latent_dim=2, prior="mixture", prior_components=7, lr_schedule="cosine",
              epochs=2, batch_size=32, device="cpu", precision="fp32", random_state=4).fit(blobs_m)
    est.save(tmp_path / "m")
    loaded = VAE.load(tmp_path / "m")
    # the loaded parameters are the run's configuration, data-chosen options included
    assert loaded.get_params() == {**resolved(est), "verbose": False}
    again = clone(loaded).fit(blobs_m)
    np.testing.assert_array_equal(again.transform(blobs_m), est.transform(blobs_m))


def test_get_params_is_exactly_the_constructor_arguments():
    names = [p for p in inspect.signature(VAE.__init__).parameters if p != "self"]
    assert sorted(ALL_PARAMS) == sorted(names)
    assert VAE(**ALL_PARAMS).get_params() == ALL_PARAMS
    defaults = {p.name: p.default for p in inspect.signature(VAE.__init__).parameters.values()
                if p.name != "self"}
    assert VAE().get_params() == defaults


def test_set_params():
    est = VAE()
    assert est.set_params(latent_dim=5, lr=0.01) is est
    assert est.get_params()["latent_dim"] == 5 and est.latent_dim == 5 and est.lr == 0.01
    with pytest.raises(ValueError):
        est.set_params(latent_dimm=5)


def test_clone_is_unfitted_with_equal_params(fitted):
    c = clone(fitted)
    assert c is not fitted
    assert c.get_params() == fitted.get_params()
    assert not hasattr(c, "model_") and not hasattr(c, "history_")
    with pytest.raises(NotFittedError):
        check_is_fitted(c)
    with pytest.raises(NotFittedError):
        c.sample(2)


# ----------------------------------------------------------------------------- fitting


def test_fit_sets_fitted_attributes(blobs_m):
    est = VAE(**FAST, random_state=0)
    params = est.get_params()
    assert est.fit(blobs_m) is est
    assert est.get_params() == params  # fit does not touch the parameters
    assert isinstance(est.model_, torch.nn.Module)
    assert est.n_features_in_ == 6 and est.data_shape_ == (6,)
    assert [h["epoch"] for h in est.history_] == [1, 2]
    for h in est.history_:
        assert np.isfinite(h["train_loss"])
        assert h["train_loss"] == pytest.approx(h["train_rec"] + h["train_kl"], rel=1e-9)


def test_history_loss_weights_kl_by_beta(blobs_m):
    est = VAE(**{**FAST, "epochs": 1}, beta=0.25, random_state=0).fit(blobs_m)
    h = est.history_[0]
    assert h["train_loss"] == pytest.approx(h["train_rec"] + 0.25 * h["train_kl"], rel=1e-9)


def test_transform_is_the_encoder_mean(fitted, blobs_m):
    z = fitted.transform(blobs_m)
    assert z.shape == (120, 2) and z.dtype == np.float32
    # Independent forward pass in float64: the encoder MLP, then the first latent_dim outputs.
    params = _relu_mlp(blobs_m.astype(np.float64), _linears(fitted.model_.encoder))
    assert params.shape == (120, 4)
    np.testing.assert_allclose(z, params[:, :2], rtol=1e-5, atol=1e-5)


def test_reconstruct_is_the_decoder_mean_at_the_encoder_mean(fitted, blobs_m):
    r = fitted.reconstruct(blobs_m)
    assert r.shape == blobs_m.shape
    mu = _relu_mlp(blobs_m.astype(np.float64), _linears(fitted.model_.encoder))[:, :2]
    logits = _relu_mlp(mu, _linears(fitted.model_.decoder))
    np.testing.assert_allclose(r, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)


def test_fit_transform_equals_fit_then_transform(fitted, blobs_m):
    z = VAE(**FAST, random_state=0).fit_transform(blobs_m)
    np.testing.assert_array_equal(z, fitted.transform(blobs_m))


def test_random_state_makes_fits_repeatable(fitted, blobs_m):
    again = VAE(**FAST, random_state=0).fit(blobs_m)
    np.testing.assert_array_equal(again.transform(blobs_m), fitted.transform(blobs_m))
    drop = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert drop(again.history_) == drop(fitted.history_)
    other = VAE(**FAST, random_state=1).fit(blobs_m)
    assert not np.array_equal(other.transform(blobs_m), fitted.transform(blobs_m))


def test_sample_seeded_shape_and_range(fitted):
    a = fitted.sample(9, random_state=0)
    assert a.shape == (9, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, fitted.sample(9, random_state=0))
    assert not np.array_equal(a, fitted.sample(9, random_state=1))
    assert a.min() >= 0 and a.max() <= 1  # bernoulli means


def test_gaussian_samples_are_unbounded_decoder_means(blobs_m):
    est = VAE(**{**FAST, "likelihood": "gaussian"}, random_state=0).fit(4 * blobs_m - 2)
    s = est.sample(50, random_state=0)
    assert s.shape == (50, 6) and np.isfinite(s).all()


def test_training_learns_to_reconstruct_two_clusters(blobs_m):
    def mse(est):
        return float(((est.reconstruct(blobs_m) - blobs_m) ** 2).mean())

    mean_predictor = float(((blobs_m - blobs_m.mean(axis=0)) ** 2).mean())
    kw = dict(FAST, batch_size=40, lr=3e-2, random_state=0)
    del kw["epochs"]
    short = mse(VAE(**kw, epochs=1).fit(blobs_m))
    long = mse(VAE(**kw, epochs=20).fit(blobs_m))
    # After 20 epochs the clusters are recovered (0.035-0.09x the mean predictor's error on this
    # data for seeds 0-5); 1 epoch is still close to predicting the mean.
    assert long < 0.3 * mean_predictor
    assert long < 0.5 * short


# ----------------------------------------------------------------------------- persistence


def test_save_load_round_trip(fitted, blobs_m, tmp_path):
    fitted.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors"}
    loaded = VAE.load(tmp_path / "m")
    assert loaded.get_params() == {**resolved(fitted), "verbose": False}
    np.testing.assert_array_equal(loaded.transform(blobs_m), fitted.transform(blobs_m))
    np.testing.assert_array_equal(loaded.sample(7, random_state=3), fitted.sample(7, random_state=3))
    np.testing.assert_array_equal(loaded.reconstruct(blobs_m), fitted.reconstruct(blobs_m))
    assert loaded.n_features_in_ == 6 and loaded.data_shape_ == (6,)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call", [
    lambda e: e.transform(np.zeros((2, 6), np.float32)),
    lambda e: e.reconstruct(np.zeros((2, 6), np.float32)),
    lambda e: e.sample(2),
    lambda e: e.save("never-written"),
], ids=["transform", "reconstruct", "sample", "save"])
def test_not_fitted(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFittedError):
        call(VAE(**FAST))
    assert list(tmp_path.iterdir()) == []


def test_wrong_feature_count_is_a_data_error(fitted):
    with pytest.raises(DataError, match="X has 5 features, but VAE is expecting 6"):
        fitted.transform(np.zeros((3, 5), np.float32))
    with pytest.raises(DataError):
        fitted.reconstruct(np.zeros((3, 7), np.float32))


@pytest.mark.parametrize("x, match", [
    (np.zeros(6, np.float32), "shape"),
    (np.array([[0.1, np.nan, 0.3, 0.4, 0.5, 0.6]] * 4, np.float32), "NaN"),
    (np.array([["a"] * 6] * 4), "could not convert string to float"),
    (np.zeros((0, 6), np.float32), "0 sample"),
    (np.ones((4, 6), np.complex64), "[Cc]omplex"),
], ids=["1d", "nan", "strings", "empty", "complex"])
def test_bad_x_is_a_data_error(x, match):
    with pytest.raises(DataError, match=match):
        VAE(**FAST, random_state=0).fit(x)


def test_bernoulli_needs_data_in_0_1(blobs_m):
    with pytest.raises(DataError, match="gaussian"):
        VAE(**FAST, random_state=0).fit(blobs_m + 1)


# ----------------------------------------------------------------------------- images and pipelines


def test_conv_accepts_images_without_channel_axis():
    from sklearn.datasets import load_digits

    x = (load_digits().images[:100] / 16.0).astype(np.float32)  # (100, 8, 8)
    est = VAE(**{**FAST, "epochs": 1, "batch_size": 50}, arch="conv", random_state=0).fit(x)
    assert est.data_shape_ == (1, 8, 8) and est.n_features_in_ == 64
    z = est.transform(x)
    assert z.shape == (100, 2)
    np.testing.assert_array_equal(z, est.transform(x[:, None]))  # same as (n, 1, H, W)
    r = est.reconstruct(x[:5])
    assert r.shape == (5, 1, 8, 8) and r.min() >= 0 and r.max() <= 1
    assert est.sample(3, random_state=0).shape == (3, 1, 8, 8)
    with pytest.raises(DataError):
        est.transform(x[:, :7, :7])


def test_in_a_pipeline(fitted, blobs_m):
    y = (blobs_m[:, 0] > 0.5).astype(int)  # the cluster
    pipe = make_pipeline(VAE(**FAST, random_state=0), LogisticRegression()).fit(blobs_m, y)
    # The pipeline's VAE is the same fit as ``fitted`` (same data, parameters and seed).
    np.testing.assert_array_equal(pipe[0].transform(blobs_m), fitted.transform(blobs_m))
    expected = LogisticRegression().fit(fitted.transform(blobs_m), y).predict(fitted.transform(blobs_m))
    np.testing.assert_array_equal(pipe.predict(blobs_m), expected)


def test_conditional_estimator_takes_labels_everywhere():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = np.clip(rng.random((120, 6)) * 0.2 + 0.6 * (y[:, None] == np.arange(6) // 2), 0, 1).astype(np.float32)
    vae = VAE(hidden=(16,), latent_dim=2, conditional=True, epochs=3, random_state=0)
    z = vae.fit_transform(x, y)
    assert z.shape == (120, 2) and vae.model_.cond_dim == 3
    assert vae.reconstruct(x[:5], y[:5]).shape == (5, 6)
    assert vae.sample(4, random_state=0, label=2).shape == (4, 6)
    assert np.isfinite(vae.score(x, y, n_importance=5))
    with pytest.raises(DataError, match="labels y"):
        vae.transform(x)
    with pytest.raises(DataError, match="label=L"):
        vae.sample(2)
    with pytest.raises(DataError, match="needs labels"):
        VAE(conditional=True, epochs=1).fit(x)



def test_conditional_estimator_round_trips(tmp_path):
    x = np.random.default_rng(1).random((30, 4)).astype(np.float32)
    y = np.arange(30) % 2
    vae = VAE(hidden=(8,), latent_dim=2, conditional=True, epochs=1, random_state=0).fit(x, y)
    vae.save(tmp_path / "m")
    again = VAE.load(tmp_path / "m")
    assert again.conditional and again.get_params() == {**resolved(vae), "device": "cpu"}
    np.testing.assert_array_equal(again.transform(x, y), vae.transform(x, y))
