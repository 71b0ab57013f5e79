"""The IAF posterior (Kingma et al. 2016) beyond the family table's checks: the cached density of
a draw against the exact inverse, the autoregressive structure, the Monte Carlo KL in the model,
its option checks, and train -> evaluate -> resume through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Normal

from vaekit.cli.main import main
from vaekit.config.settings import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.vae import VAEModel
from vaekit.parts.posteriors import POSTERIORS

F64 = torch.float64


def iaf(latent=3, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        post = POSTERIORS["iaf"](latent).double()
    with torch.no_grad():  # gates away from their start, so that every step does something
        for step in post.steps:
            step.w_out.mul_(4.0)
    return post


def params(latent=3, batch=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, POSTERIORS["iaf"].param_dim(latent), generator=g, dtype=F64)


def test_density_of_a_draw_equals_the_exact_inverse_with_the_same_gradients():
    post, p = iaf(), params().requires_grad_()
    q = post(p)
    z = q.rsample((4,), generator=torch.Generator().manual_seed(2))  # (4, 5, 3)
    cached, inverted = q.log_prob(z), q.log_prob(z.clone())  # clone: not the drawn tensor object
    assert cached.shape == (4, 5)
    assert not torch.equal(cached, inverted)  # the second went through the inverse
    torch.testing.assert_close(cached, inverted, rtol=1e-12, atol=1e-12)
    leaves = [p, *post.parameters()]
    g_cached = torch.autograd.grad(cached.sum(), leaves, retain_graph=True)
    g_inverted = torch.autograd.grad(inverted.sum(), leaves)
    for a, b in zip(g_cached, g_inverted):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_steps_are_autoregressive_and_alternate_the_order():
    post, p = iaf(latent=4), params(latent=4, batch=1)
    q = post(p)
    h = q.context[0]
    z0 = torch.randn(4, generator=torch.Generator().manual_seed(3), dtype=F64)
    for step in post.steps:
        jac = torch.autograd.functional.jacobian(lambda v, st=step: torch.cat(st.net(v, h)), z0)  # (8, 4)
        for out in (jac[:4], jac[4:]):  # m and s: output i depends on inputs < i only
            assert torch.equal(out.triu(), torch.zeros_like(out))
            assert (out.tril(-1).abs() > 0).sum() == 6
    full = torch.autograd.functional.jacobian(lambda v: q.flow(v[None])[0][0], z0)
    # two steps in opposite orders: no zero pattern is left, and the log-determinant is the gates'
    assert (full.abs() > 0).all()
    torch.testing.assert_close(torch.linalg.slogdet(full)[1], q.flow(z0[None])[1][0])


def test_model_kl_is_the_monte_carlo_log_ratio():
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(posterior="iaf", latent_dim=3, hidden=(16,)), (6,)).double()
    x = torch.rand(7, 6, generator=torch.Generator().manual_seed(4), dtype=F64).round()
    assert model.kl_estimator == "monte-carlo"
    noise = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    t = model.terms(x, k=2, noise=noise, weights=True)
    qz = model.encode(x)
    z = qz.rsample(noise=noise)
    want = qz.log_prob(z.clone()) - Normal(0.0, 1.0).log_prob(z).sum(-1)  # the inverse, N(0, I) by torch
    torch.testing.assert_close(t.kl, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t.log_ratio, -want, rtol=1e-10, atol=1e-10)
    assert t.kl_dims is None
    loss = model(x, noise=noise[:1])
    torch.testing.assert_close(loss.loss, loss.rec + loss.kl)


@pytest.mark.parametrize("extra", [{"prior": "vamp"}, {"semi_supervised": True, "num_classes": 3}])
def test_iaf_refuses_what_needs_a_gaussian_posterior(extra):
    with pytest.raises(ConfigError, match="posterior iaf does not combine"):
        ModelConfig(posterior="iaf", **extra).validate()


def test_iaf_refuses_free_bits():
    from vaekit.config.settings import RunConfig

    cfg = RunConfig()
    cfg.model.posterior, cfg.train.free_bits = "iaf", 0.5
    with pytest.raises(ConfigError, match="free_bits needs a KL per latent dimension"):
        cfg.validate()


def cli(*args) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def test_cli_trains_evaluates_and_resumes_an_iaf_run(tmp_path, capsys):
    small = ["--posterior", "iaf", "--hidden", "32", "--latent-dim", "3", "--precision", "fp32",
             "--seed", "3"]
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert cli("train", "digits", "--out", run, "--epochs", 1, *small) == 0
    assert cli("train", "digits", "--out", run, "--epochs", 2, "--resume") == 0
    assert cli("train", "digits", "--out", straight, "--epochs", 2, *small) == 0
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    same = [json.loads(r) for r in (straight / "metrics.jsonl").read_text().splitlines()]
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert [r["epoch"] for r in rows] == [1, 2] and drop(rows) == drop(same)
    weights, other = load_file(run / "model.safetensors"), load_file(straight / "model.safetensors")
    assert any(k.startswith("posterior.steps.1.") for k in weights)  # the flow is saved with the model
    assert weights.keys() == other.keys() and all(torch.equal(weights[k], other[k]) for k in weights)
    capsys.readouterr()
    assert cli("evaluate", run, "-k", "20", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kl_estimator"] == "monte-carlo" and res["kl_per_dim"] is None
    assert res["log_likelihood"] > res["elbo"] and res["kl"] > 0
