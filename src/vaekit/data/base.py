"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from vaekit.errors import DataError


@dataclass
class Dataset:
    """Train and test arrays held as float32 tensors, one example per row.

    Attributes
    ----------
    name : str
        Built-in name or the path the data came from.
    x_train, x_test : torch.Tensor
        ``(n, *shape)`` float32; ``shape`` is ``(d,)`` for vectors, ``(C, H, W)`` for images.
    y_train, y_test : torch.Tensor or None
        ``(n,)`` int64 labels where the source has them.
    binarize : bool
        Re-binarize training batches by Bernoulli sampling (dynamic binarization).
    f_train, f_test : torch.Tensor or None
        ``(n, F)`` int64 values of known generative factors (the built-in ``shapes``; an
        ``.npz`` with ``f_train``/``f_test``), row for row with ``x_train``/``x_test``; None where
        the data has none. :mod:`vaekit.evaluation.disentangle` scores codes against them.
    factor_names : tuple of str or None
        The ``F`` factors' names, with ``f_train``.
    schema : vaekit.data.schema.Schema or None
        For a table read with its column schema (:func:`vaekit.data.files.load_table`): the
        schema that encoded ``x_train`` and ``x_test`` (values or level indices, NaN where a
        cell is missing); None for arrays of numbers, which are never NaN.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    binarize: bool = False
    f_train: torch.Tensor | None = None
    f_test: torch.Tensor | None = None
    factor_names: tuple[str, ...] | None = None
    schema: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @classmethod
    def from_arrays(
        cls,
        name: str,
        x_train: np.ndarray,
        x_test: np.ndarray,
        y_train: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        binarize: bool = False,
        f_train: np.ndarray | None = None,
        f_test: np.ndarray | None = None,
        factor_names: Sequence[str] | None = None,
    ) -> "Dataset":
        """Build from NumPy arrays (already scaled to float), checking what every model needs
        (factors: :func:`check_factors`, both parts or neither)."""
        xs = [check_features(x_train, f"{name} (training part)")]
        xs.append(check_features(x_test, f"{name} (test part)") if len(x_test) else
                  np.zeros((0, *xs[0].shape[1:]), np.float32))
        if xs[0].shape[1:] != xs[1].shape[1:]:
            raise DataError(f"{name}: training examples have shape {xs[0].shape[1:]} but test "
                            f"examples have shape {xs[1].shape[1:]}; both parts must match")
        ys = [None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64).reshape(-1))
              for y in (y_train, y_test)]
        fs, names = [None, None], None
        if f_train is not None or f_test is not None:
            if f_train is None or (f_test is None and len(xs[1])):
                raise DataError(f"{name}: factors are given for one part only; give them for the "
                                "training and the test part (f_train and f_test)")
            fs = [check_factors(f_train, len(xs[0]), f"{name} (training factors)")]
            fs.append(check_factors(f_test, len(xs[1]), f"{name} (test factors)")
                      if f_test is not None else np.zeros((0, fs[0].shape[1]), np.int64))
            if fs[0].shape[1] != fs[1].shape[1]:
                raise DataError(f"{name}: {fs[0].shape[1]} training factors but {fs[1].shape[1]} "
                                "test factors; both parts need the same factor columns")
            names = factor_names_for(factor_names, fs[0].shape[1], name)
            fs = [torch.from_numpy(f) for f in fs]
        return cls(name, torch.from_numpy(xs[0]), torch.from_numpy(xs[1]), ys[0], ys[1], binarize,
                   fs[0], fs[1], names)


def check_factors(f: np.ndarray, n: int, what: str) -> np.ndarray:
    """Factor values as ``(n, F)`` int64: whole numbers, one row per example (a vector is one
    factor)."""
    f = np.asarray(f)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or len(f) != n or f.shape[1] == 0:
        raise DataError(f"{what}: expected one row of factor values per example, ({n}, F), got "
                        f"shape {f.shape}")
    whole = (np.issubdtype(f.dtype, np.floating) and bool(np.isfinite(f).all())
             and bool(np.all(f == np.round(f))))
    if not (np.issubdtype(f.dtype, np.integer) or f.dtype == bool or whole):
        raise DataError(f"{what}: factor values must be whole numbers (the index of each "
                        f"factor's value), got dtype {f.dtype}")
    return f.astype(np.int64)


def factor_names_for(names: Sequence[str] | None, n_factors: int, what: str) -> tuple[str, ...]:
    """The given names as strings (one per factor column), else ``factor_0``, ``factor_1``, ..."""
    if names is None:
        return tuple(f"factor_{k}" for k in range(n_factors))
    names = tuple(str(v) for v in np.asarray(names).reshape(-1))
    if len(names) != n_factors:
        raise DataError(f"{what}: {len(names)} factor names for {n_factors} factor columns")
    return names


class Part(NamedTuple):
    """Rows of one part of the data, in file order: ``x`` ``(n, *shape)`` float32, labels ``y``
    ``(n,)`` int64 or None, factor values ``factors`` ``(n, F)`` int64 or None and their names."""

    x: np.ndarray
    y: np.ndarray | None
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] | None = None


FLOAT32_EXACT_INT = 2 ** 24  # every integer up to this is exact in float32; beyond, they round
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_features(x: np.ndarray, what: str) -> np.ndarray:
    """Return ``x`` as C-contiguous float32 after checking it is non-empty, real, finite, and
    representable in float32 (integers exactly, floats without overflowing to infinity)."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.complexfloating):
        # float32 conversion would silently drop the imaginary part
        raise DataError(f"{what}: values are complex (dtype {x.dtype}); vaekit models real "
                        "numbers: give the real and imaginary parts as separate features "
                        "(e.g. numpy.concatenate([x.real, x.imag], axis=1))")
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{what}: values must be numbers, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{what}: expected one example per row (at least 2 dimensions), "
                        f"got shape {x.shape}")
    if x.shape[0] == 0 or x[0].size == 0:
        raise DataError(f"{what}: no data (shape {x.shape})")
    if x.dtype == np.uint8:
        return np.divide(x, np.float32(255), dtype=np.float32)  # 8-bit pixels -> [0, 1]
    if x.dtype == bool:
        return np.ascontiguousarray(x, dtype=np.float32)
    if np.issubdtype(x.dtype, np.integer):
        # Checked in the integer type itself: |int64 min| does not fit, so compare both ends.
        big = (x > FLOAT32_EXACT_INT) | (x < -FLOAT32_EXACT_INT) if x.dtype.itemsize >= 4 else None
        if big is not None and big.any():
            row = _first_row(big)
            value = x.reshape(len(x), -1)[row][big.reshape(len(x), -1)[row]][0]
            raise DataError(f"{what}: integer values beyond +-2**24 = {FLOAT32_EXACT_INT:,} (first "
                            f"in row {row}: {value}) "
                            "cannot be represented exactly in float32, and values this large make "
                            "the training loss overflow; rescale them first (divide by a power of "
                            "ten, or standardize each feature)")
        return np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} values are NaN or infinite (first in row "
                        f"{_first_row(bad)}); remove or impute them first")
    if x.dtype.itemsize > 4:
        # float64 values above float32's range would become infinite in the conversion
        huge = np.abs(x) > FLOAT32_MAX
        if huge.any():
            raise DataError(f"{what}: values beyond float32's range (|x| > {FLOAT32_MAX:.3g}, first "
                            f"in row {_first_row(huge)}) would become infinite; rescale them first "
                            "(divide by a power of ten, or standardize each feature)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _first_row(mask: np.ndarray) -> int:
    """The first row (example) of a boolean mask shaped like the data with a True in it."""
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def as_labels(y, n: int, unlabelled: bool = False) -> np.ndarray:
    """Integer class labels ``(n,)`` int64, >= 0 (or -1 for an unlabelled row when
    ``unlabelled``), or a DataError."""
    if y is None:
        what = "a semi-supervised VAE needs labels, -1 for" if unlabelled else "a conditional VAE needs"
        raise DataError(f"{what} labels: call fit(X, y)")
    arr = np.asarray(y).reshape(-1)
    if len(arr) != n:
        raise DataError(f"y has {len(arr)} labels for {n} rows")
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise DataError(f"labels must be integers 0, 1, ..., got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and arr.min() < -int(unlabelled):
        raise DataError(f"labels must be >= 0{' or -1 (unlabelled)' if unlabelled else ''}, got "
                        f"{arr.min()}")
    return arr
