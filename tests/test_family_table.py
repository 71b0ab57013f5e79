"""Every registered likelihood, posterior and prior in one table, each row with an independent
oracle (scipy, numpy), and the same checks over every row: log-density in float64 and float32,
broadcasting over a leading sample dimension, normalisation, sample moments (for the families
with a seeded sampler), gradients against central finite differences, and a state_dict round
trip through safetensors.

A name registered in LIKELIHOODS, POSTERIORS or PRIORS without a row in CASES fails
``test_every_registered_family_has_a_row``.
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import scipy.stats as st
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from scipy.special import log_expit, log_softmax, logsumexp

from vaekit.config.settings import ModelConfig
from vaekit.data.schema import Column, Schema
from vaekit.parts.likelihoods import LIKELIHOODS
from vaekit.parts.posteriors import POSTERIORS
from vaekit.parts.priors import PRIORS

F64 = torch.float64
BATCH = 2
REGISTRIES = {"likelihood": LIKELIHOODS, "posterior": POSTERIORS, "prior": PRIORS}
VAMP_DATA = (1, 2, 2)  # shape of one pseudo-input
MIN_VAR = 0.01  # posterior and prior variance floors: large enough to change the numbers
MIN_OBS_VAR = 0.05


def gen(seed):
    return torch.Generator().manual_seed(seed)


def per_example(a):
    """numpy ``(B, *event)`` -> ``(B,)``, summed over the event."""
    return a.reshape(len(a), -1).sum(1)


# ---- raw parameters and values ---------------------------------------------------------------

def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64)


def rand(g, *shape):
    return torch.rand(*shape, generator=g, dtype=F64)


def real_values(shape, g):
    return 1.5 * randn(g, BATCH, *shape)


def unit_values(shape, g):
    return 0.02 + 0.96 * rand(g, BATCH, *shape)


def grey_and_binary_values(shape, g):
    u = rand(g, BATCH, *shape)
    return torch.where(u < 0.3, 0.0, torch.where(u > 0.7, 1.0, u))


def eight_bit_values(shape, g):
    x = torch.randint(0, 256, (BATCH, *shape), generator=g).to(F64) / 255
    x.view(-1)[0], x.view(-1)[-1] = 0.0, 1.0  # both open end bins
    return x


def decoder_out(per_dim):
    def raw(shape, lead, g):
        return {"out": randn(g, *lead, BATCH, per_dim * shape[0], *shape[1:])}
    return raw


def bernoulli_raw(shape, lead, g):
    return {"out": 3 * randn(g, *lead, BATCH, *shape)}


def continuous_bernoulli_raw(shape, lead, g):
    logits = 2 * randn(g, *lead, BATCH, *shape)
    # within torch's Taylor-expanded region of the normaliser (probabilities 0.5 +- 0.001)
    logits.view(-1)[0], logits.view(-1)[-1] = 1e-3, -1e-3
    return {"out": logits}


def learned_scale_raw(shape, lead, g):
    return {"out": randn(g, *lead, BATCH, *shape), "log_std": torch.tensor(-1.2, dtype=F64)}


def predicted_gaussian_raw(shape, lead, g):
    out = randn(g, *lead, BATCH, 2 * shape[0], *shape[1:])
    out[..., shape[0], *([0] * (len(shape) - 1))] = -20.0  # a raw log-variance far below the floor
    return {"out": out}


MIXTURES = 2


def logistic_mixture_raw(shape, lead, g):
    c, rest = shape[0], shape[1:]
    logits = randn(g, *lead, BATCH, MIXTURES * c, *rest)
    loc = 1.2 * rand(g, *lead, BATCH, MIXTURES * c, *rest) - 0.1  # some means outside [0, 1]
    log_scale = -1.0 - 3.0 * rand(g, *lead, BATCH, MIXTURES * c, *rest)
    # the first sub-pixel, whose value is 0 (eight_bit_values): a dominant component with its
    # log-scale below the floor and its mean 2.3 floored scales above the bin edge 0.5/255
    first = (Ellipsis, 0, 0, *([0] * len(rest)))
    logits[first], loc[first], log_scale[first] = 5.0, 0.003, -9.0
    return {"out": torch.cat([logits, loc, log_scale], -len(shape))}


def diagonal_raw(shape, lead, g):
    out = torch.cat([randn(g, *lead, BATCH, shape[0]), 0.7 * randn(g, *lead, BATCH, shape[0])], -1)
    out[..., -1] = -30.0  # the floor is all of this variance
    return {"out": out}


def cholesky_raw(shape, lead, g):
    n = shape[0]
    out = 0.7 * randn(g, *lead, BATCH, POSTERIORS["full-covariance"].param_dim(n))
    out[..., n] = -30.0
    return {"out": out}


def iaf_raw(shape, lead, g):
    """Encoder output (mean, log-variance, context) and every step's weights, by parameter name;
    output weights small and gate biases near 1, so that the density is smooth on the grid."""
    n = shape[0]
    out = torch.cat([randn(g, *lead, BATCH, n), 0.5 * randn(g, *lead, BATCH, n),
                     randn(g, *lead, BATCH, n)], -1)
    with torch.random.fork_rng():  # the module is built only for its parameter names and shapes
        names = dict(POSTERIORS["iaf"](n).named_parameters())
    raw = {"out": out}
    for name, p in names.items():
        scale = 0.15 if name.endswith("w_out") else 0.6
        raw[name] = scale * randn(g, *p.shape)
        if name.endswith("b_out"):
            raw[name][n:] += 1.0
    return raw


def no_raw(shape, lead, g):
    return {}


COMPONENTS = 3


def mixture_raw(shape, lead, g):
    log_scales = 0.3 * randn(g, COMPONENTS, shape[0])
    log_scales[0, 0] = -20.0
    return {"means": 1.5 * randn(g, COMPONENTS, shape[0]), "log_scales": log_scales,
            "logits": randn(g, COMPONENTS)}


def vamp_raw(posterior):
    def raw(shape, lead, g):
        p = POSTERIORS[posterior].param_dim(shape[0])
        d = math.prod(VAMP_DATA)
        return {"pseudo_inputs": rand(g, COMPONENTS, *VAMP_DATA), "enc_w": 0.5 * randn(g, d, p),
                "enc_b": 0.3 * randn(g, p)}
    return raw


# ---- oracles: numpy float64 from the documented parameterisation -----------------------------

def bernoulli_oracle(raw, x):
    logit = raw["out"]
    return per_example(x * log_expit(logit) + (1 - x) * log_expit(-logit))


def normal_oracle(scale):
    def oracle(raw, x):
        return per_example(st.norm(raw["out"], scale(raw)).logpdf(x))
    return oracle


def laplace_oracle(scale):
    def oracle(raw, x):
        return per_example(st.laplace(raw["out"], scale(raw)).logpdf(x))
    return oracle


def learned_scale(raw):
    return math.sqrt(math.exp(2 * float(raw["log_std"])) + MIN_OBS_VAR)


def continuous_bernoulli_oracle(raw, x):
    # log C(l) + x l - softplus(l) with C = 2 artanh(1 - 2 p) / (1 - 2 p) = l / tanh(l / 2)
    # (Loaiza-Ganem & Cunningham 2019, eq. 7, with p = sigmoid(l)); C(0) = 2
    logit = raw["out"]
    safe = np.where(logit == 0, 1.0, logit)
    log_norm = np.where(logit == 0, math.log(2), np.log(safe / np.tanh(safe / 2)))
    return per_example(x * logit - np.logaddexp(0, logit) + log_norm)


def predicted_gaussian_oracle(raw, x):
    c = x.shape[1]
    loc, log_var = raw["out"][:, :c], raw["out"][:, c:]
    return per_example(st.norm(loc, np.sqrt(np.exp(log_var) + MIN_OBS_VAR)).logpdf(x))


MIN_LOG_SCALE = -7.0 - math.log(2.0)  # PixelCNN++'s -7 on [-1, 1] data is -7 - log 2 on [0, 1]


def logistic_mixture_elementwise(out, x):
    """log P(x) per sub-pixel: ``out`` ``(B, 3K*C, *rest)``, ``x`` ``(..., B, C, *rest)`` -> x's shape.

    Blocks (logits, means, log-scales) x (component, channel); bins [x - 0.5/255, x + 0.5/255]
    with open end bins (Salimans et al. 2017). A bin's probability is a difference of CDFs
    left of the mean and of survival functions right of it, in logs, so tails keep their digits.
    """
    b, c, rest = len(out), out.shape[1] // (3 * MIXTURES), out.shape[2:]
    logits, loc, log_scale = np.moveaxis(out.reshape(b, 3, MIXTURES, c, *rest), 1, 0)  # (B, K, C, *rest)
    x = np.expand_dims(np.round(x * 255) / 255, x.ndim - 1 - len(rest))  # (..., B, 1, C, *rest)
    d, h = st.logistic(loc, np.exp(np.maximum(log_scale, MIN_LOG_SCALE))), 0.5 / 255
    with np.errstate(divide="ignore"):
        lo_cdf = np.where(x <= 0, -np.inf, d.logcdf(x - h))
        hi_cdf = np.where(x >= 1, 0.0, d.logcdf(x + h))
        lo_sf = np.where(x <= 0, 0.0, d.logsf(x - h))
        hi_sf = np.where(x >= 1, -np.inf, d.logsf(x + h))
        left = hi_cdf + np.log1p(-np.exp(lo_cdf - hi_cdf))
        right = lo_sf + np.log1p(-np.exp(hi_sf - lo_sf))
    log_bin = np.where(x > loc, right, left)
    return logsumexp(log_softmax(logits, axis=1) + log_bin, axis=-2 - len(rest))


def logistic_mixture_oracle(raw, x):
    return per_example(logistic_mixture_elementwise(raw["out"], x))


def logistic_mixture_moments(raw, shape):
    """Mean and (diagonal) covariance per example from the oracle's 256 probabilities per sub-pixel."""
    values = (np.arange(256) / 255).reshape(256, 1, *([1] * len(shape)))
    p = np.exp(logistic_mixture_elementwise(raw["out"], np.broadcast_to(values, (256, BATCH, *shape))))
    mean = (p * values).sum(0).reshape(BATCH, -1)
    var = (p * values ** 2).sum(0).reshape(BATCH, -1) - mean ** 2
    return mean, np.stack([np.diag(v) for v in var])


