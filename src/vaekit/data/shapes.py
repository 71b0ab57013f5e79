"""``shapes``: a dSprites-like data set with known factors, generated offline.

Every combination of five factors (shape, scale, rotation, x, y; the design of dSprites,
Matthey et al. 2017, on a smaller grid) is drawn once as a binary 64x64 image, so that
disentanglement metrics (:mod:`vaekit.evaluation.disentangle`) can compare a model's codes with the true
factors. Rendering is plain IEEE arithmetic on pixel centres: no anti-aliasing, no font or
rasteriser library, and the only transcendental values (the rotation matrices) are rounded to
12 decimals, so the bytes are the same on every platform. They are pinned by a SHA-256 that is
checked whenever the cache file is read and whenever the set is generated.
"""

from __future__ import annotations

import hashlib
import io
import math
from itertools import product
from typing import Callable

import numpy as np

from vaekit.errors import DataError
from vaekit.io.files import atomic_write_bytes
from .fetch import cache_dir
from .base import Dataset

SIZE = 64  # image side, pixels
FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
SHAPES = ("square", "ellipse", "heart")
# The value of each factor index; images run over the grid in this order, last factor fastest.
FACTOR_VALUES: dict[str, np.ndarray] = {
    "shape": np.arange(len(SHAPES)),
    "scale": np.linspace(0.5, 1.0, 6),  # square half-side 10 * scale: 5..10 pixels
    # Degrees counter-clockwise, within one period of the square (90 degrees), so no two
    # rotations of a shape look alike (the ellipse repeats every 180, the heart every 360).
    "rotation": np.arange(10) * 9.0,
    # Centre of the shape in pixel indices (column c, row r has its centre at (c, r)): halfway
    # between two pixels, 16.5 .. 46.5, symmetric about the image centre 31.5.
    "x": 16.5 + 2.0 * np.arange(16),  # column, from the left
    "y": 16.5 + 2.0 * np.arange(16),  # row, from the top
}
FACTOR_SIZES = tuple(len(v) for v in FACTOR_VALUES.values())  # (3, 6, 10, 16, 16)
N_IMAGES = math.prod(FACTOR_SIZES)  # 46,080
TEST_FRACTION = 0.1
SPLIT_SEED = 0

CACHE_NAME = "shapes/shapes-v1.npz"
# SHA-256 of the packed images (np.packbits of the (n, 64, 64) 0/1 array along rows) then of the
# factors ((n, 5) uint8), in grid order: what generate() must produce and the cache must hold.
SHA256 = "81358b00bd3617583bb9f2f8500612b837993181a8650a0c429449d80c7482d3"

SPRITE = 30  # side of the square the sprite is drawn in; the largest shape reaches 14.2 px
HALF = SPRITE // 2


