"""Tests for the ``vaekit`` command line: train, sample, reconstruct, embed, datasets.

Most tests call :func:`vaekit.cli.main.main` in-process; a few need a real process (exit status,
``python -m vaekit``, tracebacks with ``--debug``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.cli.main import main
from vaekit.data import load_data
from vaekit.estimator import VAE
from vaekit.runs.directory import RunDir
from helpers import assert_one_error, cli, config, metrics, snapshot

SRC = Path(__file__).resolve().parents[1] / "src"
SMALL = ["--hidden", "32", "--latent-dim", "2"]  # where the model's size does not matter
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {"epoch", "train_loss", "test_loss", "test_rec", "test_kl", "seconds"}


# ----------------------------------------------------------------------------- helpers


def split_sizes(err: str) -> tuple[int, int]:
    """(train, test) example counts from train's 'training on ...' line."""
    m = re.search(r"(\d+) train / (\d+) test examples", err)
    assert m, err
    return int(m.group(1)), int(m.group(2))


def closed_form_kl(est: VAE, x: np.ndarray) -> np.ndarray:
    """KL(N(mu, var) || N(0, I)) per row, in float64, from the encoder's own mean and scale."""
    import torch

    with torch.no_grad():
        q = est.model_.encode(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    mu = q.base_dist.loc.double().numpy()
    var = q.base_dist.scale.double().numpy() ** 2
    return 0.5 * (mu ** 2 + var - 1.0 - np.log(var)).sum(axis=1)


def grid_cells(path: Path, cell: int, ncol: int, pad: int = 2) -> np.ndarray:
    """Cut a grey PNG grid of ``cell x cell`` images, ``ncol`` per row, into ``(rows, ncol, cell, cell)``.

    The grid has ``pad``-pixel separators and is enlarged an integer number of times.
    """
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "L"
        a = np.asarray(img)
    height, width = a.shape
    scale, rest = divmod(width, pad + ncol * (cell + pad))
    assert rest == 0 and scale >= 1, (a.shape, ncol)
    rows, rest = divmod(height // scale - pad, cell + pad)
    assert rest == 0 and height % scale == 0, (a.shape, scale)
    out = np.empty((rows, ncol, cell, cell), np.uint8)
    for r in range(rows):
        for k in range(ncol):
            y0, x0 = (pad + r * (cell + pad)) * scale, (pad + k * (cell + pad)) * scale
            block = a[y0: y0 + cell * scale, x0: x0 + cell * scale]
            out[r, k] = block[::scale, ::scale]
            # Enlarged by repetition: every pixel is a constant scale x scale block.
            np.testing.assert_array_equal(block, np.kron(out[r, k], np.ones((scale, scale), np.uint8)))
    return out


def to_pixels(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.int16)


def _uniform(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, d)).astype(np.float32)


def write_csv(path: Path, x: np.ndarray, header: bool = True) -> None:
    lines = [",".join(f"c{i}" for i in range(x.shape[1]))] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")


def write_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"img_{i:02d}.png")


