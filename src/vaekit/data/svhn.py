"""SVHN cropped digits from the canonical ``train_32x32.mat`` and ``test_32x32.mat``.

Netzer et al. 2011, "Reading Digits in Natural Images with Unsupervised Feature Learning".
Each file is MATLAB v5 with ``X`` of shape ``(32, 32, 3, n)`` uint8 (row, column, channel,
example) and ``y`` of shape ``(n, 1)`` holding 1..10, where 10 is the digit 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from vaekit.errors import DataError
from .fetch import fetch_files

BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
# Published MD5s of the files (as listed by torchvision's SVHN dataset).
FILES = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),  # 73,257 digits
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),  # 26,032 digits
}


def load_svhn(log: Callable[[str], object] = print) -> dict[str, np.ndarray]:
    """``x_train``/``x_test`` as ``(n, 3, 32, 32)`` uint8 and ``y_train``/``y_test`` as 0..9.

    Each source file is downloaded once into ``$VAEKIT_DATA/svhn/`` and checked against its
    published MD5 before it is read.
    """
    paths = fetch_files("svhn", [(name, BASE_URL + name, md5) for name, md5 in FILES.values()], log)
    out = {}
    for split, path in zip(FILES, paths):
        out[f"x_{split}"], out[f"y_{split}"] = read_mat(path)
    return out


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` uint8 and labels ``(n,)`` int64 in 0..9 from one SVHN file."""
    from scipy.io import loadmat  # only here: scipy takes a while to import

    try:
        m = loadmat(path, variable_names=("X", "y"))
    except Exception as e:  # scipy raises assorted errors on a file that is not MATLAB v5
        raise DataError(f"{path} is not a readable SVHN .mat file ({e}); delete it and run "
                        "again") from None
    x, y = m.get("X"), m.get("y")
    if (x is None or y is None or x.dtype != np.uint8 or x.ndim != 4
            or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]):
        raise DataError(f"{path} does not hold SVHN's X (32, 32, 3, n) uint8 and y (n, 1); "
                        "delete it and run again")
    y = y.reshape(-1).astype(np.int64)
    if y.min() < 1 or y.max() > 10:
        raise DataError(f"{path}: labels must be 1..10, found {y.min()}..{y.max()}")
    # (h, w, c, n) -> (n, c, h, w); copied to C order so that batches are contiguous slices.
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y % 10  # label 10 is the digit 0
