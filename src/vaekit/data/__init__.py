"""Floor 2, data: built-in datasets and the user's own files, as in-memory tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaekit.errors import ConfigError, DataError
from vaekit.registry import unknown_name_message
from vaekit.data.base import Dataset, Part
from vaekit.data.builtin import DATASETS
from .files import is_table, load_part as file_part, load_path, load_table, split_indices, table_rows
from .stream import open_folder, open_npy


def load_data(spec: str, test_fraction: float = 0.1, log=print, stream: bool = False,
              table: bool = False, schema=None, columns: str = "") -> Dataset:
    """A built-in dataset by name, or a file/folder path (.npy, .npz, .csv, images).

    Parameters
    ----------
    spec : str
        Name from ``vaekit datasets`` or a path.
    test_fraction : float
        Fraction held out as the test split when the source has none (deterministic).
    stream : bool
        Read the data batch by batch instead of loading it, for data larger than memory
        (:mod:`vaekit.data.stream`): a ``.npy`` memory-mapped, an image folder decoded by
        DataLoader workers.
    table : bool
        Read a table file (a .csv with a header row, a .parquet file) with a column schema
        (:func:`~.files.load_table`): inferred, with the ``columns`` overrides (``NAME=TYPE``,
        comma-separated), or the given ``schema`` (a trained run's), which implies ``table``.
    """
    if table or schema is not None:
        if stream:
            raise ConfigError("--stream reads .npy files and image folders, not tables")
        if spec in DATASETS or not Path(spec).exists():
            raise DataError(f"{spec}: the table likelihood reads a .csv file with a header row "
                            "or a .parquet file")
        return load_table(Path(spec), test_fraction, schema, columns)
    if stream:
        return load_streamed(spec, test_fraction)
    if spec in DATASETS:
        return DATASETS[spec].load(log=log)
    if Path(spec).exists():
        return load_path(Path(spec), test_fraction)
    raise DataError(unknown_name_message("dataset", spec, DATASETS.names()).replace(
        "unknown dataset", "no dataset or file named") + "; give a built-in name or an existing path")


def load_streamed(spec: str, test_fraction: float) -> Dataset:
    labels = None
    if Path(spec).is_dir():
        src, labels = open_folder(Path(spec))
    elif spec.endswith(".npy") and Path(spec).is_file():
        src = open_npy(Path(spec))
    else:
        raise ConfigError(f"--stream reads an existing .npy file or streams an image folder; "
                          f"'{spec}' is neither")
    train, test = split_indices(len(src), test_fraction, spec)
    y = [None, None] if labels is None else [torch.from_numpy(labels[i]) for i in (train, test)]
    return Dataset(spec, src.subset(train), src.subset(test), *y)


def load_rows(spec: str, split: str = "all", log=print) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of a dataset or file in input order, with labels where there are any.

    ``split`` picks the part of a source that has train and test parts: ``all`` (train then
    test), ``train`` or ``test``; a plain file (.npy, .csv, images) is read whole.
    """
    return load_part(spec, split, log)[:2]


def load_part(spec: str, split: str = "all", log=print, schema=None) -> Part:
    """:func:`load_rows` with the rows' known factor values where the data has them (the
    built-in ``shapes``; an ``.npz`` with ``f_train``/``f_test``): a :class:`~.base.Part`
    ``(x, y, factors, factor_names)``, factors ``(n, F)`` int64 or None. With a column
    ``schema``, ``spec`` is a table file and ``x`` its rows encoded by the schema (every row:
    a table has no split of its own)."""
    if schema is not None:
        if spec in DATASETS or not Path(spec).exists():
            raise DataError(f"{spec}: this run models a table: give a .csv file with a header row "
                            "or a .parquet file with its columns")
        return Part(table_rows(Path(spec), schema), None)
    if spec in DATASETS:
        ds = DATASETS[spec].load(log=log)
        parts = {"train": [(ds.x_train, ds.y_train, ds.f_train)],
                 "test": [(ds.x_test, ds.y_test, ds.f_test)]}
        chosen = parts.get(split, parts["train"] + parts["test"])
        x = np.concatenate([p[0].numpy() for p in chosen])
        y, f = (None if any(p[i] is None for p in chosen) else
                np.concatenate([p[i].numpy() for p in chosen]) for i in (1, 2))
        return Part(x, y, f, ds.factor_names if f is not None else None)
    if Path(spec).exists():
        return file_part(Path(spec), split)
    load_data(spec)  # raises the unknown-dataset error
    raise AssertionError("unreachable")


__all__ = ["Dataset", "DATASETS", "Part", "is_table", "load_data", "load_part", "load_rows",
           "load_table"]
