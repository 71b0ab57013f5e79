"""Disentanglement metrics for codes of data with known factors: MIG and DCI.

Both compare a model's codes ``(n, L)`` (posterior means, one row per example) with the true
factors ``(n, F)`` (integer values, one column per factor) of the same examples:

- the mutual information gap (MIG, Chen et al. 2018), with each code dimension discretised
  into equal-width bins as in Locatello et al. 2019;
- DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018), from the
  importance matrix of one scikit-learn tree ensemble per factor: by default gradient-boosted
  trees with scikit-learn's default settings and importances in absolute value, as
  disentanglement_lib computes it (Locatello et al. 2019), so that the numbers compare with the
  literature; ``estimator="forest"`` (a random forest) gives a different number, reported under
  its own keys (``dci_forest_*``).

Definitions and worked examples: docs/disentanglement.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vaekit.registry import Registry

BINS = 20  # bins per code dimension for MIG (Locatello et al. 2019's default)
TEST_FRACTION = 0.2  # share of rows DCI holds out to measure informativeness


def check_inputs(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes as finite float64 ``(n, L)`` and factors as int64 ``(n, F)``, or a ValueError."""
    codes, factors = np.asarray(codes), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes (n, L) and factors (n, F) must be 2-D with the same rows, got "
                         f"shapes {codes.shape} and {factors.shape}")
    if len(codes) < 10 or codes.shape[1] == 0 or factors.shape[1] == 0:
        raise ValueError(f"need at least 10 rows, one code and one factor, got {codes.shape} "
                         f"codes and {factors.shape} factors")
    codes = codes.astype(np.float64)
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or infinite values")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.issubdtype(factors.dtype, np.number) or not np.array_equal(factors,
                                                                              np.round(factors)):
            raise ValueError("factors must be integer values (indices into each factor's values)")
    factors = factors.astype(np.int64)
    constant = [k for k in range(factors.shape[1]) if np.all(factors[:, k] == factors[0, k])]
    if constant:
        raise ValueError(f"factor columns {constant} take a single value in these rows, so no "
                         "code can be informative about them; leave them out")
    return codes, factors


def entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy of the distributions ``p`` along ``axis`` in logs to ``base`` (0 log 0 = 0; a
    single category, ``base`` 1, has entropy 0)."""
    if base < 2:
        return np.zeros(np.delete(p.shape, axis))
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis) / np.log(base)


# -- MIG ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MIGResult:
    """The mutual information gap and what it is made of.

    Attributes
    ----------
    mig : float
        Mean over factors of ``gaps``, in [0, 1].
    gaps : np.ndarray
        ``(F,)`` per factor: (largest - second largest mutual information with one code) /
        entropy of the factor.
    mutual_info : np.ndarray
        ``(L, F)`` plug-in mutual information in nats of each discretised code and factor.
    factor_entropy : np.ndarray
        ``(F,)`` plug-in entropy of each factor, nats.
    """

    mig: float
    gaps: np.ndarray
    mutual_info: np.ndarray
    factor_entropy: np.ndarray


def discretize(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin index of every code value, each column into ``bins`` equal-width bins over its range:
    ``(n, L)`` int64 (the ``_histogram_discretize`` of Locatello et al. 2019)."""
    out = np.empty(codes.shape, np.int64)
    for j, col in enumerate(codes.T):
        edges = np.histogram_bin_edges(col, bins)
        out[:, j] = np.digitize(col, edges[1:-1])  # 0 .. bins-1; the maximum in the last bin
    return out


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = BINS) -> MIGResult:
    """Mutual information gap (Chen et al. 2018) of codes against known factors.

    For factor k with plug-in entropy H(v_k), and I(z_j; v_k) the plug-in mutual information of
    the discretised code j with it, MIG = mean_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k), where
    z_(1), z_(2) are the codes with the largest and second largest mutual information (with one
    code, the second is 0). Deterministic: it needs no random state.

    Parameters
    ----------
    codes : np.ndarray
        ``(n, L)`` code values (e.g. posterior means).
    factors : np.ndarray
        ``(n, F)`` integer factor values of the same rows.
    bins : int
        Equal-width bins per code dimension.

    Returns
    -------
    MIGResult
    """
    from sklearn.metrics import mutual_info_score

    codes, factors = check_inputs(codes, factors)
    z = discretize(codes, bins)
    mi = np.array([[mutual_info_score(factors[:, k], z[:, j]) for k in range(factors.shape[1])]
                   for j in range(z.shape[1])])  # (L, F) nats
    h = np.array([mutual_info_score(v, v) for v in factors.T])  # I(v; v) = H(v)
    top = -np.sort(-mi, axis=0)  # each column in decreasing order
    second = top[1] if len(top) > 1 else np.zeros_like(h)
    gaps = (top[0] - second) / h
    return MIGResult(float(gaps.mean()), gaps, mi, h)