def gaussian_params(posterior, p, n):
    """Encoder outputs ``(N, P)`` -> means ``(N, L)``, covariances ``(N, L, L)``, entry by entry.

    diagonal: (mu, logvar), var = exp(logvar) + min_var. full-covariance: mu, raw diagonal,
    strictly-lower entries row by row; L_ii = sqrt(exp(raw_i) + min_var), cov = L L^T.
    """
    mu, cov = p[:, :n], np.zeros((len(p), n, n))
    for b in range(len(p)):
        if posterior == "diagonal":
            cov[b] = np.diag(np.exp(p[b, n:]) + MIN_VAR)
            continue
        tril, k = np.zeros((n, n)), 2 * n
        for i in range(n):
            tril[i, i] = math.sqrt(math.exp(p[b, n + i]) + MIN_VAR)
            for j in range(i):
                tril[i, j], k = p[b, k], k + 1
        cov[b] = tril @ tril.T
    return mu, cov


def diagonal_oracle(raw, z):
    n = z.shape[-1]
    mu, log_var = raw["out"][:, :n], raw["out"][:, n:]
    return st.norm(mu, np.sqrt(np.exp(log_var) + MIN_VAR)).logpdf(z).sum(-1)


def cholesky_oracle(raw, z):
    mu, cov = gaussian_params("full-covariance", raw["out"], z.shape[-1])
    return np.array([st.multivariate_normal(mu[b], cov[b]).logpdf(z[b]) for b in range(len(z))])


