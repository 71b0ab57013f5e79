"""log p(x) by importance sampling against exact answers, and the evaluate/score/baseline commands."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import torch
from sklearn.decomposition import PCA

from vaekit.cli.main import main
from vaekit.config.settings import ModelConfig, TrainConfig
from vaekit.data import Dataset, load_data
from vaekit.evaluation.measures import evaluate, importance_sample, latent_diagnostics, log_likelihood
from vaekit.models.vae import VAEModel
from vaekit.training.trainer import Trainer

D, L, SIGMA = 5, 2, 0.4


def linear_gaussian(rng):
    """A pPCA model x = W z + mu + sigma * eps with orthogonal columns of W (diagonal posterior)."""
    u, _ = np.linalg.qr(rng.normal(size=(D, L)))
    w = u * np.array([2.0, 0.8])
    mu = rng.normal(size=D)
    return w, mu


def exact_model(w, mu):
    """vaekit's linear VAE with the encoder set to the exact posterior p(z|x)."""
    model = VAEModel(ModelConfig(arch="linear", likelihood="gaussian", obs_std=SIGMA, latent_dim=L,
                                 min_var=0.0), (D,))
    m_diag = (w**2).sum(0) + SIGMA**2  # M = W^T W + sigma^2 I is diagonal
    enc_w = np.zeros((2 * L, D))
    enc_w[:L] = (w / m_diag).T  # posterior mean M^-1 W^T (x - mu)
    enc_b = np.concatenate([-(w / m_diag).T @ mu, np.log(SIGMA**2 / m_diag)])  # constant log-variance
    with torch.no_grad():
        enc, dec = model.encoder.head, model.decoder[0]
        enc.weight.copy_(torch.tensor(enc_w))
        enc.bias.copy_(torch.tensor(enc_b))
        dec.weight.copy_(torch.tensor(w))
        dec.bias.copy_(torch.tensor(mu))
    return model


def exact_log_px(x, w, mu):
    return st.multivariate_normal(mu, w @ w.T + SIGMA**2 * np.eye(D)).logpdf(x)


@pytest.fixture
def ppca_data():
    rng = np.random.default_rng(11)
    w, mu = linear_gaussian(rng)
    x = (rng.normal(size=(300, L)) @ w.T + mu + SIGMA * rng.normal(size=(300, D))).astype(np.float32)
    return w, mu, x


@pytest.mark.parametrize("k", [1, 3, 100])
def test_exact_posterior_gives_exact_log_likelihood_for_every_k(ppca_data, k):
    w, mu, x = ppca_data
    model = exact_model(w, mu)
    ll = log_likelihood(model, torch.from_numpy(x), k, generator=torch.Generator().manual_seed(k))
    np.testing.assert_allclose(ll.numpy(), exact_log_px(x, w, mu), rtol=0, atol=2e-4)


def test_imperfect_encoder_lies_below_and_rises_toward_the_truth(ppca_data):
    w, mu, x = ppca_data
    model = exact_model(w, mu)
    with torch.no_grad():  # a worse proposal: shrunken means, too-wide variances
        model.encoder.head.weight[:L] *= 0.6
        model.encoder.head.bias[L:] += 1.0
    truth = exact_log_px(x, w, mu).mean()
    est = [log_likelihood(model, torch.from_numpy(x), k, generator=torch.Generator().manual_seed(0))
           .mean().item() for k in (1, 10, 100, 1000)]
    assert all(e < truth for e in est), (est, truth)
    assert est[0] < est[1] < est[2] < est[3], est
    assert truth - est[3] < 0.25 * (truth - est[0])


