"""MIG and DCI against hand computations first, then the oracle codes of the issue: a
permutation of the factors scores about 1, a rotation of it low, pure noise about 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from vaekit.data import load_part
from vaekit.evaluation.disentangle import (ESTIMATORS, dci, dci_from_importance, discretize,
                                disentanglement_scores, mig)

LOG2 = math.log(2)


def h2(p: float) -> float:
    """Binary entropy in bits."""
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# -- hand computations ---------------------------------------------------------------------------
def test_discretize_uses_equal_width_bins_over_each_range():
    col = np.array([0.0, 0.24, 0.25, 0.5, 0.74, 0.99, 1.0])  # bins of width 0.25 over [0, 1]
    z = discretize(np.c_[col, 10 * col - 3], bins=4)
    assert z[:, 0].tolist() == [0, 0, 1, 2, 2, 3, 3]  # the maximum falls in the last bin
    assert np.array_equal(z[:, 1], z[:, 0])  # per column, invariant to scale and shift
    assert np.bincount(z[:, 0]).tolist() == np.histogram(col, 4)[0].tolist()


def test_mig_of_a_small_case_by_hand():
    # v1 = 00001111, v2 = 00110011; z1 = v1; z2 = 00010111, so that within every value of v1
    # and of v2, z2 takes one value in 3 rows of 4: I(z2; v) = log 2 - h(1/4).
    v = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 0], [1, 0], [1, 1], [1, 1]] * 2)
    z = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [1, 0], [1, 1], [1, 1], [1, 1]] * 2, float)
    res = mig(z, v, bins=2)
    i2 = LOG2 * (1 - h2(0.25))  # nats
    assert np.allclose(res.factor_entropy, [LOG2, LOG2])
    assert np.allclose(res.mutual_info, [[LOG2, 0.0], [i2, i2]])
    # v1: (log 2 - i2) / log 2 = h2(1/4) = 0.8113; v2: i2 / log 2 = 1 - h2(1/4); mean 1/2.
    assert np.allclose(res.gaps, [h2(0.25), 1 - h2(0.25)])
    assert res.mig == pytest.approx(0.5)
    # A third code that is constant carries nothing and changes no gap.
    assert np.allclose(mig(np.c_[z, np.ones(16)], v, bins=2).gaps, res.gaps)
    # A factor that is not uniform: its plug-in entropy h(1/4), not log 2, is the normaliser.
    # v3 = 00010001: z1 is independent of it; z2 is 1 where v3 is, and 1 in 2 of the 6 other
    # rows: I(z2; v3) = log 2 - (3/4) h(1/3).
    skewed = mig(z, np.c_[v[:, 0], [0, 0, 0, 1] * 4], bins=2)
    assert skewed.factor_entropy[1] == pytest.approx(LOG2 * h2(0.25))
    assert skewed.gaps[1] == pytest.approx((1 - 0.75 * h2(1 / 3)) / h2(0.25))


def test_dci_of_importance_matrices_by_hand():
    eye = dci_from_importance(np.eye(3))
    assert eye[:2] == (pytest.approx(1.0), pytest.approx(1.0))
    assert dci_from_importance(np.ones((3, 2)))[:2] == (pytest.approx(0.0), pytest.approx(0.0))
    # Code 1 predicts only factor 1 (D_1 = 1), code 2 both equally (D_2 = 0); they hold 0.6 and
    # 0.4 of the importance: D = 0.6. Factor 1 spreads (3/4, 1/4) over the codes: C_1 = 1 -
    # h2(1/4); factor 2 sits on code 2: C_2 = 1; weighted by their shares 0.8 and 0.2.
    d, c, per_code, per_factor = dci_from_importance(np.array([[0.6, 0.0], [0.2, 0.2]]))
    assert d == pytest.approx(0.6) and np.allclose(per_code, [1.0, 0.0])
    assert np.allclose(per_factor, [1 - h2(0.25), 1.0])
    assert c == pytest.approx(0.8 * (1 - h2(0.25)) + 0.2)
    # An unused code has no weight; entropies over 3 codes are in base 3.
    d, c, per_code, per_factor = dci_from_importance(np.array([[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]]))
    assert d == pytest.approx(1.0)
    assert np.allclose(per_factor, [1.0, 1 - math.log(2) / math.log(3)])
    assert dci_from_importance(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))[:2] == (1.0, 1.0)


# -- the oracle codes ----------------------------------------------------------------------------
SIZES = (3, 6, 10, 16, 16)  # the factor sizes of the shapes data set


def oracle(kind: str, n: int, sizes=SIZES) -> tuple[np.ndarray, np.ndarray]:
    """Factors drawn independently (seed 0) and a code of the given kind for them."""
    rng = np.random.default_rng(0)
    f = np.stack([rng.integers(0, k, n) for k in sizes], 1)
    perm = np.roll(np.arange(len(sizes)), 2)  # code j holds factor perm[j]
    z = ((f - f.mean(0)) / f.std(0))[:, perm] + 0.01 * rng.standard_normal(f.shape)
    if kind == "noisy":  # still one factor per code, known less well
        z = z + 0.2 * rng.standard_normal(f.shape)
    elif kind == "rotation":  # every code a mixture of every factor
        z = z @ special_ortho_group.rvs(len(sizes), random_state=1)
    elif kind == "noise":
        z = rng.standard_normal(f.shape)
    return z, f


# (kind, MIG bounds, DCI disentanglement bounds, completeness bounds, informativeness bounds),
# DCI with the random forest (fast on 3,000 rows); the default's numbers are tested below.
CASES = [
    ("permutation", (0.9, 1.0), (0.9, 1.0), (0.9, 1.0), (0.95, 1.0)),
    # Noise blurs each code (MIG and informativeness fall), but no code mixes factors: D stays.
    ("noisy", (0.5, 0.9), (0.85, 1.0), (0.85, 1.0), (0.5, 0.85)),
    # Taking the squared rotation matrix as the importance (each code's share of a factor's
    # variance) gives D = C = 0.225 for this rotation.
    ("rotation", (0.0, 0.3), (0.1, 0.4), (0.1, 0.4), (0.3, 0.9)),
    ("noise", (0.0, 0.05), (0.0, 0.2), (0.0, 0.2), (0.0, 0.25)),  # chance: mean 1/k = 0.145
]


@pytest.mark.parametrize("kind, mig_in, d_in, c_in, i_in", CASES, ids=[c[0] for c in CASES])
def test_oracle_codes_score_as_expected(kind, mig_in, d_in, c_in, i_in):
    z, f = oracle(kind, 3000)
    m, r = mig(z, f), dci(z, f, random_state=0, estimator="forest")
    for name, value, (lo, hi) in (("MIG", m.mig, mig_in), ("D", r.disentanglement, d_in),
                                  ("C", r.completeness, c_in), ("I", r.informativeness, i_in)):
        assert lo <= value <= hi, f"{kind}: {name} = {value:.3f} not in [{lo}, {hi}]"
    assert r.importance.shape == (5, 5) and np.allclose(r.importance.sum(0), 1.0)
    if kind == "permutation":  # the importance sits where the permutation put each factor
        assert (r.importance.argmax(0) == np.argsort(np.roll(np.arange(5), 2))).all()
        assert (m.mutual_info.argmax(0) == r.importance.argmax(0)).all()


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_every_estimator_finds_a_permutation_and_not_noise(estimator):
    z, f = oracle("permutation", 600, sizes=(3, 4, 5))
    r = dci(z, f, random_state=0, estimator=estimator)
    assert r.disentanglement > 0.9 and r.completeness > 0.9 and r.informativeness > 0.95
    noise = dci(oracle("noise", 600, sizes=(3, 4, 5))[0], f, random_state=0, estimator=estimator)
    assert noise.disentanglement < 0.2 and noise.completeness < 0.2


def test_boosting_default_scores_a_clean_permutation_whatever_the_rounding():
    """Gradient boosting's importance of an unused code is 0 up to rounding, negative for this
    split (about -1e-17): the importance is its absolute value, as in disentanglement_lib."""
    z, f = oracle("permutation", 200, sizes=(3, 6, 10))
    r = dci(z, f, random_state=2)  # raised ValueError (a negative importance) before the fix
    assert r.estimator == "boosting" and (r.importance >= 0).all()
    assert r.disentanglement > 0.99 and r.completeness > 0.99 and r.informativeness > 0.95
    assert (r.importance.argmax(0) == np.argsort(np.roll(np.arange(3), 2))).all()


def test_default_importance_is_disentanglement_libs():
    """The default's importance matrix against scikit-learn's GradientBoostingClassifier with
    its default settings, fitted here on the same split (80% of a seeded permutation)."""
    from sklearn.ensemble import GradientBoostingClassifier

    z, f = oracle("rotation", 200, sizes=(3, 4, 5))
    r = dci(z, f, random_state=5)
    order = np.random.default_rng(5).permutation(200)
    train = order[40:]
    want = np.stack([np.abs(GradientBoostingClassifier(random_state=5).fit(z[train], f[train, k])
                            .feature_importances_) for k in range(3)], 1)
    np.testing.assert_allclose(r.importance, want, rtol=1e-12, atol=1e-15)
    assert not np.allclose(dci(z, f, random_state=5, estimator="forest").importance, want, atol=0.02)


def test_forest_numbers_have_their_own_keys():
    z, f = oracle("noisy", 300, sizes=(3, 4, 5))
    s = disentanglement_scores(z, f, random_state=0, estimator="forest")
    assert set(s) == {"mig", "dci_forest_disentanglement", "dci_forest_completeness",
                      "dci_forest_informativeness", "n_rows"}
    assert s["dci_forest_disentanglement"] == dci(z, f, 0, "forest").disentanglement


def test_dci_is_reproducible_and_its_seed_matters():
    z, f = oracle("rotation", 1000)
    a, b, c = dci(z, f, 3, "forest"), dci(z, f, 3, "forest"), dci(z, f, 4, "forest")
    assert np.array_equal(a.importance, b.importance) and a.disentanglement == b.disentanglement
    assert not np.array_equal(a.importance, c.importance)


# -- inputs and the evaluate hooks ----------------------------------------------------------------
@pytest.mark.parametrize("codes, factors, match", [
    (np.zeros((20, 2)), np.zeros((19, 2)), "same rows"),
    (np.zeros(20), np.zeros((20, 2)), "2-D"),
    (np.full((20, 2), np.nan), np.arange(40).reshape(20, 2), "NaN"),
    (np.zeros((20, 2)), np.arange(40).reshape(20, 2) + 0.5, "integer"),
    (np.zeros((20, 2)), np.c_[np.arange(20), np.ones(20, int)], r"columns \[1\]"),
])
def test_bad_inputs_are_refused(codes, factors, match):
    with pytest.raises(ValueError, match=match):
        mig(codes, factors)
    with pytest.raises(ValueError, match=match):
        dci(codes, factors)


def test_scores_for_evaluate_subsample_and_factors_come_with_the_data():
    z, f = oracle("permutation", 3000)
    s = disentanglement_scores(z, f, random_state=0, max_rows=600)  # few rows: boosting is slow
    assert s["n_rows"] == 600 and set(s) == {"mig", "dci_disentanglement", "dci_completeness",
                                              "dci_informativeness", "n_rows"}
    assert s["mig"] > 0.9 and s["dci_disentanglement"] > 0.9
    assert load_part("digits").factors is None
    from vaekit.data.shapes import load_factors

    train, test, names = load_factors(lambda s: None)
    every = load_part("shapes", "all", log=lambda s: None)
    assert every.factor_names == names and np.array_equal(every.factors, np.concatenate([train, test]))
    assert np.array_equal(load_part("shapes", "test", log=lambda s: None).factors, test)


def test_report_labels_whose_dci_number_it_shows():
    from vaekit.report.sections import evaluation_section

    ev = {"log_likelihood": -1.0, "elbo": -2.0, "mig": 0.5, "dci_disentanglement": 0.6,
          "dci_forest_disentanglement": 0.8}
    page = evaluation_section(ev, latent_dim=3)
    boosted = page[page.index("dci disentanglement"):]
    assert "as disentanglement_lib (Locatello et al. 2019)" in boosted[:300]
    forest = page[page.index("dci forest disentanglement"):]
    assert "a random forest: a different number from disentanglement_lib" in forest[:300]
