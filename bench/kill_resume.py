"""Crash safety, many trials: SIGKILL ``vaekit train`` at random moments, then ``--resume``.

Every trial checks that what the killed run left behind loads (config, model, checkpoint,
metrics), and that the resumed run ends with weights bit-identical to an uninterrupted run.

    python bench/kill_resume.py [--trials 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
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

from vaekit.run import RunDir

TRAIN = ["train", "digits", "--epochs", "8", "--hidden", "64", "--latent-dim", "4", "--seed", "2",
         "--no-report"]


def vaekit(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=os.environ.copy())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full"
        t0 = time.perf_counter()
        assert vaekit(*TRAIN, "--out", str(full)).wait() == 0
        run_seconds = time.perf_counter() - t0
        reference = load_file(full / "model.safetensors")
        outcomes = {"resumed": 0, "restarted (killed before the first checkpoint)": 0}
        for trial in range(args.trials):
            out = Path(tmp) / f"t{trial}"
            proc = vaekit(*TRAIN, "--out", str(out))
            if rng.random() < 0.8:  # mostly mid-training: after the first checkpoint
                while not (out / "checkpoint.json").exists() and proc.poll() is None:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.5))
            else:  # sometimes anywhere, start-up included
                time.sleep(rng.uniform(0.0, run_seconds))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            rd = RunDir(out)
            if rd.checkpoint_meta.exists():
                rd.load_model()
                json.loads(rd.checkpoint_meta.read_text())
                rd.read_metrics()
                flag, kind = "--resume", "resumed"
            else:
                flag, kind = "--overwrite", "restarted (killed before the first checkpoint)"
            resumed = vaekit(*TRAIN, "--out", str(out), flag)
            if resumed.wait() != 0:
                sys.exit(f"trial {trial}: {flag} failed: {resumed.stderr.read().decode()}")
            got = load_file(out / "model.safetensors")
            if not all(torch.equal(reference[k], got[k]) for k in reference):
                sys.exit(f"trial {trial}: weights differ from the uninterrupted run")
            outcomes[kind] += 1
            print(f"trial {trial + 1}/{args.trials}: {kind}, bit-identical", flush=True)
    print(f"\n{args.trials} kills, all bit-identical after recovery: {outcomes}")


if __name__ == "__main__":
    main()