def _inside(shape: str, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Whether the body-frame points (u right, v up, pixels) lie inside the shape."""
    if shape == "square":
        a = 10.0 * scale
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if shape == "ellipse":
        a, b = 12.0 * scale, 7.0 * scale  # semi-axes (at 6 px the smallest ellipses alias)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if shape == "heart":  # the sextic heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, about 2.3 units wide
        x, y = u / (9.0 * scale), v / (9.0 * scale)
        r = x * x + y * y - 1.0
        return r * r * r - x * x * y * y * y <= 0.0
    raise ValueError(f"unknown shape {shape!r}")


def sprite(shape: str, scale: float, degrees: float) -> np.ndarray:
    """The ``(30, 30)`` 0/1 mask of one shape, centred between the middle four pixels.

    A pixel is set when its centre lies inside the shape: pixel ``(i, j)`` has its centre at
    ``(j - 14.5, 14.5 - i)`` from the sprite's centre (x right, y up).
    """
    t = math.radians(degrees)
    c, s = round(math.cos(t), 12), round(math.sin(t), 12)  # rounded: the same on every libm
    d = np.arange(SPRITE) - (HALF - 0.5)
    x, y = d[None, :], -d[:, None]
    u, v = c * x + s * y, -s * x + c * y  # rotate the point by -degrees: the shape by +degrees
    return _inside(shape, u, v, scale).astype(np.uint8)


def factor_grid() -> np.ndarray:
    """``(46080, 5)`` uint8: every combination of factor indices, last factor fastest."""
    return np.array(list(product(*(range(k) for k in FACTOR_SIZES))), np.uint8)


def generate() -> tuple[np.ndarray, np.ndarray]:
    """Draw the whole set.

    Returns
    -------
    images : np.ndarray
        ``(46080, 64, 64)`` uint8 in {0, 1}, in grid order.
    factors : np.ndarray
        ``(46080, 5)`` uint8 factor indices (:data:`FACTOR_NAMES`), in the same order.
    """
    factors = factor_grid()
    images = np.zeros((N_IMAGES, SIZE, SIZE), np.uint8)
    view = images.reshape(*FACTOR_SIZES, SIZE, SIZE)
    xs, ys = FACTOR_VALUES["x"], FACTOR_VALUES["y"]
    for (k, shape), (i, scale), (r, deg) in product(
            enumerate(SHAPES), enumerate(FACTOR_VALUES["scale"]),
            enumerate(FACTOR_VALUES["rotation"])):
        m = sprite(shape, float(scale), float(deg))
        for (ix, cx), (iy, cy) in product(enumerate(xs), enumerate(ys)):
            top, left = int(cy - (HALF - 0.5)), int(cx - (HALF - 0.5))  # centres are half-integers
            view[k, i, r, ix, iy, top:top + SPRITE, left:left + SPRITE] = m
    return images, factors


def digest(packed: np.ndarray, factors: np.ndarray) -> str:
    """SHA-256 of the packed images (``np.packbits(images, axis=-1)``, ``(n, 64, 8)`` uint8)
    then of the factors: the value :data:`SHA256` pins."""
    h = hashlib.sha256(np.ascontiguousarray(packed, np.uint8).tobytes())
    h.update(np.ascontiguousarray(factors, np.uint8).tobytes())
    return h.hexdigest()


def _read_cache() -> tuple[np.ndarray, np.ndarray] | None:
    """The cached set if the file is there, well-formed and matches :data:`SHA256`, else None."""
    path = cache_dir() / CACHE_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            packed, factors = f["images"], f["factors"]
        if (packed.dtype != np.uint8 or packed.shape != (N_IMAGES, SIZE, SIZE // 8)
                or factors.dtype != np.uint8 or factors.shape != (N_IMAGES, len(FACTOR_NAMES))):
            return None
    except Exception:  # truncated, not a zip, a missing member: all mean "draw it again"
        return None
    return (np.unpackbits(packed, axis=-1), factors) if digest(packed, factors) == SHA256 else None


def load_shapes(log: Callable[[str], object] = print) -> tuple[np.ndarray, np.ndarray]:
    """The whole set in grid order, from the cache or drawn (and cached) afresh.

    Returns
    -------
    images : np.ndarray
        ``(46080, 64, 64)`` uint8 in {0, 1}.
    factors : np.ndarray
        ``(46080, 5)`` uint8 factor indices, columns :data:`FACTOR_NAMES`.

    Raises
    ------
    DataError
        The freshly drawn set does not match the pinned checksum (the renderer changed).
    """
    cached = _read_cache()
    if cached is not None:
        return cached
    path = cache_dir() / CACHE_NAME
    log(f"drawing the shapes data set ({N_IMAGES:,} images) into {path} ...")
    images, factors = generate()
    packed = np.packbits(images, axis=-1)
    if (got := digest(packed, factors)) != SHA256:
        raise DataError(f"the generated shapes data has SHA-256 {got}, expected {SHA256}; "
                        "the renderer in vaekit/data/shapes.py differs from the pinned one")
    buf = io.BytesIO()
    # Bit-packed and compressed: about 2 MB on disk instead of 189 MB of bytes.
    np.savez_compressed(buf, images=packed, factors=factors)
    atomic_write_bytes(path, buf.getvalue())
    return images, factors


def split() -> np.ndarray:
    """``(46080,)`` bool, True for the fixed test rows (10%, drawn with seed 0)."""
    test = np.zeros(N_IMAGES, bool)
    rng = np.random.default_rng(SPLIT_SEED)
    test[rng.permutation(N_IMAGES)[: round(TEST_FRACTION * N_IMAGES)]] = True
    return test


def load_factors(log: Callable[[str], object] = print
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The factor indices of the built-in ``shapes`` data set, row for row with its splits.

    Returns
    -------
    factors_train, factors_test : np.ndarray
        ``(41472, 5)`` and ``(4608, 5)`` int64 indices into :data:`FACTOR_VALUES`, in the row
        order of ``load_data("shapes").x_train`` and ``.x_test``.
    names : tuple of str
        :data:`FACTOR_NAMES`, the columns.
    """
    _, factors = load_shapes(log)
    test = split()
    f = factors.astype(np.int64)
    return f[~test], f[test], FACTOR_NAMES


def shapes_dataset(log: Callable[[str], object] = print) -> "Dataset":
    """The built-in ``shapes`` :class:`~vaekit.data.Dataset`: images ``(n, 1, 64, 64)`` in {0, 1},
    labels the shape index, factors ``f_train``/``f_test`` those of :func:`load_factors`."""
    images, factors = load_shapes(log)
    test = split()
    x = [np.take(images, np.flatnonzero(rows), axis=0)[:, None].astype(np.float32)  # 0.0 / 1.0
         for rows in (~test, test)]
    return Dataset.from_arrays("shapes", *x, factors[~test, 0], factors[test, 0],
                               f_train=factors[~test], f_test=factors[test],
                               factor_names=FACTOR_NAMES)
