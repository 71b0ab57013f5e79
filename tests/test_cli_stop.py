"""Stopping a run: SIGTERM like Ctrl-C, a stop request held until a unit of files is whole,
a run stopped in its first epoch, an empty --out."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vaekit.cli.main import main
from vaekit.io.stops import Terminated, held_stops, stop_requests
from vaekit.runs.directory import RunDir

SMALL = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "16", "--precision", "fp32"]


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((4000, 20)).astype(np.float32))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "train", str(data), "--out", str(run),
                             "--epochs", "500", "--no-report", *SMALL], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not RunDir(run).has_checkpoint() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("terminated")
    done = RunDir(run).checkpoint_info()["epoch"]
    assert done >= 1
    assert main(["train", str(data), "--out", str(run), "--epochs", str(done + 1), "--resume",
                 "--no-report"]) == 0
    assert RunDir(run).checkpoint_info()["epoch"] == done + 1


@pytest.mark.parametrize("sig, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_stop_request_inside_a_unit_is_held_until_the_unit_ends(sig, raised):
    steps = []
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_requests(), pytest.raises(raised) as caught:
        with held_stops():
            with held_stops():  # nested: one unit, delivered when the outer one ends
                signal.raise_signal(sig)
                steps.append("rest of the inner block")
            steps.append("rest of the outer block")
        steps.append("after the unit")  # never: the stop comes as the unit ends
    assert steps == ["rest of the inner block", "rest of the outer block"]
    assert caught.type is raised
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_held_stop_wins_over_an_error_and_an_ignored_signal_stays_ignored():
    with stop_requests(), pytest.raises(Terminated) as caught:
        with held_stops():
            signal.raise_signal(signal.SIGTERM)
            raise OSError("disk full")
    assert isinstance(caught.value.__context__, OSError)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held_stops():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_once_the_command_of_the_process_ended_a_stop_request_changes_nothing():
    """``vaekit`` (main without argv): a SIGTERM during the exit would make its status a death
    by signal (a SIGINT, a traceback); both are ignored once the command ended."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with stop_requests(whole_process=True):
            assert signal.getsignal(signal.SIGTERM) is not before[1]
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        signal.raise_signal(signal.SIGTERM)  # nothing happens
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    with stop_requests():  # main(argv), as tests call it: the handlers come back
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).random((64, 6)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", "--no-report", *SMALL]) == 0
    straight = (run / "model.safetensors").read_bytes()
    # as if killed in epoch 1: config.json is there, no finished epoch
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.jsonl"):
        (run / name).unlink()
    for folder in ("latent",):
        for p in (run / folder).iterdir():
            p.unlink()
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", "--resume", "--no-report"]) == 0
    assert (run / "model.safetensors").read_bytes() == straight  # the same run, from its start


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits", "--out", "", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out needs a folder name") and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_run_finds_its_data_from_any_folder_and_refuses_changed_contents(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    np.save(work / "x.npy", np.random.default_rng(2).random((64, 6)).astype(np.float32))
    monkeypatch.chdir(work)
    assert main(["train", "x.npy", "--out", "run", "--epochs", "1", "--no-report", *SMALL]) == 0
    cfg = RunDir(work / "run").read_config()[0]
    assert cfg.data.data == str(work / "x.npy") and len(cfg.data.fingerprint) == 32
    monkeypatch.chdir(tmp_path)  # elsewhere: the run's test split is found by its absolute path
    assert main(["evaluate", str(work / "run"), "-k", "2"]) == 0
    np.save(work / "x.npy", np.random.default_rng(3).random((64, 6)).astype(np.float32))
    capsys.readouterr()
    assert main(["train", str(work / "x.npy"), "--out", str(work / "run"), "--epochs", "2",
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "contents changed" in err and len(err.splitlines()) == 1


def test_a_run_whose_losses_are_not_finite_never_ends_done(tmp_path, capsys):
    """Values near 1e30 under a fixed-scale Gaussian: every loss overflows; the run must stop
    with one error line, never report "done" or keep a non-finite epoch."""
    data = tmp_path / "huge.npy"
    np.save(data, (1e30 * np.random.default_rng(4).random((40, 4))).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--epochs", "3", "--likelihood", "gaussian",
                 "--preprocess", "none", "--obs-std", "1", "--no-report", *SMALL]) == 2
    out, err = capsys.readouterr()
    assert "done" not in out and err.strip().splitlines()[-1].startswith("error: training stopped")
    assert not RunDir(run).has_checkpoint()


def test_resume_cannot_shrink_a_finished_run_and_traverse_needs_dimensions(tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(5).random((40, 6)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--epochs", "2", "--no-report", *SMALL]) == 0
    before = (run / "config.json").read_bytes()
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", "--resume"]) == 2
    assert "fewer than the 2 epochs" in capsys.readouterr().err
    assert (run / "config.json").read_bytes() == before
    assert main(["traverse", str(run), "--dims", ",", "--out", str(tmp_path / "t.png")]) == 2
    assert "at least one dimension" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_a_missing_device_is_one_line(tmp_path, capsys, device, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main(["train", "digits", "--out", str(tmp_path / "r"), "--epochs", "1",
                 "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: device {device} was asked for") and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
