"""TableLikelihood: each column family against scipy, missing cells, broadcasting, samples, and
log p(x) of a known mixed-type latent model against quadrature."""

import math
import re

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, special, stats

from vaekit.data.schema import Column
from vaekit.errors import ConfigError, DataError
from vaekit.parts.tables import LOG_R_MAX, LOG_R_MIN, TableLikelihood

F64 = torch.float64
B = 7
FLOOR = 1e-3  # a visible variance floor, so that the oracle must apply it too


def gen(seed):
    return torch.Generator().manual_seed(seed)


COLUMNS = {
    "continuous": Column("h", "continuous", "", "float64", (), 170.0, 9.0),
    "positive": Column("p", "positive", "", "float64", (), 2.0, 0.8),
    "count": Column("k", "count", "", "int64", (), 3.5, 2.0),
    "binary": Column("b", "binary", "", "str", ("no", "yes")),
    "categorical": Column("c", "categorical", "", "str", ("a", "b", "c", "d")),
    "ordinal": Column("o", "ordinal", "", "str", ("low", "mid", "high")),
}


def values(kind, g, n=B):
    """Points of the column's support, in the encoded layout, ``(n,)``."""
    if kind == "continuous":
        return 170.0 + 15.0 * torch.randn(n, generator=g, dtype=F64)
    if kind == "positive":
        return torch.exp(2.0 + torch.randn(n, generator=g, dtype=F64))
    if kind == "count":
        return torch.randint(0, 12, (n,), generator=g).to(F64)
    k = 2 if kind == "binary" else len(COLUMNS[kind].levels)
    return torch.randint(0, k, (n,), generator=g).to(F64)


def oracle(kind, raw, x):
    """scipy log-probabilities of one column: ``raw`` (n, outputs), ``x`` (n,), numpy float64."""
    col = COLUMNS[kind]
    if kind in ("continuous", "positive"):
        mu = col.loc + col.scale * raw[:, 0]
        sd = col.scale * np.sqrt(np.exp(raw[:, 1]) + FLOOR)
        if kind == "continuous":
            return stats.norm(mu, sd).logpdf(x)
        return stats.lognorm(s=sd, scale=np.exp(mu)).logpdf(x)  # density of x: Jacobian included
    if kind == "count":
        m = np.exp(raw[:, 0]) * (col.loc + 1.0)
        r = np.exp(np.clip(raw[:, 1], LOG_R_MIN, LOG_R_MAX))
        return stats.nbinom(n=r, p=r / (r + m)).logpmf(x)
    if kind == "binary":
        return stats.bernoulli(special.expit(raw[:, 0])).logpmf(x)
    log_p = special.log_softmax(raw, axis=1)
    return log_p[np.arange(len(x)), x.astype(int)]


def outputs(kind):
    return {"continuous": 2, "positive": 2, "count": 2, "binary": 1}.get(kind, len(COLUMNS[kind].levels))


KINDS = list(COLUMNS)
MIXED = [COLUMNS[k] for k in KINDS]


def mixed(seed=0, lead=()):
    """Raw decoder outputs ``(*lead, B, 14)`` and encoded rows ``(B, 6)`` of all six kinds."""
    g = gen(seed)
    lik = TableLikelihood(MIXED, min_obs_var=FLOOR)
    raw = 1.5 * torch.randn((*lead, B, lik.num_params), generator=g, dtype=F64)
    x = torch.stack([values(k, g) for k in KINDS], dim=1)
    return lik, raw, x