def test_estimate_is_above_the_elbo_and_reports_consistent_terms():
    torch.manual_seed(0)
    data = load_data("digits")
    model = VAEModel(ModelConfig(hidden=(64,), latent_dim=4), data.shape)
    Trainer(model, TrainConfig(epochs=5, precision="fp32"), log=lambda s: None).fit(data)
    res = evaluate(model, data.x_test, k=200, seed=0)
    assert res["log_likelihood"] > res["elbo"]
    assert res["elbo"] == pytest.approx(-(res["rec"] + res["kl"]))
    assert res["n_examples"] == 179 and res["importance_samples"] == 200
    assert res["bits_per_dim"] is None  # digits are grey levels, not binary
    # KL per dimension in closed form, against torch.distributions directly
    qz = model.encode(data.x_test)
    kl = torch.distributions.kl_divergence(qz, model.prior()).mean().item()
    assert sum(res["kl_per_dim"]) == pytest.approx(kl, rel=1e-5)
    ll = log_likelihood(model, data.x_test, 200, generator=torch.Generator().manual_seed(0))
    assert res["log_likelihood_stderr"] == pytest.approx(ll.std().item() / math.sqrt(179))


def test_exactly_k_samples_in_bounded_chunks(ppca_data):
    w, mu, x = ppca_data
    model = exact_model(w, mu)
    rows = []
    model.decoder.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    importance_sample(model, torch.from_numpy(x[:10]), 37, batch_size=4, max_rows=30)
    assert sum(rows) == 10 * 37
    assert max(rows) <= 30


def test_bits_per_dim_for_binary_data():
    torch.manual_seed(0)
    x = (torch.rand(40, 12) > 0.5).float()
    model = VAEModel(ModelConfig(hidden=(8,), latent_dim=2), (12,))
    res = evaluate(model, x, k=10, seed=0)
    assert res["bits_per_dim"] == pytest.approx(-res["log_likelihood"] / (12 * math.log(2)))


def test_active_units_follow_the_posterior_mean_variance(ppca_data):
    w, mu, x = ppca_data
    model = exact_model(w, mu)
    with torch.no_grad():
        model.encoder.head.weight[1] = 0.0  # z_1's mean no longer depends on x: an inactive unit
    diag = latent_diagnostics(model, torch.from_numpy(x))
    means = model.encode(torch.from_numpy(x)).mean.detach().double()
    expected = int((means.var(0, unbiased=False) > 0.01).sum())
    assert diag["active_units"] == expected == 1


