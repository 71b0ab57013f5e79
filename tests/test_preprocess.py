"""Preprocessing inside the model: fitted statistics against scikit-learn, raw-unit densities
against scipy's closed forms, and a trained linear VAE against the pPCA maximum likelihood."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from vaekit.config.settings import ModelConfig, TrainConfig
from vaekit.data import Dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.measures import evaluate, log_likelihood
from vaekit.parts.preprocess import PREPROCESSORS, AffineDistribution, build_preprocess
from vaekit.training.trainer import Trainer
from vaekit.models.build import build_model

D, L = 5, 2
SCALES = np.array([1e3, 2.5e3, 4e2, 3e3, 1.2e3])  # raw units: thousands, as in a real table
MEANS = np.array([4e3, -1.5e3, 900.0, 2e4, 0.0])


def model_config(preprocess: str = "none", **kw) -> ModelConfig:
    """A ModelConfig with ``preprocess`` set (also before the field is declared in config.py)."""
    cfg = ModelConfig(**kw)
    cfg.preprocess = preprocess
    return cfg


def raw_gaussian_data(n, seed=0):
    """Correlated Gaussian rows in raw units with big, unequal scales and non-zero means."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D)) * 0.6 + np.eye(D)
    return (MEANS + (rng.normal(size=(n, D)) @ a.T) * SCALES).astype(np.float32)


