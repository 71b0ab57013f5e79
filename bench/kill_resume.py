"""Crash safety: SIGKILL ``vaekit train`` right after each of its file writes (every write
boundary of every epoch), and at random moments, under a concurrent CPU load; then ``--resume``.

Every trial checks that what the killed run left behind reads (config, checkpoint, metrics,
model), and that the resumed run ends with weights bit-identical to an uninterrupted run, with
metrics for every epoch and no temporary files. The kill at a boundary uses vaekit's test hook
(``VAEKIT_TEST_KILL_AFTER_WRITES=N``: the process SIGKILLs itself right after its Nth atomic
write), so each boundary is hit exactly, not by luck.

    python bench/kill_resume.py [--epochs 3] [--load N] [--random-trials 5] [--no-boundaries]
        [--objective vaegan]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from vaekit.io.files import KILL_AFTER_ENV, WRITE_LOG_ENV
from vaekit.runs.directory import RunDir

TRAIN = ["train", "digits", "--hidden", "64", "--latent-dim", "4", "--seed", "2", "--no-report"]
BURN = "while True: pass"  # one core's worth of load


def vaekit(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def check_left_behind(out: Path) -> str:
    """Read everything a killed run left, as the next command would; say what was there."""
    rd = RunDir(out)
    if not rd.config.exists():
        return "nothing"
    rd.read_config()
    rd.read_metrics()
    if rd.model.exists():
        rd.load_model()
    info = rd.checkpoint_info()
    return f"checkpoint of epoch {info['epoch']}" if info else "no checkpoint"


def recover_and_compare(out: Path, train: list[str], reference: dict, epochs: int,
                        resume: bool = True) -> None:
    """``--resume`` the killed run (or start it, if it wrote nothing) and compare it with the
    uninterrupted one; exit on any difference."""
    proc = vaekit(*train, "--out", str(out), *(["--resume"] if resume else []))
    if proc.wait() != 0:
        sys.exit(f"{out.name}: {'--resume' if resume else 'a new run'} failed: "
                 f"{proc.stderr.read().decode()}")
    got = load_file(out / "model.safetensors")
    if got.keys() != reference.keys() or not all(torch.equal(reference[k], got[k]) for k in reference):
        sys.exit(f"{out.name}: weights differ from the uninterrupted run")
    if [r["epoch"] for r in RunDir(out).read_metrics()] != list(range(1, epochs + 1)):
        sys.exit(f"{out.name}: metrics.jsonl does not list epochs 1..{epochs}")
    if list(out.rglob(".*.tmp")):
        sys.exit(f"{out.name}: temporary files left behind")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--load", type=int, default=os.cpu_count() or 1,
                   help="busy processes running alongside (default: one per core)")
    p.add_argument("--random-trials", type=int, default=5, help="kills at random moments too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objective", default="elbo",
                   help="the training objective (vaegan: a second optimizer in the checkpoint)")
    p.add_argument("--boundaries", action=argparse.BooleanOptionalAction, default=True,
                   help="kill after every write (--no-boundaries: random kills only)")
    args = p.parse_args()
    train = [*TRAIN, "--epochs", str(args.epochs), "--objective", args.objective]
    rng = random.Random(args.seed)
    load = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            full, log = Path(tmp) / "full", Path(tmp) / "writes.log"
            proc = vaekit(*train, "--out", str(full), env={WRITE_LOG_ENV: str(log)})
            while not (full / "config.json").exists() and proc.poll() is None:
                time.sleep(0.005)
            t0 = time.perf_counter()
            assert proc.wait() == 0, proc.stderr.read().decode()
            train_seconds = time.perf_counter() - t0  # from the first write to the end
            reference = load_file(full / "model.safetensors")
            writes = [Path(line.split("\t", 1)[1]).relative_to(full)
                      for line in log.read_text().splitlines()]
            print(f"uninterrupted run: {len(writes)} writes in {train_seconds:.1f}s, under "
                  f"{args.load} busy processes\n")
            print(f"{'kill after write':<40} {'left behind':<26} result")
            for k, name in enumerate(writes if args.boundaries else [], 1):
                out = Path(tmp) / f"k{k}"
                rc = vaekit(*train, "--out", str(out), env={KILL_AFTER_ENV: str(k)}).wait()
                if rc != -signal.SIGKILL:
                    sys.exit(f"write {k} ({name}): expected death by SIGKILL, got exit {rc}")
                state = check_left_behind(out)
                recover_and_compare(out, train, reference, args.epochs)
                print(f"{f'{k:>2}. {name}':<40} {state:<26} resumed, bit-identical", flush=True)
            for trial in range(args.random_trials):
                out = Path(tmp) / f"random{trial}"
                proc = vaekit(*train, "--out", str(out))
                while not (out / "config.json").exists() and proc.poll() is None:
                    time.sleep(0.005)  # start-up (imports, data) is not what is tested here
                time.sleep(rng.uniform(0.0, train_seconds))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                state = check_left_behind(out)  # "nothing": killed before its first write
                recover_and_compare(out, train, reference, args.epochs, resume=state != "nothing")
                print(f"{f'random kill {trial + 1}':<40} {state:<26} "
                      f"{'resumed' if state != 'nothing' else 'started'}, bit-identical", flush=True)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    print(f"\n{len(writes) if args.boundaries else 0} write boundaries and {args.random_trials} "
          "random kills under load: all bit-identical after --resume")


if __name__ == "__main__":
    main()