# -- DCI ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DCIResult:
    """DCI scores (Eastwood & Williams 2018) and the importance matrix they come from.

    Attributes
    ----------
    disentanglement : float
        sum_j rho_j D_j: each code's score weighted by its share of the total importance.
    completeness : float
        sum_k rho~_k C_k: each factor's score weighted by its share of the total importance
        (the plain mean when, as here, every factor's importances sum to 1).
    informativeness : float
        Mean over factors of the classifier's accuracy on the held-out rows.
    importance : np.ndarray
        ``(L, F)`` R_jk >= 0: how much code j is used to predict factor k.
    code_disentanglement : np.ndarray
        ``(L,)`` D_j = 1 - H_F(P_j.), P_jk = R_jk / sum_k R_jk (0 for an unused code).
    factor_completeness : np.ndarray
        ``(F,)`` C_k = 1 - H_L(P~_.k), P~_jk = R_jk / sum_j R_jk.
    factor_accuracy : np.ndarray
        ``(F,)`` held-out accuracy of each factor's classifier.
    estimator : str
        The :data:`ESTIMATORS` name that made the importance matrix: ``boosting`` is
        disentanglement_lib's number, ``forest`` another one.
    """

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray
    code_disentanglement: np.ndarray
    factor_completeness: np.ndarray
    factor_accuracy: np.ndarray
    estimator: str = "boosting"


# Classifiers whose feature_importances_ make the importance matrix, one fitted per factor.
ESTIMATORS: Registry[Callable[[int], object]] = Registry("DCI estimator")


@ESTIMATORS.register("forest")
def _forest(random_state: int):
    from sklearn.ensemble import RandomForestClassifier

    # Every split sees every code: with a random subset (max_features "sqrt"), a split forced
    # onto codes that know nothing of the factor credits them with importance (D of a
    # permutation code 0.81, not 1). Leaves of at least 2% of the rows keep the trees from
    # fitting the noise of such codes, which does the same (one factor per code plus noise of
    # 0.3 sd: D 0.86, and 0.65 with leaves of 20 rows). See docs/disentanglement.md.
    return RandomForestClassifier(n_estimators=20, max_features=None, min_samples_leaf=0.02,
                                  random_state=random_state, n_jobs=1)


@ESTIMATORS.register("boosting")
def _boosting(random_state: int):
    from sklearn.ensemble import GradientBoostingClassifier

    # Locatello et al. 2019's choice, scikit-learn's defaults (100 stages of depth-3 trees, one
    # tree per class and stage): the default, the number the literature reports; slow for
    # factors with many values.
    return GradientBoostingClassifier(random_state=random_state)


DEFAULT_ESTIMATOR = "boosting"