def iaf_steps(raw, n):
    """The flow of the ``iaf`` row from its raw weights, in float64 torch, with the MADE masks
    rebuilt from the documented degrees: hidden unit k sees inputs 1..m_k, m_k = k mod (n-1) + 1,
    and output i (of m, then of s) sees hidden units with m_k < i + 1."""
    steps = []
    for t in itertools.count():
        if f"steps.{t}.w_in" not in raw:
            return steps
        w = {k: torch.from_numpy(raw[f"steps.{t}.{k}"]) for k in ("w_in", "w_ctx", "b_in", "w_out", "b_out")}
        hidden = len(w["b_in"])
        deg = np.arange(hidden) % max(n - 1, 1) + 1
        m_in = np.array([[d + 1 <= deg[k] for d in range(n)] for k in range(hidden)], dtype=float)
        m_out = np.array([[j % n + 1 > deg[k] for k in range(hidden)] for j in range(2 * n)], dtype=float)
        w["w_in"], w["w_out"] = w["w_in"] * torch.from_numpy(m_in), w["w_out"] * torch.from_numpy(m_out)
        steps.append(w)


def iaf_flow(steps, h, z0):
    """z_T for z_0 ``(..., n)`` and one example's context ``h`` ``(n,)``: the gated update
    z = g z + (1 - g) m, g = sigmoid(s) (Kingma et al. 2016, eq. 14); odd steps on reversed z."""
    z = z0
    for t, w in enumerate(steps):
        if t % 2:
            z = z.flip(-1)
        hid = torch.tanh(z @ w["w_in"].T + w["w_ctx"] @ h + w["b_in"])
        out = hid @ w["w_out"].T + w["b_out"]
        n = z.shape[-1]
        gate = 1 / (1 + torch.exp(-out[..., n:]))
        z = gate * z + (1 - gate) * out[..., :n]
        if t % 2:
            z = z.flip(-1)
    return z


