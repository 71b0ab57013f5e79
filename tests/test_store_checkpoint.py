"""The checkpoint is one atomic unit, validated whole before it touches the model, the optimizer
or the generators; a kill at any write boundary resumes to bit-identical weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from vaekit.io import files as fileio
from vaekit.cli.main import main
from vaekit.errors import RunDirError
from vaekit.runs.directory import RunDir
from vaekit.runs.store import parse_safetensors

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--hidden", "8", "--latent-dim", "2", "--likelihood", "gaussian", "--no-report",
        "--precision", "fp32", "--batch-size", "16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "x.npy"
    np.save(path, np.random.default_rng(0).random((64, 6)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def run2(tmp_path_factory, data) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r"
    assert main(["train", str(data), "--out", str(run), "--epochs", "2", *TINY]) == 0
    return run


@pytest.fixture
def run(tmp_path, run2) -> Path:
    dst = tmp_path / "r"
    for p in run2.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(run2)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(run2)).write_bytes(p.read_bytes())
    return dst


def edit_checkpoint(run: Path, tensors=None, meta=None) -> None:
    """Rewrite checkpoint.safetensors with ``tensors(t)`` / ``meta(m)`` applied in place."""
    path = run / "checkpoint.safetensors"
    t, metadata = parse_safetensors(path.read_bytes(), str(path))
    m = json.loads(metadata["meta"])
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    metadata["meta"] = json.dumps(m)
    path.write_bytes(st_save(t, metadata))


def resume_error(run: Path, data: Path, capsys) -> str:
    assert main(["train", str(data), "--out", str(run), "--epochs", "3", *TINY, "--resume"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_checkpoint_is_one_file_holding_its_metadata(run):
    assert not (run / "checkpoint.json").exists()
    tensors = load_file(run / "checkpoint.safetensors")
    assert {"rng.shuffle", "rng.noise"} <= set(tensors)
    assert any(k.startswith("optim.") and k.endswith(".exp_avg_sq") for k in tensors)
    info = RunDir(run).checkpoint_info()
    assert info["epoch"] == 2 and [r["epoch"] for r in info["history"]] == [1, 2]
    assert info["optim_state"] == sorted({int(k.split(".")[1]) for k in tensors if k.startswith("optim.")})


def first_big_state(t: dict) -> str:
    return next(k for k, v in sorted(t.items()) if k.endswith(".exp_avg") and v.numel() > 7)


def test_a_short_adam_state_is_refused_not_a_segfault(run, data):
    """Issue 14: a 7-element exp_avg made fused Adam write past its buffer (exit -11)."""
    edit_checkpoint(run, tensors=lambda t: t.__setitem__(first_big_state(t), torch.zeros(7)))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "vaekit", "train", str(data), "--out", str(run),
                           "--epochs", "3", *TINY, "--resume"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error:") and "checkpoint.safetensors" in err[-1] and "(7,)" in err[-1]
    assert "Traceback" not in proc.stderr


def _drop(prefix):
    return lambda t: [t.pop(k) for k in [k for k in t if k.startswith(prefix)]]


CASES = {
    "optim removed": (dict(tensors=_drop("optim.")), "no optimizer state"),
    "one optim tensor removed": (dict(tensors=lambda t: t.pop(first_big_state(t))), "optimizer state"),
    "rng.shuffle missing": (dict(tensors=lambda t: t.pop("rng.shuffle")), "random-generator states"),
    "10-byte rng": (dict(tensors=lambda t: t.__setitem__("rng.shuffle", torch.zeros(10, dtype=torch.uint8))),
                    "rng.shuffle is (10,)"),
    "rng of the wrong dtype": (dict(tensors=lambda t: t.__setitem__("rng.noise", t["rng.noise"].float())),
                               "rng.noise"),
    "invalid rng content": (dict(tensors=lambda t: t.__setitem__("rng.shuffle", torch.zeros_like(t["rng.shuffle"]))),
                            "not a valid generator state"),
    "epoch as a string": (dict(meta=lambda m: m.__setitem__("epoch", "2")), "epoch must be"),
    "epoch 0": (dict(meta=lambda m: m.__setitem__("epoch", 0)), "epoch must be"),
    "epoch -3": (dict(meta=lambda m: m.__setitem__("epoch", -3)), "epoch must be"),
    "epoch beyond config": (dict(meta=lambda m: m.__setitem__("epoch", 99)), "epoch must be"),
    "history of the wrong type": (dict(meta=lambda m: m.__setitem__("history", {"a": 1})), "history must be"),
    "history too short": (dict(meta=lambda m: m["history"].pop()), "history must be"),
    "history row not an object": (dict(meta=lambda m: m["history"].__setitem__(0, [1, 2])), "history row 1"),
    "history value a list": (dict(meta=lambda m: m["history"][0].__setitem__("train_loss", [1])), "train_loss"),
    "groups listing 2 of the params": (dict(meta=lambda m: m["param_groups"][0].__setitem__("params", [0, 1])),
                                       "lists parameters"),
    "groups missing": (dict(meta=lambda m: m.pop("param_groups")), "param_groups must be"),
    "lr 1e6": (dict(meta=lambda m: m["param_groups"][0].__setitem__("lr", 1e6)), "config.json says --lr"),
    "lr a string": (dict(meta=lambda m: m["param_groups"][0].__setitem__("lr", "0.001")), "lr must be"),
    "betas changed": (dict(meta=lambda m: m["param_groups"][0].__setitem__("betas", [0.5, 0.5])), "betas"),
    "a setting added": (dict(meta=lambda m: m["param_groups"][0].__setitem__("momentum", 0.9)), "settings"),
    "NaN in exp_avg": (dict(tensors=lambda t: t[first_big_state(t)].fill_(float("nan"))), "non-finite"),
    "negative exp_avg_sq": (dict(tensors=lambda t: t[first_big_state(t) + "_sq"].fill_(-1.0)), "negative"),
    "step negative": (dict(tensors=lambda t: t[first_big_state(t).replace("exp_avg", "step")].fill_(-5)),
                      "count >= 0"),
    "exp_avg as float64": (dict(tensors=lambda t: t.__setitem__(first_big_state(t), t[first_big_state(t)].double())),
                           "float64"),
    "model weight missing": (dict(tensors=lambda t: t.pop(next(k for k in t if k.startswith("model.")))),
                             "missing tensors"),
    "model weight as int32": (dict(tensors=lambda t: [t.__setitem__(k, v.int()) for k, v in list(t.items())
                                                       if k.startswith("model.")]), "int32"),
    "a stray tensor": (dict(tensors=lambda t: t.__setitem__("evil", torch.zeros(1))), "does not write"),
    "optim tensor of a parameter that is not listed": (
        dict(tensors=lambda t: t.__setitem__("optim.999.exp_avg", torch.zeros(1))), "not one of parameters"),
    "meta not an object": (dict(meta=lambda m: (m.clear())), "epoch must be"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_crafted_checkpoint_is_refused_with_one_line(run, data, capsys, case):
    edit, needle = CASES[case]
    edit_checkpoint(run, **edit)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".vaekit.lock"}
    line = resume_error(run, data, capsys)
    assert "checkpoint.safetensors" in line and needle in line, line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".vaekit.lock"}
    assert after == before


def test_metadata_that_is_not_json_or_not_vaekit_is_refused(run, data, capsys):
    path = run / "checkpoint.safetensors"
    t, metadata = parse_safetensors(path.read_bytes(), str(path))
    path.write_bytes(st_save(t, {**metadata, "meta": '{"epoch": 1, "hist'}))
    assert "not readable JSON" in resume_error(run, data, capsys)
    path.write_bytes(st_save(t))
    assert "not a vaekit checkpoint" in resume_error(run, data, capsys)
    path.write_bytes(st_save(t, {**metadata, "meta": "[" * 100000 + "]" * 100000}))
    assert "nested too deeply" in resume_error(run, data, capsys)


def test_a_failed_read_leaves_model_optimizer_and_generators_untouched(run):
    rd = RunDir(run)
    edit_checkpoint(run, tensors=lambda t: t.__setitem__("rng.noise", torch.zeros(3, dtype=torch.uint8)))
    model, _ = rd.load_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gens = {"shuffle": torch.Generator().manual_seed(1), "noise": torch.Generator().manual_seed(2)}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    states = {k: g.get_state() for k, g in gens.items()}
    with pytest.raises(RunDirError, match="rng.noise"):
        rd.read_checkpoint(model, opt, gens)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert opt.state_dict()["state"] == {}
    assert all(torch.equal(states[k], g.get_state()) for k, g in gens.items())


def test_expectations_can_be_passed_explicitly(run):
    rd = RunDir(run)
    model, _ = rd.load_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gens = {"shuffle": torch.Generator(), "noise": torch.Generator()}
    with pytest.raises(RunDirError, match="epoch must be 1..1"):
        rd.read_checkpoint(model, opt, gens, expect={"lr": 1e-3, "epochs": 1})
    meta = rd.read_checkpoint(model, opt, gens, expect={"lr": 1e-3, "epochs": 5})
    assert meta["epoch"] == 2 and "param_groups" not in meta
    with pytest.raises(RunDirError, match="cosine: at most"):
        rd.read_checkpoint(model, opt, gens, expect={"lr": 1e-4, "lr_schedule": "cosine", "epochs": 5})


# -- a kill at every write boundary ----------------------------------------------------------------
class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing below catches a BaseException it does not know."""


