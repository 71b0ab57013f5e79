"""bench/tables.py: its metrics against closed forms and scipy, the Gaussian copula baseline,
the MCAR mask, the generated table's exact likelihood against Monte Carlo, and one tiny end-to-end
run of the harness with the stand-in (no vaekit table support needed)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from vaekit.data.inference import infer_schema

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tables_bench", BENCH / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts bench/ on sys.path for its helpers
    return module


@pytest.fixture(scope="module")
def tm(bench):
    return sys.modules["tables_metrics"]


@pytest.fixture(scope="module")
def methods(bench):
    return sys.modules["tables_methods"]


@pytest.fixture(scope="module")
def data(bench):
    return sys.modules["tables_data"]


def correlated(n: int, rho: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], n)


def test_quality_of_identical_tables_is_one_and_of_shuffled_columns_lower(tm):
    rng = np.random.default_rng(0)
    x = correlated(300, 0.9, seed=1)
    level = (x[:, 0] > 0).astype(np.float64) + (x[:, 1] > 1)  # 3 levels tied to both columns
    real = np.column_stack([x, level])
    numeric = np.array([True, True, False])
    q = tm.quality(real, real, numeric)
    assert (q.shapes, q.trends, q.overall) == (1.0, 1.0, 1.0)
    shuffled = np.column_stack([rng.permutation(c) for c in real.T])  # same marginals, no pairs
    s = tm.quality(real, shuffled, numeric)
    assert s.shapes == 1.0  # each column's values are the same multiset
    assert s.trends < 0.8  # r = 0.9 -> about 0 costs 0.45 on the numeric pair alone


def test_column_shapes_and_pair_trends_match_their_closed_forms(tm):
    # KS of 0..9 against 5..14 is 0.5; TVD of (1/2, 1/2) against (3/4, 1/4) is 1/4
    assert tm.column_shape(np.arange(10.0), np.arange(5.0, 15.0), True) == pytest.approx(0.5)
    assert tm.column_shape(np.array([0, 0, 1, 1.0]), np.array([0, 0, 0, 1.0]), False) == pytest.approx(0.75)
    a = np.arange(20.0)
    # Pearson r = 1 against r = -1: 1 - |1 - (-1)| / 2 = 0
    assert tm.pair_trend(np.c_[a, a], np.c_[a, -a], (True, True)) == pytest.approx(0.0)
    x = correlated(400, 0.6, seed=2)
    y = correlated(400, -0.2, seed=3)
    want = 1 - abs(stats.pearsonr(*x.T).statistic - stats.pearsonr(*y.T).statistic) / 2
    assert tm.pair_trend(x, y, (True, True)) == pytest.approx(want)
    # contingency: real pairs (0,0),(1,1) half each; synthetic all (0,1): TVD = 1
    r = np.array([[0, 0], [1, 1.0]])
    assert tm.pair_trend(r, np.array([[0, 1], [0, 1.0]]), (False, False)) == pytest.approx(0.0)
    assert tm.pair_trend(r, r[::-1], (False, False)) == pytest.approx(1.0)
    # a numeric column is binned over the real range: 10 equal bins of 0..9.9
    real = np.c_[np.arange(0, 10, 0.1), np.repeat([0.0, 1.0], 50)]
    flip = real.copy()
    flip[:, 1] = 1 - flip[:, 1]  # low values now go with level 1: TVD of the tables is 1
    assert tm.pair_trend(real, flip, (True, False)) == pytest.approx(0.0)


def test_missing_cells_are_left_out_of_each_column(tm):
    real = np.array([0.0, 1.0, 2.0, np.nan])
    assert tm.column_shape(real, np.array([0.0, 1.0, 2.0]), True) == 1.0
    assert np.isnan(tm.column_shape(np.array([np.nan]), real, True))


def test_gaussian_copula_reproduces_a_gaussians_correlation_and_marginals(methods, tm):
    x = correlated(2000, 0.7, seed=4)
    df = pd.DataFrame({"a": x[:, 0] * 3 + 10, "b": np.exp(x[:, 1])})  # monotone margins
    schema = infer_schema(df)
    sample = methods.GaussianCopula(schema, seed=0).fit(df).sample(4000)
    # the copula's correlation is that of the normal scores, which are the Gaussian itself
    z = stats.norm.ppf(stats.rankdata(sample.to_numpy(), axis=0) / (len(sample) + 1))
    assert np.corrcoef(z.T)[0, 1] == pytest.approx(0.7, abs=0.03)
    for c in df:
        assert stats.ks_2samp(df[c], sample[c]).statistic < 0.04  # empirical marginals kept


def test_gaussian_copula_samples_seen_levels_and_integer_counts(methods):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], 300, p=[0.6, 0.3, 0.1]),
                       "visits": rng.poisson(3, 300), "x": rng.normal(size=300)})
    df.loc[[3, 7], "x"] = np.nan
    sample = methods.GaussianCopula(infer_schema(df), seed=0).fit(df).sample(3000)
    assert set(sample["colour"]) == {"red", "green", "blue"}
    assert sample["visits"].dtype == np.int64 and set(sample["visits"]) <= set(df["visits"])
    freq = sample["colour"].value_counts(normalize=True)
    assert freq["red"] == pytest.approx(0.6, abs=0.05) and freq["blue"] == pytest.approx(0.1, abs=0.03)


def test_mcar_mask_removes_the_asked_fraction_of_observed_cells_only(tm):
    shape = (400, 10)
    observed = np.ones(shape, dtype=bool)
    observed[:, 0] = False  # an all-missing column is never chosen
    for rate in (0.2, 0.5):
        mask = tm.mcar_mask(shape, rate, np.random.default_rng(0), observed=observed)
        n = observed.sum()
        sd = np.sqrt(rate * (1 - rate) / n)
        assert abs(mask[observed].mean() - rate) < 4 * sd
        assert not mask[:, 0].any()
    a = tm.mcar_mask(shape, 0.2, np.random.default_rng(1))
    assert np.array_equal(a, tm.mcar_mask(shape, 0.2, np.random.default_rng(1)))  # seeded


def test_imputation_errors_are_on_removed_cells_in_sd_units(tm):
    truth = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 1.0]])
    filled = np.array([[1.0, 0.0], [5.0, 2.0], [4.0, 0.0]])
    mask = np.array([[False, False], [True, True], [True, True]])
    e = tm.impute_error(truth, filled, mask, np.array([True, False]), sd=np.array([2.0, 1.0]))
    assert e.rmse == pytest.approx(np.sqrt(((2 / 2) ** 2 + (1 / 2) ** 2) / 2))
    assert e.accuracy == pytest.approx(0.5) and e.unfilled == 0


def test_mean_mode_imputer_fills_training_mean_and_mode(methods):
    df = pd.DataFrame({"x": [1.0, 2.0, 6.0, 3.0], "c": ["a", "b", "b", "b"]})
    schema = infer_schema(df)
    tm = sys.modules["tables_metrics"]
    x, _ = tm.encode(df, schema)
    out = methods.Imputer("mean", schema).fit(x).transform(np.full((1, 2), np.nan))
    assert out[0, 0] == pytest.approx(3.0) and schema.columns[1].levels[int(out[0, 1])] == "b"


def test_iterative_imputer_uses_columns_complete_in_training(methods, tm):
    # b = 2a + 1 exactly, c follows a's sign; the training rows are complete: fitted on them
    # alone, IterativeImputer filled every missing level of c with the mode
    a = np.linspace(-2, 2, 80)
    df = pd.DataFrame({"a": a, "b": 2 * a + 1, "c": np.where(a > 0, "hi", "lo")})
    schema = infer_schema(df)
    x, _ = tm.encode(df, schema)
    test = x[::8].copy()
    test[:, 1] = np.nan
    test[:, 2] = np.nan
    out = methods.Imputer("iterative", schema).fit(x).transform(test)
    np.testing.assert_allclose(out[:, 1], x[::8, 1], atol=0.05)
    assert np.mean(out[:, 2] == x[::8, 2]) >= 0.9  # the level follows a's sign
    mean = methods.Imputer("mean", schema).fit(x).transform(test)
    assert np.allclose(mean[:, 1], x[:, 1].mean())


def test_independent_marginals_match_scipy(methods, tm):
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"g": rng.normal(5, 2, 400), "p": rng.lognormal(1, 0.5, 400),
                       "k": rng.negative_binomial(2, 0.3, 400), "c": rng.choice(["u", "v"], 400)})
    schema = infer_schema(df, overrides=["g=continuous", "p=positive", "k=count"])
    x, _ = tm.encode(df, schema)
    ind = methods.independent(schema).fit(x)
    lp = ind.column_log_prob(x[:3])
    g, p = df["g"].to_numpy(), np.log(df["p"].to_numpy())
    np.testing.assert_allclose(lp[:, 0], stats.norm.logpdf(g[:3], g.mean(), g.std()))
    np.testing.assert_allclose(lp[:, 1], stats.lognorm.logpdf(df["p"][:3], s=p.std(), scale=np.exp(p.mean())))
    r, q = ind.params_[2]
    k = df["k"].to_numpy()
    assert r * (1 - q) / q == pytest.approx(k.mean())  # the MLE keeps the mean
    np.testing.assert_allclose(lp[:, 2], stats.nbinom.logpmf(k[:3], r, q))
    # scipy has no MLE for discrete families: r is a maximum of the likelihood along the mean
    best = stats.nbinom.logpmf(k, r, q).sum()
    for s in (r * 1.05, r / 1.05):
        assert best > stats.nbinom.logpmf(k, s, s / (s + k.mean())).sum()
    counts = np.bincount(x[:, 3].astype(int), minlength=2) + 0.5
    np.testing.assert_allclose(lp[:, 3], np.log(counts / counts.sum())[x[:3, 3].astype(int)])
    assert ind.score_samples(x[:3]) == pytest.approx(lp.sum(1))


def test_generated_table_exact_likelihood_matches_monte_carlo(data):
    t = data.generated(n=5, seed=0)
    exact = t.exact(t.df)
    rng = np.random.default_rng(7)
    z = rng.standard_normal((200_000, 2))  # log p(x) = log E_z p(x|z), z ~ N(0, I)
    p = data._columns_given_z(z)
    for i, row in t.df.iterrows():
        lp = (stats.norm.logpdf(row.x1, *p["x1"]) + stats.norm.logpdf(row.x2, *p["x2"])
              + stats.lognorm.logpdf(row.price, s=p["price"][1], scale=np.exp(p["price"][0]))
              + stats.poisson.logpmf(row.visits, p["visits"])
              + np.log(p["member"] if row.member == "yes" else 1 - p["member"])
              + np.log(p["colour"][:, list(data.LEVELS).index(row.colour)]))
        w = np.exp(lp - lp.max())
        mc = special.logsumexp(lp) - np.log(len(z))
        stderr = w.std() / w.mean() / np.sqrt(len(z))  # delta method on the log
        assert exact[i] == pytest.approx(mc, abs=max(4 * stderr, 1e-3))


def test_dcr_is_zero_for_copies_and_the_mixed_distance_otherwise(tm):
    train = np.array([[0.0, 0.0], [2.0, 1.0]])
    numeric = np.array([True, False])
    assert np.array_equal(tm.dcr(train, train, numeric), [0.0, 0.0])
    # sd of column 0 is 1: row (1, 1) is at sqrt(1^2 + 1) from row 0, sqrt(1^2 + 0) from row 1
    assert tm.dcr(np.array([[1.0, 1.0]]), train, numeric) == pytest.approx([1.0])
    assert tm.dcr(np.array([[0.0, 1.0]]), train, numeric) == pytest.approx([1.0])


def test_efficacy_is_one_when_the_target_is_a_feature_copy(tm):
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 200).astype(np.float64)
    x = np.c_[y, rng.normal(size=200), y]
    numeric = np.array([False, True, False])
    assert tm.efficacy(x[:150], x[150:], numeric, target=2) == pytest.approx(1.0)
    x[:, 1] = 2 * x[:, 0] + 1  # a numeric target that is a function of a feature
    assert tm.efficacy(x[:150], x[150:], np.array([False, True, False]), target=1) > 0.99


def test_lenient_encoding_scores_odd_output_instead_of_refusing(tm):
    df = pd.DataFrame({"c": ["a", "b", "a", "a"], "v": [1, 2, 2, 3]})
    schema = infer_schema(df)
    out, bad = tm.encode(pd.DataFrame({"c": ["a", "zz", "b"], "v": ["1", "x", 2.5]}), schema)
    assert bad == 2
    np.testing.assert_array_equal(np.isnan(out), [[False, False], [True, True], [False, False]])


def test_harness_runs_end_to_end_with_the_stand_in(bench, data, monkeypatch, capsys):
    def absent():
        raise data.Missing("package 'nothere' is not installed (pip install nothere)")

    monkeypatch.setitem(bench.REAL, "absent", absent)
    bench.main(["--quick", "--tables", "absent,wine,generated", "--vaekit", "standin", "--no-gan",
                "--max-rows", "150", "--rates", "0.3"])
    out = capsys.readouterr().out
    assert "absent: skipped: package 'nothere' is not installed" in out
    assert "generated: 120 train / 30 test rows, 6 columns" in out
    for title in ("SDMetrics quality", "ML efficacy", "imputation 30% MCAR", "held-out log p(x)"):
        assert title in out
    # --no-gan: the claim names only the baselines that ran
    assert "claim: standin at least level with the best of copula on quality: 1 of 1 real" in out
    assert "wine: 120 train / 30 test rows, 14 columns" in out  # a real table, from scikit-learn
    # the likelihood table: the stand-in scores with the independent marginals, and the exact
    # model (quadrature) beats them on data it generated
    lines = out.split("held-out log p(x)")[1].splitlines()
    head, row = lines[1].split(), next(ln.split() for ln in lines if ln.startswith("generated "))
    got = dict(zip(head[1:], (float(v) if v != "-" else np.nan for v in row[1:])))
    assert got["standin"] == got["independent"] and got["exact"] > got["independent"] + 0.5