# ----------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def digits_data():
    return load_data("digits")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One 2-epoch run on the built-in digits, with the default model."""
    run = tmp_path_factory.mktemp("digits") / "run"
    assert cli("train", "digits", "--out", run, "--epochs", 2) == 0
    return run


@pytest.fixture(scope="module")
def tab_run(tmp_path_factory) -> Path:
    """A 1-epoch run on a (40, 5) CSV without a header: a model of vectors, not images (a header
    would make it a table of typed columns, tests/test_tables_cli.py)."""
    d = tmp_path_factory.mktemp("tab")
    write_csv(d / "data.csv", _uniform(40, 5, seed=1), header=False)
    run = d / "run"
    assert cli("train", d / "data.csv", "--out", run, "--epochs", 1, *SMALL) == 0
    return run


# ----------------------------------------------------------------------------- 1. digits end to end


def test_digits_run_directory_and_metrics(digits_run, digits_data):
    files = {p.name for p in digits_run.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "checkpoint.safetensors",
            "images"} <= files
    rows = metrics(digits_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert METRIC_KEYS <= set(r)
        assert all(np.isfinite(r[k]) for k in METRIC_KEYS)
        # beta = 1: the loss is the negative ELBO, reconstruction plus KL.
        assert r["test_loss"] == pytest.approx(r["test_rec"] + r["test_kl"], rel=1e-6)
        assert r["test_kl"] >= 0 and r["test_rec"] > 0
    # The last epoch's test KL is the mean closed-form KL over the 179 test digits of the
    # saved (final) weights: recomputed here in float64 from the encoder's mean and scale.
    est = VAE.load(digits_run)
    x_test = digits_data.x_test.numpy()
    assert x_test.shape == (179, 1, 8, 8)
    assert rows[-1]["test_kl"] == pytest.approx(closed_form_kl(est, x_test).mean(), rel=1e-5)
    cfg = config(digits_run)
    assert cfg["format_version"] == 1
    assert cfg["data_shape"] == [1, 8, 8]
    assert cfg["data"]["data"] == "digits"
    assert cfg["train"]["epochs"] == 2 and cfg["model"]["latent_dim"] == 20
    assert RunDir(digits_run).checkpoint_info()["epoch"] == 2


def test_digits_training_images(digits_run, digits_data):
    images = digits_run / "images"
    assert {"reconstruction_1.png", "samples_2.png"} <= {p.name for p in images.iterdir()}
    x8 = digits_data.x_test.numpy()[:8]
    for epoch in (1, 2):
        cells = grid_cells(images / f"reconstruction_{epoch}.png", cell=8, ncol=8)
        assert cells.shape == (2, 8, 8, 8)  # 2 rows of 8 images: inputs above reconstructions
        np.testing.assert_allclose(cells[0], to_pixels(x8[:, 0]), atol=1)
    # The last epoch's reconstructions are those of the saved final model.
    recon = VAE.load(digits_run).reconstruct(x8)
    cells = grid_cells(images / "reconstruction_2.png", cell=8, ncol=8)
    np.testing.assert_allclose(cells[1], to_pixels(recon[:, 0]), atol=1)
    assert grid_cells(images / "samples_2.png", cell=8, ncol=8).shape == (8, 8, 8, 8)


def test_sample_npy_matches_estimator_and_is_seeded(digits_run, tmp_path):
    a, b, c = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    assert cli("sample", digits_run, "-n", 5, "--out", a, "--seed", 3) == 0
    assert cli("sample", digits_run, "-n", 5, "--out", b, "--seed", 3) == 0
    assert cli("sample", digits_run, "-n", 5, "--out", c, "--seed", 4) == 0
    x = np.load(a)
    # Decoder means of the default gaussian likelihood: near the pixels' [0, 1], not clipped to it.
    assert x.shape == (5, 1, 8, 8) and x.dtype == np.float32 and -1 < x.min() < x.max() < 2
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(x, np.load(c))
    # Same draws through the estimator: decoder means of 5 prior draws with seed 3.
    np.testing.assert_allclose(x, VAE.load(digits_run).sample(5, random_state=3), atol=1e-6)


def test_sample_png_is_grid_of_the_same_samples(digits_run, tmp_path, capsys):
    assert cli("sample", digits_run, "-n", 5, "--out", tmp_path / "s.png", "--seed", 1) == 0
    assert cli("sample", digits_run, "-n", 5, "--out", tmp_path / "s.npy", "--seed", 1) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG_MAGIC
    cells = grid_cells(tmp_path / "s.png", cell=8, ncol=3)  # ceil(sqrt(5)) per row
    assert cells.shape == (2, 3, 8, 8)
    x = np.load(tmp_path / "s.npy")[:, 0]
    np.testing.assert_allclose(cells.reshape(6, 8, 8)[:5], to_pixels(x), atol=1)
    assert "wrote 5 samples" in capsys.readouterr().out


def test_reconstruct_png(digits_run, digits_data, tmp_path):
    out = tmp_path / "r.png"
    assert cli("reconstruct", digits_run, "--out", out) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    cells = grid_cells(out, cell=8, ncol=8)
    assert cells.shape == (2, 8, 8, 8)
    x8 = digits_data.x_test.numpy()[:8]  # default: the run's own test split
    np.testing.assert_allclose(cells[0], to_pixels(x8[:, 0]), atol=1)
    np.testing.assert_allclose(cells[1], to_pixels(VAE.load(digits_run).reconstruct(x8)[:, 0]), atol=1)
    # Other data and split, fewer images.
    out = tmp_path / "r4.png"
    assert cli("reconstruct", digits_run, "digits", "--split", "train", "-n", 4, "--out", out) == 0
    cells = grid_cells(out, cell=8, ncol=4)
    assert cells.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(cells[0], to_pixels(digits_data.x_train.numpy()[:4, 0]), atol=1)


def test_embed_npy_and_csv_match_estimator(digits_run, digits_data, tmp_path):
    npy, csv = tmp_path / "e.npy", tmp_path / "e.csv"
    assert cli("embed", digits_run, "digits", "--split", "test", "--out", npy) == 0
    assert cli("embed", digits_run, "digits", "--split", "test", "--out", csv) == 0
    z = np.load(npy)
    latent = config(digits_run)["model"]["latent_dim"]
    assert z.shape == (179, latent)
    expected = VAE.load(digits_run).transform(digits_data.x_test.numpy())
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    lines = csv.read_text().splitlines()
    assert lines[0] == ",".join(f"z{i}" for i in range(latent))
    from_csv = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
    assert from_csv.shape == (179, latent)
    np.testing.assert_allclose(from_csv, z, rtol=1e-6, atol=1e-7)


def test_embed_builtin_splits(digits_run, digits_data, tmp_path):
    est = VAE.load(digits_run)
    x_train, x_test = digits_data.x_train.numpy(), digits_data.x_test.numpy()
    for split, x in (("train", x_train), ("all", np.concatenate([x_train, x_test]))):
        out = tmp_path / f"{split}.npy"
        assert cli("embed", digits_run, "digits", "--split", split, "--out", out) == 0
        np.testing.assert_allclose(np.load(out), est.transform(x), rtol=1e-6, atol=1e-6)


def test_datasets_lists_digits(capsys):
    assert cli("datasets") == 0
    out = capsys.readouterr().out
    assert re.search(r"^digits\s", out, re.M)
    assert re.search(r"^mnist\s", out, re.M)


# ----------------------------------------------------------------------------- 2. user data formats


def _npy(d: Path) -> tuple[Path, int, int | None]:
    np.save(d / "data.npy", _uniform(40, 5, seed=2))
    return d / "data.npy", 40, None


def _npz(d: Path) -> tuple[Path, int, int | None]:
    rng = np.random.default_rng(3)
    np.savez(d / "data.npz", x_train=_uniform(30, 5, seed=4), x_test=_uniform(7, 5, seed=5),
             y_train=rng.integers(0, 3, 30), y_test=rng.integers(0, 3, 7))
    return d / "data.npz", 30 + 7, 7


def _csv(d: Path) -> tuple[Path, int, int | None]:
    write_csv(d / "data.csv", _uniform(40, 5, seed=6))
    return d / "data.csv", 40, None


def _pngs(d: Path) -> tuple[Path, int, int | None]:
    write_pngs(d / "imgs", np.random.default_rng(8).integers(0, 256, (12, 6, 6), dtype=np.uint8))
    return d / "imgs", 12, None


FORMATS = {"npy": _npy, "npz": _npz, "csv": _csv, "pngs": _pngs}
SHAPES = {"npy": [5], "npz": [5], "csv": [5], "pngs": [1, 6, 6]}


@pytest.mark.parametrize("fraction", [None, 0.25])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_train_on_user_file(tmp_path, capsys, fmt, fraction):
    path, n, fixed_test = FORMATS[fmt](tmp_path)
    run = tmp_path / "run"
    extra = [] if fraction is None else ["--test-fraction", fraction]
    assert cli("train", path, "--out", run, "--epochs", 1, *SMALL, *extra) == 0
    n_train, n_test = split_sizes(capsys.readouterr().err)
    # An .npz brings its own test part; otherwise round(n * fraction) rows are held out.
    expected = fixed_test if fixed_test is not None else round(n * (fraction or 0.1))
    assert (n_train, n_test) == (n - expected, expected)
    cfg = config(run)
    assert cfg["data"]["test_fraction"] == (fraction or 0.1)
    assert cfg["data_shape"] == SHAPES[fmt]
    assert cfg["data"]["data"] == str(path)
    rows = metrics(run)
    assert len(rows) == 1 and METRIC_KEYS <= set(rows[0])
    assert rows[0]["test_loss"] == pytest.approx(rows[0]["test_rec"] + rows[0]["test_kl"], rel=1e-6)
    assert (run / "images" / "reconstruction_1.png").exists() == (fmt == "pngs")


def test_npz_test_metrics_are_over_its_x_test(tmp_path):
    path, _, _ = _npz(tmp_path)
    run = tmp_path / "run"
    assert cli("train", path, "--out", run, "--epochs", 1, *SMALL) == 0
    with np.load(path) as z:
        x_test = z["x_test"]
    kl = closed_form_kl(VAE.load(run), x_test).mean()
    assert metrics(run)[0]["test_kl"] == pytest.approx(kl, rel=1e-5)


@pytest.mark.parametrize("split", ["all", "test", "train"])
def test_embed_csv_one_row_per_line_in_file_order(tab_run, tmp_path, split):
    csv = Path(config(tab_run)["data"]["data"])
    out = tmp_path / "e.npy"
    # A plain file has no parts: every split is all of its rows.
    assert cli("embed", tab_run, csv, "--split", split, "--out", out) == 0
    rows = np.loadtxt(csv, delimiter=",", dtype=np.float32)
    assert rows.shape == (40, 5)
    z = np.load(out)
    assert z.shape == (40, 2)
    np.testing.assert_allclose(z, VAE.load(tab_run).transform(rows), rtol=1e-6, atol=1e-6)
    # And row by row: the embedding of line i is that of line i alone.
    est = VAE.load(tab_run)
    for i in (0, 17, 39):
        np.testing.assert_allclose(z[i], est.transform(rows[i: i + 1])[0], rtol=1e-5, atol=1e-6)


def test_embed_npz_splits(tmp_path):
    path, _, _ = _npz(tmp_path)
    run = tmp_path / "run"
    assert cli("train", path, "--out", run, "--epochs", 1, *SMALL) == 0
    est = VAE.load(run)
    with np.load(path) as z:
        parts = {"train": z["x_train"], "test": z["x_test"]}
    parts["all"] = np.concatenate([parts["train"], parts["test"]])
    for split, x in parts.items():
        out = tmp_path / f"{split}.npy"
        assert cli("embed", run, path, "--split", split, "--out", out) == 0
        np.testing.assert_allclose(np.load(out), est.transform(x), rtol=1e-6, atol=1e-6)


def test_embed_image_folder_in_sorted_file_order(tmp_path):
    path, _, _ = _pngs(tmp_path)
    run = tmp_path / "run"
    assert cli("train", path, "--out", run, "--epochs", 1, *SMALL) == 0
    files = sorted(path.glob("*.png"))
    x = np.stack([np.asarray(Image.open(p)) for p in files]).astype(np.float32)[:, None] / 255
    out = tmp_path / "e.npy"
    assert cli("embed", run, path, "--out", out) == 0
    np.testing.assert_allclose(np.load(out), VAE.load(run).transform(x), rtol=1e-6, atol=1e-6)


def test_test_fraction_zero_trains_without_test_metrics(tmp_path, capsys):
    path, n, _ = _pngs(tmp_path)
    run = tmp_path / "run"
    assert cli("train", path, "--out", run, "--epochs", 1, *SMALL, "--test-fraction", 0) == 0
    assert split_sizes(capsys.readouterr().err) == (n, 0)
    (row,) = metrics(run)
    assert "test_loss" not in row and np.isfinite(row["train_loss"])
    # With no test split the epoch images show training examples instead.
    assert grid_cells(run / "images" / "reconstruction_1.png", cell=6, ncol=8).shape == (2, 8, 6, 6)


def test_reconstruct_run_without_test_split(tmp_path, capsys):
    path, _, _ = _pngs(tmp_path)
    run = tmp_path / "run"
    assert cli("train", path, "--out", run, "--epochs", 1, *SMALL, "--test-fraction", 0) == 0
    capsys.readouterr()
    status = cli("reconstruct", run, "--out", tmp_path / "r.png")
    if status == 2:
        assert_one_error(capsys.readouterr().err)
    else:
        assert status == 0 and (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- 3. config files


@pytest.fixture
def small_npy(tmp_path) -> Path:
    np.save(tmp_path / "x.npy", _uniform(20, 4, seed=9))
    return tmp_path / "x.npy"


def test_config_file_applied_and_flag_overrides(tmp_path, small_npy):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('latent-dim = 3\nhidden = "16"\nepochs = 1\n')
    assert cli("train", small_npy, "--out", tmp_path / "a", "--config", cfg) == 0
    a = config(tmp_path / "a")
    assert a["model"]["latent_dim"] == 3 and a["model"]["hidden"] == [16]
    assert a["train"]["epochs"] == 1 and len(metrics(tmp_path / "a")) == 1
    assert VAE.load(tmp_path / "a").transform(np.load(small_npy)).shape == (20, 3)
    assert cli("train", small_npy, "--out", tmp_path / "b", "--config", cfg, "--latent-dim", 4) == 0
    b = config(tmp_path / "b")
    assert b["model"]["latent_dim"] == 4 and b["model"]["hidden"] == [16]
    assert b["train"]["epochs"] == 1


@pytest.mark.parametrize("text, needles", [
    ("latent_dimm = 3\n", ["latent-dim"]),
    ('epochs = "ten"\n', ["--epochs"]),
    ("latent-dim = \n", ["TOML"]),
    ("[model]\nlatent-dim = 3\n", ["top level"]),
], ids=["unknown-key", "wrong-type", "invalid-toml", "table"])
def test_bad_config_file(tmp_path, capsys, small_npy, text, needles):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(text)
    before = snapshot(tmp_path)
    assert cli("train", small_npy, "--out", tmp_path / "run", "--config", cfg) == 2
    assert_one_error(capsys.readouterr().err, *needles)
    assert snapshot(tmp_path) == before


def test_missing_config_file(tmp_path, capsys, small_npy):
    assert cli("train", small_npy, "--out", tmp_path / "run", "--config", tmp_path / "no.toml") == 2
    assert_one_error(capsys.readouterr().err, "does not exist")


# ----------------------------------------------------------------------------- 4. run directory


def test_existing_run_is_not_touched(tmp_path, capsys, small_npy):
    run = tmp_path / "run"
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL, "--seed", 5) == 2
    assert_one_error(capsys.readouterr().err, "--resume", "--overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_retrains(tmp_path, small_npy):
    run = tmp_path / "run"
    assert cli("train", small_npy, "--out", run, "--epochs", 2, *SMALL) == 0
    old = snapshot(run)
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL, "--seed", 5, "--overwrite") == 0
    assert [r["epoch"] for r in metrics(run)] == [1]
    assert config(run)["train"]["seed"] == 5 and config(run)["train"]["epochs"] == 1
    assert snapshot(run)["model.safetensors"] != old["model.safetensors"]
    # The new weights are those of a fresh 1-epoch run with the same settings.
    fresh = tmp_path / "fresh"
    assert cli("train", small_npy, "--out", fresh, "--epochs", 1, *SMALL, "--seed", 5) == 0
    assert snapshot(fresh)["model.safetensors"] == snapshot(run)["model.safetensors"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, small_npy):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    before = snapshot(tmp_path)
    assert cli("train", small_npy, "--out", other, "--epochs", 1, "--overwrite") == 2
    assert_one_error(capsys.readouterr().err, "not a vaekit run")
    assert snapshot(tmp_path) == before


def test_overwrite_with_bad_data_keeps_the_old_run(tmp_path, capsys, small_npy):
    run = tmp_path / "run"
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL) == 0
    np.save(tmp_path / "wide.npy", 3 * _uniform(20, 4, seed=10) - 1)  # outside [0, 1]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli("train", tmp_path / "wide.npy", "--out", run, "--epochs", 1, *SMALL, "--overwrite",
               "--likelihood", "bernoulli") == 2
    assert_one_error(capsys.readouterr().err, "--likelihood gaussian")
    assert snapshot(tmp_path) == before


def test_resume_appends_epochs_and_equals_an_uninterrupted_run(tmp_path, small_npy):
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL) == 0
    first = metrics(run)
    assert cli("train", small_npy, "--out", run, "--epochs", 2, "--resume") == 0
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == first[0]
    # Resuming restores weights, optimizer and random streams: the same as 2 epochs in one go.
    assert cli("train", small_npy, "--out", straight, "--epochs", 2, *SMALL) == 0
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(metrics(straight)) == drop(rows)
    assert snapshot(straight)["model.safetensors"] == snapshot(run)["model.safetensors"]


def test_resume_records_the_new_epoch_count(tmp_path, small_npy):
    run = tmp_path / "run"
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL) == 0
    assert cli("train", small_npy, "--out", run, "--epochs", 2, "--resume") == 0
    assert len(metrics(run)) == 2
    assert config(run)["train"]["epochs"] == 2


@pytest.mark.parametrize("extra, needle", [
    (["--latent-dim", 3], "--latent-dim"),
    (["--lr", 0.01], "--lr"),
], ids=["latent-dim", "lr"])
def test_resume_refuses_changes(tmp_path, capsys, small_npy, extra, needle):
    run = tmp_path / "run"
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli("train", small_npy, "--out", run, "--epochs", 2, "--resume", *extra) == 2
    assert_one_error(capsys.readouterr().err, needle)
    assert snapshot(tmp_path) == before


def test_resume_refuses_other_data_and_missing_checkpoint(tmp_path, capsys, small_npy):
    run = tmp_path / "run"
    assert cli("train", small_npy, "--out", run, "--epochs", 1, *SMALL) == 0
    np.save(tmp_path / "other.npy", _uniform(20, 4, seed=11))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli("train", tmp_path / "other.npy", "--out", run, "--epochs", 2, "--resume") == 2
    assert_one_error(capsys.readouterr().err, "trained on")
    assert cli("train", small_npy, "--out", tmp_path / "none", "--epochs", 2, "--resume") == 2
    assert_one_error(capsys.readouterr().err, "no checkpoint")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 5. bad inputs


def _nan_npy(d):
    x = _uniform(20, 4, seed=12)
    x[7, 2] = np.nan
    np.save(d / "x.npy", x)
    return ["train", d / "x.npy"], ["NaN"]


def _inf_csv(d):
    (d / "x.csv").write_text("a,b\n0.1,0.2\n0.3,inf\n0.5,0.6\n")
    return ["train", d / "x.csv"], ["column 'b', row 2", "not a finite number"]


def _text_cell_csv(d):
    (d / "x.csv").write_text("a,b\n0.1,0.2\n0.3,oops\n0.5,0.6\n")
    return ["train", d / "x.csv"], ["column 'b', row 2: 'oops' is not a number"]


def _ragged_csv(d):
    (d / "x.csv").write_text("0.1,0.2,0.3\n0.3,0.4\n0.5,0.6,0.7\n")
    return ["train", d / "x.csv"], ["line 2"]


def _empty_csv(d):
    (d / "x.csv").write_bytes(b"")
    return ["train", d / "x.csv"], ["empty"]


def _empty_npy(d):
    (d / "x.npy").write_bytes(b"")
    return ["train", d / "x.npy"], ["not a NumPy"]


def _mixed_sizes(d):
    write_pngs(d / "imgs", np.zeros((3, 6, 6), np.uint8))
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(d / "imgs" / "img_99.png")
    return ["train", d / "imgs"], ["differ in size"]


def _corrupt_png(d):
    write_pngs(d / "imgs", np.full((4, 6, 6), 100, np.uint8))
    data = (d / "imgs" / "img_02.png").read_bytes()
    (d / "imgs" / "img_02.png").write_bytes(data[:40])  # header kept, pixels cut off
    return ["train", d / "imgs"], ["img_02.png"]


def _out_of_range(d):
    np.save(d / "x.npy", 3 * _uniform(20, 4, seed=13) - 1)  # a Bernoulli model asked for
    return ["train", d / "x.npy", "--likelihood", "bernoulli"], ["--likelihood gaussian"]


def _text_as_npy(d):
    (d / "x.npy").write_text("0.1,0.2\n0.3,0.4\n")
    return ["train", d / "x.npy"], ["not a NumPy .npy file"]


def _unknown_dataset(d):
    return ["train", "digts"], ["'digits'"]


def _flag(flag, value, *needles):
    """A bad flag value; the message names the flag (or, for a choice, its kind and the close name)."""
    def setup(d):
        return ["train", "digits", flag, value], list(needles) or [flag]
    return setup


def _conv_on_vectors(d):
    np.save(d / "x.npy", _uniform(20, 4, seed=14))
    return ["train", d / "x.npy", "--arch", "conv"], ["--arch conv", "image"]


BAD_TRAIN = {
    "nan-npy": _nan_npy,
    "inf-csv": _inf_csv,
    "text-cell-csv": _text_cell_csv,
    "ragged-csv": _ragged_csv,
    "empty-csv": _empty_csv,
    "empty-npy": _empty_npy,
    "mixed-image-sizes": _mixed_sizes,
    "corrupt-png": _corrupt_png,
    "outside-0-1": _out_of_range,
    "text-as-npy": _text_as_npy,
    "unknown-dataset": _unknown_dataset,
    "epochs-0": _flag("--epochs", "0"),
    "batch-size-neg": _flag("--batch-size", "-1"),
    "lr-nan": _flag("--lr", "nan"),
    "beta-neg": _flag("--beta", "-1"),
    "arch-cnv": _flag("--arch", "cnv", "--arch 'cnv'", "'conv'"),
    "likelihood-bernouli": _flag("--likelihood", "bernouli", "likelihood 'bernouli'", "'bernoulli'"),
    "hidden-0": _flag("--hidden", "0"),
    "hidden-abc": _flag("--hidden", "abc"),
    "device-tpu": _flag("--device", "tpu"),
    "precision-fp8": _flag("--precision", "fp8"),
    "test-fraction-1.5": _flag("--test-fraction", "1.5"),
    "conv-on-vectors": _conv_on_vectors,
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_input(tmp_path, capsys, case):
    argv, needles = BAD_TRAIN[case](tmp_path)
    run = tmp_path / "run"
    before = snapshot(tmp_path)
    epochs = [] if "--epochs" in argv else ["--epochs", 1]
    assert cli(*argv, "--out", run, *epochs) == 2
    assert_one_error(capsys.readouterr().err, *needles)
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


def test_outside_0_1_trains_with_gaussian(tmp_path):
    argv, _ = _out_of_range(tmp_path)
    run = tmp_path / "run"
    assert cli(*argv, "--out", run, "--epochs", 1, *SMALL, "--likelihood", "gaussian") == 0
    assert config(run)["model"]["likelihood"] == "gaussian"
    assert np.isfinite(metrics(run)[0]["test_loss"])


def _copy_run(src: Path, d: Path) -> Path:
    return Path(shutil.copytree(src, d / "run"))


def _truncated_model(run: Path, d: Path) -> list[str]:
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ["safetensors"]


class _Marker:
    """Unpickling this creates a folder: proof that a pickle was (wrongly) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _pickled_model(run: Path, d: Path) -> list[str]:
    (run / "model.safetensors").write_bytes(pickle.dumps({"a": 1, "m": _Marker(d / "UNPICKLED")}))
    return ["safetensors"]


