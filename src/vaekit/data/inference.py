"""Inferring a table's column schema: each column of a pandas DataFrame gets a type with a
one-line reason, or is left out with the reason (constant, ID-like); dates are refused; and
``NAME=TYPE`` overrides change any choice. The schema itself is :mod:`.schema`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .schema import (KINDS, NUMERIC, Column, Schema, _encode_column, _key, _num, _plain, _show,
                     _unknown_column)

MAX_TEXT_LEVELS = 20  # text with more levels than this and than half its cells is a name, not a category
MAX_LEVELS = 10  # numbers with at most this many (repeated) values are ordinal: a level each
COUNT_MEDIAN_MAX = 1000  # non-negative integers with a larger median are amounts, not counts
NUMBER_SHARE = 0.5  # text whose cells are at least this share numbers is a numeric column with typos
SKEW_POSITIVE = 1.0  # positive values with a larger sample skewness are modelled on the log scale
# ISO dates (2024-03-01, 2024-03-01T12:00), and d/m/y or m/d/y with / or . separators
_DATE = re.compile(r"^\s*(\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                   r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4})\s*$")
_BINARY_WORDS = ({"no", "yes"}, {"false", "true"}, {"n", "y"}, {"f", "t"})


def infer_schema(df: pd.DataFrame, overrides: Iterable[str] = (), what: str = "data") -> Schema:
    """A :class:`Schema` for ``df``: a type and a one-line reason for each column.

    Rules, in order: all missing or a single value -> left out; an ordered pandas
    ``category`` -> ordinal in its declared order (seen levels only); datetime dtypes or text that
    looks like dates -> DataError (drop or convert the column); booleans or any two values ->
    binary; text (or pandas ``category``) with every value distinct, or with more than 20
    levels and more levels than half its cells, -> left out as ID-like; other text ->
    categorical; integers that are a run of distinct consecutive numbers (a row number) -> left
    out; numbers with at most 10 values, each seen twice on average, other than integers from
    0 -> ordinal (levels the values seen); non-negative integers with median <= 1000 -> count; other numbers > 0 with
    sample skewness > 1 -> positive; other numbers -> continuous. Numbers that are all whole but were
    read as floats (a missing cell makes pandas do so) keep the dtype ``Int64``, so decoded
    values, samples and imputations are whole numbers too.

    Parameters
    ----------
    df : pandas.DataFrame
        The table, one column per variable.
    overrides : iterable of str
        ``NAME=TYPE`` with a type of :data:`KINDS` or ``drop``; ``NAME=ordinal:a<b<c``
        declares the order of an ordinal's levels (otherwise sorted).
    what : str
        What the data is called in messages.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0 or df.shape[1] == 0:
        raise DataError(f"{what}: the table is empty ({df.shape[0]} rows, {df.shape[1]} columns)")
    names = [str(n) for n in df.columns]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{what}: column name '{dup}' appears twice; rename one")
    declared = parse_overrides(overrides, names)
    columns, dropped = [], []
    for name, raw in zip(names, df.columns):
        s = df[raw]
        if name in declared:
            kind, order = declared[name]
            if kind == "drop":
                dropped.append((name, "declared drop"))
                continue
            columns.append(_declared(s, name, kind, order, what))
            continue
        col = _infer(s, name, what)
        if isinstance(col, Column):
            columns.append(col)
        else:
            dropped.append((name, col))
    if not columns:
        raise DataError(f"{what}: no column is left to model ({'; '.join(f'{n}: {r}' for n, r in dropped)})")
    return Schema(tuple(columns), tuple(dropped))


def parse_overrides(overrides: Iterable[str], names: list[str]) -> dict[str, tuple[str, tuple]]:
    """``["age=count", "size=ordinal:S<M<L"]`` -> ``{"age": ("count", ()), ...}``; ConfigError if bad."""
    if isinstance(overrides, str):
        overrides = [overrides]
    out = {}
    for text in overrides:
        name, sep, kind = str(text).rpartition("=")
        if not sep or not name:
            raise ConfigError(f"column override {text!r} must be NAME=TYPE "
                              f"(types: {', '.join(KINDS)}, drop)")
        kind, _, order = kind.partition(":")
        if kind not in KINDS + ("drop",):
            close = difflib.get_close_matches(kind, KINDS + ("drop",), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"column override {text!r}: unknown type '{kind}'{hint} "
                              f"(choices: {', '.join(KINDS)}, drop)")
        if order and kind != "ordinal":
            raise ConfigError(f"column override {text!r}: only an ordinal takes an order (a<b<c)")
        if name not in names:
            raise ConfigError(_unknown_column(name, names).replace("unknown column", f"column override {text!r}: no column"))
        out[name] = (kind, tuple(order.split("<")) if order else ())
    return out


