"""The tables of ``bench/tables.py``: real tables read offline from files inside installed
packages (CSV only; nothing is unpickled, nothing is downloaded), and a generated mixed-type
table whose exact log-likelihood is known.

Each loader returns a :class:`Table`; a loader whose package is not installed raises
:class:`Missing`, which the bench turns into one line and a skipped table.
"""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats


class Missing(Exception):
    """A table whose package is not installed (the message says which to install)."""


@dataclass
class Table:
    """One benchmark table.

    Attributes
    ----------
    name : str
        Short name used in the printed tables.
    df : pandas.DataFrame
        The table as a user would hand it over (missing cells as NaN).
    target : str
        The column predicted for machine-learning efficacy.
    source : str
        Where it comes from (package and function or file).
    exact : callable or None
        For generated data: the exact log p(x) per row of a complete DataFrame, ``(n,)``.
    sampler : callable or None
        For generated data: ``sampler(n, rng)`` draws rows from the true model.
    """

    name: str
    df: pd.DataFrame
    target: str
    source: str
    exact: Callable[[pd.DataFrame], np.ndarray] | None = None
    sampler: Callable[[int, np.random.Generator], pd.DataFrame] | None = None


def _module(name: str, pip: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise Missing(f"package {pip!r} is not installed (pip install {pip})") from None


def _package_csv(package: str, file: str, pip: str, **kw) -> pd.DataFrame:
    """A CSV shipped inside ``package`` (read as text by pandas: no pickle, no network)."""
    _module(package, pip)
    with importlib.resources.as_file(importlib.resources.files(package) / file) as path:
        return pd.read_csv(path, **kw)


def _sklearn(loader: str, target_name: str, **kw) -> pd.DataFrame:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)(as_frame=True, **kw)
    df = bunch.frame.rename(columns={"target": target_name})
    return df


def breast_cancer() -> Table:
    df = _sklearn("load_breast_cancer", "malignant")
    df["malignant"] = np.where(df["malignant"] == 0, "malignant", "benign")  # sklearn: 0 = malignant
    return Table("breast_cancer", df, "malignant", "sklearn.datasets.load_breast_cancer")


def wine() -> Table:
    df = _sklearn("load_wine", "cultivar")
    df["cultivar"] = "class_" + df["cultivar"].astype(str)
    return Table("wine", df, "cultivar", "sklearn.datasets.load_wine")


def diabetes() -> Table:
    # raw units (scaled=False): age in years, sex 1/2, bmi, blood pressure, six serum values
    df = _sklearn("load_diabetes", "progression", scaled=False)
    return Table("diabetes", df, "progression", "sklearn.datasets.load_diabetes(scaled=False)")


def penguins() -> Table:
    df = _package_csv("palmerpenguins", "data/penguins.csv", "palmerpenguins")
    return Table("penguins", df, "species", "palmerpenguins data/penguins.csv")


def cars() -> Table:
    _module("vega_datasets", "vega_datasets")
    from vega_datasets import local_data  # reads the JSON file shipped in the package

    df = local_data.cars().drop(columns=["Year"])  # a date: refused by the schema by design
    return Table("cars", df, "Origin", "vega_datasets.local_data.cars (Year dropped)")


def anes96() -> Table:
    # the file as shipped (statsmodels' loader adds logpopul, a copy of popul: not used here)
    df = _package_csv("statsmodels.datasets.anes96", "anes96.csv", "statsmodels", sep=r"\s+")
    df = df.rename(columns=lambda c: c.strip("'"))  # the header's names are quoted
    return Table("anes96", df, "vote", "statsmodels.datasets.anes96 anes96.csv")


def fair() -> Table:
    df = _package_csv("statsmodels.datasets.fair", "fair.csv", "statsmodels")
    # target: years married (affairs is not predictable from the rest: R^2 < 0 on real rows)
    return Table("fair", df, "yrs_married", "statsmodels.datasets.fair fair.csv")


