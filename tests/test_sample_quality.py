"""The sample-quality metric: the Fréchet distance and precision/recall against independent
oracles (scipy's sqrtm, closed forms, a brute-force k-NN with scikit-learn), its behaviour on
degraded images in the features of vaekit's classifier, and the classifier's verified cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.neighbors import NearestNeighbors

from vaekit.evaluation import featurenet
from vaekit.data import Dataset, load_data
from vaekit.errors import DataError
from vaekit.evaluation.sample_metrics import (frechet_distance, frechet_distance_of, gaussian_stats,
                                   knn_radii, precision_recall)


def spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def fd_oracle(mu1, c1, mu2, c2) -> float:
    """The FID formula with scipy's general matrix square root of the product."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2)
                 - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real)


# -- the Fréchet distance ----------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 3, 16, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2, c1, c2 = rng.standard_normal(d), rng.standard_normal(d), spd(rng, d), spd(rng, d)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(fd_oracle(mu1, c1, mu2, c2), rel=1e-8, abs=1e-8)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    c, mu, shift = spd(rng, 5), rng.standard_normal(5), rng.standard_normal(5)
    # same covariance: only the means differ
    assert frechet_distance(mu, c, mu + shift, c) == pytest.approx(float(shift @ shift), rel=1e-10)
    # commuting (diagonal) covariances: sum (s1 - s2)^2 over the standard deviations
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    assert frechet_distance(mu, np.diag(s1 ** 2), mu, np.diag(s2 ** 2)) == pytest.approx(
        float(np.sum((s1 - s2) ** 2)), rel=1e-10)


def test_distance_of_a_set_to_itself_is_zero():
    f = np.random.default_rng(1).standard_normal((500, 32)) * 3 + 1
    assert frechet_distance_of(f, f) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance_of(f, f[::-1].copy()) == pytest.approx(0.0, abs=1e-9)


def test_sample_estimate_approaches_the_closed_form_between_two_gaussians():
    rng = np.random.default_rng(2)
    d = 3
    mu1, mu2, c1, c2 = np.zeros(d), np.full(d, 0.5), spd(rng, d), spd(rng, d)
    truth = fd_oracle(mu1, c1, mu2, c2)
    a = rng.multivariate_normal(mu1, c1, 200_000)
    b = rng.multivariate_normal(mu2, c2, 200_000)
    # the estimator's error at n = 200,000 is of order 1e-2 here (its bias ~ d / n, its sd ~ 1/sqrt(n))
    assert frechet_distance_of(a, b) == pytest.approx(truth, rel=0.02)


def test_gaussian_stats_match_numpy():
    f = np.random.default_rng(3).standard_normal((50, 4))
    mu, cov = gaussian_stats(torch.from_numpy(f))
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(cov, np.cov(f.T))


# -- precision and recall ----------------------------------------------------------------------
def pr_oracle(real, fake, k):
    """Kynkäänniemi et al. 2019 by brute force with scikit-learn's exact nearest neighbours."""
    def radii(x):
        return NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)[0][:, k]

    def covered(points, centres, r):
        d = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=-1)
        return float(np.mean((d <= r[None, :]).any(1)))
    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_match_brute_force(k):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((300, 6))
    fake = rng.standard_normal((250, 6)) * 0.7 + 0.8  # narrower and shifted
    p, r = precision_recall(real, fake, k)
    po, ro = pr_oracle(real, fake, k)
    assert (p, r) == (pytest.approx(po, abs=1e-12), pytest.approx(ro, abs=1e-12))
    assert 0.05 < p < 0.99 and 0.05 < r < 0.99  # a case where both are informative


def test_knn_radii_match_scikit_learn():
    x = np.random.default_rng(4).standard_normal((400, 5))
    nn = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x)[0][:, 3]
    np.testing.assert_allclose(knn_radii(torch.from_numpy(x), 3).numpy(), nn, rtol=1e-9)


def test_precision_recall_constructed_cases():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 4))
    b = rng.standard_normal((300, 4)) + 50.0  # a second, far cluster
    real = np.concatenate([a, b])
    assert precision_recall(real, real) == (1.0, 1.0)
    p, r = precision_recall(real, a[:150])  # a subset: every sample is real, half the data unseen
    assert p == 1.0 and r <= 0.5 + 1e-12
    assert r > 0.2  # the covered cluster is recalled
    assert precision_recall(real, real + 1000.0) == (0.0, 0.0)  # nowhere near
    p, r = precision_recall(real, a[:5].repeat(60, 0) + 1e-9 * rng.standard_normal((300, 4)))
    assert p == 1.0 and r < 0.1  # mode collapse: precise, no recall


