"""The VAE-GAN (Larsen et al. 2016): its feature loss against an independent computation, which
parameters each loss reaches, the balance rule, the guard, bit-exact resume, the run directory,
the commands' refusals and a short MNIST run."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.distributions import Normal, kl_divergence

from vaekit import VAE
from vaekit.cli.main import main
from vaekit.config.settings import ModelConfig, RunConfig, TrainConfig
from vaekit.data import Dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.measures import reconstruction_error
from vaekit.pipeline import load_run
from vaekit.training.trainer import Trainer
from vaekit.models.vaegan import SCALE_MOMENTUM, VAEGAN, forward
from vaekit.models.vaegan_update import EQUILIBRIUM, MARGIN
from vaekit.models.build import build_model

TINY = ["--hidden", "16", "--latent-dim", "3", "--batch-size", "64", "--precision", "fp32",
        "--seed", "4", "--no-report"]


def model(arch="mlp", shape=(1, 8, 8), hidden=(16,), seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch=arch, hidden=hidden, latent_dim=3, **kw), shape, "vaegan")


def trainer(m, **kw):
    return Trainer(m, TrainConfig(objective="vaegan", precision="fp32", device="cpu", **kw),
                   log=lambda s: None)


def images(n=32, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- the loss, against an independent computation ------------------------------------------------
def test_feature_loss_and_kl_match_an_independent_computation():
    m = model()
    x, eps = images(), torch.randn(1, 32, 3, generator=torch.Generator().manual_seed(1))
    m.discriminator.track(torch.randn(32, 16, generator=torch.Generator().manual_seed(2)) * 0.3)
    out = forward(m, x, 0.5, noise=eps)
    # by hand: the encoder's mean and scale, the decoder's logits, the discriminator's hidden layer
    enc = m.encoder.head  # mlp 64-16-6: Linear, ReLU, Linear
    h = enc[2](torch.relu(enc[0](x.flatten(1))))
    mu, sd = h[:, :3], torch.sqrt(h[:, 3:].exp() + 1e-5)  # the diagonal posterior, min_var floor
    z = mu + eps[0] * sd
    dec = m.decoder[0]
    logits = dec[2](torch.relu(dec[0](z))).reshape(32, 1, 8, 8)
    recon = torch.sigmoid(logits)
    lin = m.discriminator.trunk[1]
    feats = lambda v: F.leaky_relu(v.flatten(1) @ lin.weight.T + lin.bias, 0.2)  # noqa: E731
    s = math.sqrt(float(b_var(torch.randn(32, 16, generator=torch.Generator().manual_seed(2)) * 0.3)))
    want_feat = -Normal(feats(recon), s).log_prob(feats(x)).sum(-1)
    want_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    want_rec = want_feat + want_pixel  # pixel_weight 1, the default
    want_kl = kl_divergence(Normal(mu, sd), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(out.pixel, want_pixel, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.terms.rec, want_rec, rtol=1e-5, atol=1e-4)
    m.pixel_weight = 0.0  # the paper's feature term alone
    torch.testing.assert_close(forward(m, x, 0.5, noise=eps).terms.rec, want_feat, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.terms.kl, want_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms.loss, want_rec + 0.5 * want_kl, rtol=1e-5, atol=1e-4)
    head = m.discriminator.head
    torch.testing.assert_close(out.logits[:32], (feats(x) @ head.weight.T + head.bias)[:, 0])


def b_var(batch):
    """The feature variance after one update from ``batch``: its variance, bias-corrected."""
    return batch.var(0, unbiased=False).mean()


def test_feature_variance_is_a_bias_corrected_running_mean_of_the_data_features():
    d = model().discriminator
    assert float(d.feature_var()) == 1.0  # before any update: the paper's unit variance
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(50, 16, generator=g) * s for s in (0.1, 0.2, 0.4)]
    ema = 0.0
    for i, b in enumerate(batches, 1):
        d.track(b)
        ema = SCALE_MOMENTUM * ema + (1 - SCALE_MOMENTUM) * float(b.var(0, unbiased=False).mean())
        assert float(d.feature_var()) == pytest.approx(ema / (1 - SCALE_MOMENTUM ** i), rel=1e-5)
    assert float(model().discriminator.feature_var()) == 1.0
    before = d.feature_var().clone()
    d.track(torch.full((4, 16), float("nan")))  # a non-finite batch leaves it as it was
    assert torch.equal(d.feature_var(), before)


def test_the_discriminator_is_the_bodys_encoder_split_at_its_features():
    conv = model("conv", hidden=(32,))
    f, logit = conv.discriminator(images(4))
    assert f.shape == (4, 128) and logit.shape == (4,)  # 128 channels of the 1x1 grid of 8x8 input
    assert isinstance(conv.discriminator.trunk[-1], torch.nn.Flatten)
    mlp = model("mlp", hidden=(24, 16))
    f, _ = mlp.discriminator(images(4))
    assert f.shape == (4, 16)  # the last hidden layer
    assert not any(isinstance(mod, torch.nn.ReLU) for mod in mlp.discriminator.modules())
    resnet = model("resnet", hidden=(32,))
    assert resnet.discriminator(images(4))[0].shape == (4, 64 * 2 * 2)
    # the VAE's parts start exactly as the plain VAE's with the same seed
    torch.manual_seed(0)
    plain = build_model(ModelConfig(hidden=(16,), latent_dim=3), (1, 8, 8))
    hybrid = model()
    assert all(torch.equal(v, hybrid.state_dict()[k]) for k, v in plain.state_dict().items())


# -- which loss reaches which parameters ----------------------------------------------------------
def grads(loss, params):
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def test_each_loss_updates_only_its_own_parameters():
    m = model()
    up = trainer(m, gamma=0.7).hybrid
    x, eps = images(), torch.randn(1, 32, 3, generator=torch.Generator().manual_seed(1))
    z_prior = torch.randn(32, 3, generator=torch.Generator().manual_seed(2))
    out = forward(m, x, 1.0, noise=eps, z_prior=z_prior)
    (enc, dec, dis), on = up.losses(out.terms, out.logits, 32, 1.0, 32)
    assert on.tolist() == [1.0, 1.0]  # a fresh discriminator sits at equilibrium
    gan = F.softplus(-out.logits[32:]).sum() / 32
    rec = out.terms.rec.sum() / 32
    want = {"enc": grads(enc, up.enc_params), "dec": grads(0.7 * rec + gan, up.dec_params),
            "dis": grads(dis, up.dis_params)}
    # the terms that must be left out do reach those parameters, so leaving them out matters
    assert any(g is not None and g.abs().sum() > 0 for g in grads(gan, up.enc_params))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(rec, up.dis_params))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(dis, up.dec_params))
    up.backward(enc, dec, dis)
    for name, params in (("enc", up.enc_params), ("dec", up.dec_params), ("dis", up.dis_params)):
        for p, g in zip(params, want[name]):
            if g is None:
                assert p.grad is None, name
            else:
                torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    assert {id(p) for p in up.enc_params} | {id(p) for p in up.dec_params} == {
        id(p) for p in m.parameters()} - {id(p) for p in m.discriminator.parameters()}


def test_balance_rule_pauses_the_strong_side():
    up = trainer(model()).hybrid
    t = model(seed=1)
    terms = forward(t, images(), 1.0).terms
    low, high = EQUILIBRIUM - MARGIN - 0.05, EQUILIBRIUM + MARGIN + 0.05

    def gates(real_cost, fake_cost):  # logits whose mean costs are these
        real = torch.full((32,), -math.log(math.expm1(real_cost)))  # softplus(-l) = cost
        fake = torch.full((64,), math.log(math.expm1(fake_cost)))  # softplus(l) = cost
        return up.losses(terms, torch.cat([real, fake]), 32, 1.0, 32)[1].tolist()

    assert gates(EQUILIBRIUM, EQUILIBRIUM) == [1.0, 1.0]
    assert gates(low, EQUILIBRIUM) == [0.0, 1.0]  # the discriminator wins: it pauses
    assert gates(EQUILIBRIUM, high) == [1.0, 0.0]  # it is no guide: the decoder's GAN term pauses
    assert gates(low, high) == [1.0, 1.0]  # both would pause: neither does


def state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def changed(before, after, prefix):
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_a_step_alternates_and_a_paused_discriminator_keeps_its_weights(monkeypatch):
    m = model()
    tr = trainer(m)
    up = tr.hybrid
    x, eps = images(), torch.randn(1, 32, 3)
    before = state(m)
    terms, loss, bad = up.step(x, eps, 1.0, 32)
    after = state(m)
    assert float(bad) == 0 and torch.equal(loss, terms.loss.sum() / 32)
    assert all(changed(before, after, p) for p in ("encoder.", "decoder.", "discriminator.trunk"))
    # with the discriminator declared too strong, only the VAE's side moves
    real = EQUILIBRIUM - MARGIN - 0.1
    monkeypatch.setattr("vaekit.models.vaegan_update.EQUILIBRIUM", EQUILIBRIUM + 10)  # every cost "low"
    before = state(m)
    up.step(x, eps, 1.0, 32)
    after = state(m)
    assert changed(before, after, "encoder.") and changed(before, after, "decoder.")
    assert not changed(before, after, "discriminator.trunk")
    assert not changed(before, after, "discriminator.head")
    assert real < EQUILIBRIUM
    assert up.end_epoch()["dis_paused"] == pytest.approx(0.5)


def test_a_non_finite_loss_skips_both_updates():
    m = model()
    up = trainer(m).hybrid
    before = state(m)
    opt_before = (dict(up.trainer.optimizer.state), dict(up.optimizer.state))
    x = images()
    x[0, 0, 0, 0] = float("nan")
    _, _, bad = up.step(x, torch.randn(1, 32, 3), 1.0, 32)
    assert float(bad) == 1
    after = state(m)
    weights = [k for k in before if not k.startswith("discriminator.feature_")]
    assert all(torch.equal(before[k], after[k]) for k in weights)
    for opt, old in zip((up.trainer.optimizer, up.optimizer), opt_before):
        assert all(float(s["step"]) == 0 for s in opt.state.values()) or opt.state == old
    assert up.end_epoch()["dis_loss"] != up.end_epoch()["dis_loss"]  # no finite step: NaN


# -- the run directory: train, resume, save, load ---------------------------------------------
@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "full"
    assert main(["train", "digits", "--objective", "vaegan", "--out", str(run), "--epochs", "4",
                 *TINY]) == 0
    return run


def test_resume_is_bit_identical(run4, tmp_path):
    part = tmp_path / "part"
    assert main(["train", "digits", "--objective", "vaegan", "--out", str(part), "--epochs", "2",
                 *TINY]) == 0
    assert main(["train", "digits", "--objective", "vaegan", "--out", str(part), "--epochs", "4",
                 *TINY, "--resume"]) == 0
    for name in ("model.safetensors", "checkpoint.safetensors"):
        a, b = load_file(run4 / name), load_file(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                       for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(run4) == strip(part)


def test_the_run_holds_the_discriminator_and_its_optimizer(run4, tmp_path, capsys):
    weights = load_file(run4 / "model.safetensors")
    assert any(k.startswith("discriminator.trunk.") for k in weights)
    assert "discriminator.feature_ema" in weights
    ck = load_file(run4 / "checkpoint.safetensors")
    assert any(k.startswith("optim_discriminator.") and k.endswith(".exp_avg_sq") for k in ck)
    rows = [json.loads(line) for line in (run4 / "metrics.jsonl").read_text().splitlines()]
    assert {"dis_loss", "dis_real", "dis_recon", "dis_prior", "dis_paused", "gan_paused",
            "pixel_rec"} <= set(rows[-1])
    m, cfg = load_run(run4, "cpu")
    assert isinstance(m, VAEGAN) and cfg.train.objective == "vaegan"
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in weights.items())
    est = VAE.load(run4)
    assert est.objective == "vaegan"
    assert est.transform(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 3)
    est.save(tmp_path / "saved")
    again = load_file(tmp_path / "saved" / "model.safetensors")
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)
    # a checkpoint without the discriminator's optimizer cannot be resumed exactly: refused
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in run4.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    from safetensors.torch import save as st_save
    from vaekit.runs.store import parse_safetensors
    t, meta = parse_safetensors((copy / "checkpoint.safetensors").read_bytes(), "c")
    (copy / "checkpoint.safetensors").write_bytes(st_save(
        {k: v for k, v in t.items() if not k.startswith("optim_discriminator.")}, meta))
    assert main(["train", "digits", "--objective", "vaegan", "--out", str(copy), "--epochs", "5",
                 *TINY, "--resume"]) == 2
    assert "optim_discriminator" in error_line(capsys)


def test_a_plain_runs_checkpoint_is_unchanged(tmp_path):
    run = tmp_path / "plain"
    assert main(["train", "digits", "--out", str(run), "--epochs", "1", *TINY]) == 0
    ck = load_file(run / "checkpoint.safetensors")
    assert all(k.startswith(("model.", "optim.", "rng.")) for k in ck)
    from vaekit.runs.directory import RunDir
    assert "extra_optimizers" not in RunDir(run).checkpoint_info()


def test_evaluate_reports_reconstruction_error_and_no_likelihood(run4, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run4), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["log_likelihood"] is None and res["elbo"] is None and res["importance_samples"] == 0
    m, _ = load_run(run4, "cpu")
    from vaekit.data import load_data
    x = load_data("digits", log=lambda s: None).x_test
    with torch.no_grad():
        want = float(((m.reconstruct(x) - x) ** 2).double().mean())
    assert res["reconstruction_mse"] == pytest.approx(want, rel=1e-6)
    assert res["reconstruction_mse"] == pytest.approx(reconstruction_error(m, x), rel=1e-12)
    assert main(["evaluate", str(run4)]) == 0
    out = capsys.readouterr().out
    assert "not reported: objective vaegan" in out and "reconstruction" in out
    assert main(["report", str(run4)]) == 0
    html = (run4 / "report.html").read_text()
    assert "log p(x) is not reported" in html and "VAE-GAN encoder loss" in html
    card = (run4 / "README.md").read_text()
    assert "A VAE-GAN" in card and "negative_elbo" not in card


def test_what_needs_a_likelihood_is_refused(run4, tmp_path, capsys):
    assert main(["score", str(run4), "digits", "--out", str(tmp_path / "s.csv")]) == 2
    assert "objective vaegan" in error_line(capsys)
    with pytest.raises(ConfigError, match="score_samples needs log p"):
        VAE.load(run4).score_samples(np.zeros((2, 1, 8, 8), np.float32))


@pytest.mark.parametrize("flags, named", [
    (["--arch", "linear"], "--arch"),
    (["--conditional"], "--conditional"),
    (["--top-latent-dims", "2"], "--top-latent-dims"),
    (["--val-fraction", "0.1"], "--val-fraction"),
    (["--k", "2"], "--k"),
    (["--free-bits", "0.5"], "--free-bits"),
])
def test_bad_combinations_are_one_error_line(tmp_path, capsys, flags, named):
    out = tmp_path / "r"
    assert main(["train", "digits", "--objective", "vaegan", "--out", str(out), *TINY, *flags]) == 2
    line = error_line(capsys)
    assert named in line and "--objective" in line
    assert not out.exists()


def test_defaults_keep_no_validation_split_for_a_vaegan(capsys, tmp_path):
    # digits are small, so vaekit lengthens the run; a VAE gets a validation split, a VAE-GAN not
    cfg = RunConfig()
    cfg.train.objective = "vaegan"
    from vaekit.data import load_data
    from vaekit.config.defaults import resolve_auto
    lines = resolve_auto(cfg, load_data("digits", log=lambda s: None).x_train, ())
    assert cfg.data.val_fraction == 0 and cfg.train.patience == 0
    assert any(line.startswith("epochs:") for line in lines)
    cfg.validate()


def test_estimator_fits_a_vaegan(blobs):
    est = VAE(objective="vaegan", hidden=(16,), latent_dim=2, epochs=2, batch_size=32,
              precision="fp32", random_state=0).fit(blobs)
    assert isinstance(est.model_, VAEGAN) and est.sample(3, random_state=1).shape == (3, 6)
    assert all(math.isfinite(r["train_loss"]) for r in est.history_)


# -- MNIST: a short run does not diverge ----------------------------------------------------
def digits32(n_train: int, n_test: int) -> Dataset:
    """scikit-learn's 8x8 digits (offline, on every machine) as 32x32 grey images, each pixel a
    4x4 block: large enough for the conv body, like MNIST in kind."""
    from sklearn.datasets import load_digits

    x = np.kron(load_digits().images / 16.0, np.ones((4, 4)))[:, None].astype(np.float32)
    assert n_train + n_test <= len(x)
    return Dataset("digits32", torch.from_numpy(x[:n_train]), torch.from_numpy(x[-n_test:]))


def short_run(data, tmp_path, name, **options):
    from vaekit import pipeline

    cfg = RunConfig().update({"epochs": 4, "precision": "fp32", "device": "cpu", "seed": 1,
                              "batch_size": 64, **options})
    cfg.data.data = data.name
    return pipeline.train(cfg, data, out=tmp_path / name, log=lambda s: None, progress=False)


def test_a_conv_vaegan_trains_on_digits(tmp_path):
    res = short_run(digits32(1000, 200), tmp_path, "conv", objective="vaegan", arch="conv",
                    hidden=32, epochs=2)
    assert all(r["skipped_steps"] == 0 and math.isfinite(r["test_loss"]) for r in res.history)
    assert res.model.discriminator(digits32(4, 1).x_train)[0].shape == (4, 128 * 4 * 4)