def _infer(s: pd.Series, name: str, what: str) -> Column | str:
    """A Column for ``s``, or the reason it is left out."""
    dtype = str(s.dtype)
    obs = s.dropna()
    if len(obs) == 0:
        return "all cells missing"
    if pd.api.types.is_datetime64_any_dtype(s) or isinstance(s.dtype, pd.PeriodDtype) \
            or pd.api.types.is_timedelta64_dtype(s):
        raise _date_error(name, what, dtype)
    miss = _missing_note(s)
    if pd.api.types.is_bool_dtype(s) or (s.dtype == object and all(isinstance(v, (bool, np.bool_))
                                                                   for v in obs)):
        levels = sorted(_levels(obs))
        if len(levels) == 1:
            return f"constant {levels[0]!r}"
        return Column(name, "binary", f"booleans{miss} -> binary", dtype, tuple(levels))
    if pd.api.types.is_numeric_dtype(s):
        return _infer_numeric(s, obs.to_numpy(dtype=np.float64), name, dtype, miss)
    if isinstance(s.dtype, pd.CategoricalDtype) and s.dtype.ordered:  # the order is declared
        seen = {_key(v) for v in _levels(obs)}
        levels = [_plain(v) for v in s.dtype.categories if _key(v) in seen]
        if len(levels) == 1:
            return f"constant {levels[0]!r}"
        return Column(name, "ordinal", f"ordered category, {len(levels)} levels{miss} -> ordinal",
                      dtype, tuple(levels))
    values = obs.astype(str)
    if values.map(lambda v: bool(_DATE.match(v))).all():
        raise _date_error(name, what, f"text like {values.iloc[0]!r}")
    if not isinstance(s.dtype, pd.CategoricalDtype):
        # numbers with a few text cells: a typo or a missing-value code, not a category
        num = pd.to_numeric(obs.astype(object), errors="coerce")
        if num.notna().mean() >= NUMBER_SHARE and num.isna().any():
            i = int(np.flatnonzero(s.notna().to_numpy())[np.flatnonzero(num.isna().to_numpy())[0]])
            raise DataError(f"{what}: column '{name}', row {i + 1}: {_plain(s.iloc[i])!r} is not a "
                            f"number, though {int(num.notna().sum())} of {len(obs)} cells are; fix "
                            f"it (leave a missing cell empty), or declare {name}=categorical")
    levels = _levels(obs)
    if len(levels) == 1:
        return f"constant {levels[0]!r}"
    if len(levels) == 2:
        return Column(name, "binary", f"2 levels {_show(_binary_order(levels))}{miss} -> binary",
                      dtype, tuple(_binary_order(levels)))
    if len(levels) == len(obs):
        return f"text, all {len(obs)} values distinct -> ID-like"
    if len(levels) > max(MAX_TEXT_LEVELS, len(obs) / 2):
        return (f"text, {len(levels)} levels in {len(obs)} cells (mostly distinct) -> ID-like; "
                f"declare {name}=categorical to keep it")
    levels = _sorted_levels(levels)
    return Column(name, "categorical", f"text, {len(levels)} levels{miss} -> categorical", dtype,
                  tuple(levels))


def _infer_numeric(s: pd.Series, x: np.ndarray, name: str, dtype: str, miss: str) -> Column | str:
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(s.to_numpy(dtype=np.float64, na_value=0.0)))[0])
        raise DataError(f"column '{name}', row {bad + 1}: {s.iloc[bad]} is not a finite number")
    uniq = np.unique(x)
    if len(uniq) == 1:
        return f"constant {_num(uniq[0])}"
    if len(uniq) == 2:
        levels = tuple(_scalar(v, dtype) for v in uniq)
        return Column(name, "binary", f"2 values {_show(levels)}{miss} -> binary", dtype, levels)
    integral = bool((x == np.round(x)).all())
    span = f"{_num(uniq[0])}..{_num(uniq[-1])}"
    what = "integers" if integral else "numbers"
    if integral and len(uniq) == len(x) and uniq[-1] - uniq[0] == len(x) - 1:
        return f"integers {span}, each once -> row number (ID-like)"
    from_zero = integral and uniq[0] == 0 and np.median(x) <= COUNT_MEDIAN_MAX
    if len(uniq) <= MAX_LEVELS and 2 * len(uniq) <= len(x) and not from_zero:
        # A count's family or a Gaussian cannot put nearly all of a row's mass on one of so few
        # values (cylinders 4 or 8, a 1..7 rating, ages coded 17.5, 22, 27); a level each can.
        # Integers from 0 stay counts: a larger count in new data is then no unknown level.
        levels = tuple(_scalar(v, dtype) for v in uniq)
        return Column(name, "ordinal", f"{what} {span}, {len(uniq)} levels{miss} -> ordinal",
                      dtype, levels)
    if integral:
        if uniq[0] >= 0 and np.median(x) <= COUNT_MEDIAN_MAX:
            return _numeric(name, "count", f"integers {span}, {len(uniq)} levels{miss} -> count",
                            dtype, x)
    if uniq[0] > 0:
        skew = _skewness(x)
        if skew > SKEW_POSITIVE:
            return _numeric(name, "positive", f"{what} {span} > 0, skewness {skew:.1f}{miss} -> "
                            "positive", dtype, x)
    return _numeric(name, "continuous", f"{what} {span}{miss} -> continuous", dtype, x)


