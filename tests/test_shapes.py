"""The generated ``shapes`` data set: its geometry against hand-computed oracles, the pinned
checksum, the cache (written once, read back, redrawn when damaged) and the built-in dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vaekit.data import DATASETS, load_data
from vaekit.data import shapes as S
from vaekit.data.fetch import cache_dir
from vaekit.errors import DataError


@pytest.fixture(scope="module")
def drawn() -> tuple[np.ndarray, np.ndarray]:
    return S.generate()


def test_grid_sizes_and_order(drawn):
    images, factors = drawn
    assert S.FACTOR_SIZES == (3, 6, 10, 16, 16) and S.N_IMAGES == 46_080
    assert images.shape == (46_080, 64, 64) and images.dtype == np.uint8
    assert images.max() == 1 and images.min() == 0  # uint8: nothing but 0 and 1
    # Row i holds the factor combination whose C-order index is i (last factor fastest).
    assert np.array_equal(np.ravel_multi_index(factors.T, S.FACTOR_SIZES), np.arange(46_080))
    assert [int(v) for v in factors[S.FACTOR_SIZES[-1]]] == [0, 0, 0, 1, 0]


def test_generation_matches_the_pinned_checksum(drawn):
    images, factors = drawn
    assert S.digest(np.packbits(images, axis=-1), factors) == S.SHA256


def test_square_area_and_every_centre_by_hand(drawn):
    images, factors = drawn
    # An unrotated square of half-side a = 10 * scale (5..10 px, whole numbers) covers exactly
    # the (2a)^2 pixels whose centres lie within a of its centre (centres are half-integers).
    area = images.reshape(len(images), -1).sum(1)
    sq0 = (factors[:, 0] == 0) & (factors[:, 2] == 0)
    assert np.array_equal(area[sq0], np.repeat([100, 144, 196, 256, 324, 400], 256))
    # Squares and ellipses are point-symmetric, so their pixel centroid is exactly (x, y).
    sym = factors[:, 0] < 2
    rows, cols = np.arange(64.0), np.arange(64.0)
    cy = (images[sym].sum(2) @ rows) / area[sym]
    cx = (images[sym].sum(1) @ cols) / area[sym]
    assert np.array_equal(cx, S.FACTOR_VALUES["x"][factors[sym, 3]])
    assert np.array_equal(cy, S.FACTOR_VALUES["y"][factors[sym, 4]])
    # Nothing reaches the border: every shape is whole at every position.
    assert images[:, [0, -1], :].sum() == 0 and images[:, :, [0, -1]].sum() == 0


def test_rotation_direction_and_symmetries():
    for scale in S.FACTOR_VALUES["scale"]:
        sq, el, he = (S.sprite(s, float(scale), 0.0) for s in S.SHAPES)
        assert np.array_equal(S.sprite("square", float(scale), 90.0), sq)
        assert np.array_equal(S.sprite("ellipse", float(scale), 90.0), el.T)
        assert np.array_equal(S.sprite("heart", float(scale), 180.0), he[::-1, ::-1])
        assert np.array_equal(he, he[:, ::-1]) and not np.array_equal(he, he[::-1])
        for deg in S.FACTOR_VALUES["rotation"]:
            # The ellipse's long axis from its second moments (y up): counter-clockwise by deg,
            # within pixelation (2.4 degrees at worst, for the smallest ellipse).
            r, c = np.nonzero(S.sprite("ellipse", float(scale), float(deg)))
            x, y = c - c.mean(), r.mean() - r
            angle = 0.5 * math.degrees(math.atan2(2 * (x * y).mean(), (x * x - y * y).mean()))
            assert abs(angle - deg) < 3.0, (scale, deg, angle)


def test_all_sprites_differ():
    # 180 distinct sprites, pasted at 256 distinct positions, give 46,080 distinct images.
    values = S.FACTOR_VALUES
    sprites = {S.sprite(s, float(k), float(d)).tobytes()
               for s in S.SHAPES for k in values["scale"] for d in values["rotation"]}
    assert len(sprites) == 3 * 6 * 10


def test_cache_written_once_read_back_and_redrawn_when_damaged(drawn, monkeypatch):
    assert cache_dir() != Path.home() / ".cache" / "vaekit"  # conftest isolates the cache
    images, factors = drawn
    path = cache_dir() / S.CACHE_NAME
    logs: list[str] = []
    got = S.load_shapes(logs.append)
    assert path.is_file() and path.stat().st_size < 1_000_000 and len(logs) == 1
    assert np.array_equal(got[0], images) and np.array_equal(got[1], factors)

    def no_drawing():
        raise AssertionError("drew the set although the cache is intact")

    with monkeypatch.context() as m:  # (undo() would also undo conftest's VAEKIT_DATA)
        m.setattr(S, "generate", no_drawing)
        again = S.load_shapes(logs.append)
    assert np.array_equal(again[0], images) and len(logs) == 1

    # A valid .npz with one pixel flipped, then a truncated file: both are drawn again.
    packed = np.packbits(images, axis=-1)
    packed[123, 30, 3] ^= 1
    with open(path, "wb") as f:
        np.savez(f, images=packed, factors=factors)
    assert S._read_cache() is None
    assert np.array_equal(S.load_shapes(logs.append)[0], images) and len(logs) == 2
    path.write_bytes(path.read_bytes()[:1000])
    assert np.array_equal(S.load_shapes(logs.append)[0], images) and len(logs) == 3
    assert S._read_cache() is not None


def test_a_renderer_that_drifts_is_refused(monkeypatch):
    monkeypatch.setattr(S, "SHA256", "0" * 64)
    with pytest.raises(DataError, match="differs from the pinned one"):
        S.load_shapes(lambda s: None)
    assert not (cache_dir() / S.CACHE_NAME).exists()


def test_builtin_dataset_rows_match_their_factors(drawn):
    images, _ = drawn
    assert "shapes" in DATASETS
    ds = load_data("shapes", log=lambda s: None)
    f_train, f_test, names = S.load_factors(lambda s: None)
    assert names == ("shape", "scale", "rotation", "x", "y")
    assert ds.x_train.shape == (41_472, 1, 64, 64) and ds.x_test.shape == (4_608, 1, 64, 64)
    assert f_train.shape == (41_472, 5) and f_test.shape == (4_608, 5) and f_test.dtype == np.int64
    for x, f, y in ((ds.x_train, f_train, ds.y_train), (ds.x_test, f_test, ds.y_test)):
        # Each row is the image its factors index in the grid, and its label is the shape.
        expect = images[np.ravel_multi_index(f.T, S.FACTOR_SIZES)]
        assert np.array_equal(x.numpy()[:, 0], expect.astype(np.float32))
        assert np.array_equal(y.numpy(), f[:, 0])
    every = np.concatenate([f_train, f_test])
    assert len(np.unique(np.ravel_multi_index(every.T, S.FACTOR_SIZES))) == 46_080  # a partition
    # The split is fixed: seed 0 of NumPy's default generator (a change of stream would show here).
    assert np.flatnonzero(S.split())[:6].tolist() == [2, 9, 12, 24, 26, 49]