def split(raw):
    """Per-kind blocks of a mixed row's raw outputs, in schema order."""
    out, start = {}, 0
    for k in KINDS:
        out[k] = raw[..., start:start + outputs(k)]
        start += outputs(k)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_each_column_family_matches_scipy_in_float32(kind):
    """Decoder outputs in float32, as training has them, against float64 scipy on the same inputs."""
    g = gen(8)
    lik = TableLikelihood([COLUMNS[kind]], min_obs_var=FLOOR)
    raw = (1.5 * torch.randn(B, lik.num_params, generator=g, dtype=F64)).float()
    x = values(kind, g).float()
    lp = lik(raw).log_prob(x[:, None])
    assert lp.dtype == torch.float32
    want = oracle(kind, raw.double().numpy(), x.double().numpy())
    np.testing.assert_allclose(lp.double().numpy(), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_each_column_family_matches_scipy_in_float64(kind):
    g = gen(1)
    lik = TableLikelihood([COLUMNS[kind]], min_obs_var=FLOOR)
    assert lik.num_params == outputs(kind)
    raw = 1.5 * torch.randn(B, lik.num_params, generator=g, dtype=F64)
    if kind == "count":
        raw[0, 1], raw[1, 1] = 30.0, -30.0  # past the clamp of log r: the oracle clamps too
    x = values(kind, g)
    lp = lik(raw).log_prob(x[:, None])
    assert lp.shape == (B,) and lp.dtype == F64
    want = oracle(kind, raw.numpy(), x.numpy())
    assert np.isfinite(want).all()
    np.testing.assert_allclose(lp.numpy(), want, rtol=1e-10, atol=1e-10)


def test_a_mixed_row_is_the_sum_of_its_columns_and_broadcasts_a_sample_dimension():
    lik, raw, x = mixed()
    assert (lik.num_params, lik.width, lik.params_per_dim) == (14, 6, 3)
    blocks = split(raw)
    want = sum(oracle(k, blocks[k].numpy(), x[:, j].numpy()) for j, k in enumerate(KINDS))
    np.testing.assert_allclose(lik(raw).log_prob(x).numpy(), want, rtol=1e-10, atol=1e-10)
    # a decoder sized params_per_dim * width: the 4 trailing outputs are ignored
    padded = torch.cat([raw, torch.full((B, 4), 99.0, dtype=F64)], dim=1)
    torch.testing.assert_close(lik(padded).log_prob(x), lik(raw).log_prob(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="needs 14 decoder outputs per row, got 13"):
        lik(raw[:, :13])
    lik, raw, x = mixed(lead=(3,))  # importance sampling: params (k, batch, P), data (batch, width)
    lp = lik(raw).log_prob(x)
    assert lp.shape == (3, B)
    torch.testing.assert_close(lp, torch.stack([lik(r).log_prob(x) for r in raw]), rtol=0, atol=1e-12)


def test_missing_cells_are_left_out_exactly():
    """log p with NaN cells == log p of the observed sub-table under the sub-schema."""
    lik, raw, x = mixed(seed=2)
    blocks = split(raw)
    for missing in ([0, 2, 4], [1, 3, 5], [5]):
        xm = x.clone()
        xm[:, missing] = float("nan")
        kept = [j for j in range(6) if j not in missing]
        sub = TableLikelihood([MIXED[j] for j in kept], min_obs_var=FLOOR)
        sub_raw = torch.cat([blocks[KINDS[j]] for j in kept], dim=-1)
        torch.testing.assert_close(lik(raw).log_prob(xm), sub(sub_raw).log_prob(x[:, kept]),
                                   rtol=0, atol=1e-12)
    xm = x.clone()
    xm[[0, 3], [1, 4]] = float("nan")  # different cells in different rows
    cells = lik(raw).log_prob_cells(x)
    want = cells.sum(1) - cells[0, 1] * (torch.arange(B) == 0) - cells[3, 4] * (torch.arange(B) == 3)
    torch.testing.assert_close(lik(raw).log_prob(xm), want, rtol=0, atol=1e-12)
    assert lik(raw).log_prob(torch.full_like(x, float("nan"))).abs().max() == 0


def test_gradients_are_finite_and_missing_cells_get_none():
    lik, raw, x = mixed(seed=3)
    x[2, :] = float("nan")
    x[4, 0] = float("nan")
    raw.requires_grad_()
    (grad,) = torch.autograd.grad(lik(raw).log_prob(x).sum(), raw)
    assert torch.isfinite(grad).all()
    assert grad[2].abs().max() == 0 and grad[4, :2].abs().max() == 0  # row 2 all missing; cell (4, h)
    assert (grad[[0, 1, 3, 5, 6]].abs() > 0).all()


def test_gradients_match_central_finite_differences():
    lik, raw, x = mixed(seed=4)
    x[1, 2] = float("nan")
    w = torch.linspace(0.5, 1.5, B, dtype=F64)
    raw.requires_grad_()
    (grad,) = torch.autograd.grad((w * lik(raw).log_prob(x)).sum(), raw)
    h, fd = 1e-6, torch.empty_like(raw)
    with torch.no_grad():
        for i in range(raw.numel()):
            r = raw.detach().clone().view(-1)
            r[i] += h
            up = (w * lik(r.view_as(raw)).log_prob(x)).sum()
            r[i] -= 2 * h
            fd.view(-1)[i] = (up - (w * lik(r.view_as(raw)).log_prob(x)).sum()) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6)


def test_seeded_samples_have_the_families_moments():
    """Sample means (and the count's variance) of each column within 5 standard errors."""
    lik, raw, _ = mixed(seed=5)
    raw = raw[:2] * 0.5
    d, n = lik(raw), 40_000
    z = d.sample((n,), generator=gen(7))
    assert z.shape == (n, 2, 6) and torch.equal(z, d.sample((n,), generator=gen(7)))
    blocks = {k: v.numpy() for k, v in split(raw).items()}
    for j, kind in enumerate(KINDS):
        col, r = COLUMNS[kind], blocks[kind]
        if kind in ("continuous", "positive"):
            mu = col.loc + col.scale * r[:, 0]
            sd = col.scale * np.sqrt(np.exp(r[:, 1]) + FLOOR)
            dist = stats.norm(mu, sd) if kind == "continuous" else stats.lognorm(s=sd, scale=np.exp(mu))
            mean, var = dist.mean(), dist.var()
        elif kind == "count":
            m = np.exp(r[:, 0]) * (col.loc + 1.0)
            rr = np.exp(r[:, 1])
            mean, var = m, m + m ** 2 / rr
            s = z[:, :, j].numpy()
            assert (s == np.round(s)).all() and (s >= 0).all()
            # the variance, with the standard error of a sample variance (m4 - var^2) / n
            m4 = stats.nbinom(n=rr, p=rr / (rr + m)).moment(4) - 4 * mean * stats.nbinom(
                n=rr, p=rr / (rr + m)).moment(3) + 6 * mean ** 2 * (var + mean ** 2) - 3 * mean ** 4
            se_var = np.sqrt((m4 - var ** 2) / n)
            assert (np.abs(s.var(0) - var) <= 5 * se_var).all(), (s.var(0), var)
        elif kind == "binary":
            mean = special.expit(r[:, 0])
            var = mean * (1 - mean)
        else:
            p = special.softmax(r, axis=1)
            s = z[:, :, j].numpy()
            freq = np.stack([(s == c).mean(0) for c in range(r.shape[1])], axis=1)
            se = np.sqrt(p * (1 - p) / n)
            assert (np.abs(freq - p) <= 5 * se).all(), (freq, p)
            continue
        got = z[:, :, j].double().mean(0).numpy()
        assert (np.abs(got - mean) <= 5 * np.sqrt(var / n)).all(), (kind, got, mean)


def test_mean_is_the_mean_or_the_mode_in_the_encoded_layout():
    lik, raw, _ = mixed(seed=6)
    blocks = {k: v.numpy() for k, v in split(raw).items()}
    m = lik(raw).mean.numpy()
    c, p, k = COLUMNS["continuous"], COLUMNS["positive"], COLUMNS["count"]
    np.testing.assert_allclose(m[:, 0], c.loc + c.scale * blocks["continuous"][:, 0], rtol=1e-12)
    sd = p.scale * np.sqrt(np.exp(blocks["positive"][:, 1]) + FLOOR)
    np.testing.assert_allclose(m[:, 1], np.exp(p.loc + p.scale * blocks["positive"][:, 0] + sd ** 2 / 2),
                               rtol=1e-12)
    np.testing.assert_allclose(m[:, 2], np.exp(blocks["count"][:, 0]) * (k.loc + 1), rtol=1e-12)
    np.testing.assert_array_equal(m[:, 3], blocks["binary"][:, 0] > 0)
    np.testing.assert_array_equal(m[:, 4], blocks["categorical"].argmax(1))


def test_discrete_masses_sum_to_one():
    lik = TableLikelihood([COLUMNS["count"], COLUMNS["categorical"]])
    raw = torch.tensor([[0.3, -0.5, 0.1, 2.0, -1.0, 0.5]], dtype=F64)
    grid = torch.cartesian_prod(torch.arange(400.0, dtype=F64), torch.arange(4.0, dtype=F64))
    total = torch.logsumexp(lik(raw).log_prob(grid[:, None, :]), 0).exp()
    torch.testing.assert_close(total, torch.ones(1, dtype=F64), rtol=0, atol=1e-10)
    assert lik.discrete(grid) and not TableLikelihood(MIXED).discrete(grid)


def test_check_data_names_the_column():
    lik = TableLikelihood(MIXED)
    _, _, x = mixed()
    lik.check_data(torch.where(torch.arange(6) == 3, float("nan"), x), "train")
    for j, bad, name in [(1, -2.0, "'p' (positive)"), (2, 1.5, "'k' (count)"), (4, 4.0, "'c' (categorical)"),
                         (3, 2.0, "'b' (binary)")]:
        y = x.clone()
        y[5, j] = bad
        with pytest.raises(DataError, match=f"train: column {re.escape(name)} holds {bad:g}"):
            lik.check_data(y, "train")
    with pytest.raises(DataError, match="rows of 6 encoded cells"):
        lik.check_data(x[:, :5], "train")


# ---- the oracle: a known mixed-type model with a 1-d latent ---------------------------------

TRUE = [Column("y", "continuous", "", "float64", (), 0.0, 1.0),
        Column("n", "count", "", "int64", (), 0.0, 1.0),  # loc 0: raw0 is the log mean itself
        Column("g", "categorical", "", "str", ("a", "b", "c"))]
A = {"y": (0.5, 1.2, 0.6), "n": (0.8, 0.7, math.log(3.0)), "g": ((0.0, 0.3, -0.4), (-1.5, 0.2, 1.8))}


def true_decoder(z):
    """z ``(...)`` -> raw outputs ``(..., 7)`` of the true decoder (min_obs_var = 0)."""
    a, b, s = A["y"]
    m0, m1, log_r = A["n"]
    c, d = (torch.tensor(v, dtype=F64) for v in A["g"])
    ones = torch.ones_like(z)
    return torch.cat([torch.stack([a + b * z, math.log(s ** 2) * ones, m0 + m1 * z, log_r * ones], -1),
                      c + d * z[..., None]], dim=-1)


def scipy_log_cond(row, z):
    """log p(observed cells of ``row`` | z) with scipy, for nodes z ``(m,)`` -> ``(m,)``."""
    a, b, s = A["y"]
    m0, m1, log_r = A["n"]
    c, d = np.array(A["g"][0]), np.array(A["g"][1])
    r, lp = math.exp(log_r), np.zeros_like(z)
    if not np.isnan(row[0]):
        lp += stats.norm(a + b * z, s).logpdf(row[0])
    if not np.isnan(row[1]):
        mean = np.exp(m0 + m1 * z)
        lp += stats.nbinom(n=r, p=r / (r + mean)).logpmf(row[1])
    if not np.isnan(row[2]):
        lp += special.log_softmax(c + d * z[:, None], axis=1)[:, int(row[2])]
    return lp


def draw_rows(n, g):
    z = torch.randn(n, generator=g, dtype=F64)
    lik = TableLikelihood(TRUE, min_obs_var=0.0)
    return lik(true_decoder(z)).sample(generator=g)


def test_log_px_of_the_true_decoder_matches_quadrature():
    lik = TableLikelihood(TRUE, min_obs_var=0.0)
    x = draw_rows(40, gen(11))
    x[[3, 8], 1] = float("nan")  # incomplete rows: log p(observed cells)
    x[5, 0] = float("nan")
    xn = x.numpy()
    # Gauss-Hermite (probabilists'): int f(z) N(z) dz = sum_i w_i f(z_i) / sqrt(2 pi)
    def quadrature(row, points):
        nodes, weights = hermegauss(points)
        return special.logsumexp(scipy_log_cond(row, nodes), b=weights / math.sqrt(2 * math.pi))

    exact = np.array([quadrature(row, 120) for row in xn])
    np.testing.assert_allclose([quadrature(row, 200) for row in xn[:5]], exact[:5], rtol=0,
                               atol=1e-10)  # converged in the number of nodes
    # and an adaptive quadrature of one row, in probability units
    dens = integrate.quad(lambda t: math.exp(scipy_log_cond(xn[0], np.array([t]))[0])
                          * stats.norm.pdf(t), -12, 12, epsabs=0, epsrel=1e-12, limit=200)[0]
    assert abs(math.log(dens) - exact[0]) < 1e-9
    # the likelihood's own per-row log-probabilities summed on a fine grid (trapezoid)
    grid = torch.linspace(-12.0, 12.0, 24001, dtype=F64)
    with torch.no_grad():
        lp = lik(true_decoder(grid)[:, None, :]).log_prob(x) + torch.distributions.Normal(
            torch.zeros((), dtype=F64), 1.0).log_prob(grid)[:, None]  # (grid, rows)
        on_grid = torch.logsumexp(lp, 0) + math.log(float(grid[1] - grid[0]))
    np.testing.assert_allclose(on_grid.numpy(), exact, rtol=0, atol=1e-8)
    # importance sampling with the prior as proposal: log mean_k p(x | z_k), z_k ~ N(0, 1)
    k = 20_000
    z = torch.randn(k, x.shape[0], generator=gen(12), dtype=F64)
    with torch.no_grad():
        log_w = lik(true_decoder(z)).log_prob(x)  # (k, rows)
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    w = torch.exp(log_w - estimate)  # weights over their mean
    se = (w.std(0) / math.sqrt(k)).numpy()  # delta method: sd of the log of the mean
    err = np.abs(estimate.numpy() - exact)
    assert (err <= 5 * se + 1e-9).all(), (err / se).max()
    assert np.abs((estimate.numpy() - exact) / se).mean() < 2.0  # errors of the size the se says
    assert se.max() < 0.05
