"""A column schema for tables of mixed types with missing cells.

:func:`infer_schema` gives each column of a pandas DataFrame a type with a one-line reason
(or leaves it out, with the reason); ``NAME=TYPE`` overrides change any choice. A
:class:`Schema` encodes a DataFrame into one float64 number per cell, ``(n, width)`` with one
column per kept column, missing cells as NaN (the likelihood sums over observed cells only),
decodes such an array back to a DataFrame with the original names, order and dtypes, checks
new data against itself, and round-trips through strict JSON so that a run can store it.

Encoded layout, one number per cell: ``continuous``, ``positive`` and ``count`` columns hold
their values; ``binary``, ``categorical`` and ``ordinal`` columns hold the index of the level
in :attr:`Column.levels`. Row numbers in messages count data rows from 1 (the header is not a
row), i.e. the position in the DataFrame plus one.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

KINDS = ("continuous", "positive", "count", "binary", "categorical", "ordinal")
LEVELLED = ("binary", "categorical", "ordinal")  # encoded as a level index
NUMERIC = ("continuous", "positive", "count")  # encoded as the value itself
MAX_TEXT_LEVELS = 20  # text with more levels than this and than half its cells is a name, not a category
MAX_INT_LEVELS = 10  # integers with negative values and at most this many levels are categories
COUNT_MEDIAN_MAX = 1000  # non-negative integers with a larger median are amounts, not counts
NUMBER_SHARE = 0.5  # text whose cells are at least this share numbers is a numeric column with typos
SKEW_POSITIVE = 1.0  # positive values with a larger sample skewness are modelled on the log scale
SCHEMA_VERSION = 1
# ISO dates (2024-03-01, 2024-03-01T12:00), and d/m/y or m/d/y with / or . separators
_DATE = re.compile(r"^\s*(\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                   r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4})\s*$")
_BINARY_WORDS = ({"no", "yes"}, {"false", "true"}, {"n", "y"}, {"f", "t"})
_DTYPES = {"bool", "boolean", "str", "string", "object", "category", "float32", "float64",
           "Float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "Int8", "Int16", "Int32", "Int64"}


@dataclass(frozen=True)
class Column:
    """One kept column: its type, why, and what encoding and decoding need.

    Attributes
    ----------
    name : str
        The column's name in the data.
    kind : str
        One of :data:`KINDS`.
    reason : str
        One line saying why this type was chosen (or that it was declared).
    dtype : str
        The pandas dtype the column had, restored by :meth:`Schema.decode`.
    levels : tuple
        The seen levels of a binary, categorical or ordinal column, in code order
        (JSON scalars: str, int, float or bool); empty for numeric kinds.
    loc, scale : float
        Location and spread of the observed values (continuous: mean and sd; positive: mean
        and sd of log x; count: mean and sd), for the likelihood's standardization; 0 and 1
        for levelled kinds.
    """

    name: str
    kind: str
    reason: str
    dtype: str
    levels: tuple = ()
    loc: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Schema:
    """The kept columns in data order, and the left-out ones with their reasons."""

    columns: tuple[Column, ...]
    dropped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def width(self) -> int:
        """Numbers per encoded row: one per kept column."""
        return len(self.columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise ConfigError(_unknown_column(name, self.names))

    # ---- text and JSON -------------------------------------------------------------------

    def table(self) -> str:
        """A short printable table: one line per column with its type and reason."""
        rows = [(c.name, c.kind, c.reason) for c in self.columns]
        rows += [(name, "(left out)", reason) for name, reason in self.dropped]
        w0 = max([len("column")] + [len(r[0]) for r in rows])
        w1 = max([len("type")] + [len(r[1]) for r in rows])
        lines = [f"{'column':<{w0}}  {'type':<{w1}}  reason"]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
        return "\n".join(lines)

    def to_json(self) -> str:
        """The schema as JSON text (read back by :meth:`from_json`)."""
        return json.dumps({"version": SCHEMA_VERSION,
                           "columns": [{"name": c.name, "kind": c.kind, "reason": c.reason,
                                        "dtype": c.dtype, "levels": list(c.levels),
                                        "loc": c.loc, "scale": c.scale} for c in self.columns],
                           "dropped": [[n, r] for n, r in self.dropped]}, indent=1)

    @classmethod
    def from_json(cls, text: str, what: str = "schema") -> Schema:
        """Read :meth:`to_json`'s text, refusing unknown keys, kinds, dtypes and bad values."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{what}: not valid JSON ({e})") from None
        _keys(obj, {"version", "columns", "dropped"}, what)
        if obj["version"] != SCHEMA_VERSION:
            raise DataError(f"{what}: schema version {obj['version']!r} is not {SCHEMA_VERSION}")
        if not isinstance(obj["columns"], list) or not isinstance(obj["dropped"], list):
            raise DataError(f"{what}: 'columns' and 'dropped' must be lists")
        columns = []
        for i, c in enumerate(obj["columns"]):
            where = f"{what}: column {i}"
            _keys(c, {"name", "kind", "reason", "dtype", "levels", "loc", "scale"}, where)
            if not isinstance(c["name"], str) or not isinstance(c["reason"], str):
                raise DataError(f"{where}: 'name' and 'reason' must be strings")
            if c["kind"] not in KINDS:
                raise DataError(f"{where} ({c['name']}): unknown type {c['kind']!r} "
                                f"(choices: {', '.join(KINDS)})")
            if c["dtype"] not in _DTYPES:
                raise DataError(f"{where} ({c['name']}): unsupported dtype {c['dtype']!r}")
            levels = c["levels"]
            if (not isinstance(levels, list)
                    or not all(isinstance(v, (str, int, float, bool)) for v in levels)):
                raise DataError(f"{where} ({c['name']}): 'levels' must be a list of scalars")
            want = (2, 2) if c["kind"] == "binary" else (2, None) if c["kind"] in LEVELLED else (0, 0)
            if len(levels) < want[0] or (want[1] is not None and len(levels) > want[1]) \
                    or len(set(map(_key, levels))) != len(levels):
                raise DataError(f"{where} ({c['name']}): a {c['kind']} column cannot have "
                                f"the levels {levels}")
            for k in ("loc", "scale"):
                if isinstance(c[k], bool) or not isinstance(c[k], (int, float)) \
                        or not math.isfinite(c[k]):
                    raise DataError(f"{where} ({c['name']}): '{k}' must be a finite number")
            if c["scale"] <= 0:
                raise DataError(f"{where} ({c['name']}): 'scale' must be positive")
            columns.append(Column(c["name"], c["kind"], c["reason"], c["dtype"], tuple(levels),
                                  float(c["loc"]), float(c["scale"])))
        if len({c.name for c in columns}) != len(columns):
            raise DataError(f"{what}: column names repeat")
        dropped = []
        for d in obj["dropped"]:
            if not (isinstance(d, list) and len(d) == 2 and all(isinstance(s, str) for s in d)):
                raise DataError(f"{what}: each 'dropped' entry must be [name, reason]")
            dropped.append((d[0], d[1]))
        return cls(tuple(columns), tuple(dropped))

    # ---- encode, decode, check -----------------------------------------------------------

    def check(self, df: pd.DataFrame, what: str = "data") -> None:
        """Raise DataError, naming the column and row, unless ``df`` fits this schema.

        A missing column, a value of the wrong type (text in a numeric column, a fraction or a
        negative number in a count column, a value <= 0 in a positive one) or a level not seen
        when the schema was made. Missing cells are allowed anywhere.
        """
        self.encode(df, what)

    def encode(self, df: pd.DataFrame, what: str = "data") -> np.ndarray:
        """``df`` -> float64 array ``(n, width)``: values or level indices, NaN where missing.

        Columns not in the schema (left-out ones included) are ignored.
        """
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
        absent = [c.name for c in self.columns if c.name not in df.columns]
        if absent:
            raise DataError(f"{what}: column '{absent[0]}' is missing (the schema has "
                            f"{', '.join(self.names)})")
        out = np.empty((len(df), self.width), dtype=np.float64)
        for j, col in enumerate(self.columns):
            out[:, j] = _encode_column(df[col.name], col, what)
        return out

    def fill(self, df: pd.DataFrame, array) -> pd.DataFrame:
        """``df`` with the missing cells of this schema's columns taken from an encoded array
        ``(len(df), width)`` (:meth:`decode`'s values); every other cell, and every other column,
        is ``df``'s own. A count column that held floats only because of missing cells comes
        back as integers."""
        values = self.decode(array)
        out = df.copy()
        for col in self.columns:
            miss = df[col.name].isna().to_numpy()
            if not miss.any():
                continue
            s = df[col.name].astype(object).where(~miss, values[col.name].astype(object))
            if col.kind == "count" or col.dtype.lower().startswith(("int", "uint")):
                s = s.astype("int64")
            elif col.kind in NUMERIC:
                s = s.astype(np.float64 if col.dtype in ("float64", "Float64") else col.dtype)
            elif pd.api.types.is_bool_dtype(df[col.name].dtype) or col.dtype in ("bool", "boolean"):
                s = s.astype(bool)
            elif isinstance(df[col.name].dtype, pd.CategoricalDtype):
                s = s.astype(df[col.name].dtype)
            out[col.name] = s
        return out

    def decode(self, array) -> pd.DataFrame:
        """An encoded ``(n, width)`` array (NumPy or torch) -> a DataFrame in the data's types.

        Numbers are rounded for integer dtypes, level indices are rounded and mapped to the
        seen levels; count columns are always integers (``int64``, or pandas' nullable
        ``Int64`` where a cell is missing, even if missing cells had made the input float);
        NaN gives a missing cell (boolean columns with missing cells come back ``boolean``).
        """
        a = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.width:
            raise DataError(f"cannot decode an array of shape {a.shape}: the schema needs "
                            f"(rows, {self.width})")
        return pd.DataFrame({c.name: _decode_column(a[:, j], c) for j, c in enumerate(self.columns)})