def iaf_base(raw, b, n):
    out = torch.from_numpy(raw["out"][b])
    return out[:n], torch.sqrt(torch.exp(out[n:2 * n]) + MIN_VAR), out[2 * n:]


def iaf_oracle(raw, z):
    """Change of variables: z_0 = f^-1(z) by Newton's method on the oracle's own flow, then
    log N(z_0; mu, sigma^2) - log |det df/dz_0| with the Jacobian from autograd."""
    n, steps, out = z.shape[-1], iaf_steps(raw, z.shape[-1]), []
    for b in range(len(z)):
        mu, sigma, h = iaf_base(raw, b, n)
        target = torch.from_numpy(z[b])
        f = lambda v: iaf_flow(steps, h, v)  # noqa: E731
        z0 = target.clone()
        for _ in range(100):
            resid = f(z0) - target
            if resid.abs().max() < 1e-14:
                break
            z0 = z0 - torch.linalg.solve(torch.autograd.functional.jacobian(f, z0), resid)
        assert (f(z0) - target).abs().max() < 1e-12
        log_det = torch.linalg.slogdet(torch.autograd.functional.jacobian(f, z0))[1]
        out.append(float(st.norm(mu.numpy(), sigma.numpy()).logpdf(z0.numpy()).sum() - log_det))
    return np.array(out)


def iaf_moments(raw, shape):
    """Mean and covariance of z_T per example by Gauss-Hermite quadrature over eps (16 nodes
    per dimension, a tensor grid): E[g(eps)] = sum_j w_j g(x_j), eps ~ N(0, I)."""
    n = shape[0]
    x, w = np.polynomial.hermite_e.hermegauss(16)
    w = w / math.sqrt(2 * math.pi)
    grid = torch.from_numpy(np.stack(np.meshgrid(*[x] * n, indexing="ij"), -1).reshape(-1, n))
    weight = torch.from_numpy(np.prod(np.stack(np.meshgrid(*[w] * n, indexing="ij"), -1).reshape(-1, n), -1))
    steps, means, covs = iaf_steps(raw, n), [], []
    for b in range(raw["out"].shape[0]):
        mu, sigma, h = iaf_base(raw, b, n)
        zt = iaf_flow(steps, h, mu + sigma * grid)  # (16^n, n)
        mean = weight @ zt
        centred = zt - mean
        means.append(mean.numpy())
        covs.append((centred.T * weight) @ centred)
    return np.stack(means), np.stack([c.numpy() for c in covs])


def posterior_moments(posterior):
    def moments(raw, shape):
        return gaussian_params(posterior, raw["out"], shape[0])
    return moments


def normal_prior_oracle(raw, z):
    return st.norm(0.0, 1.0).logpdf(z).sum(-1)


def normal_prior_moments(raw, shape):
    return np.zeros((1, shape[0])), np.eye(shape[0])[None]


def mixture_components(raw, n):
    scales = np.sqrt(np.exp(2 * raw["log_scales"]) + MIN_VAR)
    return log_softmax(raw["logits"]), raw["means"], np.stack([np.diag(s ** 2) for s in scales])


def vamp_components(posterior):
    def components(raw, n):
        p = raw["pseudo_inputs"].reshape(COMPONENTS, -1) @ raw["enc_w"] + raw["enc_b"]
        mu, cov = gaussian_params(posterior, p, n)
        return np.full(COMPONENTS, -math.log(COMPONENTS)), mu, cov
    return components


def mixture_oracle(components):
    def oracle(raw, z):
        log_w, mu, cov = components(raw, z.shape[-1])
        comp = np.stack([st.multivariate_normal(mu[k], cov[k]).logpdf(z) for k in range(len(mu))], -1)
        return logsumexp(comp + log_w, -1)
    return oracle


def mixture_moments(components):
    def moments(raw, shape):
        log_w, mu, cov = components(raw, shape[0])
        w = np.exp(log_w)
        mean = w @ mu
        second = sum(w[k] * (cov[k] + np.outer(mu[k], mu[k])) for k in range(len(w)))
        return mean[None], (second - np.outer(mean, mean))[None]
    return moments


# ---- the table likelihood: one family per column (vaekit.parts.tables) --------------------------

