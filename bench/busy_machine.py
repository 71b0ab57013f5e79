"""Training on a busy machine: the same whole-process trainings quiet and with two CPU-bound
competing processes, in one run, with vaekit's thread policy (--threads 0, the default) and,
with --before, with torch's default thread count forced (--threads N, the machine's cores: what
vaekit did before it had a policy); prints each time and the busy/quiet ratio (a fair share of
two cores among three processes is 1.5x).

The trainings (issue 23's three): the 569-row breast-cancer table with vaekit's defaults (early
stopped), a generated 20,000-row table of 3 columns (defaults), and ``vaekit train mnist
--epochs 3``. Each is a whole ``vaekit train`` process with ``--no-report``.

    python bench/busy_machine.py [--only table,rows20k,mnist] [--competitors 2] [--before]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def small_table(folder: Path) -> list[str]:
    from sklearn.datasets import load_breast_cancer

    path = folder / "breast_cancer.npy"  # 569 rows, 30 columns in raw units
    np.save(path, load_breast_cancer().data.astype(np.float32))
    return [str(path)]


def rows20k(folder: Path) -> list[str]:
    """20,000 rows of 3 columns from a 1-factor model with offsets and scales far from 1."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20_000, 1))
    x = z @ np.array([[1.0, -2.0, 0.5]]) + 0.3 * rng.standard_normal((20_000, 3))
    path = folder / "rows20k.npy"
    np.save(path, (x * [10.0, 3.0, 100.0] + [50.0, -7.0, 1000.0]).astype(np.float32))
    return [str(path)]


def mnist(folder: Path) -> list[str]:
    return ["mnist", "--epochs", "3"]


TRAININGS = {"table": ("breast-cancer table (569 x 30), defaults", small_table),
             "rows20k": ("generated table (20,000 x 3), defaults", rows20k),
             "mnist": ("vaekit train mnist --epochs 3", mnist)}


def train_seconds(args: list[str], out: Path, threads: int) -> tuple[float, float | None]:
    """Wall seconds of one whole training process, and its test loss."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", *args, "--out", str(out),
                           "--overwrite", "--threads", str(threads), "--no-report", "--seed", "1"],
                          check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    said = re.search(r"done: test loss (\S+) nats", done.stderr)
    return seconds, float(said.group(1)) if said else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(TRAININGS),
                   help=f"comma-separated subset of {', '.join(TRAININGS)}")
    p.add_argument("--competitors", type=int, default=2)
    p.add_argument("--before", action="store_true",
                   help="also run with torch's default thread count forced (slow when busy)")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    policies = [("vaekit policy", 0)] + ([(f"{cores} threads (before)", cores)] if args.before else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            what, make = TRAININGS[key]
            train_args = make(Path(tmp))
            for name, threads in policies:
                quiet, q_loss = train_seconds(train_args, Path(tmp) / "q", threads)
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(args.competitors)]
                try:
                    busy, b_loss = train_seconds(train_args, Path(tmp) / "b", threads)
                finally:
                    for h in hogs:
                        h.kill()
                rows.append((what, name, quiet, busy, q_loss, b_loss))
                print(f"{what} | {name}: quiet {quiet:.2f} s, busy {busy:.2f} s", flush=True)
    print(f"\nwhole processes, --no-report; {args.competitors} competing CPU-bound processes on "
          f"{cores} cores")
    print("| training | threads | quiet s | busy s | busy/quiet | test loss quiet / busy |")
    print("|---|---|---|---|---|---|")
    for what, name, quiet, busy, q_loss, b_loss in rows:
        losses = " / ".join("-" if v is None else f"{v:.4f}" for v in (q_loss, b_loss))
        print(f"| {what} | {name} | {quiet:.2f} | {busy:.2f} | {busy / quiet:.2f} | {losses} |")


if __name__ == "__main__":
    main()
