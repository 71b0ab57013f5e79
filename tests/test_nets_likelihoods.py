"""Network bodies (incl. resnet, conditional encoders) and the predicted-variance Gaussian and
discretised logistic-mixture likelihoods, against scipy oracles first, then shapes and gradients;
tests/test_family_table.py runs the checks common to every registered family."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
import torch.nn.functional as F

from vaekit.config.settings import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.parts.likelihoods import (LIKELIHOODS, MIN_LOG_SCALE, BernoulliLikelihood, GaussianLikelihood,
                                LogisticMixtureLikelihood, PredictedGaussianLikelihood)
from vaekit.parts.nets import BODIES

VALUES = torch.arange(256, dtype=torch.float64) / 255  # every 8-bit value


def logistic_bin_probability(x, loc, scale):
    """P(x) of a logistic binned to [x - 0.5/255, x + 0.5/255], end bins open (scipy oracle).

    The difference is taken in the tail away from the mean (CDFs left of it, survival functions
    right of it) so that small probabilities keep their precision in float64.
    """
    d, h = st.logistic(loc, scale), 0.5 / 255
    if x > loc:
        upper = 0.0 if x >= 1 else d.sf(x + h)
        return (1.0 if x <= 0 else d.sf(x - h)) - upper
    lower = 0.0 if x <= 0 else d.cdf(x - h)
    return (1.0 if x >= 1 else d.cdf(x + h)) - lower


def mixture_params(logits, locs, log_scales):
    """Decoder output for one sub-pixel of vector data: (3K,) = logits, means, log-scales."""
    return torch.tensor([*logits, *locs, *log_scales], dtype=torch.float64)


# ---- logistic mixture: numbers ----------------------------------------------------------------

@pytest.mark.parametrize("logits, locs, log_scales", [
    ([0.0], [0.5], [-3.0]),
    ([0.3, -1.0, 2.0], [0.1, 0.55, 0.9], [-4.0, -2.0, -6.0]),
    ([0.0, 0.0], [-0.4, 1.6], [-1.0, -7.0]),          # means outside [0, 1]: mass in the end bins
    ([5.0, -5.0], [0.5, 0.0], [MIN_LOG_SCALE, 0.0]),   # scale at the floor: one bin holds ~97%
    ([1.0, 0.0], [0.3, 0.7], [-80.0, -40.0]),          # far below the floor (clamped)
    ([0.0, 2.0], [0.5, 0.2], [12.0, 30.0]),            # scales far wider than [0, 1]
])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_logistic_mixture_probabilities_of_all_256_values_sum_to_one(logits, locs, log_scales, dtype, tol):
    lik = LogisticMixtureLikelihood((1,), mixtures=len(logits))
    p = mixture_params(logits, locs, log_scales)[None].to(dtype)  # (1, 3K): broadcast to 256 values
    log_p = lik(p).log_prob(VALUES[:, None].to(dtype))  # (256,)
    assert torch.isfinite(log_p).all()
    total = torch.logsumexp(log_p.double(), 0).exp()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=tol)


def test_logistic_single_component_matches_scipy_including_end_bins():
    lik = LogisticMixtureLikelihood((1,), mixtures=1)
    xs = [0.0, 1 / 255, 2 / 255, 100 / 255, 128 / 255, 254 / 255, 1.0]
    cases = [(x, loc, ls) for x in xs for loc in (-0.1, 0.0, 0.3, 0.5, 1.0, 1.2)
             for ls in (-7.0, -5.0, -3.0, 0.0, 2.0)]
    params = torch.stack([mixture_params([0.0], [loc], [ls]) for _, loc, ls in cases])
    x = torch.tensor([[c[0]] for c in cases], dtype=torch.float64)
    got = lik(params).log_prob(x).numpy()
    oracle = np.array([math.log(logistic_bin_probability(x, loc, math.exp(ls))) if
                       logistic_bin_probability(x, loc, math.exp(ls)) > 0 else -np.inf
                       for x, loc, ls in cases])
    finite = oracle > -700
    assert finite.sum() > 150  # the oracle is usable almost everywhere; far tails checked below
    np.testing.assert_allclose(got[finite], oracle[finite], rtol=1e-9, atol=1e-9)
    # x = 0 integrates from -inf, x = 1 to +inf: exactly CDF(0.5/255) and 1 - CDF(1 - 0.5/255)
    ends = lik(mixture_params([0.0], [0.4], [-2.0])[None]).log_prob(torch.tensor([[0.0], [1.0]],
                                                                                  dtype=torch.float64))
    d = st.logistic(0.4, math.exp(-2.0))
    np.testing.assert_allclose(ends.numpy(), [d.logcdf(0.5 / 255), d.logsf(1 - 0.5 / 255)], rtol=1e-12)


def test_logistic_far_tail_stays_finite_and_exact():
    """A bin 200 scales from the mean: log P = log(sigmoid(a) - sigmoid(b)) ~ a + log(1 - e^(b-a))."""
    lik = LogisticMixtureLikelihood((1,), mixtures=1)
    s, x, loc = math.exp(-6.0), 100 / 255, 100 / 255 - 200 * math.exp(-6.0)  # right tail
    a, b = -(x - 0.5 / 255 - loc) / s, -(x + 0.5 / 255 - loc) / s   # survival-function arguments
    expected = -math.log1p(math.exp(-a)) + math.log(-math.expm1(-math.log1p(math.exp(-b)) + math.log1p(math.exp(-a))))
    for dtype in (torch.float64, torch.float32):
        got = lik(mixture_params([0.0], [loc], [-6.0])[None].to(dtype)).log_prob(torch.tensor([[x]], dtype=dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), torch.tensor([expected], dtype=torch.float64),
                                   rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)


def test_logistic_mixture_mean_and_samples():
    lik = LogisticMixtureLikelihood((2,), mixtures=2)
    # sub-pixel 0: weights (1/4, 3/4), means (0.2, 0.6) -> 0.5; sub-pixel 1: both means 1.5 -> 1
    p = torch.tensor([[0.0, 0.0, math.log(3), 0.0, 0.2, 1.5, 0.6, 1.5, -3, -3, -4, -4]])
    torch.testing.assert_close(lik(p).mean, torch.tensor([[0.5, 1.0]]))
    # samples are 8-bit values whose frequencies match exp(log_prob)
    one = LogisticMixtureLikelihood((1,), mixtures=2)
    dist = one(torch.tensor([[0.0, 1.0, 0.3, 0.35, -4.5, -3.5]], dtype=torch.float64))
    draws = dist.sample((40_000,), generator=torch.Generator().manual_seed(2))  # (n, 1, 1)
    assert draws.shape == (40_000, 1, 1)
    codes = torch.round(draws.flatten() * 255).long()
    torch.testing.assert_close(codes.double() / 255, draws.flatten())
    freq = torch.bincount(codes, minlength=256).double() / len(codes)
    prob = dist.log_prob(VALUES[:, None]).exp().flatten()
    se = torch.sqrt(prob * (1 - prob) / len(codes))
    assert (torch.abs(freq - prob) <= 5 * se + 1e-4).all()


def test_logistic_mixture_checks_for_8bit_data():
    lik = LogisticMixtureLikelihood((3,), mixtures=2)
    lik.check_data(torch.tensor([[0.0, 17 / 255, 1.0]]), "x")
    lik.check_data(torch.from_numpy(np.arange(256, dtype=np.uint8).reshape(-1, 1) / np.float32(255)), "x")
    with pytest.raises(DataError, match="8-bit"):
        lik.check_data(torch.tensor([[0.0, 0.5, 1.0]]), "x")  # 127.5 / 255
    with pytest.raises(DataError, match=r"span \[-0.1, 1\]"):
        lik.check_data(torch.tensor([[-0.1, 0.5, 1.0]]), "x")
    with pytest.raises(DataError, match=r"span \[0, 255\]"):
        lik.check_data(torch.tensor([[0.0, 128.0, 255.0]]), "x")  # raw bytes, not scaled


def test_discrete_says_when_bits_per_dim_make_sense():
    binary, grey = torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.5, 1.0]])
    assert BernoulliLikelihood((3,)).discrete(binary) is True
    assert BernoulliLikelihood((3,)).discrete(grey) is False
    assert LogisticMixtureLikelihood((3,)).discrete(grey) is True
    assert GaussianLikelihood((3,)).discrete(binary) is False
    assert PredictedGaussianLikelihood((3,)).discrete(binary) is False


def test_logistic_gradients_are_finite_at_extremes():
    lik = LogisticMixtureLikelihood((1, 2, 3), mixtures=2)
    # one row per pixel: logits (2), means (2), raw log-scales (2)
    pixels = torch.tensor([[30.0, -30.0, 5.0, -5.0, -80.0, 60.0],   # x = 0, means far off, scale floored
                           [0.0, 0.0, 0.5, 0.5, 50.0, -50.0],       # x = 1, huge and floored scales
                           [-50.0, 50.0, 0.5, 0.5, 0.0, -7.0],      # x = 0.5 exactly at a mean
                           [1.0, 0.0, 20.0, -20.0, 5.0, 5.0],       # means 20 units away, wide
                           [0.0, 1.0, -1.0, 2.0, -9.0, -9.0],       # x = 1: deep tail, floored scales
                           [0.0, 0.0, 0.5, 0.5, -7.0, 30.0]])       # x = 0
    params = pixels.T.reshape(1, 6, 2, 3).clone().requires_grad_()  # (1, 3K*C, H, W)
    x = torch.tensor([[[[0.0, 1.0, 0.5], [20 / 255, 1.0, 0.0]]]])
    lp = lik(params).log_prob(x)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


# ---- gaussian with predicted variance --------------------------------------------------------

def test_predicted_gaussian_matches_scipy_with_floored_variance():
    g = torch.Generator().manual_seed(3)
    lik = PredictedGaussianLikelihood((2, 3, 3), min_obs_var=0.01)
    params = torch.randn(4, 4, 3, 3, generator=g)  # (b, 2C, H, W): mean channels, then log-variance
    x = torch.randn(4, 2, 3, 3, generator=g)
    px = lik(params)
    loc, raw = params[:, :2].numpy(), params[:, 2:].numpy()
    oracle = st.norm(loc, np.sqrt(np.exp(raw) + 0.01)).logpdf(x.numpy()).sum((1, 2, 3))
    np.testing.assert_allclose(px.log_prob(x).numpy(), oracle, rtol=1e-5)
    torch.testing.assert_close(px.mean, params[:, :2])
    vec = PredictedGaussianLikelihood((3,), min_obs_var=0.01)  # vectors split the feature axis
    p = torch.tensor([[0.1, -0.2, 0.3, 0.0, 1.0, -2.0]])
    oracle = st.norm([0.1, -0.2, 0.3], np.sqrt(np.exp([0.0, 1.0, -2.0]) + 0.01)).logpdf([0.5, 0.5, 0.5]).sum()
    np.testing.assert_allclose(vec(p).log_prob(torch.full((1, 3), 0.5)).numpy(), [oracle], rtol=1e-5)


def test_predicted_gaussian_floor_keeps_density_finite():
    lik = PredictedGaussianLikelihood((2,), min_obs_var=1e-6)
    params = torch.tensor([[0.3, 0.7, -1e4, -1e4]], requires_grad=True)
    x = torch.tensor([[0.3, 0.7 + 1e-3]])
    lp = lik(params).log_prob(x)
    # variance 1e-6 exactly: 2 * (-0.5 log(2 pi 1e-6)) - 0.5 * (1e-3)^2 / 1e-6
    torch.testing.assert_close(lp, torch.tensor([-math.log(2 * math.pi * 1e-6) - 0.5]), rtol=1e-5, atol=1e-4)
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()
    torch.testing.assert_close(params.grad[0, 1], torch.tensor(1e3), rtol=1e-4, atol=0)  # (x - mu) / var


def test_predicted_gaussian_broadcasts_samples_against_data():
    lik = PredictedGaussianLikelihood((3, 2, 2))
    g = torch.Generator().manual_seed(4)
    params = torch.randn(5, 2, 6, 2, 2, generator=g)  # (s, b, 2C, H, W): split at dim -3, not 1
    x = torch.rand(2, 3, 2, 2, generator=g)
    lp = lik(params).log_prob(x)
    assert lp.shape == (5, 2)
    torch.testing.assert_close(lp, torch.stack([lik(params[i]).log_prob(x) for i in range(5)]))
    torch.testing.assert_close(lik(params).mean, params[:, :, :3])


# ---- bodies ----------------------------------------------------------------------------------

SHAPES = [(784,), (1, 28, 28), (3, 32, 32), (1, 8, 8)]
CASES = [(arch, shape) for arch in ("mlp", "linear", "conv", "resnet") for shape in SHAPES
         if len(shape) == 3 or arch in ("mlp", "linear")]


def build(arch, shape):
    hidden = {"mlp": (32,), "linear": None, "conv": (32,), "resnet": (32,)}[arch]
    return BODIES[arch](shape, hidden)


@pytest.mark.parametrize("arch, shape", CASES)
def test_bodies_give_the_right_shapes(arch, shape):
    torch.manual_seed(0)
    body = build(arch, shape)
    x = torch.rand(2, *shape)
    assert body.encoder(8)(x).shape == (2, 8)
    z = torch.randn(2, 5)
    c, *rest = shape
    for name, cfg in (("bernoulli", {}), ("gaussian-predicted", {}), ("logistic-mixture", {"mixtures": 3})):
        lik = LIKELIHOODS[name].from_config(shape, ModelConfig(likelihood=name, **cfg))
        params = body.decoder(5, lik.params_per_dim)(z)
        assert params.shape == (2, lik.params_per_dim * c, *rest)
        assert lik(params).log_prob(torch.round(x * 255) / 255).shape == (2,)
    assert [LIKELIHOODS[n].from_config(shape, ModelConfig(mixtures=3)).params_per_dim
            for n in ("bernoulli", "gaussian-predicted", "logistic-mixture")] == [1, 2, 9]


@pytest.mark.parametrize("arch, shape", [("mlp", (784,)), ("linear", (1, 8, 8)), ("conv", (3, 32, 32)),
                                         ("resnet", (1, 28, 28))])
def test_conditional_encoders_take_the_label_at_the_first_dense_layer(arch, shape):
    torch.manual_seed(0)
    body = build(arch, shape)
    plain, cond = body.encoder(6), body.encoder(6, cond_dim=10)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_cond = sum(p.numel() for p in cond.parameters())
    first_width = 6 if arch == "linear" else 32
    assert n_cond - n_plain == 10 * first_width  # only the first dense layer grows
    x = torch.rand(3, *shape)
    labels = F.one_hot(torch.tensor([3, 3, 3]), 10).float()
    other = F.one_hot(torch.tensor([7, 3, 0]), 10).float()
    a, b = cond(x, labels), cond(x, other)
    assert a.shape == plain(x).shape == (3, 6)
    assert not torch.allclose(a[0], b[0]) and not torch.allclose(a[2], b[2])
    torch.testing.assert_close(a[1], b[1])  # same label, same output
    with pytest.raises(ValueError, match="condition"):
        cond(x)


def test_resnet_needs_images_and_one_hidden_width():
    with pytest.raises(ConfigError, match="--arch resnet needs image data"):
        BODIES["resnet"]((784,), None)
    with pytest.raises(ConfigError, match="one --hidden"):
        BODIES["resnet"]((1, 8, 8), (64, 32))


def test_resnet_trains_every_parameter_and_ignores_the_batch():
    """Blocks start as their skips (second conv zero): those convs get gradients at once, and
    after one step every weight does; no batch statistics."""
    torch.manual_seed(0)
    body = BODIES["resnet"]((3, 8, 8), (16,))
    enc, dec = body.encoder(4), body.decoder(2, 2)
    params = [*enc.named_parameters(), *dec.named_parameters()]
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(enc(x[:1]), enc(x)[:1])
    opt = torch.optim.SGD([p for _, p in params], lr=0.1)
    for step in range(2):
        opt.zero_grad()
        (dec(enc(x)[:, :2]) ** 2).sum().backward()
        for name, p in params:
            assert torch.isfinite(p.grad).all(), name
            if step == 0 and "conv1" in name:
                assert p.grad.abs().sum() == 0, name  # behind a zero conv at the start
            else:
                assert p.grad.abs().sum() > 0, name
        opt.step()
