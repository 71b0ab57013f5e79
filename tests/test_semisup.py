"""The semi-supervised VAE M2 (Kingma et al. 2014): its bounds against independent sums over
classes, the conditional VAE and importance sampling; its data layer (labels kept, batches that
always hold labelled rows); and a small problem whose classes it must learn from few labels."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaekit import pipeline
from vaekit.config.settings import RunConfig
from vaekit.config.options import OptionError
from vaekit.data.base import Dataset
from vaekit.data.labelled import (check_partial_labels, keep_labels, labelled_count,
                                  labelled_order)
from vaekit.errors import DataError
from vaekit.models.vae import VAEModel
from vaekit.parts.nets import BODIES
from vaekit.models.semisup import SemiSupervisedVAE, all_class_heads

C, D, L = 3, 6, 2


def m2(seed: int = 0, alpha: float = 0.0, **kw) -> SemiSupervisedVAE:
    """A float64 M2 on 6 binary-valued features, 3 classes."""
    cfg = RunConfig().update({"semi_supervised": True, "hidden": (8,), "latent_dim": L,
                              "alpha": alpha, **kw}).model
    cfg.num_classes = C
    torch.manual_seed(seed)
    model = SemiSupervisedVAE(cfg, (D,)).double()
    model.preprocess.fit(torch.rand(4, D))
    return model


def rows(n: int = 5, seed: int = 1) -> torch.Tensor:
    """Binary rows ``(n, D)``, float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, D, generator=g, dtype=torch.float64), generator=g)


def noise(k: int, b: int, seed: int) -> torch.Tensor:
    """The model's noise ``(k, b, C * L)``: one style draw per class."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, b, C * L, dtype=torch.float64, generator=g)


def brute_force_bound(model, x, c: int, eps):
    """L(x, c) for every row from the networks called class by class, with torch.distributions
    for the densities and the KL: log p(x|c,z) + log p(c) - KL(q(z|x,c) || N(0, I)); ``eps``
    ``(b, C * L)`` holds class c's draw at ``c * L``."""
    eps = eps[:, c * L: (c + 1) * L]
    onehot = F.one_hot(torch.full((len(x),), c), C).double()
    mu, logvar = model.encoder(x, onehot).chunk(2, -1)
    sd = torch.sqrt(torch.exp(logvar) + model.config.min_var)
    z = mu + sd * eps
    logits = model.decoder(torch.cat([z, onehot], -1))
    log_px = Bernoulli(logits=logits).log_prob(x).sum(-1)
    kl = kl_divergence(Normal(mu, sd), Normal(torch.zeros_like(mu), 1.0)).sum(-1)
    return log_px - kl - math.log(C), (log_px, kl, z, mu, sd)


def test_unlabelled_bound_is_the_sum_over_classes_plus_the_entropy():
    model, x = m2(), rows()
    eps = noise(1, len(x), 2)
    bounds = torch.stack([brute_force_bound(model, x, c, eps[0])[0] for c in range(C)], -1)  # (b, C)
    q = torch.softmax(model.classifier(x), -1)
    expected = (q * bounds).sum(-1) - (q * q.log()).sum(-1)  # U(x) = E_q[L(x,y)] + H(q)
    t = model(x, noise=eps)  # no labels: every row unlabelled
    torch.testing.assert_close(-(t.rec + t.kl), expected)
    torch.testing.assert_close(t.loss, -expected)
    minus_one = model(x, noise=eps, y=torch.full((len(x),), -1))
    torch.testing.assert_close(minus_one.loss, t.loss)


def test_labelled_bound_is_the_conditional_vae_elbo_plus_log_p_y_and_alpha_weighs_the_classifier():
    model, x = m2(alpha=2.5), rows()
    y = torch.tensor([0, 2, 1, 1, 0])
    eps = noise(1, len(x), 3)
    cvae_cfg = RunConfig().update({"conditional": True, "hidden": (8,), "latent_dim": L}).model
    cvae_cfg.num_classes = C
    cvae = VAEModel(cvae_cfg, (D,)).double()
    cvae.encoder.load_state_dict(model.encoder.state_dict())  # the same networks
    cvae.decoder.load_state_dict(model.decoder.state_dict())
    own = eps[0].unflatten(-1, (C, L))[torch.arange(len(x)), y]  # each row's draw for its class
    elbo = -cvae(x, noise=own.unsqueeze(0), y=y).loss
    t = model(x, noise=eps, y=y)
    log_qy = torch.log_softmax(model.classifier(x), -1)[torch.arange(len(x)), y]
    torch.testing.assert_close(-(t.rec + t.kl), elbo - math.log(C))
    torch.testing.assert_close(t.loss, -(elbo - math.log(C)) - 2.5 * log_qy)
    # the label's part of the KL is log C at the observed class (a point mass against uniform p(y))
    kl_y = model.terms(x, y, noise=eps).kl_dims[0, :, L:]
    torch.testing.assert_close(kl_y, F.one_hot(y, C).double() * math.log(C))


