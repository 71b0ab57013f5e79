"""config.json is validated whole, with one schema, every time a run is read."""

import json
from pathlib import Path

import numpy as np
import pytest

from vaekit.cli.main import main
from vaekit.config.settings import RunConfig
from vaekit.errors import RunDirError
from vaekit.runs.directory import RunDir
from vaekit.runs.store import MAX_ELEMENTS


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cfg")
    np.save(root / "v.npy", np.random.default_rng(0).random((64, 6)).astype(np.float32))
    assert main(["train", str(root / "v.npy"), "--out", str(root / "run"), "--epochs", "1",
                 "--hidden", "8", "--latent-dim", "2", "--no-report", "--precision", "fp32"]) == 0
    return json.loads((root / "run" / "config.json").read_text())


def write(tmp_path: Path, cfg) -> RunDir:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return RunDir(run)


def test_the_written_config_carries_the_format_marker_and_reads_back(good, tmp_path):
    assert good["format"] == "vaekit-run" and good["format_version"] == 1
    cfg, shape = write(tmp_path, good).read_config()
    assert shape == (6,) and cfg.model.latent_dim == 2 and isinstance(cfg, RunConfig)


def _set(path: str, value):
    def edit(d):
        *parents, key = path.split(".")
        for p in parents:
            d = d[p]
        d[key] = value
    return edit


def _del(path: str):
    def edit(d):
        *parents, key = path.split(".")
        for p in parents:
            d = d[p]
        del d[key]
    return edit


CASES = {
    "format_version a string": (_set("format_version", "1"), "format_version must be"),
    "format_version a float": (_set("format_version", 1.0), "format_version must be"),
    "format_version newer": (_set("format_version", 99), "newer than this vaekit"),
    "no marker": (_del("format"), "marker"),
    "another marker": (_set("format", "vaekit-model"), "marker"),
    "latent_dim a string": (_set("model.latent_dim", "2"), "latent_dim"),
    "latent_dim a bool": (_set("model.latent_dim", True), "latent_dim"),
    "latent_dim 1e12": (_set("model.latent_dim", 1e12), "latent_dim"),
    "latent_dim negative": (_set("model.latent_dim", -2), "latent_dim"),
    "lr a list": (_set("train.lr", [1]), "lr"),
    "lr NaN-like": (_set("train.lr", -1.0), "lr"),
    "unknown arch": (_set("model.arch", "transformer"), "arch"),
    "unknown key in a section": (_set("model.colour", "red"), "unknown keys"),
    "unknown top-level key": (_set("extra", 1), "unknown keys"),
    "section not an object": (_set("model", [1, 2]), "section 'model'"),
    "negative shape": (_set("data_shape", [-6]), "data_shape"),
    "zero shape": (_set("data_shape", [0]), "data_shape"),
    "shape too long": (_set("data_shape", [1, 2, 3, 4]), "data_shape"),
    "shape of strings": (_set("data_shape", ["6"]), "data_shape"),
    "shape too large": (_set("data_shape", [MAX_ELEMENTS, 2]), "data_shape"),
    "shape missing": (_del("data_shape"), "data_shape"),
    "version missing": (_del("vaekit_version"), "vaekit_version"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_bad_value_is_one_run_dir_error(good, tmp_path, case):
    edit, needle = CASES[case]
    d = json.loads(json.dumps(good))
    edit(d)
    rd = write(tmp_path, d)
    with pytest.raises(RunDirError, match=str(rd.path)) as e:  # names the run or its config.json
        rd.read_config()
    assert needle in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text,needle", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "nested too deeply|JSON"),
    ("[1, 2]", "JSON list"),
    ('"run"', "JSON str"),
    ("null", "JSON NoneType"),
    ("{", "not readable JSON"),
    ("\xff\xfe", "not readable JSON"),
    ('{"format": "vaekit-run", "format_version": NaN}', "not readable JSON"),
])
def test_json_that_is_not_a_config_is_one_error(tmp_path, text, needle):
    rd = write(tmp_path, text)
    with pytest.raises(RunDirError, match=needle):
        rd.read_config()


def test_the_cli_prints_one_line_for_a_bad_config(good, tmp_path, capsys):
    d = json.loads(json.dumps(good))
    d["model"]["latent_dim"] = "2"
    rd = write(tmp_path, d)
    assert main(["sample", str(rd.path), "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "latent_dim" in lines[0]


def test_a_config_too_large_to_be_ours_is_refused_unread(tmp_path):
    rd = write(tmp_path, "{}")
    with open(rd.config, "wb") as f:
        f.truncate(64 * 2 ** 20)  # sparse: costs no disk
    with pytest.raises(RunDirError, match="more than the"):
        rd.read_config()
