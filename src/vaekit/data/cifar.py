"""CIFAR-10 from the canonical binary archive ``cifar-10-binary.tar.gz`` (no pickle).

Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images". The archive holds
``cifar-10-batches-bin/data_batch_{1..5}.bin`` (training) and ``test_batch.bin``; each is a
run of 3073-byte records: one label byte (0..9), then a 32x32 image as 1024 red, 1024 green
and 1024 blue bytes, each plane row by row.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from vaekit.errors import DataError
from .fetch import fetch_files

FILENAME = "cifar-10-binary.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/" + FILENAME
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR page
FOLDER = "cifar-10-batches-bin/"
TRAIN_MEMBERS = tuple(f"{FOLDER}data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = f"{FOLDER}test_batch.bin"
RECORD = 1 + 3 * 32 * 32  # label byte + channel-major image


def load_cifar10(log: Callable[[str], object] = print) -> dict[str, np.ndarray]:
    """``x_train``/``x_test`` as ``(n, 3, 32, 32)`` uint8 and ``y_train``/``y_test`` as 0..9.

    The archive is downloaded once into ``$VAEKIT_DATA/cifar10/`` and checked against its
    published MD5 before it is read.
    """
    (path,) = fetch_files("cifar10", [(FILENAME, URL, MD5)], log)
    return read_archive(path)


def read_archive(path: Path) -> dict[str, np.ndarray]:
    """Decode the six batch files straight from the archive (nothing is extracted to disk)."""
    wanted = {*TRAIN_MEMBERS, TEST_MEMBER}
    raw = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass: seeking back in a .gz stream means decompressing again
                if member.name in wanted and member.isfile():
                    raw[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable .tar.gz ({e}); delete it and run again") from None
    missing = sorted(wanted - set(raw))
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it is not the CIFAR-10 binary "
                        "archive: delete it and run again")
    (x_train, y_train), (x_test, y_test) = (
        decode_batches([raw[m] for m in members], path) for members in (TRAIN_MEMBERS, [TEST_MEMBER]))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def decode_batches(blobs: list[bytes], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` uint8 and labels ``(n,)`` int64 from batch files' bytes."""
    if any(len(b) % RECORD for b in blobs):
        raise DataError(f"{path}: a batch file is not a whole number of {RECORD}-byte records; "
                        "delete it and run again")
    records = np.frombuffer(b"".join(blobs), np.uint8).reshape(-1, RECORD)  # (n, 3073)
    y = records[:, 0].astype(np.int64)
    if y.size and y.max() > 9:
        raise DataError(f"{path}: labels must be 0..9, found {y.max()}")
    # Bytes 1..3072 are R, G, B planes of 32 rows of 32: exactly C-order (3, 32, 32).
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), y
