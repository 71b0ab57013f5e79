"""Real tables end to end: `vaekit train` with no flags on a CSV with a header (and Parquet),
then evaluate, score, sample and impute, against oracles where there is a number to check.

The table: a string column, counts, a 0/1 column, positive skewed prices, an ID column and
empty cells, 120 rows; every model is tiny and trains 1-3 epochs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy import stats
from scipy.special import log_expit, log_softmax, logsumexp

from vaekit.cli.main import main
from vaekit.data.schema import Schema
from vaekit.evaluation.measures import log_likelihood
from vaekit.parts.tables import LOG_R_MAX, LOG_R_MIN
from vaekit.pipeline import data_rows, load_run

SMALL = ["--hidden", "16", "--latent-dim", "1", "--epochs", "2", "--no-report"]


def cli(*args) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def one_error(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def people(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Columns that depend on one latent number, with empty cells in two of them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    df = pd.DataFrame({
        "id": [f"p{i:04d}" for i in range(n)],
        "city": np.where(z + 0.5 * rng.normal(size=n) > 0, "lyon", rng.choice(["paris", "nice"], n)),
        "visits": rng.poisson(np.exp(1.5 + 0.7 * z)),  # a count over more than 10 levels
        "member": (z + rng.normal(size=n) > 0).astype(int),
        "price": np.round(np.exp(3 + 0.8 * z + 0.3 * rng.normal(size=n)), 2),
        "height": np.round(170 + 8 * z + 4 * rng.normal(size=n), 1),
    })
    df.loc[rng.choice(n, 12, replace=False), "price"] = np.nan
    df.loc[rng.choice(n, 10, replace=False), "city"] = None
    return df


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("people")
    people().to_csv(d / "people.csv", index=False)
    return d / "people.csv"


@pytest.fixture(scope="module")
def run(table, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli("train", table, "--out", out, *SMALL) == 0
    return out


# ---- 1. train with no flags -----------------------------------------------------------------

def test_train_states_the_schema_and_stores_it(table, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", table, "--out", out, "--hidden", "16", "--epochs", "1", "--no-report") == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("columns: 5 modelled, 1 left out"))
    assert lines[start + 1].split() == ["column", "type", "reason"]
    kinds = {line.split()[0]: line.split()[1] for line in lines[start + 2: start + 8]}
    assert kinds == {"city": "categorical", "visits": "count", "member": "binary",
                     "price": "positive", "height": "continuous", "id": "(left"}
    assert "likelihood: table" in err and "preprocess: none" in err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["likelihood"] == "table" and cfg["model"]["preprocess"] == "none"
    assert cfg["data_shape"] == [5]
    schema = Schema.from_json(cfg["model"]["schema"])
    assert schema.names == ["city", "visits", "member", "price", "height"]
    assert schema["city"].levels == ("lyon", "nice", "paris")
    # the run's metrics are finite although 22 cells are missing
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(math.isfinite(row[k]) for k in ("train_loss", "test_loss", "test_rec", "test_kl"))


def test_parquet_and_column_overrides(table, tmp_path, capsys):
    pq = tmp_path / "people.parquet"
    pd.read_csv(table).to_parquet(pq)
    out = tmp_path / "run"
    assert cli("train", pq, "--out", out, "--column", "visits=continuous", "--column",
               "member=drop", *SMALL) == 0
    schema = Schema.from_json(json.loads((out / "config.json").read_text())["model"]["schema"])
    assert schema.names == ["city", "visits", "price", "height"]
    assert schema["visits"].kind == "continuous" and schema["visits"].reason == "declared continuous"
    assert ("member", "declared drop") in schema.dropped


def test_numeric_paths_are_kept(tmp_path, capsys):
    x = np.random.default_rng(1).normal(size=(60, 3)) * 5 + 10
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")  # no header: an array, as before
    assert cli("train", tmp_path / "plain.csv", "--out", tmp_path / "a", *SMALL) == 0
    assert "likelihood: gaussian-predicted" in capsys.readouterr().err
    np.savetxt(tmp_path / "named.csv", x, delimiter=",", header="a,b,c", comments="")
    assert cli("train", tmp_path / "named.csv", "--out", tmp_path / "b", "--likelihood",
               "gaussian-predicted", *SMALL) == 0  # an explicit likelihood: the numbers as they are
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["model"]["schema"] == "" and cfg["model"]["preprocess"] == "standardize"


@pytest.mark.parametrize("argv, needles", [
    (["--likelihood", "table", "--epochs", "1"], ["x.npy: not a table", ".parquet"]),
    (["--column", "visits=count", "--likelihood", "gaussian"], ["--column sets the type"]),
], ids=["table-on-npy", "column-on-numbers"])
def test_bad_table_options(tmp_path, capsys, argv, needles):
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32))
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "run", *argv) == 2
    one_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "run").exists()


# ---- 2. evaluate and score: log p(observed cells) -----------------------------------------------

def column_log_probs(raw: np.ndarray, x: np.ndarray, schema: Schema, floor: float) -> np.ndarray:
    """scipy log-probabilities of the observed cells summed per row, from the decoder outputs
    ``raw`` (nodes, rows, outputs) and the encoded rows ``x`` (rows, width); 0 where missing.
    The transforms are those documented in vaekit.parts.tables."""
    total, i = np.zeros(raw.shape[:2]), 0
    for j, c in enumerate(schema.columns):
        v = x[:, j]
        seen = ~np.isnan(v)
        safe = np.where(seen, v, 1.0)
        if c.kind in ("continuous", "positive"):
            mu = c.loc + c.scale * raw[..., i]
            sd = c.scale * np.sqrt(np.exp(raw[..., i + 1]) + floor)
            lp = (stats.norm(mu, sd).logpdf(safe) if c.kind == "continuous"
                  else stats.lognorm(s=sd, scale=np.exp(mu)).logpdf(safe))
            i += 2
        elif c.kind == "count":
            m = np.exp(raw[..., i]) * (c.loc + 1.0)
            r = np.exp(np.clip(raw[..., i + 1], LOG_R_MIN, LOG_R_MAX))
            lp = stats.nbinom(n=r, p=r / (r + m)).logpmf(safe)
            i += 2
        elif c.kind == "binary":
            lp = safe * log_expit(raw[..., i]) + (1 - safe) * log_expit(-raw[..., i])
            i += 1
        else:
            k = len(c.levels)
            logp = log_softmax(raw[..., i: i + k], axis=-1)
            lp = np.take_along_axis(logp, np.broadcast_to(safe.astype(int)[None, :, None],
                                                          (*logp.shape[:2], 1)), -1)[..., 0]
            i += k
        total += np.where(seen, lp, 0.0)
    return total


def test_importance_sampled_log_likelihood_matches_quadrature_with_missing_cells(run):
    """A 1-D latent: log p(x_obs) = log integral p(x_obs|z) N(z; 0, 1) dz by Gauss-Hermite
    (80 nodes) with scipy's per-column log-probabilities, against vaekit's estimate (K = 2000)."""
    model, cfg = load_run(run, "cpu")
    rows = data_rows(model, cfg, None, "test")
    x = rows.x
    assert torch.isnan(x).any(), "the test rows must hold missing cells"
    schema = Schema.from_json(cfg.model.schema)
    nodes, weights = hermegauss(80)
    with torch.no_grad():
        raw = model.decoder_params(torch.tensor(nodes, dtype=torch.float32).view(-1, 1, 1), None)
    raw = raw.double().numpy().reshape(len(nodes), 1, -1).repeat(len(x), 1)
    lp = column_log_probs(raw, x.double().numpy(), schema, cfg.model.min_obs_var)
    exact = logsumexp(lp + np.log(weights / math.sqrt(2 * math.pi))[:, None], axis=0)
    est = log_likelihood(model, x, k=2000).double().numpy()
    assert np.abs(est - exact).max() < 0.05, (est - exact)
    assert abs((est - exact).mean()) < 0.01


@pytest.mark.parametrize("refine", [0, 2])
def test_imputed_numbers_match_the_conditional_mean_by_quadrature(run, refine):
    """E[x_m | x_o] of the model = sum_n a_n E[x_m | z_n] with a_n proportional to the
    Gauss-Hermite weight times p(x_o | z_n) (scipy's per-column log-probabilities): the imputed
    numeric cells (K = 2000, with and without the refined proposal) agree to 0.05 sd."""
    from vaekit.evaluation.imputation import impute

    model, cfg = load_run(run, "cpu")
    x = data_rows(model, cfg, None, "test").x
    schema = Schema.from_json(cfg.model.schema)
    numeric = [j for j, c in enumerate(schema.columns) if c.kind in ("continuous", "positive", "count")]
    hidden = x.clone()
    for t, j in enumerate(numeric):  # hide half of each numeric column, so the test is not vacuous
        hidden[t % 2::2, j] = float("nan")
    nodes, weights = hermegauss(80)
    zn = torch.tensor(nodes, dtype=torch.float32).view(-1, 1, 1)
    with torch.no_grad():
        raw = model.decoder_params(zn, None)
        mean = model.decode(zn).mean.double().numpy().reshape(len(nodes), -1)  # (nodes, width)
    raw = raw.double().numpy().reshape(len(nodes), 1, -1).repeat(len(hidden), 1)
    lp = column_log_probs(raw, hidden.double().numpy(), schema, cfg.model.min_obs_var)
    a = np.exp(lp + np.log(weights)[:, None] - logsumexp(lp + np.log(weights)[:, None], 0))
    exact = np.einsum("nb,nw->bw", a, mean)
    got = impute(model, hidden, k=2000, refine=refine).filled.double().numpy()
    miss = torch.isnan(hidden).numpy()
    sd = np.nanstd(x.double().numpy(), 0)
    for j in numeric:
        m = miss[:, j]
        assert m.sum() >= 5, m.sum()
        err = np.abs(got[m, j] - exact[m, j]) / sd[j]
        assert err.max() < 0.05, (schema.columns[j].name, err.max())


def test_evaluate_and_score_on_a_table(run, table, tmp_path, capsys):
    assert cli("evaluate", run, "-k", "20", "--json") == 0
    ev = json.loads(capsys.readouterr().out)
    assert math.isfinite(ev["log_likelihood"]) and math.isfinite(ev["reconstruction_mse"])
    assert cli("score", run, table, "--out", tmp_path / "s.csv", "-k", "20") == 0
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) == 120 and np.isfinite(scores["log_likelihood"]).all()


def _bad_city(df):
    df.loc[4, "city"] = "rome"


def _bad_count(df):
    df["visits"] = df["visits"].astype(object)
    df.loc[7, "visits"] = "many"


def _no_column(df):
    del df["visits"]


@pytest.mark.parametrize("spoil, needles", [
    (_bad_city, ["column 'city', row 5", "unknown category 'rome'"]),
    (_bad_count, ["column 'visits', row 8", "'many' is not a number"]),
    (_no_column, ["column 'visits' is missing"]),
], ids=["unknown-category", "wrong-type", "missing-column"])
def test_new_data_is_checked_against_the_schema(run, table, tmp_path, capsys, spoil, needles):
    df = pd.read_csv(table, keep_default_na=False, na_values=[""])
    spoil(df)
    df.to_csv(tmp_path / "new.csv", index=False)
    assert cli("score", run, tmp_path / "new.csv", "--out", tmp_path / "s.csv", "-k", "2") == 2
    one_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "s.csv").exists()


# ---- 3. samples and reconstructions as tables -------------------------------------------------

def test_sample_writes_the_tables_columns_and_types(run, table, tmp_path, capsys):
    assert cli("sample", run, "-n", 500, "--out", tmp_path / "s.csv") == 0
    assert "draws from p(x|z)" in capsys.readouterr().out
    s = pd.read_csv(tmp_path / "s.csv", keep_default_na=False, na_values=[""])
    assert list(s.columns) == ["city", "visits", "member", "price", "height"]  # no id: left out
    assert len(s) == 500 and not s.isna().any().any()
    assert set(s["city"]) <= {"lyon", "nice", "paris"} and len(set(s["city"])) == 3
    assert s["visits"].dtype == np.int64 and (s["visits"] >= 0).all()
    assert set(s["member"]) == {0, 1} and (s["price"] > 0).all()
    assert cli("sample", run, "-n", 500, "--out", tmp_path / "m.parquet", "--mean") == 0
    m = pd.read_parquet(tmp_path / "m.parquet")
    assert list(m.columns) == list(s.columns) and m["visits"].dtype == np.int64
    # draws carry each column's noise; decoder means do not (a 1-D code, barely trained)
    assert s["height"].std() > 2 * m["height"].std()
    again = tmp_path / "again.csv"
    assert cli("sample", run, "-n", 500, "--out", again) == 0
    assert again.read_bytes() == (tmp_path / "s.csv").read_bytes()  # seeded


def test_reconstruct_writes_a_table(run, table, tmp_path):
    assert cli("reconstruct", run, table, "--split", "all", "-n", 20, "--out", tmp_path / "r.csv") == 0
    r = pd.read_csv(tmp_path / "r.csv", keep_default_na=False, na_values=[""])
    assert list(r.columns) == ["city", "visits", "member", "price", "height"] and len(r) == 20
    assert not r.isna().any().any()


def test_sample_of_a_model_of_arrays_refuses_csv(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32))
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "run", *SMALL) == 0
    assert cli("sample", tmp_path / "run", "--out", tmp_path / "s.csv") == 2
    one_error(capsys.readouterr().err, "not a table", ".npy")


# ---- 4. imputation: a known answer -------------------------------------------------------------

@pytest.fixture(scope="module")
def correlated(tmp_path_factory):
    """Two columns that are one latent number up to 10% noise (in different units) and a
    3-level category cut from it; 20% of the cells missing completely at random."""
    d = tmp_path_factory.mktemp("corr")
    rng = np.random.default_rng(5)
    n = 400
    z = rng.normal(size=n)
    full = pd.DataFrame({"a": 2 + 3 * (z + 0.1 * rng.normal(size=n)),
                         "b": -1 + 0.5 * (z + 0.1 * rng.normal(size=n)),
                         "c": np.where(z < -0.5, "low", np.where(z < 0.5, "mid", "high"))})
    holes = full.copy()
    miss = rng.random((n, 3)) < 0.2
    miss[miss.all(1), 0] = False  # every row keeps a cell
    for j, col in enumerate(holes.columns):
        holes.loc[miss[:, j], col] = np.nan
    holes.to_csv(d / "holes.csv", index=False)
    run = d / "run"
    assert cli("train", d / "holes.csv", "--out", run, "--epochs", 60, "--hidden", 32,
               "--latent-dim", 2, "--lr", 0.01, "--no-report") == 0
    return d, full, holes, run


def test_imputation_beats_mean_imputation_by_far(correlated, tmp_path, capsys):
    d, full, holes, run = correlated
    assert cli("impute", run, d / "holes.csv", "--out", tmp_path / "i.csv", "-k", 200) == 0
    assert f"filled {int(holes.isna().sum().sum())} missing cells of 400 rows" in capsys.readouterr().out
    filled = pd.read_csv(tmp_path / "i.csv")
    assert not filled.isna().any().any()
    for col in "ab":
        m = holes[col].isna()
        rmse = np.sqrt(((filled[col][m] - full[col][m]) ** 2).mean())
        rmse_mean = np.sqrt(((holes[col].mean() - full[col][m]) ** 2).mean())
        assert rmse < 0.4 * rmse_mean, (col, rmse, rmse_mean)  # measured 0.23 of it
    m = holes["c"].isna()
    accuracy = (filled["c"][m] == full["c"][m]).mean()
    assert accuracy > (holes["c"].mode()[0] == full["c"][m]).mean() + 0.3  # measured 0.94 vs 0.39
    # observed cells are the input's, to the character
    before = (d / "holes.csv").read_text().splitlines()
    after = (tmp_path / "i.csv").read_text().splitlines()
    assert before[0] == after[0]
    for line_in, line_out in zip(before[1:], after[1:]):
        for cell_in, cell_out in zip(line_in.split(","), line_out.split(",")):
            assert cell_in in ("", cell_out)


def test_multiple_imputations(correlated, tmp_path):
    d, full, holes, run = correlated
    assert cli("impute", run, d / "holes.csv", "--out", tmp_path / "m.csv", "-k", 100,
               "--draws", 3) == 0
    m = pd.read_csv(tmp_path / "m.csv")
    assert list(m.columns) == ["imputation", "a", "b", "c"] and len(m) == 1200
    assert list(m["imputation"].unique()) == [1, 2, 3]
    draws = [m[m["imputation"] == i].drop(columns="imputation").reset_index(drop=True)
             for i in (1, 2, 3)]
    miss = holes["a"].isna()
    for x in draws:
        pd.testing.assert_series_equal(x["a"][~miss], holes["a"][~miss])
        # each draw is near the truth, within the columns' 10% noise and the code's spread
        assert np.sqrt(((x["a"][miss] - full["a"][miss]) ** 2).mean()) < 0.6 * full["a"].std()
    assert not np.allclose(draws[0]["a"][miss], draws[1]["a"][miss])  # draws, not one value


def test_impute_needs_a_table_run(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32))
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "run", *SMALL) == 0
    pd.DataFrame({"a": [1.0, None]}).to_csv(tmp_path / "t.csv", index=False)
    assert cli("impute", tmp_path / "run", tmp_path / "t.csv", "--out", tmp_path / "o.csv") == 2
    one_error(capsys.readouterr().err, "not trained on a table")


def test_whole_numbers_read_as_floats_come_back_whole():
    """body mass in grams with a missing cell: pandas reads floats, the schema keeps integers."""
    from vaekit.data.inference import infer_schema

    df = pd.DataFrame({"mass": [3750.0, np.nan, 4250.0, 3800.0, 5000.0, 2900.0, 3300.0]})
    col = infer_schema(df)["mass"]
    assert col.kind == "continuous" and col.dtype == "Int64"
    out = infer_schema(df).decode(np.array([[3777.6], [np.nan]]))
    assert out["mass"].dtype == "Int64" and out["mass"][0] == 3778 and out["mass"].isna()[1]


def test_a_typo_in_a_numeric_column_is_named_not_dropped(tmp_path, capsys):
    df = pd.DataFrame({"a": np.arange(30.0) ** 1.5, "b": [str(v) for v in np.linspace(0, 1, 30)]})
    df.index = [5] * 30  # a repeated index: rows are counted by position
    df.loc[:, "b"] = df["b"].where(np.arange(30) != 12, "0.4o")
    df.to_csv(tmp_path / "t.csv", index=False)
    assert cli("train", tmp_path / "t.csv", "--out", tmp_path / "run", *SMALL) == 2
    one_error(capsys.readouterr().err, "column 'b', row 13: '0.4o' is not a number, though 29 of 30")


def test_resume_a_table_run_and_parquet_with_a_numeric_likelihood(table, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", table, "--out", out, "--hidden", 16, "--epochs", 1, "--no-report") == 0
    assert cli("train", table, "--out", out, "--epochs", 2, "--resume", "--no-report") == 0
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    pd.read_csv(table).to_parquet(tmp_path / "t.parquet")
    capsys.readouterr()
    assert cli("train", tmp_path / "t.parquet", "--out", tmp_path / "b", "--likelihood",
               "gaussian") == 2
    one_error(capsys.readouterr().err, "a Parquet file is a table", "--likelihood table")


def test_cell_dropout_hides_observed_cells_from_the_encoder_in_training_only(table, tmp_path, capsys):
    from vaekit.data.inference import infer_schema
    from vaekit.parts.tables import TableLikelihood

    schema = infer_schema(people(4000, seed=3))
    x = torch.from_numpy(schema.encode(people(4000, seed=3)).astype(np.float32))
    lik = TableLikelihood(schema.columns, cell_dropout=0.3)
    missing = torch.isnan(x)
    lik.eval()
    torch.testing.assert_close(lik.features(x), TableLikelihood(schema.columns).features(x))
    lik.train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hidden = lik.features(x)[:, -schema.width:].bool()  # the missing-cell indicators
    assert hidden[missing].all()
    share = hidden[~missing].float().mean().item()
    n = int((~missing).sum())
    assert abs(share - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n), share
    # from the command line; refused for a model of arrays
    assert cli("train", table, "--out", tmp_path / "run", "--cell-dropout", 0.3, *SMALL) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["cell_dropout"] == 0.3
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32))
    assert cli("train", tmp_path / "x.npy", "--out", tmp_path / "b", "--cell-dropout", 0.3,
               *SMALL) == 2
    one_error(capsys.readouterr().err, "--cell-dropout applies to --likelihood table")
    assert not (tmp_path / "b").exists()


def test_the_report_of_a_table_shows_its_columns_by_name_and_errors_in_their_units(run, table, tmp_path):
    """The report's Columns section: every column by name and type, the reconstruction error
    in each column's own units (RMSE of numbers, share of levels right) as computed here from
    the model's reconstructions of the test rows, and the two association matrices; no
    'feature 0' and no summed raw-unit error."""
    import html
    import re

    from vaekit.pipeline.using import load_run, run_data
    from vaekit.report.page import build_report

    page = build_report(run)
    text = html.unescape(re.sub(r"<[^>]+>", "|", page))
    assert 'id="columns"' in page and "feature 0" not in text
    assert "association matrices" in page and "SDMetrics" in text
    model, cfg = load_run(run)
    schema = model.likelihood.schema
    x = run_data(cfg, log=lambda s: None).x_test
    rec = model.reconstruct(x).detach().numpy().astype(np.float64)
    real = x.numpy().astype(np.float64)
    for j, col in enumerate(schema.columns):
        seen = ~np.isnan(real[:, j])
        if col.kind in ("binary", "categorical", "ordinal"):
            want = f"{100 * np.mean(rec[seen, j] == real[seen, j]):.1f}% right"
        else:
            want = f"RMSE {np.sqrt(np.mean((rec[seen, j] - real[seen, j]) ** 2)):.4g}"
        assert f"|{col.name}||{col.kind}|" in text, col.name
        assert want.replace("-", "\u2212") in text, (col.name, want)
    assert "schema (set by vaekit)" in text and f"{schema.width} columns (the Columns section" in text
