"""Throughput of ``vaekit train`` in 1 process and under ``torchrun`` with 2, side by side.

The same global batch in both (128 = 1 x 128 = 2 x 64), so both runs train the same model
(tests/test_distributed.py checks that). On this 2-core machine the single process uses both
cores for its matrix multiplies (2 threads), and each of the 2 processes uses one, so the
ratio shows what DDP's gradient all-reduce and the extra process cost or gain here. On
machines with more cores or GPUs, more processes add compute.

    python bench/ddp_scaling.py [--epochs 2] [--data mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(data: str, out: Path, epochs: int, nproc: int, batch: int) -> float:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={nproc}", "-m", "vaekit"] if nproc > 1
                else [sys.executable, "-m", "vaekit"])
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    t = time.perf_counter()
    subprocess.run([*launcher, "train", data, "--out", str(out), "--epochs", str(epochs),
                    "--batch-size", str(batch), "--precision", "fp32", "--no-report"],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data", default="mnist")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for nproc in (1, 2):
            out = Path(tmp) / f"p{nproc}"
            wall = train(args.data, out, args.epochs, nproc, 128 // nproc)
            metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            train_seconds = sum(r["seconds"] for r in metrics)
            rows.append((nproc, wall, train_seconds, metrics[-1].get("test_loss")))
    base = rows[0][2]
    print("| processes | batch per process | wall (s) | epoch time total (s) | test loss | speed-up |")
    print("|---|---|---|---|---|---|")
    for nproc, wall, secs, loss in rows:
        print(f"| {nproc} | {128 // nproc} | {wall:.1f} | {secs:.1f} | {loss:.2f} | {base / secs:.2f}x |")


if __name__ == "__main__":
    main()
