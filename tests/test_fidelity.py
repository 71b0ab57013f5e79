"""vaekit.evaluation.fidelity against independent oracles: scipy's two-sample KS statistic and
Cramér's V, NumPy's Pearson r, and SDMetrics' definitions on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.stats.contingency import association as scipy_association

from vaekit.evaluation import fidelity as fd


@pytest.mark.parametrize("seed", range(4))
def test_ks_statistic_matches_scipy_with_ties_and_unequal_sizes(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=50 + 7 * seed).round(1)  # rounding makes ties, within and across
    b = rng.normal(0.3, 1.2, size=80).round(1)
    assert fd.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_cramers_v_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 300)
    b = (a + rng.integers(0, 3, 300)) % 5  # associated with a
    table = np.zeros((4, 5), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    assert fd.cramers_v(a, b) == pytest.approx(scipy_association(table, method="cramer"), abs=1e-12)
    assert fd.cramers_v(a, np.zeros(300)) == 0.0  # a constant column


def test_association_matrix_mixes_pearson_and_cramers_v_and_skips_missing_cells():
    rng = np.random.default_rng(0)
    n = 400
    u = rng.normal(size=n)
    level = (u > 0).astype(float)  # a binary column that follows u
    x = np.c_[u, 2 * u + rng.normal(size=n), level]
    x[::7, 1] = np.nan
    m = fd.association(x, np.array([True, True, False]))
    keep = ~np.isnan(x[:, 1])
    assert m[0, 1] == pytest.approx(np.corrcoef(x[keep, 0], x[keep, 1])[0, 1], abs=1e-12)
    bins = fd._bins(x[:, 0], x[:, 0])
    assert m[0, 2] == pytest.approx(fd.cramers_v(bins, level), abs=1e-12) and m[0, 2] > 0.5
    assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T, equal_nan=True)


def test_quality_is_one_for_the_same_table_and_drops_when_a_pair_is_broken():
    rng = np.random.default_rng(1)
    u = rng.normal(size=500)
    real = np.c_[u, u + 0.1 * rng.normal(size=500), (u > 0).astype(float)]
    numeric = np.array([True, True, False])
    same = fd.quality(real, real, numeric)
    assert same.shapes == pytest.approx(1.0) and same.trends == pytest.approx(1.0)
    shuffled = real.copy()
    shuffled[:, 1] = rng.permutation(shuffled[:, 1])  # same marginals, the pair broken
    q = fd.quality(real, shuffled, numeric)
    assert q.shapes == pytest.approx(1.0) and q.trends < 0.8
    assert fd.column_shapes(real, shuffled, numeric) == pytest.approx([1.0, 1.0, 1.0])