# -- degradations, in the features of vaekit's classifier --------------------------------------
@pytest.fixture(scope="module")
def digits_features():
    """A classifier trained briefly on half of the digits' training split; the other half
    serves as generated images (the classifier never saw them)."""
    data = load_data("digits", log=lambda s: None)
    half = len(data.x_train) // 2
    fit = Dataset("digits-half", data.x_train[:half], data.x_test, data.y_train[:half], data.y_test)
    clf = featurenet.train(fit, 10, torch.device("cpu"), 600, log=lambda s: None)
    return clf, data.x_train[:half], data.x_train[half:], data.y_train[half:]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = (k[:, None] * k[None, :]) / k.sum() ** 2
    return torch.nn.functional.conv2d(x, k[None, None], padding=3)


def test_distance_grows_with_degradation(digits_features):
    clf, ref, other, labels = digits_features
    f_ref = clf.features(ref)

    def fd(x):
        return frechet_distance_of(f_ref, clf.features(x))
    clean = fd(other)
    blurred = [fd(blur(other, s)) for s in (0.5, 1.0, 2.0)]
    noisy = [fd((other + s * torch.randn(other.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1))
             for s in (0.1, 0.3, 0.6)]
    assert clean < blurred[0] < blurred[1] < blurred[2]
    assert clean < noisy[0] < noisy[1] < noisy[2]
    assert blurred[2] > 3 * clean and noisy[2] > 3 * clean
    dropped = other[labels < 5]  # mode dropping: half of the classes gone
    assert fd(dropped) > 3 * clean
    p_all, r_all = precision_recall(f_ref, clf.features(other))
    p_drop, r_drop = precision_recall(f_ref, clf.features(dropped))
    assert r_drop < 0.8 * r_all  # the missing classes are not recalled
    assert p_drop > 0.8 * p_all  # what is there is still real


# -- the classifier and its cache --------------------------------------------------------------
def small_digits() -> Dataset:
    return load_data("digits", log=lambda s: None)


def test_classifier_is_cached_verified_and_retrained_when_damaged(tmp_path):
    data, lines = small_digits(), []
    clf = featurenet.classifier_for(data, log=lines.append, steps=300)
    assert clf.accuracy > 0.85 and any("training" in s for s in lines)
    base = featurenet.cache_path(data, 300)
    record = json.loads(base.with_suffix(".json").read_text())
    assert record["test_accuracy"] == clf.accuracy and record["feature_dim"] == 128
    f0 = clf.features(data.x_test)
    lines.clear()
    again = featurenet.classifier_for(data, log=lines.append, steps=300)
    assert lines == []  # from the cache, checked, not retrained
    assert torch.equal(again.features(data.x_test), f0)
    blob = bytearray(base.with_suffix(".safetensors").read_bytes())
    blob[-5] ^= 0xFF  # one flipped bit in a weight
    base.with_suffix(".safetensors").write_bytes(bytes(blob))
    fixed = featurenet.classifier_for(data, log=lines.append, steps=300)
    assert any("SHA-256" in s and "training it again" in s for s in lines)
    assert torch.equal(fixed.features(data.x_test), f0)  # the same seed trains the same network
    record["test_accuracy"] = "high"
    base.with_suffix(".json").write_text(json.dumps(record))
    lines.clear()
    featurenet.classifier_for(data, log=lines.append, steps=300)
    assert any("test_accuracy" in s and "training it again" in s for s in lines)


def test_classifier_for_tables_and_refusals():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    x = (rng.standard_normal((400, 5)) + y[:, None]).astype(np.float32)
    table = Dataset.from_arrays("table", x[:300], x[300:], y[:300], y[300:])
    clf = featurenet.classifier_for(table, log=lambda s: None, steps=300)
    assert clf.record["kind"] == "vector" and clf.accuracy > 0.7
    assert clf.features(table.x_test).shape == (100, 128)
    with pytest.raises(DataError, match="needs labelled data"):
        featurenet.classifier_for(Dataset.from_arrays("plain", x[:300], x[300:]), log=lambda s: None)
    with pytest.raises(DataError, match="no test split"):
        featurenet.classifier_for(Dataset.from_arrays("t", x, x[:0], y, y[:0]), log=lambda s: None)
