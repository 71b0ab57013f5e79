"""Every file read from a run directory is validated before use: one clear error line naming
the file, never a traceback, a hang or a silently wrong result."""

import io
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit.cli.main import main
from vaekit.errors import RunDirError
from vaekit.io.files import json_dumps, write_json
from vaekit.runs.directory import RunDir
from vaekit.runs.store import parse_npy
from helpers import assert_one_error

TINY = ["--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--no-report", "--precision", "fp32"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("made")
    np.save(root / "v.npy", np.random.default_rng(0).random((64, 6)).astype(np.float32))
    np.save(root / "img.npy", np.random.default_rng(0).random((64, 8, 8)).astype(np.float32))
    assert main(["train", str(root / "v.npy"), "--out", str(root / "vec"), *TINY,
                 "--likelihood", "gaussian"]) == 0
    assert main(["train", str(root / "img.npy"), "--out", str(root / "img"), *TINY]) == 0
    return {"vec": root / "vec", "img": root / "img"}


def copy(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())
    return dst


@pytest.fixture
def vec(made, tmp_path) -> Path:
    return copy(made["vec"], tmp_path / "vec")


@pytest.fixture
def img(made, tmp_path) -> Path:
    return copy(made["img"], tmp_path / "img")


# -- model.safetensors ----------------------------------------------------------------------------
def test_a_model_file_cast_to_int32_is_refused(vec, tmp_path, capsys):
    """Issue 14: it loaded and sampled 0.5 everywhere."""
    t = load_file(vec / "model.safetensors")
    save_file({k: v.to(torch.int32) for k, v in t.items()}, vec / "model.safetensors")
    assert main(["sample", str(vec), "-n", "4", "--out", str(tmp_path / "s.npy")]) == 2
    line = assert_one_error(capsys.readouterr().err)
    assert "model.safetensors" in line and "torch.int32" in line and "expected" in line
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.popitem(), "missing tensors"),
    (lambda t: t.__setitem__("extra", torch.zeros(2)), "unexpected ['extra']"),
    (lambda t: t.__setitem__(next(iter(t)), torch.zeros(3, 3)), "(3, 3)"),
    (lambda t: next(v for v in t.values() if v.is_floating_point()).fill_(float("nan")), "NaN or infinite"),
], ids=["missing", "extra", "shape", "nan"])
def test_model_tensors_must_match_the_config(vec, edit, needle):
    t = load_file(vec / "model.safetensors")
    edit(t)
    save_file(t, vec / "model.safetensors")
    with pytest.raises(RunDirError, match="model.safetensors") as e:
        RunDir(vec).load_model()
    assert needle in str(e.value)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "metrics.jsonl"])
def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(vec, name):
    (vec / name).unlink()
    os.mkfifo(vec / name)
    with pytest.raises(RunDirError, match="not a regular file"):
        RunDir(vec).load_model() if name != "metrics.jsonl" else RunDir(vec).read_metrics()


