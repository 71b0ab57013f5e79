"""The marginals sampler of a table (vaekit.sampling.marginals): quantile mapping against
closed forms and scipy, and its contract: ranks kept, values inside the data's range, mapped
columns on the data's marginal, other columns untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from vaekit.sampling.marginals import LEVELS, _cdf, quantile_map

LEV = np.linspace(0.0, 1.0, LEVELS)


def test_the_map_between_two_normals_is_their_affine_map():
    """F_data^-1(F_model(v)) from N(0, 1) to N(5, 2^2) is 5 + 2 v, within the quantile tables."""
    model_q = stats.norm.ppf(np.clip(LEV, 1e-6, 1 - 1e-6))
    data_q = 5 + 2 * model_q
    v = torch.linspace(-2.5, 2.5, 41, dtype=torch.float64)[:, None]
    got = quantile_map(v, torch.tensor(model_q)[None], torch.tensor(data_q)[None])[:, 0]
    np.testing.assert_allclose(got.numpy(), 5 + 2 * v[:, 0].numpy(), atol=1e-3)


def test_mapped_draws_follow_the_data_marginal_and_keep_their_ranks():
    rng = np.random.default_rng(0)
    data = rng.lognormal(1.0, 0.8, 3000)  # skewed, positive
    model = rng.normal(3.0, 1.5, 20000)  # the model's (wrong) marginal
    mq, dq = np.quantile(model, LEV), np.quantile(data, LEV)
    v = rng.normal(3.0, 1.5, 4000)
    got = quantile_map(torch.tensor(v)[:, None], torch.tensor(mq)[None], torch.tensor(dq)[None])[:, 0].numpy()
    assert stats.ks_2samp(got, data).statistic < 0.03
    assert stats.ks_2samp(v, data).statistic > 0.1  # before the map: off
    assert stats.spearmanr(v, got).statistic == pytest.approx(1.0)  # a monotone map
    assert got.min() >= data.min() and got.max() <= data.max()


def test_a_point_mass_maps_to_one_value_and_the_cdf_is_clamped():
    q = np.quantile(np.r_[np.zeros(500), np.arange(1, 501) / 100.0], LEV)  # half at 0
    u = _cdf(np.array([0.0, -1.0, 99.0]), q, LEV)
    assert u[0] == pytest.approx(0.25, abs=0.002) and u[1] == 0.0 and u[2] == 1.0


def test_a_missing_cell_stays_missing():
    q = torch.tensor(np.quantile(np.arange(100.0), LEV))[None]
    got = quantile_map(torch.tensor([[np.nan], [50.0]], dtype=torch.float64), q, q + 1)[:, 0]
    assert torch.isnan(got[0]) and got[1].item() == pytest.approx(51.0)


# ---- the sampler in the CLI and the estimator ------------------------------------------------

from test_tables_cli import cli, one_error  # noqa: E402  (the table tests' CLI helpers)

SMALL = ["--hidden", "16", "--latent-dim", "2", "--epochs", "3", "--no-report", "--seed", "1"]


def shop(n: int = 200, seed: int = 0):
    """A skewed positive price, a bimodal continuous column, a count, a category, a 0/1."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    return pd.DataFrame({
        "price": np.round(np.exp(2 + 0.9 * z + 0.4 * rng.normal(size=n)), 2),
        "weight": np.round(np.where(rng.random(n) < 0.4, -3.0, 4.0) + z + 0.3 * rng.normal(size=n), 2),
        "items": rng.poisson(np.exp(1 + 0.5 * z)),
        "shop": np.where(z > 0, "north", rng.choice(["south", "west"], n)),
        "member": (z + rng.normal(size=n) > 0).astype(int),
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("shop")
    shop().to_csv(d / "shop.csv", index=False)
    assert cli("train", d / "shop.csv", "--out", d / "run", *SMALL) == 0
    return d


def test_cli_marginals_map_only_the_continuous_columns_of_the_expost_draws(trained, capsys):
    """Same seed, same ex-post codes and draws: the levelled and count columns equal the expost
    sampler's, the continuous ones are a monotone map of them onto the data's marginal."""
    import pandas as pd

    run, data = trained / "run", pd.read_csv(trained / "shop.csv")
    assert cli("fit-sampler", run, "--sampler", "marginals") == 0
    assert "2 continuous column(s) mapped" in capsys.readouterr().out
    for name in ("marginals", "expost"):
        assert cli("sample", run, "--sampler", name, "-n", 2000, "--seed", 3,
                   "--out", trained / f"{name}.csv") == 0
    m, e = (pd.read_csv(trained / f"{n}.csv") for n in ("marginals", "expost"))
    assert list(m.columns) == list(data.columns)
    for col in ("items", "shop", "member"):
        assert (m[col] == e[col]).all(), col
    for col in ("price", "weight"):
        assert stats.spearmanr(m[col], e[col]).statistic > 0.999, col
        assert data[col].min() <= m[col].min() and m[col].max() <= data[col].max()
        # on the data's own marginal (200 rows: their step CDF is within 1/200 of the
        # interpolated quantiles), while 3 epochs leave the model's far from it
        assert stats.ks_2samp(m[col], data[col]).statistic < 0.08, col
    assert stats.ks_2samp(e["weight"], data["weight"]).statistic > 0.15


def test_cli_marginals_refusals(trained, tmp_path, capsys):
    run = trained / "run"
    assert cli("sample", run, "--sampler", "marginals", "--mean", "--out", tmp_path / "s.csv") == 2
    one_error(capsys.readouterr().err, "maps draws from p(x|z)", "--mean")
    assert not (tmp_path / "s.csv").exists()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(100, 3)).astype(np.float32))
    assert cli("train", tmp_path / "a.npy", "--out", tmp_path / "arr", *SMALL) == 0
    capsys.readouterr()
    assert cli("fit-sampler", tmp_path / "arr", "--sampler", "marginals") == 2
    one_error(capsys.readouterr().err, "marginals", "table")
    assert not (tmp_path / "arr" / "samplers" / "marginals.json").exists()


def test_estimator_marginals(trained):
    import pandas as pd
    import vaekit
    from vaekit.errors import DataError

    data = pd.read_csv(trained / "shop.csv")
    est = vaekit.VAE(hidden=16, latent_dim=2, epochs=3, random_state=0).fit(data)
    with pytest.raises(DataError, match="not fitted"):
        est.sample(10, sampler="marginals")
    s = est.fit_sampler(data, sampler="marginals").sample(1500, random_state=0, sampler="marginals")
    assert list(s.columns) == list(data.columns) and s["items"].dtype.kind == "i"
    assert stats.ks_2samp(s["price"], data["price"]).statistic < 0.08
    with pytest.raises(DataError, match="maps draws"):
        est.sample(10, sampler="marginals", mean=True)
