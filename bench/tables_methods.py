"""The methods of ``bench/tables.py``: vaekit through its public entry points (the estimator or
the CLI), a stand-in with the same interface for testing the harness before vaekit's table
support lands, and the baselines (a Gaussian copula, TVAE and CTGAN from ``ctgan``, scikit-learn
imputers, pPCA and a Gaussian mixture).

A synthesizer has ``fit(df)``, ``sample(n)`` -> DataFrame, and ``seconds`` (its training wall
time) and ``note`` (its settings). vaekit and the stand-in also have ``impute(df)`` -> DataFrame
and ``score_samples(df)`` -> log p(observed cells) per row. Imputation baselines work in the
metrics' encoded layout (:func:`tables_metrics.encode`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tables_metrics import encode

from vaekit.data.schema import LEVELLED, Schema
from vaekit.evaluation.independent import IndependentColumns


class MethodFailed(Exception):
    """A method that could not run on a table (one line: why)."""


# ---- Gaussian copula ----------------------------------------------------------------------

class GaussianCopula:
    """Empirical marginals joined by a Gaussian copula (the normal-scores construction of
    Nelsen 2006; SDV's GaussianCopula without its parametric marginals): each column's
    observed values give its CDF; the correlation of the normal scores, pairwise over the
    observed cells, is the copula. Levelled columns are copula'd on their level index."""

    note = "empirical marginals + Gaussian copula"

    def __init__(self, schema: Schema, seed: int = 0):
        self.schema, self.seed = schema, seed

    def fit(self, df: pd.DataFrame) -> GaussianCopula:
        t0 = time.perf_counter()
        x, _ = encode(df, self.schema)
        self.values_ = [np.sort(c[~np.isnan(c)]) for c in x.T]
        z = np.full(x.shape, np.nan)
        for j, c in enumerate(x.T):
            ok = ~np.isnan(c)
            # mid-ranks / (n + 1): ties (levels, counts) share one score, none reaches +-inf
            z[ok, j] = stats.norm.ppf(stats.rankdata(c[ok]) / (ok.sum() + 1))
        corr = pd.DataFrame(z).corr(min_periods=3).to_numpy()  # pairwise-complete Pearson
        corr = np.nan_to_num(corr, nan=0.0)
        np.fill_diagonal(corr, 1.0)
        w, v = np.linalg.eigh(corr)  # pairwise estimates need not be PSD: clip the spectrum
        corr = (v * np.clip(w, 1e-6, None)) @ v.T
        dinv = 1.0 / np.sqrt(np.diag(corr))
        self.corr_ = corr * dinv[:, None] * dinv[None, :]
        self.seconds = time.perf_counter() - t0
        return self

    def sample(self, n: int) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        u = stats.norm.cdf(rng.multivariate_normal(np.zeros(len(self.corr_)), self.corr_, n))
        out = np.empty_like(u)
        for j, (col, vals) in enumerate(zip(self.schema.columns, self.values_)):
            # discrete columns take a seen value (inverted CDF); continuous ones interpolate
            method = "inverted_cdf" if col.kind in LEVELLED + ("count",) else "linear"
            out[:, j] = np.quantile(vals, u[:, j], method=method)
        return self.schema.decode(out)


# ---- TVAE and CTGAN (the ctgan package) ---------------------------------------------------

class CtganModel:
    """TVAE or CTGAN (Xu et al. 2019) from the ``ctgan`` package, on the complete training rows
    (the package does not train on missing cells); levelled columns are its discrete columns."""

    def __init__(self, kind: str, schema: Schema, epochs: int, seed: int = 0):
        self.kind, self.schema, self.epochs, self.seed = kind, schema, epochs, seed
        self.note = f"{kind}, {epochs} epochs, complete rows"

    def fit(self, df: pd.DataFrame) -> CtganModel:
        try:
            import ctgan
        except ImportError:
            raise MethodFailed("package 'ctgan' is not installed (pip install ctgan)") from None
        import torch

        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        df = df[self.schema.names].dropna().reset_index(drop=True)
        discrete = [c.name for c in self.schema.columns if c.kind in LEVELLED]
        # object columns: the package's transformers expect plain str/object for categories
        df = df.astype({c: object for c in discrete})
        cls = ctgan.TVAE if self.kind == "tvae" else ctgan.CTGAN
        self.model_ = cls(epochs=self.epochs)
        self.model_.set_random_state(self.seed)
        self.model_.fit(df, discrete_columns=discrete)
        self.seconds = time.perf_counter() - t0
        return self

    def sample(self, n: int) -> pd.DataFrame:
        return self.model_.sample(n)


# ---- vaekit -------------------------------------------------------------------------------

class VaekitAPI:
    """vaekit through ``vaekit.VAE().fit(df)``, ``.sample(n)``, ``.impute(df)`` and
    ``.score_samples(df)``: no options but the seed (and ``epochs`` for ``--quick``)."""

    def __init__(self, seed: int = 0, epochs: int | None = None):
        self.seed, self.epochs = seed, epochs
        self.note = "vaekit.VAE() defaults" + (f", epochs={epochs}" if epochs else "")

    def fit(self, df: pd.DataFrame) -> VaekitAPI:
        import vaekit

        kw = {"epochs": self.epochs} if self.epochs else {}
        t0 = time.perf_counter()
        self.model_ = vaekit.VAE(random_state=self.seed, **kw).fit(df)
        self.seconds = time.perf_counter() - t0
        self.train_ = df
        epochs = len(getattr(self.model_, "history_", []) or [])
        if epochs:
            self.note += f" ({epochs} epochs)"
        if not isinstance(self.model_.sample(1, random_state=self.seed), pd.DataFrame):
            # an array model's numbers (densities on counts and levels) are not comparable
            raise MethodFailed("VAE().fit(df) made an array model, not a table model "
                               "(sample returns an array): left out of this table")
        return self

    def sample(self, n: int, sampler: str = "prior") -> pd.DataFrame:
        if sampler != "prior" and sampler not in self.model_.samplers_:
            self.model_.fit_sampler(self.train_, sampler=sampler)
        return self._frame(self.model_.sample(n, random_state=self.seed, sampler=sampler), "sample")

    def impute(self, df: pd.DataFrame) -> pd.DataFrame:
        return self._frame(self.model_.impute(df), "impute")

    def score_samples(self, df: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model_.score_samples(df), dtype=np.float64)

    @staticmethod
    def _frame(out, what: str) -> pd.DataFrame:
        if not isinstance(out, pd.DataFrame):
            raise MethodFailed(f"VAE.{what} returned {type(out).__name__}, not a DataFrame")
        return out


class VaekitCLI:
    """vaekit through the commands a user types: ``vaekit train TABLE.csv --out RUN`` (no
    flags; ``--epochs`` only for ``--quick``), ``vaekit sample RUN -n N --out F.csv``,
    ``vaekit impute RUN DATA --out F.csv`` and ``vaekit score RUN DATA --out F.csv``."""

    def __init__(self, seed: int = 0, epochs: int | None = None, workdir: Path | None = None):
        self.seed, self.epochs = seed, epochs
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="vaekit-tables-"))
        self.note = "vaekit train (no flags)" + (f" --epochs {epochs}" if epochs else "")
        self._n = 0

    def _run(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "vaekit", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise MethodFailed(f"vaekit {args[0]} exited {done.returncode}: {last}")

    def _csv(self, df: pd.DataFrame, stem: str) -> Path:
        self._n += 1
        path = self.dir / f"{stem}_{self._n}.csv"
        df.to_csv(path, index=False)
        return path

    def fit(self, df: pd.DataFrame) -> VaekitCLI:
        self.run = self.dir / "run"
        train = self._csv(df, "train")
        extra = ["--epochs", str(self.epochs)] if self.epochs else []
        t0 = time.perf_counter()
        self._run("train", str(train), "--out", str(self.run), "--overwrite", "--seed",
                  str(self.seed), *extra)
        self.seconds = time.perf_counter() - t0
        return self

    def sample(self, n: int, sampler: str = "prior") -> pd.DataFrame:
        out = self.dir / "sample.csv"
        self._run("sample", str(self.run), "-n", str(n), "--out", str(out), "--seed", str(self.seed),
                  "--sampler", sampler)
        return pd.read_csv(out)

    def impute(self, df: pd.DataFrame) -> pd.DataFrame:
        out = self.dir / "imputed.csv"
        self._run("impute", str(self.run), str(self._csv(df, "masked")), "--out", str(out))
        return pd.read_csv(out)

    def score_samples(self, df: pd.DataFrame) -> np.ndarray:
        out = self.dir / "scores.csv"
        self._run("score", str(self.run), str(self._csv(df, "score")), "--out", str(out))
        return pd.read_csv(out)["log_likelihood"].to_numpy(dtype=np.float64)


class StandIn:
    """NOT vaekit: a stand-in with vaekit's table interface, so that the harness runs before
    vaekit's table support lands. Samples from a Gaussian copula, imputes with IterativeImputer,
    scores with independent marginals. Its column is labelled ``standin``."""

    note = "stand-in (copula / IterativeImputer / independent marginals), NOT vaekit"

    def __init__(self, schema: Schema, seed: int = 0):
        self.schema, self.seed = schema, seed

    def fit(self, df: pd.DataFrame) -> StandIn:
        t0 = time.perf_counter()
        self.copula_ = GaussianCopula(self.schema, self.seed).fit(df)
        x, _ = encode(df, self.schema)
        self.imputer_ = Imputer("iterative", self.schema, self.seed).fit(x)
        self.independent_ = independent(self.schema).fit(x)
        self.seconds = time.perf_counter() - t0
        return self

    def sample(self, n: int) -> pd.DataFrame:
        return self.copula_.sample(n)

    def impute(self, df: pd.DataFrame) -> pd.DataFrame:
        return self.schema.decode(self.imputer_.transform(encode(df, self.schema)[0]))

    def score_samples(self, df: pd.DataFrame) -> np.ndarray:
        return self.independent_.score_samples(encode(df, self.schema)[0])


def independent(schema: Schema) -> IndependentColumns:
    """The independent per-column baseline of ``schema``'s columns (vaekit's own)."""
    return IndependentColumns(schema)


# ---- imputation baselines -----------------------------------------------------------------

class Imputer:
    """mean/mode, or scikit-learn's KNNImputer (5 neighbours) or IterativeImputer (Bayesian
    ridge, 10 rounds), in the encoded layout: numeric columns standardized by the training
    mean and sd, levelled columns one-hot (a missing level: the whole block missing, filled by
    the block's argmax afterwards). IterativeImputer is refitted on the training rows stacked
    on the rows to fill: fitted on complete training rows alone, each one-hot column is
    predicted from its sibling in the block (exactly 1 - it), which starts at its mean, and
    every missing level came out as the mode (measured: accuracy equal to mean/mode's)."""

    def __init__(self, kind: str, schema: Schema, seed: int = 0):
        self.kind, self.schema, self.seed = kind, schema, seed
        self.levelled = [c.kind in LEVELLED for c in schema.columns]
        self.n_levels = [len(c.levels) for c in schema.columns]

    def _features(self, x: np.ndarray) -> np.ndarray:
        parts = []
        for j, lev in enumerate(self.levelled):
            c = x[:, j]
            if lev:
                block = np.eye(self.n_levels[j])[np.nan_to_num(c).astype(np.int64)]
                block[np.isnan(c)] = np.nan
                parts.append(block)
            else:
                parts.append(((c - self.mean_[j]) / self.sd_[j])[:, None])
        return np.hstack(parts)

    def fit(self, x: np.ndarray) -> Imputer:
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer, KNNImputer

        self.mean_ = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0)
        self.sd_ = np.where(sd > 0, sd, 1.0)
        self.mode_ = np.array([np.bincount(c[~np.isnan(c)].astype(np.int64)).argmax() if lev
                               else np.nan for c, lev in zip(x.T, self.levelled)])
        if self.kind == "knn":
            self.model_ = KNNImputer(n_neighbors=5).fit(self._features(x))
        elif self.kind == "iterative":
            self.train_ = self._features(x)
            self.model_ = IterativeImputer(max_iter=10, random_state=self.seed)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        miss = np.isnan(x)
        if self.kind == "mean":
            fill = np.where(self.levelled, self.mode_, self.mean_)
            return np.where(miss, fill[None, :], x)
        f = self._features(x)
        if self.kind == "iterative":  # (n_train + n, width): the rows to fill come last
            f = self.model_.fit_transform(np.vstack([self.train_, f]))[len(self.train_):]
        else:
            f = self.model_.transform(f)
        out = x.copy()
        k = 0
        for j, lev in enumerate(self.levelled):
            width = self.n_levels[j] if lev else 1
            block = f[:, k:k + width]
            got = block.argmax(1).astype(np.float64) if lev else block[:, 0] * self.sd_[j] + self.mean_[j]
            out[:, j] = np.where(miss[:, j], got, x[:, j])
            k += width
        return out


