"""Independent per-column marginals of a table: the baseline a table VAE must beat.

Each column of a :class:`vaekit.data.schema.Schema` gets its own family, fitted by maximum
likelihood on the observed training cells: Gaussian (continuous), log-normal (positive; a
density in the column's own units), negative binomial (count; Poisson where the variance is
not above the mean, its maximum-likelihood limit), and a categorical with add-half smoothing
(binary, categorical, ordinal), so a level unseen in training keeps a finite mass. log p(row)
sums over the observed cells, in the units of a table VAE's ``evaluate``: masses for counts
and levels, densities for the rest.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

from vaekit.data.schema import LEVELLED, Schema


def negbin_fit(x: np.ndarray) -> tuple[float, float] | None:
    """Maximum-likelihood negative binomial ``(r, p)`` of counts ``x`` (scipy's
    parametrisation); None when the variance is not above the mean."""
    m, v = x.mean(), x.var()
    if v <= m or m == 0:
        return None

    def nll(log_r: float) -> float:
        r = np.exp(log_r)
        return -stats.nbinom.logpmf(x, r, r / (r + m)).sum()  # p's MLE given r keeps the mean

    r = float(np.exp(optimize.minimize_scalar(nll, bounds=(-10, 10), method="bounded").x))
    return r, r / (r + m)


class IndependentColumns:
    """Independent marginals of ``schema``'s columns, on its encoded rows (NaN where missing).

    Parameters
    ----------
    schema : Schema
        The table's columns; levelled ones are encoded as level indices.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.kinds = [c.kind if c.kind not in LEVELLED else "levelled" for c in schema.columns]
        self.n_levels = [len(c.levels) for c in schema.columns]
        self.n_components = None

    def fit(self, x: np.ndarray) -> "IndependentColumns":
        self.params_ = []
        for j, kind in enumerate(self.kinds):
            c = x[:, j][~np.isnan(x[:, j])]
            if kind == "continuous":
                self.params_.append((c.mean(), c.std()))
            elif kind == "positive":
                self.params_.append((np.log(c).mean(), np.log(c).std()))
            elif kind == "count":
                self.params_.append(negbin_fit(c) or c.mean())
            else:
                counts = np.bincount(c.astype(np.int64), minlength=self.n_levels[j]) + 0.5
                self.params_.append(np.log(counts / counts.sum()))
        return self

    def column_log_prob(self, x: np.ndarray) -> np.ndarray:
        """``(n, d)`` log-probability of each cell (NaN where missing)."""
        out = np.full(x.shape, np.nan)
        for j, (kind, p) in enumerate(zip(self.kinds, self.params_)):
            ok = ~np.isnan(x[:, j])
            v = x[ok, j]
            if kind == "continuous":
                out[ok, j] = stats.norm.logpdf(v, p[0], p[1])
            elif kind == "positive":
                out[ok, j] = stats.lognorm.logpdf(v, s=p[1], scale=np.exp(p[0]))
            elif kind == "count":
                out[ok, j] = (stats.nbinom.logpmf(v, *p) if isinstance(p, tuple)
                              else stats.poisson.logpmf(v, p))
            else:
                out[ok, j] = p[v.astype(np.int64)]
        return out

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """log p(observed cells) per row, ``(n,)``."""
        return np.nansum(self.column_log_prob(x), axis=1)

    def n_parameters(self) -> int:
        return int(sum(np.size(p) for p in self.params_))