def test_mixed_batches_give_each_row_its_own_bound():
    model, x = m2(alpha=1.0), rows(6)
    y = torch.tensor([-1, 2, -1, 0, -1, 1])
    eps = noise(1, len(x), 4)
    mixed = model(x, noise=eps, y=y).loss
    alone = [model(x[i:i + 1], noise=eps[:, i:i + 1], y=y[i:i + 1]).loss for i in range(len(x))]
    torch.testing.assert_close(mixed, torch.cat(alone))


def test_importance_weights_sum_the_classes_exactly():
    """log w_k = log sum_c p(c) p(x|c,z_ck) p(z_ck) / q(z_ck|x,c) (one draw per class), and
    log_px + log_ratio is that weight whatever the label (observed: only its class)."""
    model, x = m2(), rows()
    k = 4
    eps = noise(k, len(x), 5)
    per_class = []
    for c in range(C):
        logs = []
        for s in range(k):
            _, (log_px, _, z, mu, sd) = brute_force_bound(model, x, c, eps[s])
            log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
            log_qz = Normal(mu, sd).log_prob(z).sum(-1)
            logs.append(-math.log(C) + log_px + log_pz - log_qz)
        per_class.append(torch.stack(logs))  # (k, b)
    per_class = torch.stack(per_class)  # (C, k, b)
    t = model.terms(x, None, k, noise=eps, weights=True)
    torch.testing.assert_close(t.log_px + t.log_ratio, torch.logsumexp(per_class, 0))
    y = torch.tensor([1, -1, 0, 2, -1])
    t = model.terms(x, y, k, noise=eps, weights=True)
    want = torch.where(y >= 0, per_class[y.clamp(min=0), :, torch.arange(len(x))].T,
                       torch.logsumexp(per_class, 0))
    torch.testing.assert_close(t.log_px + t.log_ratio, want)


@pytest.mark.parametrize("arch,shape", [("mlp", (D,)), ("linear", (D,)), ("conv", (1, 8, 8)),
                                        ("resnet", (1, 8, 8))])
def test_all_class_heads_equal_one_encoder_call_per_class(arch, shape):
    torch.manual_seed(0)
    body = BODIES[arch](shape, None if arch == "linear" else (16,))
    enc = body.encoder(5, C).double()
    x = torch.rand(4, *shape, dtype=torch.float64)
    heads = all_class_heads(enc, x)
    for c in range(C):
        torch.testing.assert_close(heads[c], enc(x, F.one_hot(torch.full((4,), c), C).double()))


def test_predict_proba_rows_sum_to_one_and_are_the_classifier_softmax():
    model, x = m2(), rows(7)
    p = model.predict_proba(x)
    torch.testing.assert_close(p.sum(-1), torch.ones(7, dtype=p.dtype))
    torch.testing.assert_close(p, torch.softmax(model.classifier(x), -1).detach())


def test_the_code_is_style_and_class_and_decodes_without_labels():
    model, x = m2(), rows()
    post = model.encode(x)
    q = model.predict_proba(x)
    mean = post.mean
    assert mean.shape == (len(x), L + C) == (len(x), model.latent_dim)
    torch.testing.assert_close(mean[:, L:], q)
    torch.testing.assert_close(mean[:, :L], (q.T.unsqueeze(-1) * post.style.mean).sum(0))
    y = torch.tensor([2, 2, 0, 1, -1])
    fixed = model.encode(x, y).mean
    torch.testing.assert_close(fixed[:4, L:], F.one_hot(y[:4], C).double())
    torch.testing.assert_close(fixed[4], mean[4])
    g = torch.Generator().manual_seed(0)
    codes = model.sample_prior(6, g, torch.tensor(1))
    assert torch.equal(codes[:, L:], F.one_hot(torch.ones(6, dtype=torch.long), C).double())
    assert model.generate(6, g, torch.tensor(1)).shape == (6, D)
    assert model.reconstruct(x).shape == x.shape


