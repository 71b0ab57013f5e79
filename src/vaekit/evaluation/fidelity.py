"""How much synthetic rows of a table look like the real ones, column by column and pair by pair.

Both tables are in one numeric layout, ``(n, d)`` float64: numeric columns as values, levelled
columns (binary, categorical, ordinal) as level indices, NaN where a cell is missing (the layout
of :meth:`vaekit.data.schema.Schema.encode`); ``numeric[j]`` says which columns are numbers.

Quality follows the definitions of SDMetrics' quality report (DataCebo's documentation):

- column shape = 1 - Kolmogorov-Smirnov statistic (numeric) or 1 - total variation distance of
  the level frequencies (levelled);
- column pair trend = 1 - |Pearson r(real) - r(synthetic)| / 2 for two numeric columns, else
  1 - TVD of the two normalized contingency tables, a numeric column binned into
  :data:`N_BINS` equal-width bins over the real range;
- overall = the mean of the two property scores. Missing cells are left out of each column
  (and each pair).

:func:`association` gives the matrix that the report draws for each table: Pearson r for two
numeric columns, Cramér's V (Cramér 1946) of the contingency table for a pair with a levelled
column, numeric columns binned as above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BINS = 10  # SDMetrics bins a numeric column into 10 for a mixed pair


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical
    CDFs (scipy.stats.ks_2samp's, by NumPy: scipy's import would cost a report 0.5 s)."""
    a, b = np.sort(a), np.sort(b)
    both = np.concatenate([a, b])
    fa = np.searchsorted(a, both, side="right") / len(a)
    fb = np.searchsorted(b, both, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def _frequencies(codes: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(codes.astype(np.int64), minlength=k).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def column_shape(real: np.ndarray, synth: np.ndarray, numeric: bool) -> float:
    """1 - KS statistic (numeric) or 1 - TVD of the level frequencies, observed cells only."""
    r, s = real[~np.isnan(real)], synth[~np.isnan(synth)]
    if len(r) == 0 or len(s) == 0:
        return float("nan")
    if numeric:
        return 1.0 - ks_statistic(r, s)
    k = int(max(r.max(), s.max())) + 1
    return 1.0 - _tvd(_frequencies(r, k), _frequencies(s, k))


def _bins(real: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin indices 0..N_BINS-1 on equal-width bins over the real column's range (values
    outside it go to the end bins)."""
    edges = np.histogram_bin_edges(real[~np.isnan(real)], bins=N_BINS)
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, N_BINS - 1)


def _codes(real: np.ndarray, values: np.ndarray, numeric: bool) -> tuple[np.ndarray, int]:
    """A column of ``values`` as category codes, and their number: bins of the real range
    (numeric), or the level indices themselves."""
    if numeric:
        return _bins(real, values), N_BINS
    return values.astype(np.int64), int(max(np.nanmax(real), values.max(initial=0))) + 1


def pair_trend(real: np.ndarray, synth: np.ndarray, numeric: tuple[bool, bool]) -> float:
    """The pair-trend score of two columns, ``real`` and ``synth`` each ``(n, 2)``."""
    r = real[~np.isnan(real).any(1)]
    s = synth[~np.isnan(synth).any(1)]
    if len(r) < 2 or len(s) < 2:
        return float("nan")
    if all(numeric):
        cr, cs = (_pearson(a[:, 0], a[:, 1]) for a in (r, s))
        return 1.0 - abs(cr - cs) / 2.0
    (ra, ka), (rb, kb) = (_codes(real[:, j], r[:, j], numeric[j]) for j in range(2))
    (sa, ka2), (sb, kb2) = (_codes(real[:, j], s[:, j], numeric[j]) for j in range(2))
    ka, kb = max(ka, ka2), max(kb, kb2)
    return 1.0 - _tvd(_frequencies(ra * kb + rb, ka * kb), _frequencies(sa * kb + sb, ka * kb))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; 0 where a column is constant."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two code columns: sqrt(chi^2 / (n (min(rows, cols) - 1))) of their
    contingency table, levels seen in neither column left out; 0 where one column is constant."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1.0)
    k = min(table.shape) - 1
    if k == 0:
        return 0.0
    n = table.sum()
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * k)))


def association(x: np.ndarray, numeric: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """``(d, d)``: Pearson r for two numeric columns, Cramér's V for a pair with a levelled
    column (numeric ones binned over ``reference``'s range, the real table, default ``x``),
    each pair on the rows where both cells are observed; 1 on the diagonal, NaN where a pair
    has fewer than two such rows."""
    ref = x if reference is None else reference
    d = x.shape[1]
    out = np.eye(d)
    for i in range(d):
        for j in range(i + 1, d):
            keep = ~np.isnan(x[:, i]) & ~np.isnan(x[:, j])
            if keep.sum() < 2:
                out[i, j] = out[j, i] = np.nan
                continue
            a, b = x[keep, i], x[keep, j]
            if numeric[i] and numeric[j]:
                v = _pearson(a, b)
            else:
                v = cramers_v(_codes(ref[:, i], a, bool(numeric[i]))[0],
                              _codes(ref[:, j], b, bool(numeric[j]))[0])
            out[i, j] = out[j, i] = v
    return out


@dataclass(frozen=True)
class Quality:
    """SDMetrics-style quality: the two property scores and their mean, each in [0, 1]."""

    shapes: float
    trends: float

    @property
    def overall(self) -> float:
        return (self.shapes + self.trends) / 2.0


def column_shapes(real: np.ndarray, synth: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """``(d,)`` column-shape scores."""
    return np.array([column_shape(real[:, j], synth[:, j], bool(numeric[j]))
                     for j in range(real.shape[1])])


def quality(real: np.ndarray, synth: np.ndarray, numeric: np.ndarray) -> Quality:
    """Column shapes and column pair trends of ``synth`` against ``real`` (both ``(n, d)``)."""
    d = real.shape[1]
    shapes = column_shapes(real, synth, numeric)
    trends = [pair_trend(real[:, [a, b]], synth[:, [a, b]], (bool(numeric[a]), bool(numeric[b])))
              for a in range(d) for b in range(a + 1, d)]
    return Quality(float(np.nanmean(shapes)), float(np.nanmean(trends)) if trends else 1.0)
