"""Known factors as part of the data: the Dataset carries them (shapes; an .npz with f_train/f_test),
row for row through every split, and evaluate reads them from there; bad factors are one error."""

import json

import numpy as np
import pytest
import torch

from vaekit.cli.main import main
from vaekit.data import load_data, load_part
from vaekit.data.base import Dataset
from vaekit.errors import DataError
from vaekit.pipeline import validation_split


def factor_npz(path, with_test=True, n=400, names=True):
    """Rows whose first pixel is the row number, with factors (row % 3, row % 5, row): every row's
    factors can be checked against its values after any split."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 8)).astype(np.float32)
    x[:, 0] = np.arange(n) / 1000
    f = np.stack([np.arange(n) % 3, np.arange(n) % 5, np.arange(n)], 1)
    arrays = {"x_train": x[:300], "f_train": f[:300]} if with_test else {"x_train": x, "f_train": f}
    if with_test:
        arrays |= {"x_test": x[300:], "f_test": f[300:]}
    if names:
        arrays["factor_names"] = np.array(["a", "b", "row"])
    np.savez(path, **arrays)
    return path


def rows_match(x, f):
    row = np.rint(np.asarray(x).reshape(len(x), -1)[:, 0] * 1000).astype(int)
    np.testing.assert_array_equal(np.asarray(f), np.stack([row % 3, row % 5, row], 1))


def test_shapes_dataset_carries_its_factors():
    from vaekit.data.shapes import FACTOR_NAMES, load_factors

    ds = load_data("shapes", log=lambda s: None)
    train, test, names = load_factors(lambda s: None)
    assert ds.factor_names == FACTOR_NAMES == names
    np.testing.assert_array_equal(ds.f_train.numpy(), train)
    np.testing.assert_array_equal(ds.f_test.numpy(), test)
    np.testing.assert_array_equal(ds.y_test.numpy(), test[:, 0])  # the label is the shape factor
    assert load_data("digits").f_train is None and load_part("digits").factors is None


@pytest.mark.parametrize("with_test", [True, False])
def test_npz_factors_follow_their_rows_through_every_split(tmp_path, with_test):
    path = factor_npz(tmp_path / "f.npz", with_test)
    ds = load_data(str(path), test_fraction=0.25)
    assert ds.factor_names == ("a", "b", "row") and ds.f_train.dtype == torch.int64
    rows_match(ds.x_train, ds.f_train)
    rows_match(ds.x_test, ds.f_test)
    assert len(ds.x_test) == 100
    rest, (x_val, _) = validation_split(ds, 0.2)
    rows_match(rest.x_train, rest.f_train)
    assert rest.f_test is ds.f_test and len(rest.f_train) + len(x_val) == len(ds.f_train)
    for split in ("train", "test", "all"):
        part = load_part(str(path), split)
        rows_match(part.x, part.factors)
        assert part.factor_names == ("a", "b", "row")


def test_unnamed_factors_get_numbered_names(tmp_path):
    ds = load_data(str(factor_npz(tmp_path / "f.npz", names=False)))
    assert ds.factor_names == ("factor_0", "factor_1", "factor_2")


@pytest.mark.parametrize("arrays,match", [
    ({"x_train": np.zeros((4, 2)), "x_test": np.zeros((2, 2)), "f_train": np.zeros((4, 1))},
     "factors are given for one part only"),
    ({"x_train": np.zeros((4, 2)), "f_train": np.zeros((3, 1))}, r"expected one row of factor values"),
    ({"x_train": np.zeros((4, 2)), "f_train": np.full((4, 1), 0.5)}, "whole numbers"),
    ({"x_train": np.zeros((4, 2)), "f_test": np.zeros((4, 1))}, "f_test without x_test"),
    ({"x_train": np.zeros((4, 2)), "f_train": np.zeros((4, 2)), "factor_names": np.array(["a"])},
     "1 factor names for 2 factor columns"),
    ({"x_train": np.zeros((4, 2)), "f_train": np.zeros((4, 1)), "factor_names": np.array([1])},
     "factor_names must be an array of strings"),
    ({"x_train": np.zeros((4, 2)), "x_test": np.zeros((2, 2)), "f_train": np.zeros((4, 1)),
      "f_test": np.zeros((2, 2))}, "1 training factors but 2 test factors"),
])
def test_bad_factors_are_refused(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_data(str(tmp_path / "bad.npz"))


def test_from_arrays_checks_factor_rows():
    with pytest.raises(DataError, match=r"\(2, F\)"):
        Dataset.from_arrays("d", np.zeros((3, 2)), np.zeros((2, 2)), f_train=np.zeros((3, 1)),
                            f_test=np.zeros((3, 1)))


def test_evaluate_reports_mig_on_a_users_npz_with_factors(tmp_path, capsys):
    """Codes that must carry two factors, each of them alone in a block of features: the run's
    evaluation has MIG and DCI from the factors of the file, and a bad file is one error line."""
    rng = np.random.default_rng(1)
    f = rng.integers(0, 4, (1200, 2))
    x = np.repeat(f / 3.0, 8, axis=1) + 0.05 * rng.standard_normal((1200, 16))
    np.savez(tmp_path / "two.npz", x_train=x[:1000].astype(np.float32), x_test=x[1000:].astype(np.float32),
             f_train=f[:1000], f_test=f[1000:], factor_names=np.array(["left", "right"]))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "two.npz"), "--out", str(run), "--epochs", "3",
                 "--hidden", "32", "--latent-dim", "2", "--likelihood", "gaussian",
                 "--no-report"]) == 0
    assert main(["evaluate", str(run), "-k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_rows"] == 200 and 0 <= res["mig"] <= 1 and res["dci_informativeness"] > 0.5
    assert main(["evaluate", str(run), "-k", "5"]) == 0  # the printed DCI says whose number it is
    assert "as disentanglement_lib (Locatello et al. 2019)" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", x_train=x[:10], f_train=np.zeros((9, 2)))
    assert main(["evaluate", str(run), str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "(10, F)" in err[-1]
