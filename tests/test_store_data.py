"""Data edge cases are refused with one clear line: FIFOs (which would hang), complex values,
integers float32 cannot hold, and floats beyond float32's range."""

import os
import threading

import numpy as np
import pytest

from vaekit.cli.main import main
from vaekit.data.base import check_features
from vaekit.data.files import load_path, load_rows
from vaekit.errors import DataError


def test_a_fifo_named_like_data_is_refused_without_hanging(tmp_path, capsys):
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    done = threading.Event()
    result = {}

    def run():
        result["rc"] = main(["train", str(fifo), "--out", str(tmp_path / "r"), "--epochs", "1"])
        done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(60):
        with open(fifo, "wb"):  # unblock the reader so the test process can end
            pass
        pytest.fail("train blocked on a FIFO")
    assert result["rc"] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a regular file" in err[0]
    assert not (tmp_path / "r").exists()
    with pytest.raises(DataError, match="not a regular file"):
        load_rows(fifo)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_values_are_refused_not_truncated(tmp_path, dtype):
    x = (np.ones((10, 3)) + 1j * np.ones((10, 3))).astype(dtype)
    np.save(tmp_path / "c.npy", x)
    with pytest.raises(DataError, match="complex.*real and imaginary parts"):
        load_path(tmp_path / "c.npy")
    with pytest.raises(DataError, match="complex"):
        check_features(x, "X")


@pytest.mark.parametrize("value", [2 ** 62, -(2 ** 63), 2 ** 24 + 1, -(2 ** 31)])
def test_integers_float32_cannot_hold_are_refused_naming_the_row(value):
    x = np.zeros((5, 2), np.int64)
    x[3, 1] = value
    with pytest.raises(DataError, match=rf"2\*\*24.*row 3: {value}.*rescale"):
        check_features(x, "X")


def test_integers_float32_holds_exactly_are_kept():
    x = np.array([[0, 2 ** 24], [-(2 ** 24), 7]], np.int64)
    assert check_features(x, "X").tolist() == [[0, 2 ** 24], [-(2 ** 24), 7]]
    assert check_features(np.array([[0, 255]], np.int16), "X").dtype == np.float32


def test_float64_beyond_float32_range_is_refused_naming_the_row():
    x = np.zeros((4, 3))
    x[2, 0] = 1e300
    with pytest.raises(DataError, match="float32's range.*row 2"):
        check_features(x, "X")
    x[2, 0] = 1e30  # large but representable: kept (finite)
    assert np.isfinite(check_features(x, "X")).all()


def test_nan_is_still_refused_naming_the_row():
    x = np.zeros((4, 3))
    x[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN or infinite.*row 1"):
        check_features(x, "X")


def test_an_npz_without_x_train_keeps_its_message(tmp_path):
    """DataError is a ValueError now: the readers must not rewrap their own messages."""
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    with pytest.raises(DataError, match="no 'x_train' array"):
        load_path(tmp_path / "a.npz")


def test_images_of_different_sizes_keep_their_message(tmp_path):
    from PIL import Image

    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    Image.new("L", (5, 4)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="images differ in size"):
        load_path(tmp_path)