def _declared(s: pd.Series, name: str, kind: str, order: tuple, what: str) -> Column:
    dtype = str(s.dtype)
    obs = s.dropna()
    if len(obs) == 0:
        raise DataError(f"{what}: column '{name}' is declared {kind} but has no observed cell")
    if kind in NUMERIC:
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            raise DataError(f"{what}: column '{name}' is declared {kind} but holds "
                            f"{obs.iloc[0]!r}, not a number; declare it categorical")
        x = obs.to_numpy(dtype=np.float64)
        col = _numeric(name, kind, f"declared {kind}", dtype, x)
        _encode_column(s, col, what)  # a count must be integers >= 0, a positive > 0
        return col
    levels = _levels(obs)
    if kind == "binary" and len(levels) != 2:
        raise DataError(f"{what}: column '{name}' is declared binary but has {len(levels)} levels")
    if order:
        by_text = {str(v): v for v in levels}
        unknown = [str(v) for v in levels if str(v) not in order]
        if unknown or len(set(order)) != len(order) or any(o not in by_text for o in order):
            raise DataError(f"{what}: column '{name}': the declared order {'<'.join(order)} must "
                            f"name each seen level once ({_show(_sorted_levels(levels))})")
        levels = [by_text[o] for o in order]
    else:
        levels = _binary_order(levels) if kind == "binary" else _sorted_levels(levels)
    if len(levels) < 2:
        raise DataError(f"{what}: column '{name}' is declared {kind} but has one level")
    return Column(name, kind, f"declared {kind}", dtype, tuple(levels))


def _numeric(name: str, kind: str, reason: str, dtype: str, x: np.ndarray) -> Column:
    """A numeric Column with its standardization: of log x for a positive column."""
    if dtype.startswith("float") and len(x) and bool((x == np.round(x)).all()):
        dtype = "Int64"  # integers that pandas read as floats (a missing cell): written back as integers
    v = np.log(x[x > 0]) if kind == "positive" else x
    if len(v) == 0:
        v = np.ones(1)  # the encoder refuses such a column's values anyway
    sd = float(v.std()) if len(v) > 1 else 0.0
    return Column(name, kind, reason, dtype, (), float(v.mean()), sd if sd > 0 else 1.0)


def _date_error(name: str, what: str, held: str) -> DataError:
    return DataError(f"{what}: column '{name}' holds dates ({held}); drop it, or convert it to "
                     "numbers (e.g. days since a start date, or year and month columns)")


def _levels(obs: pd.Series) -> list:
    """The distinct observed values as Python scalars, in first-seen order."""
    seen, out = set(), []
    for v in obs.to_numpy(dtype=object):
        k = _key(v)
        if k not in seen:
            seen.add(k)
            out.append(_plain(v))
    return out


def _sorted_levels(levels: list) -> list:
    try:
        return sorted(levels)
    except TypeError:  # mixed types: by their text
        return sorted(levels, key=str)


def _binary_order(levels: list) -> list:
    """no/yes, false/true, n/y, f/t in that order (the second is coded 1); otherwise sorted."""
    low = {str(v).strip().lower(): v for v in levels}
    for pair in _BINARY_WORDS:
        if set(low) == pair:
            first, second = sorted(pair)
            return [low[first], low[second]]
    return _sorted_levels(levels)


def _scalar(v: float, dtype: str):
    """A numeric level as an int when the column holds integers."""
    return int(v) if dtype.lower().startswith(("int", "uint")) or float(v).is_integer() else float(v)


def _skewness(x: np.ndarray) -> float:
    sd = x.std()
    return float(((x - x.mean()) ** 3).mean() / sd ** 3) if sd > 0 else 0.0


def _missing_note(s: pd.Series) -> str:
    n = int(s.isna().sum())
    return f", {n} missing" if n else ""