# -- the data layer ---------------------------------------------------------------------------
def test_keep_labels_keeps_n_per_class_chosen_by_the_seed():
    y = torch.arange(100) % 4
    a, b, c = (keep_labels(y, 3, s, "y") for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    for kept in (a, c):
        assert torch.equal(torch.bincount(kept[kept >= 0]), torch.full((4,), 3))
        assert torch.equal(kept[kept >= 0], y[kept >= 0])
        assert int((kept == -1).sum()) == 88
    y[3::4][:10] = 0  # class 3: 15 rows
    with pytest.raises(DataError, match="class 3 has 15 labelled rows, fewer than the 20"):
        keep_labels(y, 20, 0, "y")


@pytest.mark.parametrize("y,needle", [
    (None, "has no labels"), (torch.tensor([-1, -1]), "every row is unlabelled"),
    (torch.tensor([0, 2, -1]), "classes [1] have no labelled row"),
    (torch.tensor([0, 0, -1]), "only class 0 is labelled"), (torch.tensor([0, 1, -2]), "got -2")])
def test_partial_labels_are_refused_with_one_reason(y, needle):
    with pytest.raises(DataError) as e:
        check_partial_labels(y, "data")
    assert needle in str(e.value)


def test_every_batch_holds_labelled_rows_and_every_unlabelled_row_comes_once():
    y = torch.full((1000,), -1)
    y[torch.arange(0, 1000, 97)] = torch.arange(11) % 3  # 11 labelled rows
    batch, share = 40, 0.1
    m = labelled_count(share, batch, 11, 1000)
    assert m == 4
    order = labelled_order(y, share, batch, torch.Generator().manual_seed(0))
    again = labelled_order(y, share, batch, torch.Generator().manual_seed(0))
    assert torch.equal(order, again)
    steps = list(order.split(batch))
    assert all((y[s] >= 0).sum() == m for s in steps)
    unl = order[y[order] < 0]
    assert torch.equal(unl.sort().values, torch.nonzero(y < 0).flatten())  # each exactly once
    counts = torch.bincount(order[y[order] >= 0], minlength=1000)[y >= 0]
    assert int(counts.max() - counts.min()) <= 1  # the labelled rows are cycled evenly
    assert len(steps) == math.ceil(989 / (batch - m))
    # at least one labelled row per batch, at least their share of the data
    assert labelled_count(0.0, 128, 100, 50_000) == 1
    assert labelled_count(0.0, 128, 10_000, 20_000) == 64
    everything = torch.arange(10) % 2
    assert sorted(labelled_order(everything, 0.1, 4, torch.Generator()).tolist()) == list(range(10))


def test_config_refuses_what_m2_is_not():
    def check(**kw):
        RunConfig().update({"semi_supervised": True, **kw}).validate()
    for kw, needle in [({"conditional": True}, "--conditional"), ({"prior": "vamp"}, "--prior"),
                       ({"top_latent_dims": (2,)}, "--top-latent-dims"),
                       ({"objective": "iwae"}, "--objective"), ({"free_bits": 0.1}, "--free-bits")]:
        with pytest.raises(OptionError) as e:
            check(**kw)
        assert needle in e.value.as_flags()
    with pytest.raises(OptionError, match="labelled"):
        RunConfig().update({"labelled": 3}).validate()


# -- a problem whose classes must be learnt from a few labels -----------------------------------
def clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three prototypes of 12 binary pixels, each pixel flipped with probability 0.1."""
    rng = np.random.default_rng(seed)
    protos = np.array([[1] * 4 + [0] * 8, [0] * 4 + [1] * 4 + [0] * 4, [0] * 8 + [1] * 4])
    y = rng.integers(0, 3, n)
    x = np.abs(protos[y] - (rng.random((n, 12)) < 0.1)).astype(np.float32)
    return x, y


def test_three_classes_are_learnt_from_two_labels_each():
    x, y = clusters(900, 0)
    xt, yt = clusters(300, 1)
    data = Dataset.from_arrays("clusters", x, xt, y, yt)
    cfg = RunConfig().update({"semi_supervised": True, "labelled": 2, "hidden": (32,),
                              "latent_dim": 2, "epochs": 15, "batch_size": 64, "lr": 3e-3,
                              "alpha": 1.0, "precision": "fp32", "seed": 0})
    res = pipeline.train(cfg, data, log=lambda s: None)
    assert int((res.data.y_train >= 0).sum()) == 6  # two labels per class were kept
    error = res.history[-1]["test_error"]
    assert error < 0.05, error
