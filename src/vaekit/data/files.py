"""Loaders for a user's own data files: ``.npy``, ``.npz``, ``.csv`` and folders of images.

There is one reader per format. Each returns the file's rows in file order, unscaled
(:class:`_Parts`); :func:`load_path` splits them into train and test parts for training,
and :func:`load_rows` hands every row back unsplit for ``vaekit embed``, which must write
one output row per input row in input order. Both scale and check the values with
:func:`~vaekit.data.base.check_features` (uint8 -> /255, finite, non-empty).
"""

from __future__ import annotations

import csv
import os
import stat
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import torch

from vaekit.errors import ConfigError, DataError
from .base import Dataset, Part, check_factors, check_features, factor_names_for
from .folders import SUPPORTED, read_folder

__all__ = ["load_path", "load_rows", "load_part", "Part", "is_table", "load_table", "table_rows"]

TABLE_SUFFIXES = (".parquet", ".pq")  # besides a .csv with a header row

_CHANNELS = (1, 3, 4)
# The split must not move when a user changes the training seed, so it has its own.
_SPLIT_SEED = 0


@dataclass
class _Parts:
    """What a reader found, unscaled, in file order."""

    x: np.ndarray                      # every row (``x_train`` for .npz)
    y: np.ndarray | None = None        # labels for ``x``, where the format has them
    x_test: np.ndarray | None = None   # only .npz files carry an explicit test part
    y_test: np.ndarray | None = None
    f: np.ndarray | None = None        # factor values for ``x`` (.npz ``f_train``)
    f_test: np.ndarray | None = None   # and for ``x_test`` (``f_test``)
    factor_names: np.ndarray | None = None


def load_path(path: str | os.PathLike, test_fraction: float = 0.1) -> Dataset:
    """Load a data file or image folder as a train/test :class:`Dataset`.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` array, a ``.npz`` archive with ``x_train`` (and optionally ``x_test``,
        ``y_train``, ``y_test``, as in Keras' ``mnist.npz``; and ``f_train``, ``f_test``,
        ``factor_names`` for data with known generative factors), a ``.csv`` of numbers with an
        optional header row, or a folder of PNG/JPEG images, either directly inside or in
        one subfolder per class (labels are the indices of the sorted subfolder names).
    test_fraction : float, default 0.1
        Fraction held out as the test part when the data has no test part of its own.
        The held-out rows are fixed (seed 0), whatever the training seed.

    Returns
    -------
    Dataset
        Named ``str(path)``; uint8 values are scaled to [0, 1], others kept as float32.
        Images are ``(n, C, H, W)``.

    Raises
    ------
    DataError
        The path is missing, of an unsupported kind, unreadable, or holds unusable data.
    ConfigError
        ``test_fraction`` is not in [0, 1).
    """
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test fraction must be at least 0 and below 1, got {test_fraction}")
    path = Path(path)
    name = str(path)
    parts = _read(path)
    # Check the whole array before splitting so that errors name rows of the file.
    what = name if parts.x_test is None else f"{name} (x_train)"
    x = check_features(parts.x, what)
    y = _labels(parts.y, len(x), what)
    f = None if parts.f is None else check_factors(parts.f, len(x), f"{name} (f_train)")
    if parts.x_test is not None:
        y_test = _labels(parts.y_test, len(parts.x_test), f"{name} (x_test)")
        return Dataset.from_arrays(name, x, parts.x_test, y, y_test, f_train=f,
                                   f_test=parts.f_test, factor_names=parts.factor_names)
    train, test = split_indices(len(x), test_fraction, name)
    part = (lambda a, i: None if a is None else a[i])
    return Dataset.from_arrays(name, x[train], x[test], part(y, train), part(y, test),
                               f_train=part(f, train), f_test=part(f, test),
                               factor_names=parts.factor_names)


