"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError


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
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    binarize: bool = False

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
    ) -> "Dataset":
        """Build from NumPy arrays (already scaled to float), checking what every model needs."""
        xs = [check_features(x_train, f"{name} (training part)")]
        xs.append(check_features(x_test, f"{name} (test part)") if len(x_test) else
                  np.zeros((0, *xs[0].shape[1:]), np.float32))
        if xs[0].shape[1:] != xs[1].shape[1:]:
            raise DataError(f"{name}: training examples have shape {xs[0].shape[1:]} but test "
                            f"examples have shape {xs[1].shape[1:]}; both parts must match")
        ys = [None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64).reshape(-1))
              for y in (y_train, y_test)]
        return cls(name, torch.from_numpy(xs[0]), torch.from_numpy(xs[1]), ys[0], ys[1], binarize)


def check_features(x: np.ndarray, what: str) -> np.ndarray:
    """Return ``x`` as C-contiguous float32 after checking it is non-empty and finite."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{what}: values must be numbers, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{what}: expected one example per row (at least 2 dimensions), "
                        f"got shape {x.shape}")
    if x.shape[0] == 0 or x[0].size == 0:
        raise DataError(f"{what}: no data (shape {x.shape})")
    if x.dtype == np.uint8:
        return np.divide(x, np.float32(255), dtype=np.float32)  # 8-bit pixels -> [0, 1]
    exact_ints = np.issubdtype(x.dtype, np.integer) or x.dtype == bool  # always finite
    x = np.ascontiguousarray(x, dtype=np.float32)
    if exact_ints:
        return x
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        raise DataError(f"{what}: {int(bad.sum())} values are NaN or infinite (first in row {row}); "
                        "remove or impute them first")
    return x