def _plain_pickle_model(run: Path, d: Path) -> list[str]:
    (run / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    return ["safetensors"]


def _newer_config(run: Path, d: Path) -> list[str]:
    cfg = config(run)
    cfg["format_version"] = 99
    (run / "config.json").write_text(json.dumps(cfg))
    return ["newer", "upgrade"]


@pytest.mark.parametrize("damage", [_truncated_model, _pickled_model, _plain_pickle_model, _newer_config],
                         ids=["truncated", "pickle-with-side-effect", "pickle", "format-99"])
@pytest.mark.parametrize("command", ["sample", "embed", "reconstruct-images"])
def test_damaged_run_is_refused(tab_run, digits_run, tmp_path, capsys, damage, command):
    run = _copy_run(digits_run if command == "reconstruct-images" else tab_run, tmp_path)
    needles = damage(run, tmp_path)
    argv = {"sample": ["sample", run, "--out", tmp_path / "s.npy"],
            "embed": ["embed", run, config(run)["data"]["data"], "--out", tmp_path / "e.npy"],
            "reconstruct-images": ["reconstruct", run, "--out", tmp_path / "r.png"]}[command]
    before = snapshot(tmp_path)
    assert cli(*argv) == 2
    assert_one_error(capsys.readouterr().err, *needles)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "UNPICKLED").exists()


