"""Classic latent-variable models through scikit-learn, in the units of ``vaekit evaluate``.

A Gaussian mixture fitted by EM and probabilistic PCA (Tipping & Bishop 1999) give a test
log-likelihood per example in nats, so a user sees what the VAE buys on their data; a table
of typed columns gets independent per-column marginals (:mod:`.independent`), in the units of
a table VAE's log p(x).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from vaekit.data import Dataset
from vaekit.errors import ConfigError, DataError
from vaekit.registry import Registry
from .independent import IndependentColumns

BASELINES: Registry[Callable] = Registry("baseline model")


GMM_COMPONENTS, PPCA_COMPONENTS = 10, 20  # the default sizes, capped by the data (default_size)


@BASELINES.register("independent")
def independent(n_components: int, seed: int, schema=None):
    if schema is None:
        raise ConfigError("independent (per-column marginals) is the baseline of a table: give "
                          "a .csv with a header row or a .parquet file")
    return IndependentColumns(schema)


@BASELINES.register("gmm")
def gmm(n_components: int, seed: int, schema=None):
    from sklearn.mixture import GaussianMixture

    # Full covariances; reg_covar keeps them invertible on pixels that never change.
    return GaussianMixture(n_components, covariance_type="full", reg_covar=1e-3,
                           random_state=seed)


@BASELINES.register("ppca")
def ppca(n_components: int, seed: int, schema=None):
    from sklearn.decomposition import PCA

    return PCA(n_components, random_state=seed)


def default_size(name: str, n: int, d: int) -> tuple[int, str]:
    """The size ``name`` gets on ``n`` training rows of ``d`` features, and why.

    pPCA: :data:`PPCA_COMPONENTS` latent dimensions, at most ``d - 1`` (its noise variance is
    the mean of the ``d - q`` discarded eigenvalues, so q < d) and ``n - 1``. A mixture:
    :data:`GMM_COMPONENTS` components, at most one per ``d + 1`` rows, so that each full
    covariance is estimated from about as many rows as it has dimensions.
    """
    if name == "ppca":
        k = max(1, min(PPCA_COMPONENTS, d - 1, n - 1))
        return k, (f"{k} latent dimensions" + (f" (at most d - 1 = {d - 1} for {d} features)"
                                               if k < PPCA_COMPONENTS else ""))
    k = max(1, min(GMM_COMPONENTS, n // (d + 1)))
    return k, (f"{k} components" + (f" (at most one per {d + 1} of the {n} training rows)"
                                    if k < GMM_COMPONENTS else ""))


def n_parameters(model) -> int:
    if isinstance(model, IndependentColumns):
        return model.n_parameters()
    return int(sum(np.size(v) for k, v in vars(model).items()
                   if k.endswith("_") and isinstance(v, np.ndarray)))


def fit_baseline(name: str, data: Dataset, n_components: int | None = None, seed: int = 0) -> dict:
    """Fit ``name`` on the training split; mean test log p(x) in nats and its standard error."""
    x_train = data.x_train.flatten(1).double().numpy()
    x_test = data.x_test.flatten(1).double().numpy()
    if len(x_test) == 0:
        raise DataError(f"{data.name} has no test split; use --test-fraction above 0")
    schema = getattr(data, "schema", None)
    if schema is not None and name != "independent":
        bad = [c.name for c in schema.columns if c.kind not in ("continuous", "positive")]
        if bad or np.isnan(x_train).any() or np.isnan(x_test).any():
            why = (f"its column{'s' * (len(bad) > 1)} {', '.join(bad[:3])} {'are' if len(bad) > 1 else 'is'} "
                   "not continuous" if bad else "it has missing cells")
            raise ConfigError(f"{name} models vectors of numbers, and this table cannot be one: "
                              f"{why}; use --model independent (per-column marginals)")
    size, why = default_size(name, *x_train.shape)
    if name == "independent":
        size, why = 0, f"one family per column ({len(x_train[0])} columns, as the schema says)"
    elif n_components:
        size, why = n_components, f"{n_components} as given"
    model = BASELINES[name](size, seed, schema)
    k = model.n_components
    try:
        model.fit(x_train)
    except ValueError as e:  # e.g. more components than examples or dimensions
        raise ConfigError(f"{name} with {k} components cannot be fitted here: {e}") from None
    ll = model.score_samples(x_test)
    return {"model": name, "components": k, "size": why, "log_likelihood": float(ll.mean()),
            "log_likelihood_stderr": float(ll.std(ddof=1) / math.sqrt(len(ll))) if len(ll) > 1 else math.nan,
            "n_examples": len(ll), "n_parameters": n_parameters(model)}
