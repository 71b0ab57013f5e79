"""A column schema for tables of mixed types with missing cells.

:func:`vaekit.data.inference.infer_schema` gives each column of a pandas DataFrame a type with a one-line reason
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

import difflib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

KINDS = ("continuous", "positive", "count", "binary", "categorical", "ordinal")
LEVELLED = ("binary", "categorical", "ordinal")  # encoded as a level index
NUMERIC = ("continuous", "positive", "count")  # encoded as the value itself
SCHEMA_VERSION = 1
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


# ---- encoding one column ------------------------------------------------------------------

def _encode_column(s: pd.Series, col: Column, what: str) -> np.ndarray:
    miss = s.isna().to_numpy()
    out = np.full(len(s), np.nan)
    if col.kind in LEVELLED:
        numbers = all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                      for v in col.levels)
        if numbers and not pd.api.types.is_numeric_dtype(s):  # levels 1..7 read as text: "4"
            num = pd.to_numeric(s.astype(object).where(~s.isna(), np.nan), errors="coerce")
            text = num.isna().to_numpy() & ~miss
            if text.any():
                i = int(np.flatnonzero(text)[0])
                raise DataError(f"{what}: column '{col.name}', row {i + 1}: {_plain(s.iloc[i])!r} "
                                f"is not a number (the column is {col.kind}, levels "
                                f"{_show(col.levels)})")
            s = num
        codes = {_key(v): i for i, v in enumerate(col.levels)}
        inverse, uniq = pd.factorize(s.astype(object), use_na_sentinel=True)  # a loop over levels only
        table = np.array([codes.get(_key(v), -1) for v in uniq] + [-1], dtype=np.int64)
        found = table[inverse]  # the sentinel -1 indexes the trailing -1
        unknown = (found < 0) & ~miss
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            hint = (f"; if new values are expected, declare {col.name}=count (or continuous) "
                    "when training") if numbers and col.kind == "ordinal" else ""
            raise DataError(f"{what}: column '{col.name}', row {i + 1}: unknown category "
                            f"{_plain(s.iloc[i])!r} (seen: {_show(col.levels)}){hint}")
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


# ---- small helpers ------------------------------------------------------------------------


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


def _num(v: float) -> str:
    return f"{v:g}"


def _show(levels) -> str:
    shown = ", ".join(str(v) for v in list(levels)[:6])
    return shown + (", ..." if len(levels) > 6 else "")


def _unknown_column(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown column '{name}'{hint} (columns: {', '.join(names)})"