def dci_from_importance(importance: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Disentanglement and completeness of an importance matrix (Eastwood & Williams 2018).

    Parameters
    ----------
    importance : np.ndarray
        ``(L, F)`` non-negative R_jk, code j's importance for predicting factor k.

    Returns
    -------
    disentanglement, completeness : float
        As in :class:`DCIResult` (0 for a matrix of zeros).
    code_disentanglement, factor_completeness : np.ndarray
        ``(L,)`` D_j and ``(F,)`` C_k.
    """
    r = np.asarray(importance, np.float64)
    if r.ndim != 2 or (r < 0).any() or not np.isfinite(r).all():
        raise ValueError(f"importance must be a finite non-negative (L, F) matrix, got {r.shape}")
    n_codes, n_factors = r.shape
    total, by_code, by_factor = r.sum(), r.sum(1), r.sum(0)
    if total == 0:
        return 0.0, 0.0, np.zeros(n_codes), np.zeros(n_factors)
    p = r / np.where(by_code > 0, by_code, 1.0)[:, None]  # each code's distribution over factors
    d = np.where(by_code > 0, 1.0 - entropy(p, n_factors, axis=1), 0.0)
    q = r / np.where(by_factor > 0, by_factor, 1.0)[None, :]  # each factor's over codes
    c = np.where(by_factor > 0, 1.0 - entropy(q, n_codes, axis=0), 0.0)
    return float(d @ by_code / total), float(c @ by_factor / total), d, c


def dci(codes: np.ndarray, factors: np.ndarray, random_state: int = 0,
        estimator: str = DEFAULT_ESTIMATOR,
        test_fraction: float = TEST_FRACTION) -> DCIResult:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    The rows are split once at random (``test_fraction`` held out); for each factor a
    classifier predicts it from the codes on the training rows, the absolute values of its
    ``feature_importances_`` (which sum to 1) are that factor's column of R, and its accuracy
    on the held-out rows is that factor's informativeness. The absolute value is
    disentanglement_lib's: gradient boosting's importances of unused codes are zero up to
    rounding, and can be about -1e-17.

    Parameters
    ----------
    codes : np.ndarray
        ``(n, L)`` code values.
    factors : np.ndarray
        ``(n, F)`` integer factor values of the same rows.
    random_state : int
        Seeds the split and the classifiers: equal inputs give equal scores.
    estimator : str
        A name in :data:`ESTIMATORS`: ``boosting`` (gradient-boosted trees, the default, as
        Locatello et al. 2019) or ``forest`` (a random forest: faster, and a different number,
        higher D and C on noisy codes; docs/disentanglement.md).
    test_fraction : float
        Share of rows held out, in (0, 1).

    Returns
    -------
    DCIResult
    """
    make = ESTIMATORS[estimator]
    codes, factors = check_inputs(codes, factors)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(codes))
    n_test = max(1, round(test_fraction * len(codes)))
    test, train = order[:n_test], order[n_test:]
    r = np.zeros((codes.shape[1], factors.shape[1]))
    acc = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        model = make(random_state).fit(codes[train], factors[train, k])
        r[:, k] = np.abs(model.feature_importances_)  # rounding: about -1e-17 for unused codes
        acc[k] = model.score(codes[test], factors[test, k])
    d, c, per_code, per_factor = dci_from_importance(r)
    return DCIResult(d, c, float(acc.mean()), r, per_code, per_factor, acc, estimator)


# -- for `vaekit evaluate` ---------------------------------------------------------------------
def disentanglement_scores(codes: np.ndarray, factors: np.ndarray, random_state: int = 0,
                           max_rows: int | None = 10_000,
                           estimator: str = DEFAULT_ESTIMATOR) -> dict[str, float]:
    """MIG and DCI as one flat dict of floats (JSON-ready), on at most ``max_rows`` rows.

    Parameters
    ----------
    codes, factors : np.ndarray
        ``(n, L)`` codes and ``(n, F)`` integer factors of the same rows.
    random_state : int
        Seeds the subsample and DCI.
    max_rows : int or None
        Rows kept, drawn without replacement (None: all); DCI's trees grow with n.
    estimator : str
        DCI's :data:`ESTIMATORS` name.

    Returns
    -------
    dict
        ``mig``, ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` and
        ``n_rows``; with ``estimator="forest"`` the DCI keys are ``dci_forest_*``, so that a
        random forest's number is never read as disentanglement_lib's.
    """
    codes, factors = check_inputs(codes, factors)
    if max_rows is not None and len(codes) > max_rows:
        keep = np.sort(np.random.default_rng(random_state).choice(len(codes), max_rows, False))
        codes, factors = check_inputs(codes[keep], factors[keep])
    m, d = mig(codes, factors), dci(codes, factors, random_state, estimator)
    key = dci_key(estimator)
    return {"mig": m.mig, f"{key}_disentanglement": d.disentanglement,
            f"{key}_completeness": d.completeness, f"{key}_informativeness": d.informativeness,
            "n_rows": len(codes)}


def dci_key(estimator: str) -> str:
    """Prefix of an estimator's DCI keys: ``dci`` for the default (disentanglement_lib's
    number), ``dci_<name>`` for any other."""
    return "dci" if estimator == DEFAULT_ESTIMATOR else f"dci_{estimator}"


def dci_label(key: str) -> str:
    """What an evaluation key is, for the report's unit column: the DCI keys say whose number
    they are (``dci_forest_disentanglement`` is not disentanglement_lib's); others get ``""``."""
    for estimator in ESTIMATORS.names():
        prefix = dci_key(estimator) + "_"
        rest = key[len(prefix):] if key.startswith(prefix) else ""
        if rest in ("disentanglement", "completeness", "informativeness"):
            return dci_words(estimator)
    return ""


def dci_words(estimator: str) -> str:
    """How a DCI number was made, for the lines that show it."""
    if estimator == DEFAULT_ESTIMATOR:
        return "gradient-boosted trees, as disentanglement_lib (Locatello et al. 2019)"
    what = {"forest": "a random forest"}.get(estimator, f"estimator {estimator}")
    return f"{what}: a different number from disentanglement_lib's, not comparable with it"