def test_a_pickle_or_truncated_file_is_refused(vec):
    (vec / "model.safetensors").write_bytes(pickle.dumps({"w": [1.0]}))
    with pytest.raises(RunDirError, match="not a readable safetensors file"):
        RunDir(vec).load_model()
    data = (vec / "config.json").read_bytes()
    (vec / "config.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="config.json is not readable JSON"):
        RunDir(vec).load_model()


# -- metrics.jsonl -----------------------------------------------------------------------------
@pytest.mark.parametrize("line,needle", [
    ("{}", "has epoch None, expected 1"),
    ("[1, 2]", "JSON list, not an object"),
    ('{"epoch": "1", "train_loss": 1.0}', "expected 1"),
    ('{"epoch": 2, "train_loss": 1.0}', "has epoch 2, expected 1"),
    ('{"epoch": 1, "train_loss": NaN}', "not readable JSON"),
    ('{"epoch": 1, "train_loss": "low"}', "train_loss"),
    ('{"epoch": 1, "train_loss": 1.0, "test_loss": {"a": 1}}', "test_loss"),
    ('{"epoch": 1, "train_loss": 1', "not readable JSON"),
], ids=["empty", "list", "string-epoch", "skips", "nan", "string", "nested", "truncated"])
def test_a_bad_metrics_line_gives_one_error_from_report(vec, capsys, line, needle):
    (vec / "metrics.jsonl").write_text(line + "\n")
    assert main(["report", str(vec)]) == 2
    err = assert_one_error(capsys.readouterr().err)
    assert "metrics.jsonl line 1" in err and needle in err, err
    assert not (vec / "report.html").exists()


def test_non_finite_metrics_are_written_as_null_and_read_as_nan(vec):
    rd = RunDir(vec)
    rows = rd.read_metrics()
    rows[0]["test_loss"] = float("nan")
    rows[1]["train_kl"] = float("inf")
    rd.write_metrics(rows)
    text = (vec / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text and "null" in text
    back = rd.read_metrics()
    assert math.isnan(back[0]["test_loss"]) and math.isnan(back[1]["train_kl"])
    assert main(["report", str(vec)]) == 0  # a run with a NaN epoch still reports


def test_json_files_are_strict_json():
    assert json_dumps({"a": float("nan"), "b": [float("-inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'


# -- evaluation.json -----------------------------------------------------------------------------
def test_a_truncated_evaluation_is_one_clear_error_from_report(vec, capsys):
    """Documented choice: a damaged evaluation.json is an error (re-run evaluate), not hidden."""
    assert main(["evaluate", str(vec), "-k", "5"]) == 0
    capsys.readouterr()
    data = (vec / "evaluation.json").read_bytes()
    (vec / "evaluation.json").write_bytes(data[:40])
    assert main(["report", str(vec)]) == 2
    err = assert_one_error(capsys.readouterr().err)
    assert "evaluation.json" in err and "not readable JSON" in err


@pytest.mark.parametrize("obj", [[1, 2], {"log_likelihood": "high"}, {"log_likelihood": 1.0, "x": {"y": 1}},
                                 {"log_likelihood": 1.0, "kl_per_dim": ["a"]},
                                 {"log_likelihood": 1.0, "importance_samples": "1000"},
                                 {"log_likelihood": 1.0, "n_examples": -1},
                                 {"log_likelihood": 1.0, "active_units": 1.5},
                                 {"log_likelihood": 1.0, "data": 3}])
def test_an_evaluation_of_the_wrong_shape_is_refused(vec, obj):
    (vec / "evaluation.json").write_text(json.dumps(obj))
    with pytest.raises(RunDirError, match="evaluation.json"):
        RunDir(vec).read_evaluation()


def test_an_evaluation_with_nan_is_written_as_null_and_reads_back(vec):
    write_json(vec / "evaluation.json", {"log_likelihood": float("nan"), "kl_per_dim": None})
    assert "null" in (vec / "evaluation.json").read_text()
    ev = RunDir(vec).read_evaluation()
    assert math.isnan(ev["log_likelihood"]) and ev["kl_per_dim"] is None


# -- latent/ and images/ ------------------------------------------------------------------------
def test_stray_latent_and_image_names_are_ignored(img, capsys):
    (img / "latent" / "epoch_x.npy").write_bytes(b"junk")
    (img / "latent" / "notes.txt").write_text("mine")
    (img / "images" / "samples_x.png").write_bytes(b"junk")
    assert main(["report", str(img)]) == 0
    snaps, _ = RunDir(img).latent_snapshots()
    assert [e for e, _ in snaps] == [1, 2]
    assert RunDir(img).image_epochs("samples") == [1, 2]


def test_a_truncated_latent_file_is_one_clear_error(img, capsys):
    data = (img / "latent" / "epoch_2.npy").read_bytes()
    (img / "latent" / "epoch_2.npy").write_bytes(data[:-7])
    assert main(["report", str(img)]) == 2
    err = assert_one_error(capsys.readouterr().err)
    assert "epoch_2.npy is truncated" in err


@pytest.mark.parametrize("array,needle", [
    (np.zeros((5, 3)), "like the other latent maps"),  # another shape than epoch 1's
    (np.full((2000, 2), np.nan, np.float32)[:64], "finite"),
    (np.zeros((64, 2), np.int64), "float"),
])
def test_latent_maps_must_be_finite_floats_of_one_shape(img, array, needle):
    np.save(img / "latent" / "epoch_2.npy", array)
    with pytest.raises(RunDirError, match=needle):
        RunDir(img).latent_snapshots()


def test_a_pickled_latent_file_is_refused(img):
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (img / "latent" / "epoch_2.npy").write_bytes(buf.getvalue())
    with pytest.raises(RunDirError, match="not numbers"):
        RunDir(img).latent_snapshots()


def test_a_lying_npy_header_allocates_nothing():
    """A header promising 10**12 values before 16 bytes is refused before numpy allocates."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (10 ** 12,)})
    with pytest.raises(RunDirError, match="truncated or damaged"):
        parse_npy(buf.getvalue() + bytes(16), "x.npy")
    assert parse_npy(buf.getvalue()[:0] + _npy(np.arange(3.0)), "y.npy").tolist() == [0, 1, 2]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_an_image_that_is_not_a_png_is_refused(img, capsys):
    (img / "images" / "samples_2.png").write_bytes(b"GIF89a....")
    assert main(["report", str(img)]) == 2
    assert "samples_2.png is not a PNG" in assert_one_error(capsys.readouterr().err)


def test_labels_must_match_the_latent_points(img):
    np.save(img / "latent" / "labels.npy", np.zeros(3, np.int64))
    with pytest.raises(RunDirError, match="labels.npy"):
        RunDir(img).latent_snapshots()
