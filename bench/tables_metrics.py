"""The metrics of ``bench/tables.py``, as plain functions of arrays.

Tables are compared in one numeric layout: :func:`encode` maps a DataFrame through the real
table's :class:`vaekit.data.schema.Schema` to ``(n, d)`` float64, numeric columns as values and
levelled columns (binary, categorical, ordinal) as level indices, NaN where missing.
``numeric[j]`` says which columns are numbers.

- Quality, the definitions of SDMetrics' quality report: :mod:`vaekit.evaluation.fidelity`,
  which the report of a table run uses too.
- Machine-learning efficacy: HistGradientBoosting trained on one table and tested on real
  held-out rows; macro F1 for a levelled target, R^2 for a numeric one.
- DCR: distance from each synthetic row to its closest real training row, numeric columns
  standardized by the training sd, a mismatched level counting 1 (missing cells filled with the
  training median / mode on both sides).
- MCAR masks and imputation errors (RMSE of standardized continuous cells, accuracy of levelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from vaekit.data.schema import LEVELLED, Schema
from vaekit.evaluation.fidelity import Quality, column_shape, pair_trend, quality  # noqa: F401


# ---- the common layout --------------------------------------------------------------------

def _key(v) -> str:
    """A level as text, with 1.0 and 1 the same level (models may return floats for ints)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    return str(v)


def encode(df: pd.DataFrame, schema: Schema) -> tuple[np.ndarray, int]:
    """``df`` -> ``(n, d)`` float64 in the schema's layout, and the number of cells that did not
    fit (an unknown level, text in a numeric column), which are set missing rather than refused:
    a method's odd output is scored, not fatal."""
    out = np.full((len(df), schema.width), np.nan)
    bad = 0
    for j, col in enumerate(schema.columns):
        s = df[col.name]
        miss = s.isna().to_numpy()
        if col.kind in LEVELLED:
            codes = {_key(v): i for i, v in enumerate(col.levels)}
            got = np.array([codes.get(_key(v), np.nan) if not m else np.nan
                            for v, m in zip(s.to_numpy(dtype=object), miss)], dtype=np.float64)
        else:
            got = pd.to_numeric(s.astype(object).where(~miss, np.nan), errors="coerce")
            got = got.to_numpy(dtype=np.float64, na_value=np.nan)
        bad += int((np.isnan(got) & ~miss).sum())
        out[:, j] = got
    return out, bad


def numeric_mask(schema: Schema) -> np.ndarray:
    """``(d,)`` bool: the columns whose encoded values are numbers, not level indices."""
    return np.array([c.kind not in LEVELLED for c in schema.columns])


# ---- machine-learning efficacy ------------------------------------------------------------

def efficacy(train: np.ndarray, test: np.ndarray, numeric: np.ndarray, target: int,
             seed: int = 0) -> float:
    """Macro F1 (levelled target) or R^2 (numeric target) on real ``test`` rows of a
    HistGradientBoosting model fitted on ``train``; rows with a missing target are left out.
    Levelled features are passed as categorical (their level indices)."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )
    from sklearn.metrics import f1_score, r2_score

    feats = [j for j in range(train.shape[1]) if j != target]
    tr = train[~np.isnan(train[:, target])]
    te = test[~np.isnan(test[:, target])]
    cat = ~numeric[feats]
    kw = {"categorical_features": cat if cat.any() else None, "random_state": seed, "max_iter": 100}
    if numeric[target]:
        model = HistGradientBoostingRegressor(**kw).fit(tr[:, feats], tr[:, target])
        return float(r2_score(te[:, target], model.predict(te[:, feats])))
    if len(np.unique(tr[:, target])) < 2:  # a synthetic table with one class predicts it
        pred = np.full(len(te), tr[0, target] if len(tr) else -1.0)
    else:
        model = HistGradientBoostingClassifier(**kw).fit(tr[:, feats], tr[:, target])
        pred = model.predict(te[:, feats])
    return float(f1_score(te[:, target], pred, average="macro"))


# ---- privacy: distance to the closest record ----------------------------------------------

def _filled(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), fill, x)


def dcr(synth: np.ndarray, train: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """``(n_synth,)`` distance from each synthetic row to its closest training row: squared
    standardized differences on numeric columns plus 1 per mismatched level, square-rooted."""
    fill = np.array([(np.median(o) if num else stats.mode(o, keepdims=False).mode) if len(o) else 0.0
                     for o, num in ((c[~np.isnan(c)], num) for c, num in zip(train.T, numeric))])
    sd = np.nanstd(train, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    a, b = _filled(synth, fill), _filled(train, fill)
    out = np.empty(len(a))
    for i in range(0, len(a), 256):  # (256, n_train, d) at a time
        diff = a[i:i + 256, None, :] - b[None, :, :]
        sq = np.where(numeric, (diff / sd) ** 2, (diff != 0).astype(np.float64))
        out[i:i + 256] = np.sqrt(sq.sum(-1).min(1))
    return out


# ---- imputation ---------------------------------------------------------------------------

def mcar_mask(shape: tuple[int, int], rate: float, rng: np.random.Generator,
              observed: np.ndarray | None = None) -> np.ndarray:
    """``shape`` bool mask, True = remove: each observed cell independently with ``rate``
    (missing completely at random, Rubin 1976); cells already missing are never chosen."""
    mask = rng.random(shape) < rate
    return mask if observed is None else mask & observed


@dataclass(frozen=True)
class ImputeError:
    """RMSE of the removed numeric cells (standardized by the training sd) and accuracy of
    the removed levelled cells; NaN where no such cell was removed or the method left it empty."""

    rmse: float
    accuracy: float
    unfilled: int


def impute_error(truth: np.ndarray, filled: np.ndarray, mask: np.ndarray, numeric: np.ndarray,
                 sd: np.ndarray) -> ImputeError:
    """Errors of ``filled`` against ``truth`` on the removed cells ``mask`` (all ``(n, d)``)."""
    num = mask & numeric[None, :]
    lev = mask & ~numeric[None, :]
    unfilled = int((np.isnan(filled) & mask).sum())
    z = (filled - truth) / np.where(sd > 0, sd, 1.0)[None, :]
    rmse = float(np.sqrt(np.mean(z[num] ** 2))) if num.any() else float("nan")
    acc = float(np.mean(filled[lev] == truth[lev])) if lev.any() else float("nan")
    return ImputeError(rmse, acc, unfilled)
