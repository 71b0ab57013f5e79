"""Training on a busy machine: the same whole-process trainings quiet and with two CPU-bound
competing processes, in one run, with vaekit's thread policy (--threads 0, the default) and
with torch's default thread count forced (--threads N, the machine's cores: what vaekit did
before it had a policy); prints each time and the busy/quiet ratio (a fair share of two cores
among three processes is 1.5x).

    python bench/busy_machine.py [--epochs 40] [--competitors 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def table(folder: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    path = folder / "breast_cancer.npy"  # 569 rows, 30 columns in raw units
    np.save(path, load_breast_cancer().data.astype(np.float32))
    return path


def train_seconds(data: Path, out: Path, epochs: int, threads: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vaekit", "train", str(data), "--out", str(out),
                    "--overwrite", "--epochs", str(epochs), "--threads", str(threads),
                    "--no-report"], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--competitors", type=int, default=2)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = table(Path(tmp))
        rows = []
        for name, threads in (("vaekit policy", 0), (f"{cores} threads (before)", cores)):
            quiet = train_seconds(data, Path(tmp) / "q", args.epochs, threads)
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(args.competitors)]
            try:
                busy = train_seconds(data, Path(tmp) / "b", args.epochs, threads)
            finally:
                for h in hogs:
                    h.kill()
            rows.append((name, quiet, busy))
    print(f"breast-cancer table (569 x 30), {args.epochs} epochs, whole process; "
          f"{args.competitors} competing CPU-bound processes on {cores} cores")
    print(f"{'threads':<24} {'quiet s':>8} {'busy s':>8} {'busy/quiet':>11}")
    for name, quiet, busy in rows:
        print(f"{name:<24} {quiet:>8.2f} {busy:>8.2f} {busy / quiet:>11.2f}")


if __name__ == "__main__":
    main()