def test_linear_vae_reaches_the_ppca_likelihood():
    """Trained on pPCA data, the linear VAE's test log p(x) matches scikit-learn's PCA.score."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 2)) * np.array([2.0, 1.0])
    mu = rng.normal(size=8)

    def draw(n):
        return (rng.normal(size=(n, 2)) @ w.T + mu + 0.5 * rng.normal(size=(n, 8))).astype(np.float32)

    x_train, x_test = draw(4000), draw(1000)
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(arch="linear", likelihood="gaussian", learn_obs_std=True,
                                 latent_dim=2, min_var=0.0), (8,))
    Trainer(model, TrainConfig(epochs=40, lr=0.02, precision="fp32"), log=lambda s: None).fit(
        Dataset.from_arrays("ppca", x_train, x_test))
    ll = log_likelihood(model, torch.from_numpy(x_test), 1000, generator=torch.Generator().manual_seed(0))
    oracle = PCA(n_components=2).fit(x_train).score(x_test)
    assert abs(ll.mean().item() - oracle) < 0.05, (ll.mean().item(), oracle)


# -- the commands --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "digits", "--out", str(run), "--epochs", "2", "--hidden", "32",
                 "--latent-dim", "3", "--precision", "fp32", "--seed", "5"]) == 0
    return run


def test_evaluate_json_and_file(digits_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(digits_run), "-k", "50", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    keys = {"elbo", "rec", "kl", "log_likelihood", "log_likelihood_stderr", "importance_samples",
            "n_examples", "active_units", "kl_per_dim", "bits_per_dim"}
    assert keys <= set(res)
    assert res["n_examples"] == 179 and res["importance_samples"] == 50 and len(res["kl_per_dim"]) == 3
    assert res["log_likelihood"] > res["elbo"]
    assert json.loads((digits_run / "evaluation.json").read_text()) == res
    assert main(["evaluate", str(digits_run), "-k", "5"]) == 0
    assert "log p(x)" in capsys.readouterr().out


def test_score_rows_match_the_estimator(digits_run, tmp_path, capsys):
    from vaekit.estimator import VAE

    out = tmp_path / "s.csv"
    assert main(["score", str(digits_run), "digits", "--split", "test", "-k", "20", "--seed", "5",
                 "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "index,log_likelihood" and len(lines) == 180
    got = np.array([float(line.split(",")[1]) for line in lines[1:]])
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(179))
    vae = VAE.load(digits_run)  # random_state = the run's seed, 5
    np.testing.assert_allclose(got, vae.score_samples(load_data("digits").x_test.numpy(), n_importance=20), rtol=1e-9)
    assert vae.score(load_data("digits").x_test.numpy(), n_importance=20) == pytest.approx(got.mean())


def test_baseline_matches_scikit_learn(capsys):
    assert main(["baseline", "digits", "--model", "ppca", "--components", "5"]) == 0
    out = capsys.readouterr().out
    data = load_data("digits")
    pca = PCA(5, random_state=0).fit(data.x_train.flatten(1).double().numpy())
    expected = pca.score(data.x_test.flatten(1).double().numpy())
    assert f"test log p(x) {expected:.3f}" in out


def test_baseline_sizes_fit_a_small_table(tmp_path, capsys):
    """6 columns, 40 rows: pPCA gets 5 latent dimensions (q < d), the mixture 5 components (one
    per 7 rows), each said on stderr; numbers as scikit-learn's with those sizes."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)) @ rng.normal(size=(2, 6)) + 0.3 * rng.normal(size=(40, 6))
    np.savetxt(tmp_path / "t.csv", x, delimiter=",", header=",".join("abcdef"), comments="")
    for model, size, fitted in (("ppca", "5 latent dimensions", lambda a: PCA(5, random_state=0).fit(a)),
                                ("gmm", "5 components", lambda a: GaussianMixture(
                                    5, covariance_type="full", reg_covar=1e-3, random_state=0).fit(a))):
        assert main(["baseline", str(tmp_path / "t.csv"), "--model", model]) == 0
        out, err = capsys.readouterr()
        assert f"{model}: {size}" in err
        data = load_data(str(tmp_path / "t.csv"), 0.1)
        ref = fitted(data.x_train.double().numpy()).score(data.x_test.double().numpy())
        assert f"test log p(x) {ref:.3f}" in out


def test_independent_baseline_of_a_table_matches_scipy(tmp_path, capsys):
    """Per-column marginals by maximum likelihood: a Gaussian of the heights (scipy's norm with
    the training mean and sd) plus the add-half frequency of each city; a mixture is refused."""
    from scipy import stats

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"height": np.round(rng.normal(170, 8, 60), 1),
                       "city": rng.choice(["lyon", "nice", "paris"], 60, p=[0.6, 0.3, 0.1])})
    df.to_csv(tmp_path / "t.csv", index=False)
    assert main(["baseline", str(tmp_path / "t.csv"), "--model", "independent"]) == 0
    out = capsys.readouterr().out
    data = load_data(str(tmp_path / "t.csv"), 0.1, table=True)
    tr, te = data.x_train.double().numpy(), data.x_test.double().numpy()
    counts = np.bincount(tr[:, 1].astype(int), minlength=3) + 0.5
    ll = stats.norm.logpdf(te[:, 0], tr[:, 0].mean(), tr[:, 0].std()) \
        + np.log(counts / counts.sum())[te[:, 1].astype(int)]
    assert f"test log p(x) {ll.mean():.3f}" in out
    assert main(["baseline", str(tmp_path / "t.csv"), "--model", "gmm"]) == 2
    err = capsys.readouterr().err
    assert "column city is not continuous; use --model independent" in err


@pytest.mark.parametrize("argv,needle", [
    (["baseline", "digits", "--model", "gm"], "did you mean 'gmm'"),
    (["baseline", "digits", "--model", "ppca", "--components", "500"], "cannot be fitted"),
    (["evaluate", "nowhere"], "does not exist"),
    (["score", "nowhere", "digits", "--out", "x.csv"], "does not exist"),
])
def test_bad_input_is_one_error_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