# ---- inference ----------------------------------------------------------------------------

def infer_schema(df: pd.DataFrame, overrides: Iterable[str] = (), what: str = "data") -> Schema:
    """A :class:`Schema` for ``df``: a type and a one-line reason for each column.

    Rules, in order: all missing or a single value -> left out; an ordered pandas
    ``category`` -> ordinal in its declared order (seen levels only); datetime dtypes or text that
    looks like dates -> DataError (drop or convert the column); booleans or any two values ->
    binary; text (or pandas ``category``) with every value distinct, or with more than 20
    levels and more levels than half its cells, -> left out as ID-like; other text -> categorical; integers that are a run of distinct consecutive numbers (a row
    number) -> left out; non-negative integers with median <= 1000 -> count; integers with
    negative values and at most 10 levels -> categorical; other numbers > 0 with sample
    skewness > 1 -> positive; other numbers -> continuous. Numbers that are all whole but were
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
    if integral:
        if len(uniq) == len(x) and uniq[-1] - uniq[0] == len(x) - 1:
            return f"integers {span}, each once -> row number (ID-like)"
        if uniq[0] >= 0 and np.median(x) <= COUNT_MEDIAN_MAX:
            return _numeric(name, "count", f"integers {span}, {len(uniq)} levels{miss} -> count",
                            dtype, x)
        if uniq[0] < 0 and len(uniq) <= MAX_INT_LEVELS:
            levels = tuple(_scalar(v, dtype) for v in uniq)
            return Column(name, "categorical", f"integers {span}, {len(uniq)} levels{miss} -> "
                          "categorical", dtype, levels)
    what = "integers" if integral else "numbers"
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


# ---- encoding one column ------------------------------------------------------------------

def _encode_column(s: pd.Series, col: Column, what: str) -> np.ndarray:
    miss = s.isna().to_numpy()
    out = np.full(len(s), np.nan)
    if col.kind in LEVELLED:
        codes = {_key(v): i for i, v in enumerate(col.levels)}
        inverse, uniq = pd.factorize(s.astype(object), use_na_sentinel=True)  # a loop over levels only
        table = np.array([codes.get(_key(v), -1) for v in uniq] + [-1], dtype=np.int64)
        found = table[inverse]  # the sentinel -1 indexes the trailing -1
        unknown = (found < 0) & ~miss
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise DataError(f"{what}: column '{col.name}', row {i + 1}: unknown category "
                            f"{_plain(s.iloc[i])!r} (seen: {_show(col.levels)})")
        out[~miss] = found[~miss]
        return out
    if pd.api.types.is_bool_dtype(s):
        i = int(np.flatnonzero(~miss)[0])
        raise DataError(f"{what}: column '{col.name}', row {i + 1}: {_plain(s.iloc[i])!r} is not "
                        f"a number (the column is {col.kind})")
    if not pd.api.types.is_numeric_dtype(s):  # text or objects: numbers written as text pass
        num = pd.to_numeric(s.astype(object).where(~s.isna(), np.nan), errors="coerce")
        text = num.isna().to_numpy() & ~miss
        text |= ~miss & s.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        if text.any():
            i = int(np.flatnonzero(text)[0])
            raise DataError(f"{what}: column '{col.name}', row {i + 1}: {_plain(s.iloc[i])!r} is "
                            f"not a number (the column is {col.kind})")
        s = num
    x = s.to_numpy(dtype=np.float64, na_value=np.nan)
    ok = ~miss
    tests = [(~np.isfinite(x), "is not a finite number")]
    if col.kind == "count":
        tests.append(((x < 0) | (x != np.round(x)), "is not a count (an integer >= 0)"))
    if col.kind == "positive":
        tests.append((x <= 0, "is not positive (the column is positive)"))
    for bad, why in tests:
        bad &= ok
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{what}: column '{col.name}', row {i + 1}: {_num(x[i])} {why}")
    out[ok] = x[ok]
    return out


def _decode_column(a: np.ndarray, col: Column) -> pd.Series:
    miss = np.isnan(a)
    if col.kind in LEVELLED:
        codes = np.rint(np.where(miss, 0, a)).astype(np.int64)
        if (codes < 0).any() or (codes >= len(col.levels)).any():
            raise DataError(f"cannot decode column '{col.name}': level indices must lie in "
                            f"0..{len(col.levels) - 1}")
        vals = np.empty(len(a), dtype=object)
        vals[:] = [col.levels[c] for c in codes]
        vals[miss] = np.nan
        if col.dtype == "category":
            return pd.Series(pd.Categorical(vals, categories=list(col.levels),
                                            ordered=col.kind == "ordinal"))
        return _cast(pd.Series(vals, dtype=object), col.dtype, miss.any())
    if col.kind == "count":  # integers, even where missing cells made pandas use floats
        return _cast(pd.Series(np.rint(a)), "int64", miss.any())
    return _cast(pd.Series(a), col.dtype, miss.any())


def _cast(s: pd.Series, dtype: str, missing: bool) -> pd.Series:
    if dtype in ("bool", "boolean"):
        return s.astype("boolean" if missing or dtype == "boolean" else "bool")
    if dtype.lower().startswith(("int", "uint")):
        if s.dtype == object:
            s = s.astype("Float64")
        s = s.round() if s.dtype != object else s
        nullable = dtype if dtype[0] in "IU" else ("U" + dtype[1:].capitalize() if dtype[0] == "u"
                                                   else dtype.capitalize())
        return s.astype(nullable if missing else dtype)
    if dtype == "category":
        return s.astype("category")
    return s.astype(dtype)


# ---- readers ------------------------------------------------------------------------------

def read_table(path) -> pd.DataFrame:
    """A CSV file with a header row or a Parquet file -> DataFrame; DataError for a bad file.

    CSV: pandas infers numbers; only empty cells are missing (text such as ``NA`` or ``none``
    stays text, since it may be a category).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return _read_csv(p)
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.lib

            df = pd.read_parquet(p, engine="pyarrow")
        except (pyarrow.lib.ArrowException, OSError, ValueError) as e:
            raise DataError(f"{p}: not a readable Parquet file ({_first_line(e)})") from None
        return _nonempty(df, p)
    raise DataError(f"{p}: a table must be a .csv (with a header row) or a .parquet file")