def randhie() -> Table:
    df = _package_csv("statsmodels.datasets.randhie", "randhie.csv", "statsmodels")
    # target: self-rated good health (visit counts mdvis are not predictable: R^2 about 0)
    return Table("randhie", df, "hlthg", "statsmodels.datasets.randhie randhie.csv")


# ---- generated data with a known answer -------------------------------------------------

LEVELS = ("red", "green", "blue")
_W = np.array([[1.2, -0.6], [-0.4, 1.0], [-0.8, -0.4]])  # categorical logits = W z, (3, 2)
_GH = 40  # Gauss-Hermite nodes per latent axis: the exact log p(x) is a 2-D quadrature


def _columns_given_z(z: np.ndarray) -> dict:
    """Parameters of each column given latent codes ``z`` ``(m, 2)``: a linear-Gaussian pair,
    a log-normal, a Poisson count, a Bernoulli and a 3-level categorical (softmax of W z)."""
    return {"x1": (1.0 + 1.5 * z[:, 0], 0.5), "x2": (-2.0 + 0.8 * z[:, 0] - 1.0 * z[:, 1], 0.7),
            "price": (3.0 + 0.6 * z[:, 1], 0.4),  # log-normal: mean and sd of log price
            "visits": np.exp(0.5 + 0.7 * z[:, 0]),  # Poisson rate
            "member": special.expit(2.0 * z[:, 1]),  # P(member = "yes")
            "colour": special.softmax(z @ _W.T, axis=1)}


def _sample_generated(n: int, rng: np.random.Generator) -> pd.DataFrame:
    z = rng.standard_normal((n, 2))
    p = _columns_given_z(z)
    return pd.DataFrame({
        "x1": rng.normal(*p["x1"]), "x2": rng.normal(*p["x2"]),
        "price": np.exp(rng.normal(*p["price"])),
        "visits": rng.poisson(p["visits"]).astype(np.int64),
        "member": np.where(rng.random(n) < p["member"], "yes", "no"),
        "colour": np.array(LEVELS)[[rng.choice(3, p=q) for q in p["colour"]]]})


def exact_log_likelihood(df: pd.DataFrame) -> np.ndarray:
    """log p(x) per row of the generated model, ``(n,)``: the latent integral by tensor
    Gauss-Hermite quadrature (``_GH``^2 nodes), densities in the columns' own units."""
    t, w = np.polynomial.hermite_e.hermegauss(_GH)  # nodes/weights for the weight exp(-t^2/2)
    z = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)  # (m, 2)
    log_w = (np.log(w)[:, None] + np.log(w)[None, :]).ravel() - np.log(2 * np.pi)  # N(0, I)
    p = _columns_given_z(z)
    col = lambda c: df[c].to_numpy()[:, None]
    lp = (stats.norm.logpdf(col("x1"), p["x1"][0], p["x1"][1])
          + stats.norm.logpdf(col("x2"), p["x2"][0], p["x2"][1])
          + stats.lognorm.logpdf(col("price"), s=p["price"][1], scale=np.exp(p["price"][0]))
          + stats.poisson.logpmf(col("visits"), p["visits"])
          + np.where(col("member") == "yes", np.log(p["member"]), np.log1p(-p["member"])))
    codes = pd.Categorical(df["colour"], categories=LEVELS).codes
    lp = lp + np.log(p["colour"][:, codes].T)  # (n, m)
    return special.logsumexp(lp + log_w, axis=1)


def generated(n: int = 2000, seed: int = 0) -> Table:
    df = _sample_generated(n, np.random.default_rng(seed))
    return Table("generated", df, "colour", f"latent Gaussian model, seed {seed}",
                 exact=exact_log_likelihood, sampler=_sample_generated)


REAL = {"breast_cancer": breast_cancer, "wine": wine, "diabetes": diabetes, "penguins": penguins,
        "cars": cars, "anes96": anes96, "fair": fair, "randhie": randhie}
