"""beta-TCVAE: the minibatch estimates against brute force (scipy), the total correlation against
closed forms and an independent Monte Carlo over torch's mixture, the KL decomposition against the
closed-form KL, then the objective, its configuration checks and a training run."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from scipy.special import logsumexp
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from vaekit.cli.main import main
from vaekit.config.settings import ModelConfig, RunConfig
from vaekit.config.options import OptionError
from vaekit.parts.distributions import DiagonalNormal
from vaekit.models.vae import VAEModel
from vaekit.parts.objectives import negative_elbo, negative_tcvae, reported_loss
from vaekit.parts.total_correlation import (aggregate_log_density, decompose_kl, diagonal_parts,
                                      total_correlation)


def brute_force(z, loc, scale, n=None):
    """MWS (Chen et al. 2018) by loops and scipy: log q(z_i) and log q(z_id) for each sample."""
    k, b, dims = z.shape
    joint, marg = np.zeros((k, b)), np.zeros((k, b, dims))
    const = math.log(b) + (math.log(n) if n else 0.0)
    for s in range(k):
        for i in range(b):
            per = np.array([[st.norm.logpdf(z[s, i, d], loc[j, d], scale[j, d]) for d in range(dims)]
                            for j in range(b)])  # (b, dims)
            joint[s, i] = logsumexp(per.sum(1)) - const
            marg[s, i] = [logsumexp(per[:, d]) - const for d in range(dims)]
    return joint, marg


@pytest.mark.parametrize("n", [None, 1000])
def test_minibatch_estimates_match_brute_force(n):
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(5, 3)), rng.uniform(0.3, 1.5, (5, 3))
    z = rng.normal(size=(2, 5, 3)) * 1.5
    joint, marg = aggregate_log_density(*(torch.from_numpy(a) for a in (z, loc, scale)), n)
    want_joint, want_marg = brute_force(z, loc, scale, n)
    np.testing.assert_allclose(joint.numpy(), want_joint, rtol=1e-12)
    np.testing.assert_allclose(marg.numpy(), want_marg, rtol=1e-12)
    qz = DiagonalNormal(torch.from_numpy(loc), torch.from_numpy(scale))
    tc = total_correlation(torch.from_numpy(z), qz, n).numpy()
    np.testing.assert_allclose(tc, want_joint - want_marg.sum(-1), rtol=1e-10)


def test_mws_differs_from_the_batch_mixture_by_a_constant():
    """Given N, every MWS log-density is log N lower: (D - 1) log N more TC, no gradient."""
    torch.manual_seed(0)
    qz = DiagonalNormal(torch.randn(7, 4, dtype=torch.float64), torch.rand(7, 4).double() + 0.2)
    z = qz.rsample((3,))
    own, mws = total_correlation(z, qz), total_correlation(z, qz, dataset_size=5000)
    torch.testing.assert_close(mws - own, torch.full_like(own, 3 * math.log(5000)))


def test_codes_that_ignore_the_input_have_no_total_correlation():
    """q(z|x) the same for every x: q(z) = q(z|x) factorises, and the estimate is exactly 0."""
    qz = DiagonalNormal(torch.tensor([[0.3, -1.0, 2.0]]).repeat(6, 1).double(),
                        torch.tensor([[0.5, 1.0, 2.0]]).repeat(6, 1).double())
    z = qz.rsample((4,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(total_correlation(z, qz), torch.zeros(4, 6, dtype=torch.float64))


@pytest.mark.parametrize("means,want", [
    ([[-5.0, -5.0], [5.0, 5.0]], math.log(2)),                     # z_2 = z_1: one shared bit
    ([[-5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [5.0, 5.0]], 0.0),   # independent bits
])
def test_total_correlation_of_separated_mixtures_in_closed_form(means, want):
    """The batch is the whole data set (M = N), so the estimator evaluates the aggregate mixture
    exactly; with components 10 sd apart, TC = sum_d h(z_d) - h(z) = (shared bits) log 2."""
    loc = torch.tensor(means, dtype=torch.float64)
    qz = DiagonalNormal(loc, torch.ones_like(loc))
    z = qz.rsample((2000,), generator=torch.Generator().manual_seed(1))
    assert float(total_correlation(z, qz).mean()) == pytest.approx(want, abs=0.01)


def test_total_correlation_matches_an_independent_monte_carlo_of_the_mixture():
    """Overlapping components: the mean estimate (M = N) against E_q(z)[log q(z) - sum_d log q(z_d)]
    computed with torch.distributions.MixtureSameFamily on independent draws."""
    rng = np.random.default_rng(3)
    loc = torch.from_numpy(rng.normal(size=(6, 3)) @ np.array([[1, 0.8, 0], [0, 0.6, 0.5], [0, 0, 1.0]]))
    scale = torch.from_numpy(rng.uniform(0.4, 0.9, (6, 3)))
    qz = DiagonalNormal(loc, scale)
    ours = total_correlation(qz.rsample((20000,), generator=torch.Generator().manual_seed(0)), qz)
    mix = Categorical(torch.ones(6, dtype=torch.float64))
    joint = MixtureSameFamily(mix, Independent(Normal(loc, scale), 1))
    torch.manual_seed(5)
    zs = joint.sample((200000,))  # (n, 3)
    marginal = [MixtureSameFamily(mix, Normal(loc[:, d], scale[:, d])).log_prob(zs[:, d]) for d in range(3)]
    oracle = joint.log_prob(zs) - sum(marginal)
    se = math.hypot(float(ours.std()) / math.sqrt(ours.numel()), float(oracle.std()) / math.sqrt(len(oracle)))
    assert float(oracle.mean()) > 0.1  # a case with real dependence
    assert abs(float(ours.mean()) - float(oracle.mean())) < 4 * se


def test_kl_decomposition_adds_up_and_averages_to_the_closed_form_kl():
    """MI + TC + dimension-wise KL = log q(z|x) - log p(z) at every code, whose mean over codes
    is KL(q(z|x) || p(z)) (torch.distributions, closed form)."""
    torch.manual_seed(0)
    qz = DiagonalNormal(torch.randn(8, 3, dtype=torch.float64), 0.3 + torch.rand(8, 3, dtype=torch.float64))
    pz = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)
    z = qz.rsample((40000,), generator=torch.Generator().manual_seed(2))
    parts = decompose_kl(z, qz, pz)
    total = parts.mutual_info + parts.total_correlation + parts.dimwise_kl
    torch.testing.assert_close(total, qz.log_prob(z) - pz.log_prob(z))
    closed = kl_divergence(qz, pz)  # (8,)
    se = total.std(0) / math.sqrt(len(z))
    assert (total.mean(0) - closed).abs().max() < 4 * se.max()
    assert (parts.total_correlation.mean(0) < closed).all()


def small_model(**kw) -> VAEModel:
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(hidden=(16,), latent_dim=3, **kw), (6,))
    model.preprocess.fit(torch.zeros(2, 6))
    return model


def test_tcvae_objective_is_the_elbo_plus_weighted_total_correlation(blobs):
    model = small_model()
    x = torch.from_numpy(blobs[:32])
    noise = torch.randn(2, 32, 3, generator=torch.Generator().manual_seed(0))
    elbo = negative_elbo(model, x, noise=noise, k=2)
    one = negative_tcvae(model, x, beta=1.0, noise=noise, k=2)
    six = negative_tcvae(model, x, beta=6.0, noise=noise, k=2)
    torch.testing.assert_close(one.loss, elbo.loss)  # beta = 1 is the ELBO
    torch.testing.assert_close(six.rec, elbo.rec)
    torch.testing.assert_close(six.kl, elbo.kl)
    z = model.encode(x).rsample((2,), noise=noise)
    tc = total_correlation(z, model.encode(x)).mean(0)  # the same codes, averaged over k
    torch.testing.assert_close(six.tc, tc)
    torch.testing.assert_close(six.loss, elbo.loss + 5 * tc)
    assert reported_loss(1.0, 2.0, 6.0, 0.5) == 1.0 + 2.0 + 5 * 0.5
    assert reported_loss(1.0, 2.0, 6.0) == 1.0 + 12.0
    six.loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_tcvae_draws_its_own_noise_from_the_generator(blobs):
    model = small_model()
    x = torch.from_numpy(blobs[:16])
    a = negative_tcvae(model, x, 4.0, generator=torch.Generator().manual_seed(3))
    b = negative_tcvae(model, x, 4.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.loss, b.loss)


@pytest.mark.parametrize("flat,fields", [
    ({"objective": "tcvae", "posterior": "full-covariance"}, ("objective", "posterior")),
    ({"objective": "tcvae", "top_latent_dims": (4,)}, ("objective", "posterior")),
    ({"objective": "tcvae", "free_bits": 0.5}, ("free_bits", "objective")),
    ({"objective": "tcvae", "kl_warmup": 3}, ("kl_warmup", "objective")),
])
def test_tcvae_refuses_what_it_cannot_estimate(flat, fields):
    with pytest.raises(OptionError) as e:
        RunConfig().update(flat).validate()
    assert e.value.fields == fields


def test_diagonal_parts_refuse_a_full_covariance():
    from vaekit.parts.distributions import CholeskyNormal
    from vaekit.errors import ConfigError

    with pytest.raises(ConfigError, match="posterior diagonal"):
        diagonal_parts(CholeskyNormal(torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3)))


def test_train_tcvae_reports_its_total_correlation(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits", "--out", str(run), "--epochs", "2", "--hidden", "32",
                 "--latent-dim", "4", "--objective", "tcvae", "--beta", "6", "--no-report"]) == 0
    import json

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert math.isfinite(r["train_tc"]) and math.isfinite(r["test_tc"])
        assert r["train_loss"] == pytest.approx(r["train_rec"] + r["train_kl"] + 5 * r["train_tc"])
        assert r["test_loss"] == pytest.approx(r["test_rec"] + r["test_kl"] + 5 * r["test_tc"], rel=1e-6)
    assert main(["train", "digits", "--out", str(tmp_path / "bad"), "--objective", "tcvae",
                 "--posterior", "full-covariance"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --objective tcvae needs") and "--posterior diagonal" in err[-1]
