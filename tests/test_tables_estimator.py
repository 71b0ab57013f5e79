"""The estimator on pandas DataFrames: a DataFrame is a table (its schema inferred: text,
category and boolean columns, missing cells); sample, reconstruct, score_samples and impute
speak DataFrames; NumPy arrays, and DataFrames with another likelihood given, keep the numeric
path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from vaekit import VAE
from vaekit.errors import DataError

FAST = dict(hidden=(16,), latent_dim=1, epochs=3, batch_size=32, device="cpu", precision="fp32",
            random_state=0)


def frame(n: int = 150, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    df = pd.DataFrame({
        "name": [f"row{i}" for i in range(n)],  # ID-like: left out
        "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
        "smoker": z + rng.normal(size=n) > 0,  # bool
        "children": rng.poisson(1.5, n),
        "income": np.exp(10 + 0.5 * z),
        "score": 50 + 10 * z,
    })
    df.loc[rng.choice(n, 15, replace=False), "income"] = np.nan
    return df


@pytest.fixture(scope="module")
def vae():
    return VAE(**FAST).fit(frame())


def test_a_dataframe_with_types_and_holes_is_a_table(vae):
    assert vae.config_.model.likelihood == "table" and vae.config_.model.preprocess == "none"
    assert vae.schema_.names == ["colour", "smoker", "children", "income", "score"]
    assert [n for n, _ in vae.schema_.dropped] == ["name"]
    assert list(vae.feature_names_in_) == list(frame().columns) and vae.n_features_in_ == 6


def test_sample_is_a_dataframe_in_the_tables_types(vae):
    s = vae.sample(300, random_state=3)
    assert list(s.columns) == vae.schema_.names and len(s) == 300
    assert isinstance(s["colour"].dtype, pd.CategoricalDtype)
    assert set(s["colour"].cat.categories) == {"blue", "green", "red"}
    assert s["smoker"].dtype == bool and s["children"].dtype == np.int64
    assert (s["income"] > 0).all()
    pd.testing.assert_frame_equal(s, vae.sample(300, random_state=3))
    means = vae.sample(300, random_state=3, mean=True)
    assert s["score"].std() > 2 * means["score"].std()  # draws carry the column's noise
    r = vae.reconstruct(frame().head(5))
    assert list(r.columns) == vae.schema_.names and len(r) == 5


def test_score_of_a_missing_cell_is_the_sum_over_its_values(vae):
    """log p(x_obs) = log sum_b p(x_obs, smoker = b): importance sampling with K = 4000 on a
    1-D latent agrees to Monte Carlo error (the missing cell is marginalised, not set to 0)."""
    rows = frame().head(6).copy()
    rows["smoker"] = rows["smoker"].astype(object)
    both = [rows.assign(smoker=v) for v in (False, True)]
    rows["smoker"] = None
    missing = vae.score_samples(rows, n_importance=4000)
    summed = logsumexp(np.stack([vae.score_samples(b, n_importance=4000) for b in both]), axis=0)
    assert np.isfinite(missing).all()
    np.testing.assert_allclose(missing, summed, atol=0.03)
    # and a probability of a missing binary cell is no more than 1: log p(x_obs) >= each term
    assert (missing > vae.score_samples(both[0], n_importance=4000) - 0.03).all()


def test_impute_fills_only_the_missing_cells(vae):
    df = frame()
    out = vae.impute(df, n_importance=100)
    assert not out["income"].isna().any() and (out["income"] > 0).all()
    seen = df["income"].notna()
    pd.testing.assert_series_equal(out["income"][seen], df["income"][seen])
    for col in ("name", "colour", "smoker", "children", "score"):
        pd.testing.assert_series_equal(out[col], df[col])
    draws = vae.impute(df, n_importance=100, draws=2)
    assert len(draws) == 2 and all(not d["income"].isna().any() for d in draws)
    assert not np.allclose(draws[0]["income"][~seen], draws[1]["income"][~seen])


def test_save_load_keeps_the_schema(vae, tmp_path):
    vae.save(tmp_path / "m")
    loaded = VAE.load(tmp_path / "m")
    assert loaded.schema_ == vae.schema_
    df = frame().head(8)
    np.testing.assert_array_equal(loaded.score_samples(df, n_importance=50),
                                  vae.score_samples(df, n_importance=50))


def test_bad_input_to_a_table_model(vae):
    with pytest.raises(DataError, match="pass a pandas DataFrame"):
        vae.score_samples(np.zeros((3, 5)))
    bad = frame().head(4)
    bad["colour"] = bad["colour"].astype(object)
    bad.loc[2, "colour"] = "purple"
    with pytest.raises(DataError, match="column 'colour', row 3: unknown category 'purple'"):
        vae.score_samples(bad)


def test_numbers_keep_the_numeric_path():
    x = np.random.default_rng(2).normal(size=(60, 3))
    est = VAE(**FAST).fit(x)
    assert est.config_.model.likelihood == "gaussian-predicted" and est.schema_ is None
    assert isinstance(est.sample(2), np.ndarray)
    with pytest.raises(DataError, match="impute fills a table"):
        est.impute(pd.DataFrame(x, columns=["a", "b", "c"]))
    given = VAE(**FAST, likelihood="gaussian-predicted").fit(pd.DataFrame(x, columns=list("abc")))
    assert given.schema_ is None and isinstance(given.sample(2), np.ndarray)
    # a complete numeric DataFrame is a table, as a CSV with a header is for vaekit train
    est = VAE(**FAST).fit(pd.DataFrame(x, columns=["a", "b", "c"]))
    assert est.config_.model.likelihood == "table" and est.schema_.names == ["a", "b", "c"]
    assert isinstance(est.sample(2), pd.DataFrame)


def test_vae_imputer_in_a_pipeline():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from vaekit import VAEImputer

    df = frame()
    imp = VAEImputer(VAE(**FAST), n_importance=50)
    assert clone(imp).get_params()["n_importance"] == 50
    pipe = make_pipeline(imp, FunctionTransformer(lambda d: d[["income", "score"]].to_numpy()))
    out = pipe.fit_transform(df)
    assert out.shape == (150, 2) and np.isfinite(out).all()
    seen = df["income"].notna().to_numpy()
    np.testing.assert_array_equal(out[seen, 0], df["income"][seen])
    # the same numbers as the fitted VAE's own impute
    np.testing.assert_array_equal(out[:, 0], pipe[0].vae_.impute(df, n_importance=50)["income"])
    assert list(pipe[0].get_feature_names_out()) == list(df.columns)
