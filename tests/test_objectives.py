"""The ELBO against an independent Monte-Carlo computation, and the model's shapes and gradients."""

import numpy as np
import pytest
import scipy.stats as st
import torch

from vaekit.config.settings import ModelConfig
from vaekit.models.vae import VAEModel
from vaekit.parts.objectives import negative_elbo


def small_model(seed=0, **kw) -> VAEModel:
    torch.manual_seed(seed)
    return VAEModel(ModelConfig(hidden=(16,), latent_dim=3, **kw), (6,))


def test_elbo_matches_independent_monte_carlo(blobs):
    """Average of vaekit's one-sample estimates vs E_q[log p(x|z) + log p(z) - log q(z|x)] by scipy."""
    model = small_model()
    x = torch.from_numpy(blobs[:4])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ours = torch.stack([negative_elbo(model, x, generator=g).loss for _ in range(4000)]).mean(0)
        q = model.encode(x)
        mu, sd = q.mean.numpy(), q.stddev.numpy()
        rng = np.random.default_rng(1)
        estimates = []
        for _ in range(4000):
            z = mu + sd * rng.standard_normal(mu.shape)
            p = torch.sigmoid(model.decoder(torch.from_numpy(z).float())).double().numpy()
            xs = blobs[:4].astype(np.float64)
            log_px = (xs * np.log(p) + (1 - xs) * np.log1p(-p)).sum(-1)  # Bernoulli, x in [0, 1]
            log_pz = st.norm.logpdf(z).sum(-1)
            log_qz = st.norm.logpdf(z, mu, sd).sum(-1)
            estimates.append(-(log_px + log_pz - log_qz))
    oracle = np.mean(estimates, 0)
    np.testing.assert_allclose(ours.numpy(), oracle, rtol=2e-3)


def test_terms_add_up_and_beta_weights_kl(blobs):
    model = small_model()
    x = torch.from_numpy(blobs[:8])
    t1 = negative_elbo(model, x, beta=1.0, generator=torch.Generator().manual_seed(0))
    t4 = negative_elbo(model, x, beta=4.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t1.loss, t1.rec + t1.kl)
    torch.testing.assert_close(t4.loss, t4.rec + 4 * t4.kl)
    torch.testing.assert_close(t1.rec, t4.rec)  # same noise, same reconstruction term
    assert t1.loss.shape == (8,)


def test_gradients_reach_every_parameter(blobs):
    model = small_model()
    model(torch.from_numpy(blobs[:8]), generator=torch.Generator().manual_seed(0)).loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 17, 23), (4, 5, 9)])
def test_conv_body_fits_any_image_size(shape):
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(arch="conv", hidden=(32,), latent_dim=4, likelihood="gaussian"), shape)
    x = torch.rand(2, *shape)
    px = model.decode(model.encode(x).mean)
    assert px.mean.shape == (2, *shape)
    assert model(x).loss.shape == (2,)


def test_mlp_hidden_layers_and_vector_data():
    model = VAEModel(ModelConfig(hidden=(32, 16), latent_dim=2), (10,))
    widths = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 4]  # two hidden layers, then (mean, log-variance) for 2 latents
    widths = [m.out_features for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 32, 10]


def test_reference_configuration_has_reference_size():
    """784-400-(20,20) / 20-400-784: the listing's 652,824 parameters."""
    model = VAEModel(ModelConfig(), (1, 28, 28))
    assert sum(p.numel() for p in model.parameters()) == 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784