# -- scores you can rank: each row's samples come from its own stream ----------------------------
def rankable_models():
    """An unconditional, a conditional and a ladder model on 6-D data in [0, 1]."""
    from vaekit.models.build import build_model

    torch.manual_seed(0)
    return {
        "plain": (build_model(ModelConfig(hidden=(16,), latent_dim=3), (6,)), None),
        "conditional": (build_model(ModelConfig(hidden=(16,), latent_dim=3, conditional=True,
                                                num_classes=3), (6,)), torch.arange(40) % 3),
        "ladder": (build_model(ModelConfig(hidden=(16,), latent_dim=3, top_latent_dims=(2,)), (6,)), None),
    }


@pytest.mark.parametrize("name", ["plain", "conditional", "ladder"])
def test_a_rows_score_does_not_depend_on_its_neighbours_order_or_batch(name):
    model, y = rankable_models()[name]
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    ref = log_likelihood(model, x, 64, seed=7, y=y, batch_size=40, max_rows=50)  # chunks 50 + 14
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    for batch_size in (1, 7, 40):
        got = log_likelihood(model, x[perm], 64, seed=7, y=None if y is None else y[perm],
                             batch_size=batch_size, max_rows=50)
        assert torch.equal(got, ref[perm]), (name, batch_size)  # to the last bit
        sub = log_likelihood(model, x[5:12], 64, seed=7, y=None if y is None else y[5:12],
                             batch_size=batch_size, max_rows=50)
        assert torch.equal(sub, ref[5:12]), (name, batch_size)
    # batched (the GPU path): the same streams, so the same numbers up to float rounding
    batched = log_likelihood(model, x, 64, seed=7, y=y, batch_size=16, max_rows=50, rowwise=False)
    torch.testing.assert_close(batched, ref, rtol=0, atol=1e-5)
    other = log_likelihood(model, x, 64, seed=8, y=y, max_rows=50)
    assert (other - ref).abs().min() > 0  # the seed still matters, for every row


def test_row_streams_are_seeded_by_content_and_remain_independent_draws():
    from vaekit.evaluation.measures import row_noise, row_seeds

    x = torch.rand(300, 4, generator=torch.Generator().manual_seed(0))
    seeds = row_seeds(x, None, 0)
    assert len(set(seeds)) == 300 and seeds[:2] == row_seeds(x[:2].double(), None, 0)
    assert row_seeds(-0.0 * torch.ones(1, 4), None, 0) == row_seeds(torch.zeros(1, 4), None, 0)
    y = torch.zeros(300, dtype=torch.long)
    assert all(a != b for a, b in zip(row_seeds(x, y, 0), row_seeds(x, y + 1, 0)))  # labels key it
    assert all(a != b for a, b in zip(seeds, row_seeds(x, None, 1)))  # and so does the seed
    noise = row_noise(seeds, 50, 3, torch.device("cpu"))  # (b, k, dim)
    assert noise.shape == (300, 50, 3)
    flat = noise.double().flatten().numpy()
    # 45,000 numbers from 300 streams: standard normal (Kolmogorov-Smirnov), rows uncorrelated
    assert st.kstest(flat, "norm").pvalue > 1e-3
    rows = noise.reshape(300, -1).double().numpy()
    corr = np.corrcoef(rows)[np.triu_indices(300, 1)]
    assert abs(corr.mean()) < 0.01 and corr.std() < 1.5 / math.sqrt(150)


def test_scoring_checks_the_likelihoods_support():
    from vaekit.errors import DataError

    model = VAEModel(ModelConfig(hidden=(8,), latent_dim=2), (6,))  # bernoulli: data in [0, 1]
    x = torch.rand(10, 6)
    x[3, 2] = 4.0
    with pytest.raises(DataError, match=r"values span \[.*, 4\]"):
        log_likelihood(model, x, 5, seed=0)
    with pytest.raises(DataError, match="bernoulli"):
        evaluate(model, x, k=5)