# -- fitted statistics ---------------------------------------------------------------------------
def test_standardize_matches_scikit_learn_and_keeps_constant_columns_finite():
    x = raw_gaussian_data(500).astype(np.float64)
    x[:, 2] = 7.0  # a constant column: centred, scale 1 (as StandardScaler)
    x[:, 4] = 1e5 + x[:, 4] * 1e-3  # a big mean with a small spread (1e-5 relative): resolved
    p = build_preprocess("standardize", (D,)).fit(torch.from_numpy(x.astype(np.float32)))
    ref = StandardScaler().fit(x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(p.loc.numpy(), ref.mean_, rtol=1e-6)
    np.testing.assert_allclose(p.scale.numpy(), ref.scale_, rtol=1e-5)
    assert p.scale[2] == 1.0 and p.fitted and int(p.fitted_rows) == 500
    u = p(torch.from_numpy(x.astype(np.float32)))
    assert torch.isfinite(u).all() and float(u[:, 2].abs().max()) == 0.0
    x32 = x.astype(np.float32)
    err = np.abs(p.inverse(u).numpy() - x32).max(0)  # per column, against its magnitude
    assert (err <= 1e-6 * np.abs(x32).max(0)).all(), err


def test_shared_scale_is_the_root_mean_variance_and_the_identity_adds_no_tensors():
    x = raw_gaussian_data(400)
    p = build_preprocess("standardize-shared", (D,)).fit(torch.from_numpy(x))
    var = x.astype(np.float64).var(0)
    np.testing.assert_allclose(p.scale.numpy(), np.full(D, math.sqrt(var.mean())), rtol=1e-6)
    np.testing.assert_allclose(p.loc.numpy(), x.astype(np.float64).mean(0), rtol=1e-6)
    assert build_preprocess("none", (D,)).state_dict() == {}
    assert set(p.state_dict()) == {"loc", "scale", "fitted_rows"}
    assert {"none", "standardize", "standardize-shared"} <= set(PREPROCESSORS.names())


def test_affine_distribution_log_prob_mean_and_broadcasting_against_scipy():
    rng = np.random.default_rng(3)
    loc, scale = torch.tensor(MEANS), torch.tensor(SCALES)
    mu = torch.tensor(rng.normal(size=(4, 3, D)))  # (k, b, D) base parameters
    sd = torch.tensor(rng.uniform(0.5, 2.0, size=(4, 3, D)))
    base = torch.distributions.Independent(torch.distributions.Normal(mu, sd), 1)
    dist = AffineDistribution(base, loc, scale, scale.log().sum())
    x = torch.tensor(MEANS + rng.normal(size=(3, D)) * SCALES)  # (b, D) meets (k, b, D)
    expected = st.norm(loc + scale * mu, scale * sd).logpdf(x.numpy()).sum(-1)  # (k, b)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(dist.mean.numpy(), (loc + scale * mu).numpy())
    np.testing.assert_allclose(dist.variance.numpy(), (scale * sd).square().numpy())
    assert dist.batch_shape == (4, 3) and dist.event_shape == (D,)


# -- the linear-Gaussian oracle ------------------------------------------------------------------
def exact_standardized_model(x_train, sigma=0.4, kind="standardize", dtype=torch.float32):
    """A linear VAE fitted to ``x_train``'s statistics whose encoder is the exact posterior of
    its decoder in model units: u = W z + b + sigma eps with orthogonal columns of W."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(D, L)))
    w, b = q * np.array([1.5, 0.7]), rng.normal(size=D) * 0.3
    model = build_model(model_config(arch="linear", likelihood="gaussian", obs_std=sigma,
                                    latent_dim=L, min_var=0.0, preprocess=kind), (D,)).to(dtype)
    model.preprocess.fit(torch.from_numpy(x_train))
    sigma = float(model.likelihood.scale)  # as stored (float32-rounded at construction)
    m_diag = (w**2).sum(0) + sigma**2  # M = W^T W + sigma^2 I, diagonal
    with torch.no_grad():
        model.encoder.head.weight.copy_(torch.tensor(np.concatenate([(w / m_diag).T, np.zeros((L, D))])))
        model.encoder.head.bias.copy_(torch.tensor(np.concatenate([-(w / m_diag).T @ b,
                                                                   np.log(sigma**2 / m_diag)])))
        model.decoder[0].weight.copy_(torch.tensor(w))
        model.decoder[0].bias.copy_(torch.tensor(b))
    return model, w, b, sigma


@pytest.mark.parametrize("kind", ["standardize", "standardize-shared"])
@pytest.mark.parametrize("k", [1, 20])
def test_importance_sampled_log_px_is_the_raw_closed_form_density(kind, k):
    x = raw_gaussian_data(600)
    x_test = x[500:]
    for dtype, atol in ((torch.float32, 2e-3), (torch.float64, 1e-9)):
        model, w, b, sigma = exact_standardized_model(x[:500], kind=kind, dtype=dtype)
        loc, scale = model.preprocess.loc.double().numpy(), model.preprocess.scale.double().numpy()
        # the model's implied law of raw x = loc + scale * u, u ~ N(b, W W^T + sigma^2 I)
        raw = st.multivariate_normal(loc + scale * b,
                                     np.outer(scale, scale) * (w @ w.T + sigma**2 * np.eye(D)))
        ll = log_likelihood(model, torch.from_numpy(x_test).to(dtype), k, seed=k)
        np.testing.assert_allclose(ll.numpy(), raw.logpdf(x_test.astype(np.float64)), rtol=0, atol=atol)


def test_decoded_outputs_are_in_raw_units():
    x = raw_gaussian_data(300)
    model, w, b, sigma = exact_standardized_model(x, kind="standardize", dtype=torch.float64)
    loc, scale = model.preprocess.loc.numpy(), model.preprocess.scale.numpy()
    z = np.random.default_rng(2).normal(size=(7, L))
    np.testing.assert_allclose(model.decode(torch.tensor(z)).mean.detach().numpy(),
                               loc + scale * (z @ w.T + b), rtol=1e-12)
    u = (x.astype(np.float64) - loc) / scale
    post_mean = (u - b) @ (w / ((w**2).sum(0) + sigma**2))  # M^-1 W^T (u - b)
    np.testing.assert_allclose(model.reconstruct(torch.tensor(x, dtype=torch.float64)).numpy(),
                               loc + scale * (post_mean @ w.T + b), rtol=1e-9)
    torch.manual_seed(0)  # .sample() draws from the global generator, like torch.distributions
    draws = model.decode(torch.zeros(20000, L, dtype=torch.float64)).sample()
    np.testing.assert_allclose(draws.std(0).numpy(), scale * sigma, rtol=0.03)  # noise in raw units


def test_weights_and_statistics_round_trip_through_the_state_dict():
    x = raw_gaussian_data(300)
    model, *_ = exact_standardized_model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert {"preprocess.loc", "preprocess.scale", "preprocess.fitted_rows"} <= set(state)
    fresh = build_model(model.config, (D,))
    assert not fresh.preprocess.fitted
    fresh.load_state_dict(state)
    xt = torch.from_numpy(x[:50])
    torch.testing.assert_close(log_likelihood(fresh, xt, 5, seed=0), log_likelihood(model, xt, 5, seed=0),
                               rtol=0, atol=0)
    assert evaluate(fresh, xt, k=5)["bits_per_dim"] is None  # a density after a transform


def test_bounded_likelihoods_refuse_standardization_and_unfitted_models_refuse_data():
    with pytest.raises(ConfigError, match="preprocess none"):
        build_model(model_config(likelihood="bernoulli", preprocess="standardize"), (D,))
    model = build_model(model_config(likelihood="gaussian", preprocess="standardize", hidden=(8,)), (D,))
    with pytest.raises(RuntimeError, match="preprocess.fit"):
        model.check_data(torch.zeros(3, D), "x")
    plain = build_model(model_config(likelihood="gaussian", hidden=(8,)), (D,))
    assert plain.preprocess.identity and "preprocess.loc" not in plain.state_dict()


# -- training reaches the pPCA maximum likelihood in raw units -------------------------------------
def ppca_raw(n, seed):
    """pPCA data x = mu + W z + 0.5 eps in units of thousands (non-zero mean, unequal loadings)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-3, 3, size=(8, 2)) * 1e3
    mu = rng.uniform(-5, 5, size=8) * 1e3
    return (rng.normal(size=(n, 2)) @ w.T + mu + 500.0 * rng.normal(size=(n, 8))).astype(np.float64)