def _pickled_checkpoint(run: Path, d: Path) -> list[str]:
    (run / "checkpoint.safetensors").write_bytes(pickle.dumps({"m": _Marker(d / "UNPICKLED")}))
    return ["safetensors"]


def _truncated_checkpoint(run: Path, d: Path) -> list[str]:
    data = (run / "checkpoint.safetensors").read_bytes()
    (run / "checkpoint.safetensors").write_bytes(data[: len(data) - 10])
    return ["safetensors"]


def _damaged_checkpoint_json(run: Path, d: Path) -> list[str]:
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["latent_dim"] = "2"  # valid JSON, wrong type
    (run / "config.json").write_text(json.dumps(cfg))
    return ["config.json", "latent_dim"]


@pytest.mark.parametrize("damage", [_pickled_checkpoint, _truncated_checkpoint,
                                    _damaged_checkpoint_json, _newer_config],
                         ids=["pickle-checkpoint", "truncated-checkpoint", "bad-json", "format-99"])
def test_damaged_run_is_not_resumed(tab_run, tmp_path, capsys, damage):
    run = _copy_run(tab_run, tmp_path)
    needles = damage(run, tmp_path)
    before = snapshot(tmp_path)
    assert cli("train", config(run)["data"]["data"], "--out", run, "--epochs", 2, "--resume") == 2
    assert_one_error(capsys.readouterr().err, *needles)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "UNPICKLED").exists()