def test_a_kill_after_every_write_resumes_bit_identically(tmp_path, data, monkeypatch, capsys):
    args = ["train", str(data), "--epochs", "2", *TINY]
    monkeypatch.setattr(fileio, "_KILL_AFTER", 10 ** 9)  # count the writes of a full run
    monkeypatch.setattr(fileio, "_writes", 0)
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    total = fileio._writes
    reference = load_file(tmp_path / "full" / "model.safetensors")
    assert total >= 9  # config, then per epoch latent, model, checkpoint, metrics

    def kill():
        raise Killed

    monkeypatch.setattr(fileio, "_fault", kill)
    for k in range(1, total + 1):
        out = tmp_path / f"k{k}"
        monkeypatch.setattr(fileio, "_KILL_AFTER", k)
        monkeypatch.setattr(fileio, "_writes", 0)
        with pytest.raises(Killed):
            main([*args, "--out", str(out)])
        rd = RunDir(out)
        rd.read_config()  # whatever the boundary, what is there reads
        if rd.has_checkpoint():
            assert rd.checkpoint_info()["epoch"] in (1, 2)
        rd.read_metrics()
        monkeypatch.setattr(fileio, "_KILL_AFTER", 0)
        assert main([*args, "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
        got = load_file(out / "model.safetensors")
        assert all(torch.equal(reference[n], got[n]) for n in reference), f"killed after write {k}"
        assert [r["epoch"] for r in rd.read_metrics()] == [1, 2], f"killed after write {k}"
        assert not list(out.rglob(".*.tmp"))


def test_the_kill_hook_sends_a_real_sigkill(tmp_path, data):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           fileio.KILL_AFTER_ENV: "3", fileio.WRITE_LOG_ENV: str(tmp_path / "writes.log")}
    proc = subprocess.run([sys.executable, "-m", "vaekit", "train", str(data), "--out",
                           str(tmp_path / "r"), "--epochs", "2", *TINY], env=env, capture_output=True)
    assert proc.returncode == -9
    log = (tmp_path / "writes.log").read_text().splitlines()
    assert [line.split("\t")[0] for line in log] == ["1", "2", "3"]
    assert log[0].endswith("config.json")
