"""Full-covariance posterior and the priors against independent oracles (torch, scipy, numpy), beyond
the checks that tests/test_family_table.py runs over every registered family."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from scipy.special import logsumexp
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaekit.config.settings import ModelConfig
from vaekit.parts.distributions import DiagonalNormal, GaussianMixture
from vaekit.errors import ConfigError
from vaekit.parts.posteriors import POSTERIORS, CholeskyGaussianPosterior
from vaekit.parts.priors import PRIORS, MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior


def raw_params(batch=4, latent=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return 0.7 * torch.randn(batch, CholeskyGaussianPosterior.param_dim(latent), generator=g, dtype=dtype)


def explicit_factor(p, latent, min_var):
    """The documented layout, built entry by entry: mean, raw diagonal, strictly-lower rows."""
    p = p.detach().double().numpy()
    out = np.zeros((len(p), latent, latent))
    for b in range(len(p)):
        k = 2 * latent
        for i in range(latent):
            out[b, i, i] = math.sqrt(math.exp(p[b, latent + i]) + min_var)
            for j in range(i):
                out[b, i, j] = p[b, k]
                k += 1
    return p[:, :latent], out


def test_param_dim_and_factor_layout():
    assert [CholeskyGaussianPosterior.param_dim(n) for n in (1, 2, 3, 20)] == [2, 5, 9, 230]
    p = raw_params()
    q = CholeskyGaussianPosterior(3, min_var=1e-2)(p)
    mu, tril = explicit_factor(p, 3, 1e-2)
    np.testing.assert_allclose(q.mean.numpy(), mu)
    np.testing.assert_allclose(q.scale_tril.numpy(), tril, rtol=1e-12)
    assert POSTERIORS["full-covariance"] is CholeskyGaussianPosterior


def test_bf16_params_give_a_float32_distribution():
    q = CholeskyGaussianPosterior(3)(raw_params(dtype=torch.float32).bfloat16())
    assert q.loc.dtype == torch.float32 and q.scale_tril.dtype == torch.float32


def kl_oracle(mu, cov, m, s):
    """KL(N(mu, cov) || N(m, diag s^2)) by the textbook formula with an explicit inverse."""
    prec = np.diag(1 / s**2)
    d = m - mu
    return 0.5 * (np.trace(prec @ cov) + d @ prec @ d - len(mu) + np.sum(np.log(s**2))
                  - np.linalg.slogdet(cov)[1])


def test_kl_to_normal_prior_matches_formula_and_monte_carlo():
    p = raw_params(batch=2)
    q = CholeskyGaussianPosterior(3, min_var=0.0)(p)
    prior = StandardNormalPrior(3).double()()
    kl = kl_divergence(q, prior)
    assert kl.shape == (2,)
    mu, tril = explicit_factor(p, 3, 0.0)
    cov = tril @ tril.transpose(0, 2, 1)
    formula = [0.5 * (np.trace(cov[b]) + mu[b] @ mu[b] - 3 - np.linalg.slogdet(cov[b])[1]) for b in range(2)]
    np.testing.assert_allclose(kl.numpy(), formula, rtol=1e-10)
    z = q.rsample((100_000,), generator=torch.Generator().manual_seed(3))  # (S, batch, L)
    log_ratio = q.log_prob(z) - prior.log_prob(z)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    assert (torch.abs(mc - kl) < 4 * se).all(), (mc, kl, se)


def test_kl_to_general_diagonal_normal_matches_oracle():
    p = raw_params(batch=3)
    q = CholeskyGaussianPosterior(3, min_var=0.0)(p)
    g = torch.Generator().manual_seed(4)
    m = torch.randn(3, 3, generator=g, dtype=torch.float64)
    s = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.5
    kl = kl_divergence(q, DiagonalNormal(m, s))
    mu, tril = explicit_factor(p, 3, 0.0)
    oracle = [kl_oracle(mu[b], tril[b] @ tril[b].T, m[b].numpy(), s[b].numpy()) for b in range(3)]
    np.testing.assert_allclose(kl.numpy(), oracle, rtol=1e-10)
    full = MultivariateNormal(m, covariance_matrix=torch.diag_embed(s**2))
    torch.testing.assert_close(kl, kl_divergence(q, full))  # torch's general MVN-MVN KL


def test_diagonal_kl_keeps_the_independent_path():
    from torch.distributions.kl import _dispatch_kl, _kl_independent_independent

    assert _dispatch_kl(DiagonalNormal, DiagonalNormal) is _kl_independent_independent
    g = torch.Generator().manual_seed(5)
    loc, scale = torch.randn(2, 3, generator=g), torch.rand(2, 3, generator=g) + 0.2
    q, p = DiagonalNormal(loc, scale), StandardNormalPrior(3)()
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1))


def test_reparameterized_gradient_matches_finite_difference():
    post = CholeskyGaussianPosterior(3, min_var=1e-3)
    noise = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def f(p):
        return post(p).rsample(noise=noise).sin().sum()

    p = raw_params(batch=2).requires_grad_()
    f(p).backward()
    h = 1e-6
    fd = torch.zeros_like(p)
    for idx in np.ndindex(*p.shape):
        e = torch.zeros_like(p)
        e[idx] = h
        fd[idx] = (f(p.detach() + e) - f(p.detach() - e)) / (2 * h)
    torch.testing.assert_close(p.grad, fd, rtol=1e-6, atol=1e-8)


def test_noise_and_generator_paths_agree():
    q = CholeskyGaussianPosterior(3)(raw_params().float())
    z = q.rsample((5,), generator=torch.Generator().manual_seed(9))
    assert z.shape == (5, 4, 3)
    eps = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(z, q.rsample((5,), noise=eps))
    assert torch.equal(z, q.rsample((5,), generator=torch.Generator().manual_seed(9)))
    assert not torch.allclose(z, q.rsample((5,), generator=torch.Generator().manual_seed(10)))
    by_hand = q.loc + torch.einsum("bij,bj->bi", q.scale_tril, eps[0])
    torch.testing.assert_close(q.rsample(noise=eps[0]), by_hand)  # (batch, L) noise


def test_variance_floor_keeps_density_finite():
    p = torch.zeros(1, CholeskyGaussianPosterior.param_dim(3), dtype=torch.float64)
    p[:, 3:6] = -100.0  # exp(-100) ~ 4e-44: without the floor the covariance would be singular
    p[:, 6:] = torch.tensor([0.5, -0.3, 0.2])
    q = CholeskyGaussianPosterior(3, min_var=1e-5)(p)
    torch.testing.assert_close(q.scale_tril.diagonal(dim1=-2, dim2=-1), torch.full((1, 3), math.sqrt(1e-5),
                                                                                 dtype=torch.float64))
    cov = q.scale_tril @ q.scale_tril.mT
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    assert torch.isfinite(q.log_prob(q.mean)).all()
    torch.testing.assert_close(q.log_prob(q.mean), MultivariateNormal(q.mean, covariance_matrix=cov).log_prob(q.mean))


def set_mixture(prior, means, log_scales, logits):
    with torch.no_grad():
        prior.means.copy_(means)
        prior.log_scales.copy_(log_scales)
        prior.logits.copy_(logits)


def mixture_oracle(means, scales, logits):
    """numpy weights, means, analytic mean and covariance of a diagonal-Gaussian mixture."""
    w = np.exp(logits - logsumexp(logits))
    mean = w @ means
    cov = sum(w[k] * (np.diag(scales[k] ** 2) + np.outer(means[k], means[k])) for k in range(len(w)))
    return w, mean, cov - np.outer(mean, mean)


def test_mixture_prior_samples_have_the_mixture_moments_and_are_seeded():
    prior = MixtureOfGaussiansPrior(2, components=3, min_var=0.0)
    set_mixture(prior, torch.tensor([[-3.0, 0.0], [2.0, 2.0], [0.5, -1.5]]),
                torch.tensor([[0.0, -0.5], [-1.0, 0.2], [0.3, 0.0]]), torch.tensor([0.0, 1.0, -0.5]))
    before = torch.get_rng_state()
    z = prior.sample(200_000, generator=torch.Generator().manual_seed(12)).double()
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is not touched
    _, mean, cov = mixture_oracle(prior.means.detach().numpy(), prior.log_scales.detach().exp().numpy(),
                                  prior.logits.detach().numpy())
    np.testing.assert_allclose(z.mean(0).numpy(), mean, atol=0.03)
    np.testing.assert_allclose(torch.cov(z.T).numpy(), cov, atol=0.06)
    once = prior.sample(5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(once, prior.sample(5, generator=torch.Generator().manual_seed(12)))
    assert not torch.equal(once, prior.sample(5, generator=torch.Generator().manual_seed(13)))


def test_batched_mixture_draws_come_from_their_own_row():
    """Components of batch row r have means 10 r + k; near-zero scales make draws equal a mean."""
    means = 10.0 * torch.arange(2.0).view(2, 1, 1) + torch.arange(3.0).view(1, 3, 1).expand(2, 3, 2)
    mix = GaussianMixture(torch.zeros(2, 3), DiagonalNormal(means, torch.full((2, 3, 2), 1e-6)))
    z = mix.sample((50,), generator=torch.Generator().manual_seed(14))  # (50, 2, 2)
    assert z.shape == (50, 2, 2)
    k = z - 10.0 * torch.arange(2.0).view(1, 2, 1)
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
    assert ((k.round() >= 0) & (k.round() <= 2)).all() and len(k.round().unique()) == 3
    torch.testing.assert_close(k[..., 0], k[..., 1], atol=1e-4, rtol=0)


def test_vamp_needs_an_encoder_with_a_gaussian_posterior():
    prior = VampPrior(2, (3,), components=2)
    with pytest.raises(ConfigError, match="needs the encoder"):
        prior()
    with pytest.raises(ConfigError, match="diagonal or full-covariance"):
        prior(lambda x: Normal(x[:, :2], 1.0))


def test_standard_normal_prior_sample_and_log_prob():
    prior = StandardNormalPrior(3)
    z = prior.sample(4, generator=torch.Generator().manual_seed(20))
    assert torch.equal(z, prior().rsample((4,), generator=torch.Generator().manual_seed(20)))
    zs = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(21))
    np.testing.assert_allclose(prior().log_prob(zs).numpy(), st.norm().logpdf(zs.numpy()).sum(-1), rtol=1e-6)
    assert hasattr(prior(), "base_dist") and isinstance(prior(encode=None), DiagonalNormal)


def test_from_config_builds_every_prior():
    cfg = ModelConfig(latent_dim=3, prior_components=4, min_var=1e-4)
    assert set(PRIORS.names()) >= {"normal", "mixture", "vamp"}
    normal = PRIORS["normal"].from_config(3, (1, 2, 2), cfg)
    mixture = PRIORS["mixture"].from_config(3, (1, 2, 2), cfg)
    vamp = PRIORS["vamp"].from_config(3, (1, 2, 2), cfg)
    assert isinstance(normal, StandardNormalPrior) and normal.analytic_kl is True
    assert isinstance(mixture, MixtureOfGaussiansPrior) and mixture.analytic_kl is False
    assert isinstance(vamp, VampPrior) and vamp.analytic_kl is False
    assert mixture.means.shape == (4, 3) and mixture.logits.shape == (4,) and mixture.min_var == 1e-4
    assert vamp.pseudo_inputs.shape == (4, 1, 2, 2)
    assert ((vamp.pseudo_inputs >= 0) & (vamp.pseudo_inputs <= 1)).all()
    for p in (normal, mixture):
        assert p.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 3)
    with pytest.raises(ConfigError, match="prior-components"):
        PRIORS["mixture"].from_config(3, (4,), ModelConfig(prior_components=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_priors_sample_on_cuda_with_either_generator():
    cfg = ModelConfig(latent_dim=3, prior_components=4)
    torch.manual_seed(22)
    for name in ("normal", "mixture"):
        cpu = PRIORS[name].from_config(3, (4,), cfg)
        gpu = PRIORS[name].from_config(3, (4,), cfg)
        gpu.load_state_dict(cpu.state_dict())
        gpu.cuda()
        a = cpu.sample(6, generator=torch.Generator().manual_seed(1))
        b = gpu.sample(6, generator=torch.Generator().manual_seed(1))  # CPU generator, CUDA module
        assert b.is_cuda
        torch.testing.assert_close(a, b.cpu())
        c = gpu.sample(6, generator=torch.Generator("cuda").manual_seed(1))
        assert c.is_cuda and torch.equal(c, gpu.sample(6, generator=torch.Generator("cuda").manual_seed(1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diagonal_mixture_log_prob_matches_scipy_and_its_gradients_match_torch(dtype):
    """The matrix-product log-density (both priors' hot path) against scipy per component,
    including codes far from small components (where the expansion would cancel in float32),
    and its gradients against torch's own broadcast ``MixtureSameFamily``."""
    g = torch.Generator().manual_seed(21)
    k, latent = 7, 5
    loc = (3 * torch.randn(k, latent, generator=g, dtype=torch.float64)).requires_grad_()
    scale = (0.02 + torch.rand(k, latent, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.randn(k, generator=g, dtype=torch.float64).requires_grad_()
    z = torch.cat([loc.detach()[:3] + 1e-3, 8 * torch.randn(2, 4, latent, generator=g,
                                                             dtype=torch.float64).view(8, latent)])
    z = z.view(11, 1, latent).to(dtype).requires_grad_()  # (s, b, L) -> (s, b)
    mix = GaussianMixture(logits.to(dtype), DiagonalNormal(loc.to(dtype), scale.to(dtype)))
    lp = mix.log_prob(z)
    assert lp.shape == (11, 1) and lp.dtype == dtype

    zn, ln, sn = z.detach().double().view(11, latent).numpy(), loc.detach().numpy(), scale.detach().numpy()
    comp = np.stack([st.norm.logpdf(zn[:, None, :], ln[None], sn[None]).sum(-1)])[0]  # (11, K)
    log_pi = logits.detach().numpy() - logsumexp(logits.detach().numpy())
    want = logsumexp(comp + log_pi, axis=-1)
    np.testing.assert_allclose(lp.detach().double().view(-1).numpy(), want,
                               rtol=1e-6 if dtype == torch.float32 else 1e-10)

    oracle = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits.to(dtype).double()),  # the same rounded inputs
        torch.distributions.Independent(Normal(loc.to(dtype).double(), scale.to(dtype).double()), 1),
    ).log_prob(z.double())
    got = torch.autograd.grad(lp.double().sum(), (z, loc, scale, logits))
    ref = torch.autograd.grad(oracle.sum(), (z, loc, scale, logits))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)


def test_diagonal_mixture_log_prob_ignores_bf16_autocast():
    g = torch.Generator().manual_seed(22)
    mix = GaussianMixture(torch.zeros(4), DiagonalNormal(torch.randn(4, 3, generator=g), torch.full((4, 3), 0.1)))
    z = torch.randn(6, 3, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = mix.log_prob(z)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, mix.log_prob(z), rtol=0, atol=0)