TABLE_SCHEMAS = {  # two columns each, so that normalisation is a sum x integral over a small grid
    "mixed": Schema((Column("h", "continuous", "", "float64", (), 0.5, 1.5),
                     Column("c", "categorical", "", "str", ("a", "b", "c")))),
    "discrete": Schema((Column("k", "count", "", "int64", (), 1.0, 2.0),
                        Column("y", "binary", "", "str", ("no", "yes")))),
}
TABLE_OUTPUTS = {"mixed": 6, "discrete": 4}  # params_per_dim * width: 2 + 3 (+1 unused), 2 + 1 (+1)


def table_raw(variant):
    def raw(shape, lead, g):
        return {"out": randn(g, *lead, BATCH, TABLE_OUTPUTS[variant])}
    return raw


def table_values(variant):
    def values(shape, g):
        if variant == "mixed":
            return torch.stack([0.5 + 2.25 * randn(g, BATCH),
                                torch.randint(0, 3, (BATCH,), generator=g).to(F64)], -1)
        return torch.stack([torch.randint(0, 9, (BATCH,), generator=g).to(F64),
                            torch.randint(0, 2, (BATCH,), generator=g).to(F64)], -1)
    return values


def table_params(out):
    """The documented transforms of the first column's head: (mu, sd) or (NB mean, NB shape)."""
    mu = 0.5 + 1.5 * out[:, 0]
    sd = 1.5 * np.sqrt(np.exp(out[:, 1]) + MIN_OBS_VAR)
    return mu, sd


def table_oracle(variant):
    """The per-column scipy log-probabilities, summed: a Gaussian and a categorical, or a
    negative binomial (mean exp(raw0) * (loc + 1), shape exp(clip(raw1))) and a Bernoulli."""
    def oracle(raw, x):
        out = raw["out"]
        rows = np.arange(len(x))
        if variant == "mixed":
            mu, sd = table_params(out)
            return (st.norm(mu, sd).logpdf(x[:, 0])
                    + log_softmax(out[:, 2:5], axis=-1)[rows, x[:, 1].astype(int)])
        m = np.exp(out[:, 0]) * 2.0
        r = np.exp(np.clip(out[:, 1], -10.0, 12.0))
        return (st.nbinom(n=r, p=r / (r + m)).logpmf(x[:, 0])
                + x[:, 1] * log_expit(out[:, 2]) + (1 - x[:, 1]) * log_expit(-out[:, 2]))
    return oracle


def table_moments(raw, shape):
    """The mixed table's columns are independent given z: a diagonal covariance."""
    out = raw["out"]
    mu, sd = table_params(out)
    p = np.exp(log_softmax(out[:, 2:5], axis=-1))
    k = np.arange(3.0)
    mean_c = p @ k
    var_c = p @ k ** 2 - mean_c ** 2
    return np.stack([mu, mean_c], -1), np.stack([np.diag([a, b]) for a, b in zip(sd ** 2, var_c)])


def table_config(variant):
    return {"likelihood": "table", "schema": TABLE_SCHEMAS[variant].to_json(),
            "min_obs_var": MIN_OBS_VAR}


def table_total(m, variant):
    """Sum over the discrete column's levels (and 0..20000 for the count) x the trapezoid rule on
    the continuous column's grid."""
    if variant == "mixed":
        grid = torch.linspace(-40.0, 40.0, 40001, dtype=F64)
        points = torch.cartesian_prod(grid, torch.arange(3.0, dtype=F64)).view(-1, 1, 2)
        dens = m.log_prob(points).exp().view(len(grid), 3, BATCH).sum(1)
        return torch.trapezoid(dens, grid, dim=0)
    points = torch.cartesian_prod(torch.arange(20001.0, dtype=F64), torch.arange(2.0, dtype=F64))
    return torch.logsumexp(m.log_prob(points.view(-1, 1, 2)), 0).exp()


# ---- samplers (only those that take a generator) ----------------------------------------------

def draw_rsample(member, n, g):
    return member.dist().rsample((n,), generator=g)


def draw_sample(member, n, g):
    return member.dist().sample((n,), generator=g)


def draw_prior(member, n, g):
    return member.module.sample(n, generator=g, encode=member.encode)[:, None]  # (n, 1, L)