def test_missing_run_dir(tmp_path, capsys):
    assert cli("sample", tmp_path / "nope", "--out", tmp_path / "s.npy") == 2
    assert_one_error(capsys.readouterr().err, "does not exist")
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("argv, needles", [
    (["sample", "{run}", "--out", "{tmp}/x.txt"], [".png or .npy"]),
    (["sample", "{run}", "--out", "{tmp}/x.png"], ["not images", ".npy"]),
    (["reconstruct", "{run}", "--out", "{tmp}/x.png"], ["not images"]),
    (["embed", "{run}", "digits", "--out", "{tmp}/e.npy"], ["(1, 8, 8)", "(5,)"]),
    (["embed", "{run}", "{tmp}/wrong.csv", "--out", "{tmp}/e.npy"], ["(3,)", "(5,)"]),
    (["embed", "{run}", "{tmp}/data.csv", "--out", "{tmp}/e.txt"], [".npy or .csv"]),
], ids=["sample-txt", "sample-png-tabular", "reconstruct-tabular", "embed-images-into-vectors",
        "embed-wrong-width", "embed-txt"])
def test_bad_use_of_a_run(tab_run, tmp_path, capsys, argv, needles):
    write_csv(tmp_path / "wrong.csv", _uniform(6, 3, seed=15), header=False)
    write_csv(tmp_path / "data.csv", _uniform(6, 5, seed=16), header=False)
    before, run_before = snapshot(tmp_path), snapshot(tab_run)
    assert cli(*[a.format(run=tab_run, tmp=tmp_path) for a in argv]) == 2
    assert_one_error(capsys.readouterr().err, *needles)
    assert snapshot(tmp_path) == before and snapshot(tab_run) == run_before


# ----------------------------------------------------------------------------- real processes


def _vaekit(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_python_m_vaekit_help(tmp_path):
    p = _vaekit("--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for command in ("train", "sample", "reconstruct", "embed", "datasets"):
        assert command in p.stdout


def test_process_error_is_one_line_with_status_2(tmp_path):
    p = _vaekit("train", "digts", "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'digits'" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()


def test_process_bad_flag_is_one_line_with_status_2(tmp_path):
    p = _vaekit("train", "digits", "--epochs", "0", cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--epochs" in lines[0], p.stderr


def test_process_debug_shows_traceback(tmp_path):
    p = _vaekit("train", "digts", "--out", tmp_path / "run", "--debug", cwd=tmp_path)
    assert p.returncode not in (0, 2)
    assert "Traceback" in p.stderr and "DataError" in p.stderr


def test_debug_before_the_command_shows_traceback(tmp_path):
    from vaekit.errors import DataError

    with pytest.raises(DataError):
        main(["--debug", "train", "digts", "--out", str(tmp_path / "run")])
