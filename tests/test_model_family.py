"""The model family composed: IWAE, full-covariance posteriors, mixture priors, ladder VAE, CVAE.

Numbers first: the IWAE bound of an exact posterior is log p(x) (scipy); a full-covariance
posterior closes the diagonal one's gap on a correlated problem to the closed-form optimum;
closed-form and Monte Carlo KL terms agree. Then the parts end to end through the CLI.
"""

import json
import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from vaekit.cli.main import main
from vaekit.config.settings import ModelConfig, RunConfig, TrainConfig
from vaekit.data import Dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.measures import row_noise, row_seeds, elbo_terms, importance_sample
from vaekit.models.build import build_model
from vaekit.parts.objectives import negative_elbo, negative_iwae
from vaekit.training.trainer import Trainer

SIGMA = 0.5
# Decoder columns far from orthogonal: the exact posterior p(z|x) is strongly correlated.
W = np.array([[1.0, 0.9], [1.0, 1.1], [0.5, 0.45], [0.8, 0.7]])


def linear_model(posterior="diagonal", **kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="linear", likelihood="gaussian", obs_std=SIGMA, latent_dim=2,
                                   posterior=posterior, min_var=0.0, **kw), (4,)).double()


def correlated_data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    return (z @ W.T + SIGMA * rng.standard_normal((n, 4))).astype(np.float32)


def set_exact_encoder(model):
    """Linear encoder = the exact posterior of the linear-Gaussian model (full-covariance layout)."""
    prec = np.eye(2) + W.T @ W / SIGMA**2
    cov = np.linalg.inv(prec)
    chol = np.linalg.cholesky(cov)
    head = np.zeros((5, 4))
    head[:2] = cov @ W.T / SIGMA**2  # posterior mean
    bias = np.concatenate([[0.0, 0.0], np.log(np.diag(chol) ** 2), [chol[1, 0]]])
    with torch.no_grad():
        model.encoder.head.weight.copy_(torch.tensor(head))
        model.encoder.head.bias.copy_(torch.tensor(bias))
        model.decoder[0].weight.copy_(torch.tensor(W))
        model.decoder[0].bias.zero_()


def exact_log_px(x):
    return st.multivariate_normal(np.zeros(4), W @ W.T + SIGMA**2 * np.eye(4)).logpdf(x)


@pytest.mark.parametrize("k", [1, 4, 50])
def test_iwae_bound_of_the_exact_posterior_is_log_px(k):
    model = linear_model("full-covariance")
    set_exact_encoder(model)
    x = torch.from_numpy(correlated_data(20)).double()
    t = negative_iwae(model, x, k=k, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(-t.loss.detach().numpy(), exact_log_px(x.numpy()), atol=1e-4)


def test_iwae_equals_elbo_at_one_sample_and_tightens_with_k():
    model = linear_model()  # random encoder (a loose bound), decoder at the true W
    with torch.no_grad():
        model.decoder[0].weight.copy_(torch.tensor(W))
        model.decoder[0].bias.zero_()
    x = torch.from_numpy(correlated_data(200)).double()
    noise = torch.randn(1, 200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    iw1 = negative_iwae(model, x, noise=noise)
    el1 = negative_elbo(model, x, noise=noise)
    # Same sample: log p(x|z) + log p(z) - log q(z|x) vs the ELBO with the closed-form KL; their
    # means over examples agree in expectation (within Monte Carlo error).
    assert iw1.loss.mean().item() == pytest.approx(el1.loss.mean().item(), rel=0.05)
    bounds = [-negative_iwae(model, x, k=k, generator=torch.Generator().manual_seed(k)).loss.mean().item()
              for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2] < exact_log_px(x.numpy()).mean()


def train(model, x, epochs=60, lr=0.02, **kw):
    data = Dataset.from_arrays("corr", x, x[:0])
    cfg = TrainConfig(epochs=epochs, batch_size=100, lr=lr, precision="fp32", seed=0, **kw)
    Trainer(model.float(), cfg, log=lambda s: None, progress=False).fit(data)
    return model


def test_full_covariance_posterior_beats_diagonal_on_a_correlated_posterior():
    """The decoder is fixed at W, so the posterior's correlation cannot be rotated away; the
    diagonal family's best ELBO lies a closed-form gap below log p(x), the full one reaches it."""
    x = correlated_data()
    elbos = {}
    for posterior in ("diagonal", "full-covariance"):
        model = linear_model(posterior).float()
        with torch.no_grad():
            model.decoder[0].weight.copy_(torch.tensor(W))
            model.decoder[0].bias.zero_()
        for p in model.decoder.parameters():
            p.requires_grad_(False)
        train(model, x, epochs=150, lr=0.005)
        g = torch.Generator().manual_seed(0)
        elbos[posterior] = -elbo_terms(model, torch.from_numpy(x), generator=g, k=200)["loss"]
    prec = np.eye(2) + W.T @ W / SIGMA**2
    gap = 0.5 * (np.log(np.diag(prec)).sum() - np.linalg.slogdet(prec)[1])  # best diagonal KL
    truth = exact_log_px(x).mean()
    assert gap > 0.5  # the problem is correlated enough to matter
    assert elbos["full-covariance"] == pytest.approx(truth, abs=0.02)
    assert elbos["diagonal"] == pytest.approx(truth - gap, abs=0.02)
    assert elbos["full-covariance"] > elbos["diagonal"] + 0.8 * gap


def test_mixture_prior_kl_is_a_monte_carlo_estimate_of_the_true_kl():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=3, prior="mixture", prior_components=4), (6,))
    assert model.kl_estimator == "monte-carlo"
    x = torch.rand(5, 6)
    t = model.terms(x, k=20000, generator=torch.Generator().manual_seed(0))
    assert t.kl_dims is None
    torch.testing.assert_close(t.kl, -t.log_ratio)
    # Oracle: KL(q || p) = E_q[log q] - E_q[log p] with E_q[log q] = -entropy in closed form.
    qz, pz = model.encode(x), model.prior()
    z = qz.rsample((20000,), generator=torch.Generator().manual_seed(1))
    expected = -qz.entropy() - pz.log_prob(z).mean(0)
    torch.testing.assert_close(t.kl.mean(0), expected.detach(), atol=0.03, rtol=0.01)