# ---- the table --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    kind: str  # "likelihood", "posterior" or "prior"
    name: str  # the registered name
    shape: tuple  # one event: data shape (likelihoods) or (L,) (posteriors, priors)
    tiny: tuple  # an event small enough to enumerate or integrate on a grid
    support: str  # "binary", "8bit", "unit", "real" or "table" (columns of mixed supports)
    raw: Callable  # (shape, lead, generator) -> {"out": network output} and/or module parameters
    value: Callable  # (shape, generator) -> (BATCH, *shape) points of the support
    oracle: Callable  # (raw, value) as numpy float64 -> (BATCH,) log-densities
    config: dict = field(default_factory=dict)  # ModelConfig fields
    variant: str = ""
    moments: Callable | None = None  # (raw, shape) -> mean (B, D), covariance (B, D, D)
    draw: Callable | None = None  # (member, n, generator) -> (n, B, *shape)
    stateful: bool = False  # whether log_prob depends on the module's state_dict
    encoder: str | None = None  # vamp: the posterior family that encodes the pseudo-inputs

    @property
    def id(self):
        return f"{self.kind}-{self.name}" + (f"-{self.variant}" if self.variant else "")


IMAGE = (2, 2, 3)
LATENT = (4,)  # full-covariance: 4 is the smallest size where row- and column-order differ
PLANE = (2,)

CASES = [
    Case("likelihood", "bernoulli", IMAGE, (1, 2, 2), "binary", bernoulli_raw, grey_and_binary_values,
         bernoulli_oracle),
    Case("likelihood", "gaussian", IMAGE, (1,), "real", decoder_out(1), real_values,
         normal_oracle(lambda raw: 0.7), {"obs_std": 0.7}),
    Case("likelihood", "gaussian", IMAGE, (1,), "real", learned_scale_raw, real_values,
         normal_oracle(learned_scale), {"obs_std": 0.7, "learn_obs_std": True, "min_obs_var": MIN_OBS_VAR},
         variant="learned", stateful=True),
    Case("likelihood", "laplace", IMAGE, (1,), "real", decoder_out(1), real_values,
         laplace_oracle(lambda raw: 0.7), {"obs_std": 0.7}),
    Case("likelihood", "laplace", IMAGE, (1,), "real", learned_scale_raw, real_values,
         laplace_oracle(learned_scale), {"obs_std": 0.7, "learn_obs_std": True, "min_obs_var": MIN_OBS_VAR},
         variant="learned", stateful=True),
    Case("likelihood", "continuous-bernoulli", IMAGE, (1,), "unit", continuous_bernoulli_raw, unit_values,
         continuous_bernoulli_oracle),
    Case("likelihood", "gaussian-predicted", IMAGE, (1,), "real", predicted_gaussian_raw, real_values,
         predicted_gaussian_oracle, {"min_obs_var": MIN_OBS_VAR}),
    Case("likelihood", "logistic-mixture", IMAGE, (2,), "8bit", logistic_mixture_raw, eight_bit_values,
         logistic_mixture_oracle, {"mixtures": MIXTURES}, moments=logistic_mixture_moments, draw=draw_sample),
    Case("posterior", "diagonal", LATENT, PLANE, "real", diagonal_raw, real_values, diagonal_oracle,
         {"min_var": MIN_VAR}, moments=posterior_moments("diagonal"), draw=draw_rsample),
    Case("posterior", "full-covariance", LATENT, PLANE, "real", cholesky_raw, real_values, cholesky_oracle,
         {"min_var": MIN_VAR}, moments=posterior_moments("full-covariance"), draw=draw_rsample),
    Case("posterior", "iaf", LATENT, PLANE, "real", iaf_raw, real_values, iaf_oracle,
         {"min_var": MIN_VAR}, moments=iaf_moments, draw=draw_rsample, stateful=True),
    Case("prior", "normal", LATENT, PLANE, "real", no_raw, real_values, normal_prior_oracle,
         moments=normal_prior_moments, draw=draw_prior),
    Case("prior", "mixture", LATENT, PLANE, "real", mixture_raw, real_values,
         mixture_oracle(mixture_components), {"prior_components": COMPONENTS, "min_var": MIN_VAR},
         moments=mixture_moments(mixture_components), draw=draw_prior, stateful=True),
    Case("likelihood", "table", (2,), (2,), "table", table_raw("mixed"), table_values("mixed"),
         table_oracle("mixed"), table_config("mixed"), variant="mixed", moments=table_moments,
         draw=draw_sample),
    Case("likelihood", "table", (2,), (2,), "table", table_raw("discrete"), table_values("discrete"),
         table_oracle("discrete"), table_config("discrete"), variant="discrete"),
    *[Case("prior", "vamp", LATENT, PLANE, "real", vamp_raw(post), real_values,
           mixture_oracle(vamp_components(post)), {"prior_components": COMPONENTS, "min_var": MIN_VAR},
           variant=post, moments=mixture_moments(vamp_components(post)), draw=draw_prior, stateful=True,
           encoder=post)
      for post in ("diagonal", "full-covariance")],
]
IDS = [c.id for c in CASES]