def load_rows(path: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """The rows ``x`` and labels ``y`` (or None) of :func:`load_part`."""
    return load_part(path, split)[:2]


def load_part(path: str | os.PathLike, split: str = "test") -> Part:
    """Return rows of a data file in file order, unsplit, with their labels and factors if any.

    Parameters
    ----------
    path : str or path-like
        Any input :func:`load_path` accepts.
    split : {"test", "train", "all"}, default "test"
        Which part of a ``.npz`` with an ``x_test`` array to return (``"all"`` is
        ``x_train`` then ``x_test``). Ignored for other inputs, and for a ``.npz`` without
        ``x_test``: their rows are all returned.

    Returns
    -------
    Part
        ``x`` ``(n, *shape)`` float32, scaled as in :func:`load_path`; ``y`` ``(n,)`` int64
        labels or None; ``factors`` ``(n, F)`` int64 where the ``.npz`` has ``f_train`` (and
        ``f_test`` for a test part) for every part returned, else None; ``factor_names``.

    Raises
    ------
    DataError
        As for :func:`load_path`.
    ConfigError
        ``split`` is not one of the three names.
    """
    if split not in ("test", "train", "all"):
        raise ConfigError(f"split must be 'test', 'train' or 'all', got {split!r}")
    path = Path(path)
    parts = _read(path)
    pieces = [(parts.x, parts.y, parts.f, "x_train")]
    if parts.x_test is not None:
        test = (parts.x_test, parts.y_test, parts.f_test, "x_test")
        pieces = {"train": pieces, "test": [test], "all": pieces + [test]}[split]

    def what(key: str) -> str:
        return str(path) if parts.x_test is None else f"{path} ({key})"

    # Scale each part before joining them, so a uint8 part and a float part both end in [0, 1].
    xs = [check_features(x, what(key)) for x, _, _, key in pieces]
    ys = [_labels(y, len(x), what(key)) for x, (_, y, _, key) in zip(xs, pieces)]
    if len({x.shape[1:] for x in xs}) > 1:
        raise DataError(f"{path}: x_train rows have shape {xs[0].shape[1:]} but x_test rows have "
                        f"{xs[1].shape[1:]}; make them match or load one split")
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    # Labels (and factors) only when every part has them, so that they line up with the rows.
    y = None if any(v is None for v in ys) else (ys[0] if len(ys) == 1 else np.concatenate(ys))
    if any(f is None for _, _, f, _ in pieces):
        return Part(x, y)
    fs = [check_factors(f, len(x), what(key.replace("x_", "f_"))) for x, (_, _, f, key)
          in zip(xs, pieces)]
    if len({f.shape[1] for f in fs}) > 1:
        raise DataError(f"{path}: f_train has {fs[0].shape[1]} factor columns but f_test has "
                        f"{fs[1].shape[1]}; both parts need the same factors")
    return Part(x, y, np.concatenate(fs), factor_names_for(parts.factor_names, fs[0].shape[1],
                                                           str(path)))


def _read(path: Path) -> _Parts:
    """Dispatch to the reader for ``path``'s format."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or folder; {SUPPORTED}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}); check the path and its "
                        "permissions") from None
    if stat.S_ISDIR(mode):
        reader = _read_image_folder
    elif not stat.S_ISREG(mode):
        # Opening a FIFO blocks until someone writes to it: refuse before opening anything.
        raise DataError(f"{path}: not a regular file or folder (a FIFO, socket or device); "
                        f"{SUPPORTED}")
    else:
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"{path}: unsupported file type '{path.suffix}'; {SUPPORTED}")
    try:
        return reader(path)
    except OSError as e:  # permissions, a folder in place of a file, I/O errors
        raise DataError(f"{path}: cannot read it ({e.strerror or e}); check the path and its "
                        "permissions") from e


def _read_npy(path: Path) -> _Parts:
    with open(path, "rb") as f:
        # np.load calls any non-.npy file "pickled data"; say what is really wrong.
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a NumPy .npy file (no .npy header); "
                            "save the array with numpy.save, or give the file its real extension")
        f.seek(0)
        try:
            x = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            if "allow_pickle" in str(e):
                raise _pickled(path) from e
            raise DataError(f"{path}: cannot read this .npy file ({e}); it may be truncated, "
                            "so save it again with numpy.save") from e
    return _Parts(_as_examples(x, str(path)))


def _read_npz(path: Path) -> _Parts:
    # Open the file ourselves: np.load leaves its own handle open when the zip is corrupt.
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise DataError(f"{path}: this is a single .npy array, not an .npz archive; "
                            "rename it .npy")
        if not magic.startswith(b"PK"):
            raise DataError(f"{path}: not an .npz archive; save arrays with "
                            "numpy.savez(path, x_train=..., x_test=...)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as z:
                if "x_train" not in z.files:
                    found = ", ".join(z.files) or "none"
                    raise DataError(f"{path}: no 'x_train' array (found: {found}); save with "
                                    "numpy.savez(path, x_train=..., x_test=...)")
                arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test", "f_train",
                                            "f_test", "factor_names") if k in z.files}
        except DataError:
            raise  # a ValueError too, but already the right message
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise _pickled(path) from e
            raise _corrupt_npz(path, e) from e
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise _corrupt_npz(path, e) from e
    for k, a in arrays.items():  # a member that is no .npy array comes back as raw bytes
        if not isinstance(a, np.ndarray):
            raise DataError(f"{path}: its member {k} is not a NumPy array (a .npy file inside the "
                            "archive); save with numpy.savez(path, x_train=..., x_test=...)")
    x_test = arrays.get("x_test")
    names = arrays.get("factor_names")
    if x_test is None and "f_test" in arrays:
        raise DataError(f"{path}: f_test without x_test; give the test rows' factors with x_test, "
                        "or leave f_test out (f_train is split with x_train)")
    if names is not None and names.dtype.kind != "U":
        raise DataError(f"{path}: factor_names must be an array of strings, got dtype {names.dtype}")
    if names is not None and "f_train" not in arrays:
        raise DataError(f"{path}: factor_names without f_train; give the factor values as well")
    return _Parts(_as_examples(arrays["x_train"], f"{path} (x_train)"), arrays.get("y_train"),
                  None if x_test is None else _as_examples(x_test, f"{path} (x_test)"),
                  None if x_test is None else arrays.get("y_test"), arrays.get("f_train"),
                  None if x_test is None else arrays.get("f_test"), names)


def _read_csv(path: Path) -> _Parts:
    try:
        return _parse_csv(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); "
                        "save it as a UTF-8 CSV of numbers") from e


def _parse_csv(path: Path) -> _Parts:
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next(csv.reader(f), [])
    header = not _all_numbers(first)
    # numpy's C parser is fast on large files; its messages count rows inconsistently
    # (blank lines, header), so on failure _csv_problem finds the file line itself.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            x = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32, comments=None,
                           quotechar='"', encoding="utf-8-sig", skiprows=int(header))
    except ValueError as e:
        raise DataError(f"{path}: {_csv_problem(path, int(header)) or e}; "
                        "every row must have the same number of numeric cells") from e
    if len(x) == 0:
        what = ("has a header row but no data rows" if any(c.strip() for c in first)
                else "is empty")
        raise DataError(f"{path}: {what}; add one row of comma-separated numbers per example")
    return _Parts(x)


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return bool(cells)


def _csv_problem(path: Path, skip: int) -> str | None:
    """Describe the first ragged row or non-numeric cell, by 1-based file line."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        width = first_line = None
        for row in reader:
            if reader.line_num <= skip or not row:
                continue
            if width is None:
                width, first_line = len(row), reader.line_num
            elif len(row) != width:
                return (f"line {reader.line_num} has {len(row)} columns but line {first_line} "
                        f"has {width}")
            for col, cell in enumerate(row, 1):
                try:
                    float(cell)
                except ValueError:
                    return f"line {reader.line_num}, column {col}: {cell!r} is not a number"
    return None


def _read_image_folder(folder: Path) -> _Parts:
    return _Parts(*read_folder(folder))


def _as_examples(x: np.ndarray, what: str) -> np.ndarray:
    """Rows as vectors ``(n, d)`` or images ``(n, C, H, W)``."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:  # (n, H, W): one grey channel
        return x[:, None]
    # Checked first, so a (n, 3, 4, 4)-like shape that fits both layouts stays as it is.
    if x.ndim == 4 and x.shape[1] in _CHANNELS:  # already PyTorch's (n, C, H, W)
        return x
    if x.ndim == 4 and x.shape[3] in _CHANNELS:  # (n, H, W, C) as PIL/TensorFlow write it
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{what}: cannot use an array of shape {x.shape}; expected (n, d) vectors, "
                    "(n, H, W) grey images, or (n, C, H, W) / (n, H, W, C) images, C in 1, 3, 4")


def _labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    """Labels as ``(n,)`` int64, checked to be whole numbers, one per row."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim > 1 and y.size == len(y):  # (n, 1) columns are common
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what}: {n} rows but labels of shape {y.shape}; give one label per row")
    whole_floats = (np.issubdtype(y.dtype, np.floating) and bool(np.all(np.isfinite(y)))
                    and bool(np.all(y == np.round(y))))
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool or whole_floats):
        raise DataError(f"{what}: labels must be whole numbers, got dtype {y.dtype}; "
                        "store class indices 0, 1, 2, ...")
    return y.astype(np.int64)


