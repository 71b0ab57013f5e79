"""VQ-VAE (models/vq.py) and its learned prior (sampling/pixelcnn.py), numbers first: the
quantizer against a brute-force nearest neighbour, the straight-through gradient, the EMA step
and the restart by hand, perplexity by hand, the PixelCNN's causal masks by gradients, the
bound as the sum of its two terms; then the CLI end to end, bit-identical resume, the
capability refusals and the estimator."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_one_error, cli, metrics
from vaekit.config.settings import RunConfig
from vaekit.errors import ConfigError
from vaekit.models.build import build_model
from vaekit.models.vq import VQVAE, VectorQuantizer, perplexity, smoothed_counts
from vaekit.sampling.pixelcnn import GatedPixelCNN, PixelCNNSampler


def gen(seed):
    return torch.Generator().manual_seed(seed)


def quantizer(k, d, **kw):
    q = VectorQuantizer(k, d, **kw)
    q.started.fill_(True)  # skip the first step's data start: the tests set the codebook
    return q


# -- the quantizer ---------------------------------------------------------------------------
def test_quantization_is_the_brute_force_nearest_code():
    q = quantizer(37, 5)
    q.codebook.copy_(torch.randn(37, 5, generator=gen(0)))
    z = torch.randn(2, 60, 5, generator=gen(1))
    q.eval()
    z_st, index, commitment, _ = q(z)
    cb, zz = q.codebook.double().numpy(), z.reshape(-1, 5).double().numpy()
    oracle = np.array([min(range(37), key=lambda j: float(((row - cb[j]) ** 2).sum())) for row in zz])
    assert np.array_equal(index.reshape(-1).numpy(), oracle)
    assert torch.allclose(z_st.detach(), q.codebook[index], atol=1e-6)  # z_e + (e - z_e)
    expected = ((zz - cb[oracle]) ** 2).reshape(2, 60, 5).sum((1, 2))
    assert np.allclose(commitment.numpy(), expected, rtol=1e-5)


def test_straight_through_gradient_is_the_gradient_at_the_quantized_point():
    q = quantizer(8, 3)
    q.codebook.copy_(torch.randn(8, 3, generator=gen(2)))
    q.eval()
    z_e = torch.randn(4, 6, 3, generator=gen(3), requires_grad=True)
    w = torch.randn(4, 6, 3, generator=gen(4))
    z_st, index, _, _ = q(z_e)
    (w * z_st ** 3).sum().backward()
    z_q = q.codebook[index]
    assert torch.allclose(z_e.grad, 3 * w * z_q ** 2)  # d/dv sum(w v^3) at v = z_q
    assert not torch.equal(z_q, z_e.detach())


def test_ema_update_by_hand():
    q = quantizer(3, 2, decay=0.5, dead_after=0)
    start = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-5.0, 4.0]])
    q.codebook.copy_(start)
    q.ema_sum.copy_(start)
    q.ema_count.copy_(torch.tensor([2.0, 1.0, 1.0]))
    q.train()
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 11.0]]])  # codes 0, 0, 1; code 2 unused
    with torch.enable_grad():
        q(z)
    n = torch.tensor([2.0, 1.0, 0.0])
    count = 0.5 * torch.tensor([2.0, 1.0, 1.0]) + 0.5 * n  # [2, 1, 0.5]
    sums = 0.5 * start + 0.5 * torch.tensor([[1.0, 2.0], [9.0, 11.0], [0.0, 0.0]])
    total, eps = float(count.sum()), 1e-5
    smooth = (count + eps) / (total + 3 * eps) * total
    assert torch.allclose(q.ema_count, count) and torch.allclose(q.ema_sum, sums)
    assert torch.allclose(smoothed_counts(count), smooth)
    assert torch.allclose(q.codebook, sums / smooth[:, None])
    assert q.idle_steps.tolist() == [0, 0, 1]


def test_the_first_training_step_starts_the_codebook_at_the_batch():
    q = VectorQuantizer(4, 2)
    z = torch.arange(16.0).view(1, 8, 2)
    q.train()
    with torch.enable_grad():
        q(z)
    # evenly spaced rows 0, 2, 4, 6 of the batch, then one EMA step on them (each is its own
    # nearest code; rows 1, 3, 5, 7 join the code below them)
    rows = z[0]
    picks = rows[[0, 2, 4, 6]]
    count = 0.99 + 0.01 * torch.tensor([2.0, 2, 2, 2])
    sums = 0.99 * picks + 0.01 * (rows[0::2] + rows[1::2])
    assert torch.allclose(q.codebook, sums / smoothed_counts(count)[:, None])
    assert bool(q.started)


def test_dead_codes_restart_at_the_farthest_outputs():
    q = quantizer(3, 1, dead_after=2, update="loss")
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0], [100.0], [200.0]]))
    z = torch.tensor([[[0.1], [-3.0], [5.0], [1.0]]])  # all nearest to code 0
    q.train()
    with torch.enable_grad():
        q(z)
        assert int(q.restarts) == 0 and q.idle_steps.tolist() == [0, 1, 1]
        q(z)
    # codes 1 and 2 were idle for 2 steps: they take the farthest outputs, 5.0 then -3.0
    assert q.codebook.detach().view(-1).tolist() == [0.0, 5.0, -3.0]
    assert int(q.restarts) == 2 and q.idle_steps.tolist() == [0, 0, 0]


def test_perplexity_is_exp_entropy_of_usage():
    counts = torch.tensor([3.0, 1.0, 0.0, 4.0], dtype=torch.float64)
    p = [3 / 8, 1 / 8, 4 / 8]
    assert math.isclose(float(perplexity(counts)), math.exp(-sum(v * math.log(v) for v in p)),
                        rel_tol=1e-12)
    q = quantizer(4, 1, dead_after=0, update="loss")
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    z = torch.tensor([0.0, 0, 0, 1, 3, 3, 3, 3]).view(1, 8, 1)
    q.train()
    with torch.enable_grad():
        q(z)
    row = q.epoch_metrics()
    assert math.isclose(row["train_perplexity"], float(perplexity(counts)), rel_tol=1e-12)
    assert row["train_codes_used"] == 3 and float(q.usage.sum()) == 0  # reset for the next epoch


# -- the PixelCNN prior ----------------------------------------------------------------------
def test_pixelcnn_is_causal_and_sees_every_earlier_position():
    torch.manual_seed(0)
    net = GatedPixelCNN(7, (4, 5), channels=8, layers=4, kernel=3).double()
    index = torch.randint(0, 7, (1, 4, 5), generator=gen(5))
    emb = net.embed(index).permute(0, 3, 1, 2).detach().requires_grad_(True)
    v = h = emb
    for layer in net.layers:
        v, h = layer(v, h)
    out = net.head(h)  # (1, K, 4, 5)
    for i in range(4):
        for j in range(5):
            (g,) = torch.autograd.grad(out[0, :, i, j].sum(), emb, retain_graph=True)
            seen = g.abs().sum(1)[0] > 0  # (4, 5)
            raster = torch.arange(20).view(4, 5) < i * 5 + j
            assert torch.equal(seen, raster), (i, j)


def small_vq(arch="conv", shape=(1, 16, 16), **kw):
    cfg = RunConfig().update({"latent": "vq", "arch": arch, "hidden": (16,), "codebook_size": 6,
                              "code_dim": 3, **kw}).validate()
    torch.manual_seed(0)
    return build_model(cfg.model, shape)


def test_the_bound_is_the_sum_of_its_two_terms():
    model = small_vq().double().eval()
    with torch.no_grad():
        model.quantizer.codebook.copy_(torch.randn(6, 3, generator=gen(6), dtype=torch.float64))
    torch.manual_seed(1)
    net = GatedPixelCNN(6, (2, 2), channels=8, layers=2).double()
    s = PixelCNNSampler(model, net)
    x = (torch.rand(5, 1, 16, 16, generator=gen(7)) < 0.3).double()
    res = s.evaluate(x)
    with torch.no_grad():
        z_e = model.encoder(x)  # (5, 4, 3)
        d = ((z_e.unsqueeze(2) - model.quantizer.codebook) ** 2).sum(-1)  # brute force (5, 4, 6)
        index = d.argmin(-1)
        log_px = model.decode(model.quantizer.codebook[index].flatten(1)).log_prob(x)
        logits = net(index.view(5, 2, 2))
        log_pc = torch.log_softmax(logits, 1).gather(1, index.view(5, 1, 2, 2)).sum((1, 2, 3))
    assert math.isclose(res["log_likelihood"], float((log_px + log_pc).mean()), rel_tol=1e-10)
    assert math.isclose(res["code_rec"], float(-log_px.mean()), rel_tol=1e-10)
    assert math.isclose(res["code_prior_nll"], float(-log_pc.mean()), rel_tol=1e-10)
    assert math.isclose(res["bits_per_dim"], -res["log_likelihood"] / (256 * math.log(2)))


def test_an_mlp_body_quantizes_latent_dim_vectors():
    model = small_vq("mlp", (12,), latent_dim=5)
    assert (model.positions, model.latent_dim) == (5, 15)
    t = model.eval()(torch.rand(3, 12).round())
    assert torch.allclose(t.kl, torch.full((3,), 5 * math.log(6)))
    assert torch.allclose(t.loss, t.rec + t.kl)  # evaluation: the negative ELBO, no commitment


@pytest.mark.parametrize("extra, needle", [
    ({"objective": "iwae"}, "objective elbo"), ({"conditional": True}, "conditional"),
    ({"posterior": "iaf"}, "posterior iaf"), ({"top_latent_dims": (2,)}, "top_latent_dims")])
def test_vq_refuses_what_does_not_apply(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig().update({"latent": "vq", **extra}).validate()


# -- the CLI, resume, refusals, estimator ------------------------------------------------------
SMALL = ["--arch", "conv", "--latent", "vq", "--hidden", "16", "--codebook-size", "16",
         "--code-dim", "4", "--batch-size", "16", "--dead-code-steps", "3", "--seed", "3"]


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """(96, 16, 16) binary images, a 4x4 square at a seeded place: a 2x2 code grid."""
    rng = np.random.default_rng(0)
    x = np.zeros((96, 16, 16), np.float32)
    for i, (r, c) in enumerate(rng.integers(0, 12, (96, 2))):
        x[i, r:r + 4, c:c + 4] = 1
    path = tmp_path_factory.mktemp("vqdata") / "squares.npy"
    np.save(path, x)
    return path


@pytest.fixture(scope="module")
def vq_run(squares, tmp_path_factory):
    run = tmp_path_factory.mktemp("vqrun") / "run"
    assert cli("train", squares, "--out", run, "--epochs", 1, *SMALL) == 0
    return run


def test_cli_train_fit_sampler_sample_evaluate(vq_run, tmp_path, capsys):
    run = vq_run
    row = metrics(run)[0]
    assert {"train_perplexity", "train_codes_used", "train_commitment", "dead_code_restarts"} <= set(row)
    assert 1 <= row["train_perplexity"] <= 16
    assert math.isclose(row["train_kl"], 4 * math.log(16), rel_tol=1e-6)
    capsys.readouterr()
    assert cli("evaluate", run) == 0  # no prior yet: the uniform prior's bound, said
    out = capsys.readouterr()
    assert "uniform prior" in out.out and "fit-sampler" in out.err
    assert cli("fit-sampler", run, "--sampler", "pixelcnn") == 0
    assert cli("sample", run, "--sampler", "pixelcnn", "-n", 4, "--out", tmp_path / "s.npy") == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (4, 1, 16, 16) and np.isfinite(s).all()
    capsys.readouterr()
    assert cli("evaluate", run, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["code_prior"] == "pixelcnn" and res["importance_samples"] == 1
    assert math.isclose(res["log_likelihood"], -(res["code_rec"] + res["code_prior_nll"]), rel_tol=1e-9)
    assert res["code_prior_nll"] < res["uniform_prior_nll"]  # the prior learned something
    assert res["bits_per_dim"] is not None  # binary data: a probability


@pytest.mark.parametrize("args, needle", [
    (("fit-sampler", "{run}", "--sampler", "expost"), "discrete codebook indices"),
    (("export", "{run}", "--out", "{tmp}/m.onnx"), "nearest-code search"),
    (("score", "{run}", "{data}", "--out", "{tmp}/s.csv"), "fit-sampler RUN --sampler pixelcnn")])
def test_what_a_vq_run_lacks_is_one_error_line(vq_run, squares, tmp_path, capsys, args, needle):
    run = vq_run
    assert cli(*[a.format(run=run, tmp=tmp_path, data=squares) for a in args]) == 2
    assert_one_error(capsys.readouterr().err, needle)


def test_resume_is_bit_identical(squares, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("train", squares, "--out", full, "--epochs", 3, *SMALL) == 0
    assert cli("train", squares, "--out", part, "--epochs", 1, *SMALL) == 0
    assert cli("train", squares, "--out", part, "--epochs", 3, "--resume") == 0
    for name in ("model.safetensors", "checkpoint.safetensors"):
        a, b = load_file(full / name), load_file(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert "model.quantizer.ema_count" in load_file(full / "checkpoint.safetensors")
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(metrics(full)) == drop(metrics(part))
    assert metrics(full)[-1]["dead_code_restarts"] > 0  # the restarts crossed the resume


def test_pixelcnn_on_a_gaussian_latent_is_one_error_line(blobs, tmp_path, capsys):
    np.save(tmp_path / "b.npy", blobs)
    run = tmp_path / "run"
    assert cli("train", tmp_path / "b.npy", "--out", run, "--epochs", 1, "--hidden", 8,
               "--latent-dim", 2) == 0
    capsys.readouterr()
    assert cli("fit-sampler", run, "--sampler", "pixelcnn") == 2
    assert_one_error(capsys.readouterr().err, "not indices into a codebook")


def test_estimator_fits_and_refuses_a_density(squares):
    from vaekit import VAE

    x = np.load(squares)[:48].reshape(48, 1, 16, 16)
    est = VAE(arch="conv", latent="vq", hidden=(16,), codebook_size=8, code_dim=4, epochs=1,
              batch_size=16, random_state=0).fit(x)
    assert isinstance(est.model_, VQVAE)
    est.fit_sampler(x, sampler="pixelcnn")
    assert est.sample(3, sampler="pixelcnn").shape == (3, 1, 16, 16)
    with pytest.raises(ConfigError, match="pixelcnn"):
        est.score_samples(x)