# ---- building a row ---------------------------------------------------------------------------

def build(case, shape, seed=1234):
    """The family member as the model builds it, from the registry and a ModelConfig."""
    cfg = ModelConfig(**case.config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # from_config draws initial parameters from the global RNG
        if case.kind == "likelihood":
            return LIKELIHOODS[case.name].from_config(shape, cfg)
        if case.kind == "posterior":
            return POSTERIORS[case.name](shape[0], min_var=cfg.min_var)
        return PRIORS[case.name].from_config(shape[0], VAMP_DATA, cfg)


@dataclass
class Member:
    case: Case
    module: torch.nn.Module
    raw: dict  # leaf tensors: the network output, the module's parameters, the vamp encoder's weights
    value: torch.Tensor
    encode: Callable | None

    def dist(self):
        if self.case.kind == "prior":
            return self.module(self.encode)
        return self.module(self.raw["out"])

    def log_prob(self, value=None):
        return self.dist().log_prob(self.value if value is None else value)

    def numpy(self):
        return {k: v.detach().double().numpy() for k, v in self.raw.items()}


def make(case, shape=None, lead=(), dtype=F64, seed=0):
    """A row's member with fixed-seed raw parameters (drawn in float64, then cast to ``dtype``)."""
    shape = case.shape if shape is None else shape
    g = gen(seed)
    raw = {k: v.to(dtype) for k, v in case.raw(shape, lead, g).items()}
    value = case.value(shape, g).to(dtype)
    module = build(case, shape).to(dtype)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for k in raw.keys() & params.keys():
            params[k].copy_(raw[k])
            raw[k] = params[k]
    encode = linear_encoder(case.encoder, shape[0], raw) if case.encoder else None
    return Member(case, module, raw, value, encode)


def linear_encoder(posterior, latent, raw):
    """q(z|x) from a linear map of the flattened input; reads the weights at each call."""
    post = POSTERIORS[posterior](latent, min_var=MIN_VAR)
    return lambda x: post(x.flatten(1) @ raw["enc_w"] + raw["enc_b"])


# ---- the checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_matches_oracle_in_float64(case):
    m = make(case)
    lp = m.log_prob()
    assert lp.shape == (BATCH,) and lp.dtype == F64
    want = case.oracle(m.numpy(), m.value.numpy())
    assert np.isfinite(want).all()
    np.testing.assert_allclose(lp.detach().numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_matches_oracle_in_float32(case):
    m = make(case, dtype=torch.float32)
    lp = m.log_prob()
    assert lp.dtype == torch.float32
    want = case.oracle(m.numpy(), m.value.double().numpy())  # the same float32-rounded inputs
    np.testing.assert_allclose(lp.detach().double().numpy(), want, rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_broadcasts_a_leading_sample_dimension(case):
    m = make(case)
    values = torch.stack([case.value(case.shape, gen(10 + i)) for i in range(3)])  # (3, B, *event)
    lp = m.log_prob(values)
    assert lp.shape == (3, BATCH)
    torch.testing.assert_close(lp, torch.stack([m.log_prob(v) for v in values]), rtol=1e-12, atol=1e-12)
    if "out" in m.raw:  # importance sampling: params (s, B, ...) meet data (B, ...)
        s = make(case, lead=(3,))
        lp = s.log_prob()
        assert lp.shape == (3, BATCH)
        looped = torch.stack([s.module(out).log_prob(s.value) for out in s.raw["out"]])
        torch.testing.assert_close(lp, looped, rtol=1e-12, atol=1e-12)


def trapezoid(dens, grid, ndim):
    """Integrate ``dens`` ``(n ** ndim, B)`` on the product grid of ``grid``, one axis at a time."""
    dens = dens.reshape(*([len(grid)] * ndim), -1)
    for _ in range(ndim):
        dens = torch.trapezoid(dens, grid, dim=0)
    return dens


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_probabilities_sum_or_density_integrates_to_one(case):
    m = make(case, shape=case.tiny)
    d = math.prod(case.tiny)
    if case.support == "table":
        with torch.no_grad():
            total = table_total(m, case.variant)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)
        return
    if case.support in ("binary", "8bit"):
        levels = [0.0, 1.0] if case.support == "binary" else (torch.arange(256.0, dtype=F64) / 255).tolist()
        points = torch.tensor(list(itertools.product(levels, repeat=d)), dtype=F64)
        total = torch.logsumexp(m.log_prob(points.view(-1, 1, *case.tiny)), 0).exp()  # enumerate the support
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-10)
        return
    assert d <= 2, "grid integration covers events of one or two dimensions"
    if case.support == "unit":
        grid = torch.linspace(0.0, 1.0, 20001, dtype=F64)
    else:
        grid = torch.linspace(-15.0, 15.0, 30001 if d == 1 else 1201, dtype=F64)
    points = torch.cartesian_prod(*[grid] * d).view(-1, 1, *case.tiny)
    with torch.no_grad():  # in chunks: a flow's (points, batch, hidden) activations stay small
        total = trapezoid(torch.cat([m.log_prob(p).exp() for p in points.split(100_000)]), grid, d)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)