def split_indices(n: int, test_fraction: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train/test row indices, each in increasing order."""
    n_test = round(n * test_fraction)
    if n - n_test < 1:
        raise DataError(f"{name}: {n} examples leave no training examples with test fraction "
                        f"{test_fraction}; use more data or a smaller test fraction")
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _pickled(path: Path) -> DataError:
    return DataError(f"{path}: holds Python objects (pickled data), which vaekit never loads "
                     "because unpickling can run code; save a plain numeric array instead")


def _corrupt_npz(path: Path, e: Exception) -> DataError:
    return DataError(f"{path}: cannot read this .npz archive ({e}); it may be truncated or "
                     "corrupt, so save it again with numpy.savez")


def _read_parquet(path: Path) -> _Parts:
    raise DataError(f"{path}: a Parquet file is a table of typed columns: leave --likelihood out "
                    "(or give --likelihood table) to model it with its column schema")


_READERS: dict[str, Callable[[Path], _Parts]] = {
    ".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv, ".parquet": _read_parquet,
    ".pq": _read_parquet}


# -- tables with a column schema (vaekit.data.schema) --------------------------------------------
def is_table(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as a table of typed columns: a Parquet file, or a CSV whose first
    row is not all numbers (a header row). A CSV of numbers without a header is an array."""
    p = Path(path)
    if not p.is_file():
        return False
    suffix = p.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return True
    if suffix != ".csv":
        return False
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            first = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # the array reader gives the one-line error
    return bool(first) and not _all_numbers(first)


def _table_frame(path: Path):
    from .table_files import read_table  # here: pandas only for tables

    if not is_table(path):
        raise DataError(f"{path}: not a table; the table likelihood reads a .csv file with a "
                        "header row or a .parquet file")
    return read_table(path)


def load_table(path: str | os.PathLike, test_fraction: float = 0.1, schema=None,
               columns: str | Sequence[str] = ()) -> Dataset:
    """A table as a train/test :class:`Dataset` of encoded rows, with its column schema.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` with a header row or a ``.parquet`` file (:func:`vaekit.data.table_files.read_table`).
    test_fraction : float
        As :func:`load_path`: the same fixed rows are held out.
    schema : Schema, optional
        Encode with this schema (a trained run's); by default one is inferred from every row
        of the file (types and levels: a level seen only in the test rows is still known).
    columns : str or sequence of str
        ``NAME=TYPE`` overrides for the inference (a string: comma-separated).

    Returns
    -------
    Dataset
        ``x_train``, ``x_test`` ``(n, width)`` float32 in the schema's encoding (values, level
        indices, NaN where missing) and ``schema``.
    """
    from .inference import infer_schema

    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test fraction must be at least 0 and below 1, got {test_fraction}")
    p = Path(path)
    df = _table_frame(p)
    if schema is None:
        overrides = [c for c in (columns.split(",") if isinstance(columns, str) else columns)
                     if c.strip()]
        schema = infer_schema(df, overrides, what=str(p))
    elif columns:
        raise ConfigError("column overrides apply when the schema is inferred, not to a stored one")
    x = torch.from_numpy(schema.encode(df, str(p)).astype(np.float32))  # NaN stays NaN
    train, test = (torch.from_numpy(i) for i in split_indices(len(x), test_fraction, str(p)))
    return Dataset(str(p), x[train], x[test], schema=schema)


def table_rows(path: str | os.PathLike, schema) -> np.ndarray:
    """Every row of a table file in file order, encoded by ``schema`` ``(n, width)`` float32;
    DataError naming the column and row of a cell that does not fit it."""
    p = Path(path)
    return schema.encode(_table_frame(p), str(p)).astype(np.float32)
