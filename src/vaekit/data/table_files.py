"""Reading and writing tables: a CSV with a header (empty cells are missing) or a Parquet file
into a pandas DataFrame, each bad file one DataError line; and an atomic CSV/Parquet write."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from ..errors import DataError

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
