"""Tests for vaekit.data.files: reading users' .npy/.npz/.csv files and image folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vaekit.data.files import load_path, load_rows
from vaekit.errors import ConfigError, DataError


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ---------------------------------------------------------------- .npy


def test_npy_vectors_float_kept_as_is(tmp_path):
    x = _rng().normal(size=(20, 5)).astype(np.float64) * 100
    np.save(tmp_path / "v.npy", x)
    rows, y = load_rows(tmp_path / "v.npy")
    assert y is None and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, x.astype(np.float32))
    ds = load_path(tmp_path / "v.npy", test_fraction=0.25)
    assert ds.name == str(tmp_path / "v.npy")
    assert ds.shape == (5,) and not ds.is_image
    assert len(ds.x_train) == 15 and len(ds.x_test) == 5
    both = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()])
    np.testing.assert_array_equal(np.sort(both, axis=0), np.sort(x.astype(np.float32), axis=0))


def test_npy_uint8_scaled_exactly(tmp_path):
    x = np.arange(256, dtype=np.uint8).reshape(64, 4)
    np.save(tmp_path / "u.npy", x)
    rows, _ = load_rows(tmp_path / "u.npy")
    np.testing.assert_array_equal(rows, x.astype(np.float32) / 255)
    assert rows.min() == 0.0 and rows.max() == 1.0


def test_npy_grey_images_get_channel_axis(tmp_path):
    x = _rng().integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    np.save(tmp_path / "g.npy", x)
    rows, _ = load_rows(tmp_path / "g.npy")
    assert rows.shape == (6, 1, 4, 5)
    np.testing.assert_array_equal(rows[:, 0], x / np.float32(255))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_npy_channels_last_transposed_elementwise(tmp_path, channels):
    x = _rng(channels).integers(0, 256, size=(3, 5, 6, channels), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", x)
    rows, _ = load_rows(tmp_path / "hwc.npy")
    assert rows.shape == (3, channels, 5, 6)
    for n, h, w, c in [(0, 0, 0, 0), (2, 4, 5, channels - 1), (1, 2, 3, channels // 2)]:
        assert rows[n, c, h, w] == np.float32(x[n, h, w, c]) / np.float32(255)


def test_npy_channels_first_kept(tmp_path):
    x = _rng().random((4, 3, 7, 8)).astype(np.float32)
    np.save(tmp_path / "chw.npy", x)
    rows, _ = load_rows(tmp_path / "chw.npy")
    np.testing.assert_array_equal(rows, x)
    assert load_path(tmp_path / "chw.npy").is_image


# ---------------------------------------------------------------- .npz


def test_npz_keras_layout(tmp_path):
    rng = _rng()
    xtr = rng.integers(0, 256, size=(10, 4, 4), dtype=np.uint8)
    xte = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    ytr, yte = np.arange(10) % 3, np.array([2, 0, 1], dtype=np.uint8)
    np.savez(tmp_path / "m.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = load_path(tmp_path / "m.npz")
    assert ds.x_train.shape == (10, 1, 4, 4) and ds.x_test.shape == (3, 1, 4, 4)
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], xtr / np.float32(255))
    np.testing.assert_array_equal(ds.x_test.numpy()[:, 0], xte / np.float32(255))
    assert ds.y_train.tolist() == ytr.tolist() and ds.y_test.tolist() == [2, 0, 1]

    x, y = load_rows(tmp_path / "m.npz")  # default: the test part
    np.testing.assert_array_equal(x[:, 0], xte / np.float32(255))
    assert y.tolist() == [2, 0, 1]
    x, y = load_rows(tmp_path / "m.npz", split="train")
    assert len(x) == 10 and y.tolist() == ytr.tolist()
    x, y = load_rows(tmp_path / "m.npz", split="all")
    np.testing.assert_array_equal(x[:, 0], np.concatenate([xtr, xte]) / np.float32(255))
    assert y.tolist() == ytr.tolist() + [2, 0, 1]


def test_npz_train_only_is_split_with_labels(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    np.savez(tmp_path / "t.npz", x_train=x, y_train=y)
    ds = load_path(tmp_path / "t.npz", test_fraction=0.2)
    assert len(ds.x_train) == 16 and len(ds.x_test) == 4
    # Each row's label must still be its own row index.
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0] / 2, ds.y_train.numpy())
    np.testing.assert_array_equal(ds.x_test.numpy()[:, 0] / 2, ds.y_test.numpy())
    rows, labels = load_rows(tmp_path / "t.npz")  # no x_test: every row
    np.testing.assert_array_equal(rows, x)
    assert labels.tolist() == y.tolist()


# ---------------------------------------------------------------- .csv


def test_csv_with_header(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n4.5,-6,7e-1\n")
    rows, y = load_rows(tmp_path / "h.csv")
    assert y is None
    np.testing.assert_array_equal(rows, np.array([[1, 2, 3], [4.5, -6, 0.7]], np.float32))


def test_csv_without_header_keeps_first_row(tmp_path):
    (tmp_path / "n.csv").write_text("1,2\n3,4\n\n")  # trailing blank line is fine
    rows, _ = load_rows(tmp_path / "n.csv")
    np.testing.assert_array_equal(rows, [[1, 2], [3, 4]])


def test_csv_single_column_and_file_order(tmp_path):
    values = _rng().normal(size=30).astype(np.float32)
    np.savetxt(tmp_path / "one.csv", values, delimiter=",", header="value", comments="", fmt="%.9g")
    rows, _ = load_rows(tmp_path / "one.csv")
    assert rows.shape == (30, 1)
    np.testing.assert_array_equal(rows[:, 0], values)


# ---------------------------------------------------------------- image folders


def test_flat_grey_folder_sorted_by_path(tmp_path):
    imgs = {f"img{i}.png": np.full((3, 4), 10 * i, np.uint8) for i in (2, 0, 1)}
    for name, a in imgs.items():
        _save_png(tmp_path / "f" / name, a)
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    x, y = load_rows(tmp_path / "f")
    assert y is None and x.shape == (3, 1, 3, 4)
    assert x[:, 0, 0, 0].tolist() == [np.float32(v) / np.float32(255) for v in (0, 10, 20)]


def test_class_subfolders_give_labels_and_rgb(tmp_path):
    rng = _rng()
    cat = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    dog = rng.integers(0, 256, size=(5, 6), dtype=np.uint8)
    _save_png(tmp_path / "d" / "dog" / "a.PNG", dog)  # grey, upper-case extension
    _save_png(tmp_path / "d" / "cat" / "b.png", cat)
    _save_png(tmp_path / "d" / "cat" / "a.png", cat[::-1].copy())
    (tmp_path / "d" / ".ipynb_checkpoints").mkdir()
    x, y = load_rows(tmp_path / "d")
    assert x.shape == (3, 3, 5, 6)  # one colour image makes them all RGB
    assert y.tolist() == [0, 0, 1]  # cat < dog
    np.testing.assert_array_equal(x[0], cat[::-1].transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(x[1], cat.transpose(2, 0, 1) / np.float32(255))
    for c in range(3):  # grey repeated in every channel
        np.testing.assert_array_equal(x[2, c], dog / np.float32(255))
    ds = load_path(tmp_path / "d", test_fraction=0.34)
    assert len(ds.x_test) == 1 and sorted(ds.y_train.tolist() + ds.y_test.tolist()) == [0, 0, 1]


def test_16bit_grey_png_rescaled(tmp_path):
    a = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 257 * 20)
    Image.fromarray(a).save(tmp_path / "i16.png")
    _save_png(tmp_path / "b.png", np.zeros((3, 4), np.uint8))
    x, _ = load_rows(tmp_path)
    np.testing.assert_allclose(x[1, 0], a / 65535, atol=1e-6)


# ---------------------------------------------------------------- split


def test_split_sizes_determinism_and_disjointness(tmp_path):
    x = np.arange(101, dtype=np.float32)[:, None]
    np.save(tmp_path / "s.npy", x)
    a = load_path(tmp_path / "s.npy", test_fraction=0.3)
    b = load_path(tmp_path / "s.npy", test_fraction=0.3)
    tr, te = a.x_train.numpy()[:, 0], a.x_test.numpy()[:, 0]
    assert len(te) == round(101 * 0.3) and len(tr) == 101 - len(te)
    assert np.array_equal(tr, b.x_train.numpy()[:, 0])
    assert np.array_equal(te, b.x_test.numpy()[:, 0])
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(101))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
    perm = np.random.default_rng(0).permutation(101)
    assert te.tolist() == sorted(perm[:30].tolist())
    # The split does not depend on the global NumPy or torch seed.
    np.random.seed(123)
    assert np.array_equal(load_path(tmp_path / "s.npy", 0.3).x_test.numpy()[:, 0], te)


def test_split_zero_fraction_gives_empty_test(tmp_path):
    np.save(tmp_path / "z.npy", np.ones((4, 3), np.float32))
    ds = load_path(tmp_path / "z.npy", test_fraction=0)
    assert ds.x_train.shape == (4, 3) and ds.x_test.shape == (0, 3)


def test_split_too_small_and_bad_fraction(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((1, 3), np.float32))
    assert len(load_path(tmp_path / "one.npy").x_train) == 1  # round(0.1) = 0 held out
    with pytest.raises(DataError, match="no training examples"):
        load_path(tmp_path / "one.npy", test_fraction=0.6)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="test fraction"):
            load_path(tmp_path / "one.npy", test_fraction=bad)
    with pytest.raises(ConfigError, match="split"):
        load_rows(tmp_path / "one.npy", split="val")


# ---------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("bad, match", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite")])
def test_npy_non_finite(tmp_path, bad, match):
    x = np.ones((5, 2), np.float32)
    x[3, 1] = bad
    np.save(tmp_path / "b.npy", x)
    with pytest.raises(DataError, match=match) as e:
        load_path(tmp_path / "b.npy")
    assert str(tmp_path / "b.npy") in _one_line(e) and "row 3" in str(e.value)


def test_csv_nan_cell(tmp_path):
    (tmp_path / "nan.csv").write_text("x,y\n1,2\nnan,3\n")
    with pytest.raises(DataError, match="NaN or infinite"):
        load_rows(tmp_path / "nan.csv")


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,3\n\n4,oops,6\n")
    with pytest.raises(DataError, match=r"line 4, column 2: 'oops' is not a number") as e:
        load_path(tmp_path / "bad.csv")
    assert "bad.csv" in _one_line(e)


def test_csv_empty_cell(tmp_path):
    (tmp_path / "gap.csv").write_text("1,2\n3,,4\n")
    with pytest.raises(DataError, match=r"line 2 has 3 columns but line 1 has 2"):
        load_path(tmp_path / "gap.csv")
    (tmp_path / "gap2.csv").write_text("1,2\n3,\n")
    with pytest.raises(DataError, match=r"line 2, column 2: '' is not a number"):
        load_path(tmp_path / "gap2.csv")


def test_csv_ragged_rows(tmp_path):
    (tmp_path / "r.csv").write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(DataError, match=r"line 3 has 2 columns but line 2 has 3") as e:
        load_path(tmp_path / "r.csv")
    _one_line(e)


@pytest.mark.parametrize("text, match", [("", "is empty"), ("\n\n", "is empty"),
                                         ("a,b,c\n", "header row but no data")])
def test_csv_empty_or_header_only(tmp_path, text, match):
    (tmp_path / "e.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        load_path(tmp_path / "e.csv")


def test_csv_binary_content(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_path(tmp_path / "bin.csv")


def test_npy_zero_rows(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(DataError, match="no data"):
        load_path(tmp_path / "z.npy")


def test_npy_pickled_object_array(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled") as e:
        load_path(tmp_path / "o.npy")
    _one_line(e)


def test_npy_that_is_text(tmp_path):
    (tmp_path / "t.npy").write_text("1,2,3\n")
    with pytest.raises(DataError, match="not a NumPy .npy file"):
        load_path(tmp_path / "t.npy")


def test_npy_truncated(tmp_path):
    np.save(tmp_path / "full.npy", np.ones((50, 50)))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        load_path(tmp_path / "cut.npy")


@pytest.mark.parametrize("shape", [(5,), (2, 5, 6, 7), (2, 2, 2, 2, 2)])
def test_npy_unusable_shape(tmp_path, shape):
    np.save(tmp_path / "s.npy", np.ones(shape, np.float32))
    with pytest.raises(DataError, match="cannot use an array of shape"):
        load_path(tmp_path / "s.npy")


def test_npz_truncated(tmp_path):
    np.savez(tmp_path / "full.npz", x_train=np.ones((50, 50)), x_test=np.ones((5, 50)))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_path(tmp_path / "cut.npz")
    _one_line(e)


def test_npz_without_x_train_lists_keys(tmp_path):
    np.savez(tmp_path / "k.npz", images=np.ones((3, 2)), labels=np.arange(3))
    with pytest.raises(DataError, match=r"no 'x_train' array \(found: images, labels\)"):
        load_path(tmp_path / "k.npz")


def test_npz_object_array_and_wrong_content(tmp_path):
    np.savez(tmp_path / "o.npz", x_train=np.array([None, 1], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_path(tmp_path / "o.npz")
    np.save(tmp_path / "a.npy", np.ones((3, 2)))
    (tmp_path / "a.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    with pytest.raises(DataError, match="rename it .npy"):
        load_path(tmp_path / "a.npz")


def test_npz_bad_labels(tmp_path):
    np.savez(tmp_path / "l.npz", x_train=np.ones((4, 2)), y_train=np.arange(3))
    with pytest.raises(DataError, match="one label per row"):
        load_path(tmp_path / "l.npz")
    np.savez(tmp_path / "f.npz", x_train=np.ones((4, 2)), y_train=np.array([0, 0.5, 1, 2]))
    with pytest.raises(DataError, match="whole numbers"):
        load_path(tmp_path / "f.npz")


def test_images_of_mixed_sizes(tmp_path):
    _save_png(tmp_path / "m" / "a.png", np.zeros((4, 4), np.uint8))
    _save_png(tmp_path / "m" / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"a\.png is 4x4, .*b\.png is 4x5") as e:
        load_path(tmp_path / "m")
    _one_line(e)


def test_corrupted_png(tmp_path):
    _save_png(tmp_path / "c" / "good.png", np.zeros((4, 4), np.uint8))
    junk = _rng().integers(0, 256, 200, dtype=np.uint8).tobytes()
    (tmp_path / "c" / "junk.png").write_bytes(junk)
    with pytest.raises(DataError, match=r"junk\.png: cannot read this image") as e:
        load_path(tmp_path / "c")
    _one_line(e)


def test_truncated_png(tmp_path):
    _save_png(tmp_path / "full.png", _rng().integers(0, 256, (32, 32), dtype=np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "full.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read this image"):
        load_path(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        load_path(tmp_path / "empty")


def test_empty_class_folder_and_mixed_layout(tmp_path):
    _save_png(tmp_path / "d" / "a" / "x.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(DataError, match="class folder has no"):
        load_path(tmp_path / "d")
    _save_png(tmp_path / "d" / "top.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="both directly inside and in subfolders"):
        load_path(tmp_path / "d")


def test_unknown_extension(tmp_path):
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'.*expected a \.npy") as e:
        load_path(tmp_path / "data.txt")
    _one_line(e)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"no such file or folder.*expected a \.npy"):
        load_path(tmp_path / "nope.npy")
    with pytest.raises(DataError, match="no such file"):
        load_rows(tmp_path / "nope")
