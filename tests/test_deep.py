"""The deep hierarchy (``--latent deep``, models/deep.py): numbers first (importance-sampled
log p(x) against quadrature of the same networks with torch.distributions, the ELBO as its
reconstruction term and the groups' closed-form KLs, KL balancing by hand, the decoder's path
from codes equal to the inference path), gradients, then the CLI end to end, one-line refusals,
bit-identical resume and the estimator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import distributions as D

from helpers import assert_one_error, cli, metrics
from vaekit.config.settings import ModelConfig, RunConfig
from vaekit.errors import ConfigError
from vaekit.evaluation.measures import importance_sample
from vaekit.models.build import build_model
from vaekit.models.deep import DeepVAE, soft_clamp


def tiny(dims=(1, 1), d=4, hidden=(8,), seed=0) -> DeepVAE:
    """A seeded deep model with its heads and cells moved off their near-identity start, so that
    posteriors differ from priors and the groups interact."""
    torch.manual_seed(seed)
    cfg = ModelConfig(latent="deep", latent_dim=dims[0], top_latent_dims=tuple(dims[1:]),
                      hidden=hidden, likelihood="bernoulli")
    cfg.validate()
    m = build_model(cfg, (d,)).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():  # the posterior heads less: a usable proposal
            p.add_((0.03 if name.startswith("q_heads") else 0.5)
                   * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.eval()


X4 = torch.tensor([[1., 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.float64)


@torch.no_grad()
def quadrature_log_px(m: DeepVAE, x: torch.Tensor, n: int = 801, half: float = 8.0) -> torch.Tensor:
    """log p(x) of a two-group model with one unit each, by a product grid over the prior's
    standard-normal noise ``(u_2, u_1)``: ``z_2 = u_2``, ``z_1 = mu_p(z_2) + sd_p(z_2) u_1``;
    stock Normal and Bernoulli densities, only the networks from vaekit."""
    u = torch.linspace(-half, half, n, dtype=torch.float64)
    du = u[1] - u[0]
    u2, u1 = torch.meshgrid(u, u, indexing="ij")
    u2, u1 = u2.reshape(-1, 1), u1.reshape(-1, 1)  # (n^2, 1)
    s = m.start.expand(len(u2), m.width)
    z2 = u2
    s = m.down[1](s, z2)
    mu, raw = m.p_heads[0](s).chunk(2, -1)
    z1 = mu + soft_clamp(raw).exp() * u1
    s = m.down[0](s, z1)
    logits = m.decoder(s)  # (n^2, d): the body's decoder, a Bernoulli's logits
    log_w = D.Normal(0., 1.).log_prob(u2).sum(-1) + D.Normal(0., 1.).log_prob(u1).sum(-1)
    out = []
    for row in x:
        log_px = D.Independent(D.Bernoulli(logits=logits), 1).log_prob(row.expand_as(logits))
        out.append(torch.logsumexp(log_px + log_w, 0) + 2 * torch.log(du))
    return torch.stack(out)


def test_importance_sampled_log_px_matches_quadrature():
    m = tiny()
    exact = quadrature_log_px(m, X4)
    ll, log_px, log_ratio = importance_sample(m, X4, k=50000, batch_size=3, seed=0)
    assert torch.allclose(ll, exact, atol=0.01), (ll, exact)
    assert (log_px + log_ratio < exact - 0.05).all()  # the ELBO: q is not the true posterior


def test_elbo_is_reconstruction_plus_the_groups_closed_form_kls():
    m = tiny(dims=(2, 3, 1), d=4)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, m.latent_dim, generator=g, dtype=torch.float64)
    t = m.terms(X4, noise=noise, weights=True)
    # the same draw by hand, group by group, with torch's KL of two Normals
    feats = m.infer(X4)
    eps = noise.split(m.dims, -1)
    kls = [None] * 3
    for i, q_mu, q_sd, p_mu, p_sd, z in m.top_down(feats, list(eps), lead=(1, 3))[0]:
        kls[i] = D.kl_divergence(D.Normal(q_mu, q_sd), D.Normal(p_mu, p_sd)).sum(-1)
    assert torch.allclose(t.kl, sum(kls), atol=1e-12)
    assert torch.allclose(t.kl_dims.sum(-1), t.kl)
    loss = m(X4, 1.0, noise=noise)
    assert torch.allclose(loss.loss, -t.log_px[0] + t.kl[0], atol=1e-12)
    assert torch.allclose(loss.rec, -t.log_px[0]) and torch.allclose(loss.kl, t.kl[0])
    # the analytic KL is the mean of log q - log p (minus the log ratio) over many draws
    many = m.terms(X4, k=40000, generator=g, weights=True)
    se = many.log_ratio.std(0) / math.sqrt(40000)
    assert ((-many.log_ratio.mean(0) - many.kl.mean(0)).abs() < 4 * se + 1e-3).all()


def test_decoding_the_codes_retraces_the_inference_path():
    m = tiny(dims=(2, 2, 2), d=4)
    noise = torch.randn(2, 3, m.latent_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    feats = m.infer(X4)
    zs = [None] * 3
    for i, *_, z in m.top_down(feats, list(noise.split(m.dims, -1)), lead=(2, 3))[0]:
        zs[i] = z
    t = m.terms(X4, k=2, noise=noise)
    assert torch.allclose(m.decode(torch.cat(zs, -1)).log_prob(X4), t.log_px, atol=1e-12)
    assert m.sample_prior(5, torch.Generator().manual_seed(0)).shape == (5, 6)
    assert m.encode(X4).mean.shape == (3, 6)


def test_kl_balancing_in_warm_up_by_hand():
    m = tiny(dims=(2, 1, 3), d=4).train()
    noise = torch.randn(1, 3, m.latent_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = m.terms(X4, noise=noise)
    group = torch.stack([c.sum(-1)[0] for c in t.kl_dims.split(m.dims, -1)], -1)  # (b, 3)
    gamma = (group.mean(0) + 0.01) / torch.tensor([2., 1., 3.], dtype=torch.float64)
    gamma = gamma / gamma.mean()
    out = m(X4, 0.3, noise=noise)
    assert torch.allclose(out.loss, -t.log_px[0] + 0.3 * (group * gamma).sum(-1), atol=1e-12)
    assert torch.allclose(out.kl, t.kl[0], atol=1e-12)  # the reported KL is the ELBO's
    assert torch.allclose(m(X4, 1.0, noise=noise).loss, -t.log_px[0] + t.kl[0], atol=1e-12)


def test_gradients_are_finite_and_reach_every_parameter():
    m = tiny(dims=(2, 2), d=4).train()
    m(X4, 0.5, generator=torch.Generator().manual_seed(0)).loss.sum().backward()
    m(X4, 1.0, generator=torch.Generator().manual_seed(0), name="iwae", k=3).loss.sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_four_groups_of_latent_dim_by_default():
    cfg = ModelConfig(latent="deep", latent_dim=3, hidden=(8,))
    assert build_model(cfg, (4,)).dims == (3, 3, 3, 3)


@pytest.mark.parametrize("extra, needle", [
    ({"objective": "tcvae"}, "objective elbo or iwae"), ({"conditional": True}, "conditional"),
    ({"posterior": "iaf"}, "posterior iaf"), ({"prior": "vamp"}, "prior vamp")])
def test_deep_refuses_what_does_not_apply(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig().update({"latent": "deep", **extra}).validate()


# -- the CLI, resume, refusals, estimator ------------------------------------------------------
SMALL = ["--latent", "deep", "--latent-dim", "2", "--top-latent-dims", "2,2", "--hidden", "16",
         "--batch-size", "32", "--kl-warmup", "2", "--clip-grad", "50", "--seed", "3"]


@pytest.fixture(scope="module")
def blobs_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = np.repeat([[0.1, 0.9], [0.8, 0.2]], 80, 0).repeat(8, 1)  # two kinds of rows
    x = (rng.random((160, 16)) < p).astype(np.float32).reshape(160, 4, 4)  # 4x4 binary images
    path = tmp_path_factory.mktemp("deepdata") / "bits.npy"
    np.save(path, x)
    return path


@pytest.fixture(scope="module")
def deep_run(blobs_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("deeprun") / "run"
    assert cli("train", blobs_file, "--out", run, "--epochs", 3, *SMALL) == 0
    return run


def test_cli_train_evaluate_sample_reconstruct_embed_report(deep_run, blobs_file, tmp_path, capsys):
    run = deep_run
    rows = metrics(run)
    assert len(rows) == 3 and all(math.isfinite(r["train_loss"]) for r in rows)
    capsys.readouterr()
    assert cli("evaluate", run, "--json", "-k", 200) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["importance_samples"] == 200
    assert res["log_likelihood"] >= res["elbo"] - 0.5  # IS over all groups, near or above the ELBO
    assert math.isclose(res["elbo"], -(res["rec"] + res["kl"]), rel_tol=1e-9)
    assert cli("sample", run, "-n", 4, "--out", tmp_path / "s.npy") == 0
    assert np.load(tmp_path / "s.npy").reshape(4, -1).shape == (4, 16)
    assert cli("reconstruct", run, blobs_file, "-n", 4, "--out", tmp_path / "r.png") == 0
    assert (tmp_path / "r.png").stat().st_size > 0
    assert cli("embed", run, blobs_file, "--out", tmp_path / "z.npy") == 0
    assert np.load(tmp_path / "z.npy").shape == (160, 6)
    assert cli("report", run) == 0


def test_onnx_export_is_one_error_line(deep_run, tmp_path, capsys):
    assert cli("export", deep_run, "--out", tmp_path / "m.onnx") == 2
    assert_one_error(capsys.readouterr().err, "deep model", "top-down")


def test_resume_is_bit_identical(blobs_file, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("train", blobs_file, "--out", full, "--epochs", 3, *SMALL) == 0
    assert cli("train", blobs_file, "--out", part, "--epochs", 1, *SMALL) == 0
    assert cli("train", blobs_file, "--out", part, "--epochs", 3, "--resume") == 0
    for name in ("model.safetensors", "checkpoint.safetensors"):
        a, b = load_file(full / name), load_file(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(metrics(full)) == drop(metrics(part))


def test_estimator_fits_scores_and_transforms(blobs_file):
    from vaekit import VAE

    x = np.load(blobs_file).reshape(160, 16)
    est = VAE(latent="deep", latent_dim=2, top_latent_dims=(2,), hidden=(16,), epochs=2,
              batch_size=32, random_state=0).fit(x)
    assert isinstance(est.model_, DeepVAE)
    s = est.score_samples(x[:5])
    assert s.shape == (5,) and np.isfinite(s).all()
    assert est.transform(x[:5]).shape == (5, 4)