def test_ladder_closed_form_kl_matches_monte_carlo_and_bounds_order():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=4, top_latent_dims=(3, 2)), (6,)).double()
    assert model.latent_dim == 9 and model.noise_dim == 9
    x = torch.rand(8, 6, dtype=torch.float64)
    t = model.terms(x, k=40000, generator=torch.Generator().manual_seed(0), weights=True)
    assert t.kl_dims.shape == (40000, 8, 9)
    # Both are unbiased estimates of KL(q(z1, z2, z3 | x) || p(z1, z2, z3)).
    se = (t.kl + t.log_ratio).std(0) / math.sqrt(40000)
    assert ((t.kl.mean(0) + t.log_ratio.mean(0)).abs() < 5 * se + 1e-9).all()
    # averaged over 10 seeds, so the order of the bounds is not a matter of one seed's luck
    ll = [sum(importance_sample(model, x, k, seed=s)[0].mean().item() for s in range(10)) / 10
          for k in (1, 100, 3000)]
    elbo = -negative_elbo(model, x, generator=torch.Generator().manual_seed(5)).loss.mean().item()
    assert ll[0] < ll[1] < ll[2] and elbo < ll[2]
    assert model.sample_prior(7, torch.Generator().manual_seed(0)).shape == (7, 9)
    assert model.encode(x).mean.shape == (8, 9)


def test_ladder_gradients_reach_every_layer():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=4, top_latent_dims=(3,)), (6,))
    negative_elbo(model, torch.rand(8, 6), generator=torch.Generator().manual_seed(0)).loss.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_conditional_decoder_depends_on_the_label():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=2, conditional=True, num_classes=3), (6,))
    z = torch.randn(4, 2)
    a = model.decode(z, torch.zeros(4, dtype=torch.long)).mean
    b = model.decode(z, torch.full((4,), 2)).mean
    assert not torch.allclose(a, b)
    with pytest.raises(Exception, match="conditional"):
        model.decode(z)


@pytest.mark.parametrize("bad, message", [
    (dict(top_latent_dims=(3,), posterior="full-covariance"), "posterior diagonal"),
    (dict(prior="vamp", conditional=True, num_classes=3), "vamp"),
])
def test_incompatible_parts_are_config_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        build_model(ModelConfig(hidden=(8,), latent_dim=2, **bad), (6,))