SAMPLED = [c for c in CASES if c.draw is not None]


@pytest.mark.parametrize("case", SAMPLED, ids=[c.id for c in SAMPLED])
def test_seeded_samples_have_the_oracle_moments(case):
    """Sample means and covariances against the oracle's, each within 5 standard errors."""
    m, n = make(case), 20_000
    with torch.no_grad():
        z = case.draw(m, n, gen(7))
        assert torch.equal(z, case.draw(m, n, gen(7)))
    z = z.reshape(n, z.shape[1], -1).double()  # (n, B, D)
    mean, cov = case.moments(m.numpy(), case.shape)
    mean, cov = torch.from_numpy(mean), torch.from_numpy(cov)
    se_mean = (cov.diagonal(dim1=-2, dim2=-1) / n).sqrt()
    assert ((z.mean(0) - mean).abs() <= 5 * se_mean).all(), (z.mean(0), mean)
    centred = z - z.mean(0)
    products = centred[..., :, None] * centred[..., None, :]  # (n, B, D, D)
    se_cov = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() <= 5 * se_cov + 1e-12).all(), (products.mean(0), cov)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_match_central_finite_differences(case):
    """d log p / d(raw parameters), and d log p / d(value) where the value is continuous
    (the Monte Carlo KL's pathwise gradient goes through the value), against float64 central
    differences of a weighted sum, so that no example's error can hide behind another's."""
    m = make(case)
    leaves = dict(m.raw)
    if case.support in ("real", "unit"):
        leaves["value"] = m.value
    if not leaves:
        pytest.fail(f"{case.id} has neither raw parameters nor a continuous value to differentiate")
    for t in leaves.values():
        t.requires_grad_()
    w = 0.5 + rand(gen(3), BATCH)

    def objective():
        return (w * m.log_prob()).sum()

    grads = torch.autograd.grad(objective(), list(leaves.values()))
    h = 1e-6
    with torch.no_grad():
        for (name, t), grad in zip(leaves.items(), grads):
            fd = torch.empty_like(t)
            flat, out = t.view(-1), fd.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + h
                up = objective()
                flat[i] = old - h
                down = objective()
                flat[i] = old
                out[i] = (up - down) / (2 * h)
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6, msg=lambda s: f"{name}: {s}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip_through_safetensors_is_bit_identical(case):
    m = make(case)
    state = m.module.state_dict()
    assert bool(state) == case.stateful, f"{case.id}: state_dict keys {list(state)}"
    fresh = Member(case, build(case, case.shape, seed=99).to(F64), m.raw, m.value, m.encode)
    want = m.log_prob().detach()
    if case.stateful:
        assert not torch.equal(fresh.log_prob(), want)  # the state carries what log_prob needs
    fresh.module.load_state_dict(safetensors_load(safetensors_save(state)))
    assert torch.equal(fresh.log_prob().detach(), want)


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_registered_family_has_a_row(kind):
    registered = REGISTRIES[kind].names()
    rows = {c.name for c in CASES if c.kind == kind}
    missing = [n for n in registered if n not in rows]
    assert not missing, (
        f"{kind} families {missing} are registered but have no row in CASES in tests/test_family_table.py. "
        f"Add Case({kind!r}, <name>, shape, tiny, support, raw, value, oracle, config): fixed-seed raw "
        f"parameters, values in the support, and an independent scipy/numpy log-density that applies "
        f"the family's parameter transforms and floors itself; add moments and draw if it samples "
        f"with a generator, and stateful=True if its state_dict carries parameters.")
    stale = sorted(rows - set(registered))
    assert not stale, f"rows for {kind} families that are no longer registered: {stale}"
