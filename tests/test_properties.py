"""Property-based tests (hypothesis): loaders, distributions and save/load round trips."""

import numpy as np
import pytest
import scipy.stats as st
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

from vaekit.config.settings import ModelConfig, RunConfig
from vaekit.data.files import load_rows
from vaekit.parts.likelihoods import BernoulliLikelihood
from vaekit.parts.posteriors import DiagonalGaussianPosterior
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
finite32 = hs.floats(-1e6, 1e6, allow_nan=False, width=32)
shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8)


@FAST
@given(x=hnp.arrays(np.float32, shapes, elements=finite32))
def test_npy_round_trip_is_exact(tmp_path, x):
    path = tmp_path / "x.npy"
    np.save(path, x)
    got, labels = load_rows(path)
    assert labels is None and got.dtype == np.float32
    np.testing.assert_array_equal(got, x)


@FAST
@given(x=hnp.arrays(np.uint8, shapes))
def test_uint8_is_scaled_by_255(tmp_path, x):
    path = tmp_path / "x.npy"
    np.save(path, x)
    np.testing.assert_array_equal(load_rows(path)[0], x.astype(np.float32) / np.float32(255))


@FAST
@given(x=hnp.arrays(np.float32, shapes, elements=finite32), header=hs.booleans())
def test_csv_round_trip(tmp_path, x, header):
    path = tmp_path / "x.csv"
    lines = [",".join(f"c{j}" for j in range(x.shape[1]))] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(load_rows(path)[0], x)


@FAST
@given(mu=hnp.arrays(np.float64, (3,), elements=hs.floats(-5, 5)),
       logvar=hnp.arrays(np.float64, (3,), elements=hs.floats(-6, 4)),
       z=hnp.arrays(np.float64, (3,), elements=hs.floats(-8, 8)))
def test_posterior_log_prob_matches_scipy(mu, logvar, z):
    q = DiagonalGaussianPosterior(3, min_var=1e-5)(torch.tensor(np.r_[mu, logvar])[None])
    expected = st.norm(mu, np.sqrt(np.exp(logvar) + 1e-5)).logpdf(z).sum()
    assert q.log_prob(torch.tensor(z, dtype=torch.float32)[None]).item() == pytest.approx(expected, rel=1e-4, abs=1e-3)


@FAST
@given(logits=hnp.arrays(np.float32, (6,), elements=hs.floats(-1e4, 1e4, width=32)),
       x=hnp.arrays(np.float32, (6,), elements=hs.floats(0, 1, width=32)))
def test_bernoulli_log_prob_is_finite_and_matches_the_formula(logits, x):
    lp = BernoulliLikelihood((6,))(torch.tensor(logits)[None]).log_prob(torch.tensor(x)[None]).item()
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    expected = np.sum(x64 * l64 - np.logaddexp(0, l64))  # log sigmoid form, in float64
    assert np.isfinite(lp) and lp <= 1e-3
    assert lp == pytest.approx(expected, rel=1e-5, abs=1e-2)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hidden=hs.lists(hs.integers(1, 16), min_size=1, max_size=3), latent=hs.integers(1, 5),
       likelihood=hs.sampled_from(["bernoulli", "gaussian"]), d=hs.integers(1, 10),
       seed=hs.integers(0, 2**31 - 1))
def test_save_load_round_trip(tmp_path_factory, hidden, latent, likelihood, d, seed):
    torch.manual_seed(seed)
    cfg = RunConfig(ModelConfig(hidden=tuple(hidden), latent_dim=latent, likelihood=likelihood,
                                learn_obs_std=likelihood == "gaussian"))
    model = VAEModel(cfg.model, (d,))
    rd = RunDir(tmp_path_factory.mktemp("run"))
    rd.write_config(cfg, (d,))
    rd.write_model(model)
    loaded, cfg2 = rd.load_model()
    assert cfg2 == cfg
    x = torch.rand(4, d)
    torch.testing.assert_close(loaded.encode(x).mean, model.encode(x).mean, rtol=0, atol=0)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