def test_iwae_with_free_bits_and_unknown_objective_are_config_errors():
    with pytest.raises(ConfigError, match="free_bits"):
        TrainConfig(objective="iwae", free_bits=0.1).validate()
    with pytest.raises(ConfigError, match="did you mean 'iwae'"):
        TrainConfig(objective="iwea").validate()


def test_max_minutes_stops_after_the_first_epoch():
    x = correlated_data(300)
    model = linear_model().float()
    cfg = TrainConfig(epochs=50, batch_size=100, precision="fp32", max_minutes=1e-9)
    history = Trainer(model, cfg, log=lambda s: None).fit(Dataset.from_arrays("x", x, x[:0]))
    assert len(history) == 1


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Tiny runs of the new parts on digits, through the CLI."""
    root = tmp_path_factory.mktemp("family")
    runs = {
        "cvae": ["--conditional", "--objective", "iwae", "--k", "3"],
        "ladder": ["--top-latent-dims", "4", "--prior", "mixture", "--prior-components", "3"],
        "vamp": ["--prior", "vamp", "--prior-components", "5", "--posterior", "full-covariance"],
    }
    for name, flags in runs.items():
        assert main(["train", "digits", "--epochs", "2", "--hidden", "32", "--latent-dim", "3",
                     "--out", str(root / name), "--no-report", *flags]) == 0
    return root


@pytest.mark.parametrize("name", ["cvae", "ladder", "vamp"])
def test_new_parts_evaluate_and_report_their_kl_estimator(digits_runs, name, capsys):
    run = digits_runs / name
    capsys.readouterr()
    assert main(["evaluate", str(run), "-k", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    expected = {"cvae": "analytic", "ladder": "monte-carlo", "vamp": "monte-carlo"}[name]
    assert res["kl_estimator"] == expected
    assert res["log_likelihood"] > res["elbo"] - 1.0  # IS estimate above the ELBO up to MC noise
    assert main(["report", str(run)]) == 0


def test_conditional_sample_needs_a_label(digits_runs, tmp_path, capsys):
    run = str(digits_runs / "cvae")
    assert main(["sample", run, "--label", "7", "-n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (4, 1, 8, 8)
    capsys.readouterr()
    assert main(["sample", run, "--out", str(tmp_path / "t.npy")]) == 2
    assert "--label" in capsys.readouterr().err
    assert main(["sample", run, "--label", "10", "--out", str(tmp_path / "t.npy")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert not (tmp_path / "t.npy").exists()


def test_conditional_training_needs_labels(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 5)).astype(np.float32))
    assert main(["train", str(tmp_path / "x.npy"), "--conditional", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "labels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_config_round_trip_keeps_the_new_fields():
    cfg = RunConfig()
    cfg.update({"top-latent-dims": "8,4", "objective": "iwae", "k": 5, "prior": "mixture",
                "conditional": True})
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.model.top_latent_dims == (8, 4)


def test_conditional_run_feeds_labels_to_every_command(digits_runs, tmp_path):
    run = str(digits_runs / "cvae")
    assert main(["embed", run, "digits", "--split", "test", "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape == (179, 3)
    for argv in (["reconstruct", run, "--out", str(tmp_path / "r.png")],
                 ["interpolate", run, "--from", "0", "--to", "1", "--out", str(tmp_path / "i.png")],
                 ["traverse", run, "--index", "0", "--out", str(tmp_path / "t.png")],
                 ["score", run, "digits", "-k", "5", "--out", str(tmp_path / "s.csv")]):
        assert main(argv) == 0, argv
    # rows without labels cannot feed a conditional model: one error line, nothing written
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    assert main(["embed", run, str(tmp_path / "x.npy"), "--out", str(tmp_path / "w.npy")]) == 2
    assert not (tmp_path / "w.npy").exists()


def test_logistic_mixture_resnet_on_8_bit_images_reports_bits_per_dim(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 3, 8, 8))
    x = np.clip(base + rng.integers(-20, 21, (80, 3, 8, 8)), 0, 255).astype(np.uint8)
    np.save(tmp_path / "img.npy", x)
    run = str(tmp_path / "run")
    assert main(["train", str(tmp_path / "img.npy"), "--arch", "resnet", "--hidden", "32",
                 "--likelihood", "logistic-mixture", "--mixtures", "2", "--latent-dim", "4",
                 "--epochs", "3", "--lr", "3e-3", "--out", run, "--no-report"]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "-k", "10", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bits_per_dim"] == pytest.approx(-res["log_likelihood"] / (3 * 8 * 8 * math.log(2)))
    assert 0 < res["bits_per_dim"] < 9  # a probability of 8-bit values: 8 bits/dim is uniform


def valid_combinations():
    import itertools

    for post, prior, obj, lik, cond, top in itertools.product(
            ("diagonal", "full-covariance"), ("normal", "mixture", "vamp"), ("elbo", "iwae"),
            ("bernoulli", "gaussian-predicted"), (False, True), ((), (2,))):
        if (top and post != "diagonal") or (top and prior == "vamp") or (cond and prior == "vamp"):
            continue
        yield post, prior, obj, lik, cond, top


@pytest.mark.parametrize("post, prior, obj, lik, cond, top", list(valid_combinations()))
def test_every_combination_trains_evaluates_and_round_trips(post, prior, obj, lik, cond, top, tmp_path):
    """The parts compose: any valid combination gives finite losses and gradients, an importance-
    sampled log p(x), and the same outputs after saving and loading."""
    from vaekit.runs.directory import RunDir

    torch.manual_seed(0)
    cfg = RunConfig(ModelConfig(hidden=(8,), latent_dim=3, posterior=post, prior=prior, likelihood=lik,
                                conditional=cond, num_classes=3 if cond else 0, top_latent_dims=top,
                                prior_components=3),
                    TrainConfig(objective=obj, k=2))
    model = build_model(cfg.model, (5,))
    x, y = torch.rand(6, 5), (torch.arange(6) % 3 if cond else None)
    terms = model(x, y=y, name=obj, k=2, generator=torch.Generator().manual_seed(0))
    terms.loss.sum().backward()
    assert torch.isfinite(terms.loss).all() and terms.loss.shape == (6,)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ll = importance_sample(model, x, 7, generator=torch.Generator().manual_seed(0), y=y)[0]
    assert torch.isfinite(ll).all()
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_config(cfg, (5,))
    rd.write_model(model)
    loaded, _ = rd.load_model()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded.terms(x, y, 2, g()).log_px, model.terms(x, y, 2, g()).log_px,
                               rtol=0, atol=0)
    torch.testing.assert_close(loaded.generate(4, g(), None if y is None else y[:4]),
                               model.generate(4, g(), None if y is None else y[:4]), rtol=0, atol=0)


def test_ladder_stays_finite_when_a_layer_asks_for_a_huge_variance():
    """Regression: exp(raw) overflowed to inf at raw > 88 and made the KL infinite."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=4, top_latent_dims=(3,)), (6,))
    with torch.no_grad():
        model.p_nets[0][-1].bias[4:] = 200.0  # raw log-variance of p(z_1 | z_2)
        model.q_heads[0].bias[4:] = 150.0  # and of the bottom-up estimate
    t = model.terms(torch.rand(8, 6), k=3, generator=torch.Generator().manual_seed(0), weights=True)
    assert all(torch.isfinite(v).all() for v in (t.log_px, t.kl, t.log_ratio))


def test_importance_sampling_builds_the_vamp_prior_once():
    """The vamp prior encodes its pseudo-inputs to build p(z): once per evaluation, not per chunk."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(8,), latent_dim=2, prior="vamp", prior_components=4), (5,))
    x = torch.rand(6, 5)
    calls = []
    model.prior_dist.register_forward_hook(lambda *a: calls.append(1))
    ll = importance_sample(model, x, 40, batch_size=3, max_rows=12,
                           generator=torch.Generator().manual_seed(0))[0]
    assert len(calls) == 1  # 2 batches x 10 chunks would have built it 20 times
    # the same numbers as building the prior afresh for each chunk, with each row's own stream
    expected = []
    for i in range(6):
        xb = x[i: i + 1]
        state = model.infer(xb)
        noise = row_noise(row_seeds(xb, None, 0), 40, 2, torch.device("cpu"))[0].unsqueeze(1)
        log_w = torch.cat([(lambda t: t.log_px.double() + t.log_ratio.double())(
            model.terms(xb, k=len(n), noise=n, weights=True, state=state)) for n in noise.split(12)])
        expected.append(torch.logsumexp(log_w, 0) - math.log(40))
    torch.testing.assert_close(ll, torch.cat(expected).detach())