@pytest.mark.parametrize("kind", ["standardize-shared", "standardize"])
def test_trained_linear_vae_reaches_the_ppca_likelihood_of_the_raw_data(kind):
    x = ppca_raw(5000, seed=4)
    x_train, x_test = x[:4000], x[4000:]
    if kind == "standardize-shared":  # the exact pPCA of the raw data (Tipping & Bishop 1999)
        oracle = PCA(n_components=2).fit(x_train).score(x_test)
    else:  # pPCA of the z-scores, mapped back to raw units by the log-Jacobian
        sc = StandardScaler().fit(x_train)
        oracle = (PCA(n_components=2).fit(sc.transform(x_train)).score(sc.transform(x_test))
                  - np.log(sc.scale_).sum())
    torch.manual_seed(0)
    model = build_model(model_config(arch="linear", likelihood="gaussian", learn_obs_std=True,
                                    latent_dim=2, preprocess=kind), (8,))
    model.preprocess.fit(torch.from_numpy(x_train.astype(np.float32)))
    data = Dataset.from_arrays("ppca", x_train.astype(np.float32), x_test.astype(np.float32))
    Trainer(model, TrainConfig(epochs=60, lr=1e-2, lr_schedule="cosine", precision="fp32"),
            log=lambda s: None).fit(data)
    ll = log_likelihood(model, data.x_test, 500, seed=0).mean().item()
    assert abs(ll - oracle) < 0.05, (ll, oracle)


@pytest.mark.parametrize("extra", [dict(top_latent_dims=(2,)), dict(conditional=True, num_classes=3),
                                   dict(likelihood="laplace")])
def test_every_model_adds_the_log_jacobian_to_the_same_model_on_standardized_data(extra):
    """Ladder, conditional and laplace models in raw units against the identical model fed the
    z-scores: the same codes and ratios, and log p(x|z) lower by exactly sum(log scale)."""
    kw = dict(likelihood="gaussian-predicted", hidden=(16,), latent_dim=3) | extra
    torch.manual_seed(0)
    raw_model = build_model(model_config(preprocess="standardize", **kw), (D,)).double()
    x = torch.from_numpy(raw_gaussian_data(60)).double()
    raw_model.preprocess.fit(x)
    plain = build_model(model_config(**kw), (D,)).double()
    plain.load_state_dict({k: v for k, v in raw_model.state_dict().items()
                           if not k.startswith("preprocess.")})
    loc, scale = raw_model.preprocess.loc, raw_model.preprocess.scale
    y = torch.arange(60) % 3 if extra.get("conditional") else None
    noise = torch.randn(4, 60, raw_model.noise_dim, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    a = raw_model.terms(x, y, 4, noise=noise, weights=True)
    b = plain.terms((x - loc) / scale, y, 4, noise=noise, weights=True)
    torch.testing.assert_close(a.log_ratio, b.log_ratio, rtol=0, atol=0)
    torch.testing.assert_close(a.log_px, b.log_px - scale.log().sum(), rtol=1e-12, atol=1e-9)
    z = raw_model.sample_prior(5, torch.Generator().manual_seed(1))
    yz = None if y is None else y[:5]
    torch.testing.assert_close(raw_model.decode(z, yz).mean, loc + scale * plain.decode(z, yz).mean)