# ---- pPCA and a Gaussian mixture (all-continuous columns) ---------------------------------

def continuous_baselines(train: np.ndarray, test: np.ndarray, seed: int = 0) -> dict[str, tuple]:
    """Held-out log p(x) per row of pPCA and a full-covariance Gaussian mixture on the columns
    of ``train`` / ``test`` (complete rows, raw units: standardized inside, with the
    log-Jacobian -sum log sd). Sizes are chosen on a 20% validation part of ``train``:
    pPCA components from {1, d/4, d/2, d-1}, mixture components from {1, 2, 4, 8}.
    Returns name -> (per-row log-likelihoods, chosen size)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    mean, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    a, b = (train - mean) / sd, (test - mean) / sd
    jac = -np.log(sd).sum()
    rng = np.random.default_rng(seed)
    val = rng.random(len(a)) < 0.2
    d = a.shape[1]
    makers = {
        "ppca": (lambda k: PCA(k, random_state=seed), sorted({max(1, s) for s in (1, d // 4, d // 2, d - 1)})),
        "gmm": (lambda k: GaussianMixture(k, covariance_type="full", reg_covar=1e-4,
                                          random_state=seed), [1, 2, 4, 8]),
    }
    out = {}
    for name, (make, sizes) in makers.items():
        sizes = [k for k in sizes if k < (~val).sum() // 2]
        best = max(sizes, key=lambda k: make(k).fit(a[~val]).score(a[val]))
        out[name] = (make(best).fit(a).score_samples(b) + jac, best)
    return out
