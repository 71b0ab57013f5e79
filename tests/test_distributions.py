"""The probability families against independent oracles (torch.distributions, scipy)."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.distributions import DiagonalNormal
from vaekit.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vaekit.posteriors import DiagonalGaussianPosterior
from vaekit.priors import StandardNormalPrior

torch.set_default_dtype(torch.float32)


def params(batch=5, latent=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2 * latent, generator=g, dtype=torch.float64)


def test_posterior_log_prob_matches_full_covariance_oracle():
    p = params()
    q = DiagonalGaussianPosterior(4, min_var=1e-3)(p)
    mu, logvar = p.float().chunk(2, -1)
    var = logvar.exp() + 1e-3  # the floor is part of the variance
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    oracle = MultivariateNormal(mu.double(), covariance_matrix=torch.diag_embed(var.double()))
    torch.testing.assert_close(q.log_prob(z).double(), oracle.log_prob(z.double()), rtol=1e-5, atol=1e-5)
    scipy_lp = [st.multivariate_normal(mu[i].numpy(), np.diag(var[i].numpy())).logpdf(z[i].numpy())
                for i in range(5)]
    np.testing.assert_allclose(q.log_prob(z).numpy(), scipy_lp, rtol=1e-5)


def test_variance_floor_bounds_density():
    q = DiagonalGaussianPosterior(2, min_var=1e-5)(torch.tensor([[0.0, 0.0, -80.0, -80.0]]))
    assert torch.allclose(q.variance, torch.full((1, 2), 1e-5), rtol=1e-4)
    assert torch.isfinite(q.log_prob(q.mean)).all()


def test_kl_closed_form_matches_formula_and_monte_carlo():
    q = DiagonalGaussianPosterior(3, min_var=0.0)(params(batch=2, latent=3).float())
    p = StandardNormalPrior(3)()
    kl = kl_divergence(q, p)
    mu, var = q.mean, q.variance
    formula = 0.5 * (var + mu**2 - 1 - var.log()).sum(-1)  # Kingma & Welling 2013, App. B
    torch.testing.assert_close(kl, formula)
    z = q.rsample((200_000,), generator=torch.Generator().manual_seed(3))  # (S, batch, latent)
    log_ratio = (q.log_prob(z) - p.log_prob(z)).double()
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    assert (torch.abs(mc - kl.double()) < 4 * se).all(), (mc, kl, se)


def test_rsample_is_reparameterized_and_seeded():
    loc = torch.tensor([0.5, -1.0], requires_grad=True)
    scale = torch.tensor([2.0, 0.5], requires_grad=True)
    d = DiagonalNormal(loc, scale)
    z1 = d.rsample(generator=torch.Generator().manual_seed(0))
    z2 = d.rsample(generator=torch.Generator().manual_seed(0))
    assert torch.equal(z1, z2)
    eps = torch.randn(2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z1, loc + eps * scale)
    z1.sum().backward()
    torch.testing.assert_close(loc.grad, torch.ones(2))  # dz/dmu = 1
    torch.testing.assert_close(scale.grad, eps)           # dz/dsigma = eps


def test_reparameterized_gradient_matches_finite_difference():
    """d/dmu E[f(z)] by the pathwise estimator equals a central finite difference (common noise)."""
    eps = torch.randn(4000, 2, generator=torch.Generator().manual_seed(5))
    f = lambda z: (z.sin() * z).sum(-1)

    def expectation(loc):
        return f(loc + eps * torch.tensor([0.7, 1.3])).mean()

    loc = torch.tensor([0.3, -0.4], requires_grad=True)
    expectation(loc).backward()
    h = 1e-3
    fd = torch.stack([(expectation(loc.detach() + h * e) - expectation(loc.detach() - h * e)) / (2 * h)
                      for e in torch.eye(2)])
    torch.testing.assert_close(loc.grad, fd, rtol=1e-3, atol=1e-3)


def test_bernoulli_from_logits_matches_sigmoid_bce():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(3, 1, 4, 4, generator=g)
    x = torch.rand(3, 1, 4, 4, generator=g)
    lp = BernoulliLikelihood((1, 4, 4))(logits).log_prob(x)
    oracle = -F.binary_cross_entropy(torch.sigmoid(logits.double()), x.double(),
                                     reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(lp.double(), oracle, rtol=1e-5, atol=1e-4)


def test_bernoulli_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0, 100.0]])
    lp = BernoulliLikelihood((3,))(logits).log_prob(torch.tensor([[1.0, 0.0, 0.0]]))
    # log sigmoid(100) ~ 0, log(1 - sigmoid(-100)) ~ 0, log(1 - sigmoid(100)) = -100
    torch.testing.assert_close(lp, torch.tensor([-100.0]))


def test_bernoulli_refuses_data_outside_unit_interval():
    from vaekit.errors import DataError

    with pytest.raises(DataError, match="--likelihood gaussian"):
        BernoulliLikelihood((2,)).check_data(torch.tensor([[0.0, 3.0]]), "x")


def test_gaussian_likelihood_matches_scipy():
    g = torch.Generator().manual_seed(2)
    loc, x = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lp = GaussianLikelihood((6,), obs_std=0.3)(loc).log_prob(x)
    oracle = st.norm(loc.numpy(), 0.3).logpdf(x.numpy()).sum(-1)
    np.testing.assert_allclose(lp.numpy(), oracle, rtol=1e-5)


def test_laplace_likelihood_matches_scipy():
    from vaekit.likelihoods import LaplaceLikelihood

    g = torch.Generator().manual_seed(4)
    loc, x = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    lik = LaplaceLikelihood((5,), obs_std=0.7)
    np.testing.assert_allclose(lik(loc).log_prob(x).numpy(),
                               st.laplace(loc.numpy(), 0.7).logpdf(x.numpy()).sum(-1), rtol=1e-5)
    learned = LaplaceLikelihood((5,), obs_std=0.7, learn_obs_std=True, min_obs_var=0.0)
    np.testing.assert_allclose(learned(loc).log_prob(x).detach().numpy(),
                               st.laplace(loc.numpy(), 0.7).logpdf(x.numpy()).sum(-1), rtol=1e-5)


def test_continuous_bernoulli_is_a_normalised_density():
    """Its density integrates to 1 over [0, 1] (trapezoid rule), unlike the Bernoulli's."""
    from vaekit.likelihoods import ContinuousBernoulliLikelihood

    logits = torch.tensor([[-3.0], [0.0], [0.01], [2.5]])
    grid = torch.linspace(0, 1, 20001)
    lik = ContinuousBernoulliLikelihood((1,))
    dens = torch.stack([lik(logits).log_prob(torch.full((4, 1), float(v))).exp() for v in grid], 1)
    torch.testing.assert_close(torch.trapezoid(dens, grid), torch.ones(4), rtol=1e-4, atol=1e-4)
    bern = BernoulliLikelihood((1,))
    mass = torch.stack([bern(logits).log_prob(torch.full((4, 1), float(v))).exp() for v in grid], 1)
    assert (torch.trapezoid(mass, grid) < 0.99).all()


def test_new_likelihoods_train_end_to_end(tmp_path):
    from vaekit.cli import main

    x = np.random.default_rng(0).random((60, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for lik in ("laplace", "continuous-bernoulli"):
        assert main(["train", str(tmp_path / "x.npy"), "--likelihood", lik, "--epochs", "2", "--hidden", "8",
                     "--latent-dim", "2", "--out", str(tmp_path / lik), "--no-report"]) == 0
