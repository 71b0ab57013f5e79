"""The probability families against independent oracles (torch.distributions, scipy), beyond the
checks that tests/test_family_table.py runs over every registered family."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

from vaekit.parts.distributions import DiagonalNormal
from vaekit.parts.likelihoods import BernoulliLikelihood
from vaekit.parts.posteriors import POSTERIORS, DiagonalGaussianPosterior
from vaekit.parts.priors import StandardNormalPrior

torch.set_default_dtype(torch.float32)


def params(batch=5, latent=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2 * latent, generator=g, dtype=torch.float64)


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


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_posterior_rsample_gradients_match_finite_differences(name):
    """z = rsample(encoder output) is differentiable in the encoder output (the pathwise gradient,
    Kingma & Welling 2013): autograd against float64 central differences, for the noise given and
    for the noise drawn from a generator seeded anew on each call (common random numbers)."""
    post = POSTERIORS[name](3, min_var=1e-2)
    g = torch.Generator().manual_seed(5)
    p = (0.7 * torch.randn(2, post.param_dim(3), generator=g, dtype=torch.float64)).requires_grad_()
    noise = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def given(p):
        return post(p).rsample(noise=noise).sin()

    def drawn(p):
        return post(p).rsample((4,), generator=torch.Generator().manual_seed(6)).sin()

    assert torch.equal(given(p), drawn(p))
    assert torch.autograd.gradcheck(given, (p,), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradcheck(drawn, (p,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_bernoulli_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0, 100.0]])
    lp = BernoulliLikelihood((3,))(logits).log_prob(torch.tensor([[1.0, 0.0, 0.0]]))
    # log sigmoid(100) ~ 0, log(1 - sigmoid(-100)) ~ 0, log(1 - sigmoid(100)) = -100
    torch.testing.assert_close(lp, torch.tensor([-100.0]))


def test_bernoulli_refuses_data_outside_unit_interval():
    from vaekit.errors import DataError

    with pytest.raises(DataError, match="--likelihood gaussian"):
        BernoulliLikelihood((2,)).check_data(torch.tensor([[0.0, 3.0]]), "x")


def test_continuous_bernoulli_is_a_normalised_density():
    """Its density integrates to 1 over [0, 1] (trapezoid rule), unlike the Bernoulli's."""
    from vaekit.parts.likelihoods import ContinuousBernoulliLikelihood

    logits = torch.tensor([[-3.0], [0.0], [0.01], [2.5]])
    grid = torch.linspace(0, 1, 20001)
    lik = ContinuousBernoulliLikelihood((1,))
    points = grid.view(-1, 1, 1)  # (n, 1, 1) against logits (4, 1): (n, 4) densities
    dens = lik(logits).log_prob(points).exp()
    torch.testing.assert_close(torch.trapezoid(dens, grid, dim=0), torch.ones(4), rtol=1e-4, atol=1e-4)
    mass = BernoulliLikelihood((1,))(logits).log_prob(points).exp()
    assert (torch.trapezoid(mass, grid, dim=0) < 0.99).all()


def test_new_likelihoods_train_end_to_end(tmp_path):
    from vaekit.cli.main import main

    x = np.random.default_rng(0).random((60, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for lik in ("laplace", "continuous-bernoulli"):
        assert main(["train", str(tmp_path / "x.npy"), "--likelihood", lik, "--epochs", "2", "--hidden", "8",
                     "--latent-dim", "2", "--out", str(tmp_path / lik), "--no-report"]) == 0