def write_table(df: pd.DataFrame, path) -> Path:
    """Write ``df`` atomically as ``.csv`` (a header row, empty cells where missing) or
    ``.parquet`` (pyarrow, dtypes kept); DataError for another suffix."""
    from vaekit.io.files import atomic_write_bytes

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        data = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    elif suffix in (".parquet", ".pq"):
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, engine="pyarrow", index=False)
        data = buf.getvalue()
    else:
        raise DataError(f"{p}: a table is written as .csv or .parquet")
    atomic_write_bytes(p, data)
    return p


def _read_csv(p: Path) -> pd.DataFrame:
    try:
        with open(p, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text; save the CSV as UTF-8") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{p}: the file is empty or has no header row")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"{p}: column name '{dup}' appears twice in the header; rename one")
    if any(not h.strip() for h in header):
        raise DataError(f"{p}: column {header.index(next(h for h in header if not h.strip())) + 1} "
                        "of the header has no name")
    try:
        df = pd.read_csv(p, keep_default_na=False, na_values=[""], skipinitialspace=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{p}: rows with a different number of cells than the header "
                        f"({_first_line(e)})") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{p}: not a readable CSV table ({_first_line(e)})") from None
    return _nonempty(df, p)


def _nonempty(df: pd.DataFrame, p: Path) -> pd.DataFrame:
    if len(df) == 0:
        raise DataError(f"{p}: the table has a header but no rows")
    df.columns = [str(c) for c in df.columns]
    return df


# ---- small helpers ------------------------------------------------------------------------

def _date_error(name: str, what: str, held: str) -> DataError:
    return DataError(f"{what}: column '{name}' holds dates ({held}); drop it, or convert it to "
                     "numbers (e.g. days since a start date, or year and month columns)")


def _keys(obj, want: set, where: str) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object")
    extra, absent = set(obj) - want, want - set(obj)
    if extra:
        raise DataError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    if absent:
        raise DataError(f"{where}: missing key(s) {', '.join(sorted(absent))}")


def _plain(v):
    """A NumPy scalar as the Python scalar JSON can hold."""
    return v.item() if isinstance(v, np.generic) else v


def _key(v):
    """A hashable key for a level that keeps True apart from 1 and 'a' apart from b'a'."""
    v = _plain(v)
    return (type(v) is bool, v)


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


def _num(v: float) -> str:
    return f"{v:g}"


def _show(levels) -> str:
    shown = ", ".join(str(v) for v in list(levels)[:6])
    return shown + (", ..." if len(levels) > 6 else "")


def _missing_note(s: pd.Series) -> str:
    n = int(s.isna().sum())
    return f", {n} missing" if n else ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _unknown_column(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown column '{name}'{hint} (columns: {', '.join(names)})"
