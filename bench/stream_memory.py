"""Training on a memory-mapped dataset several times larger than a memory cap.

Writes a uint8 ``.npy`` of MNIST-shaped random images (``--gigabytes``), then runs
``vaekit train FILE --stream`` in a child process whose data memory is capped with
``RLIMIT_DATA`` (``--cap-mb``; file-backed mappings do not count against it, heap and anonymous
memory do). It prints the child's peak resident memory. For contrast, it runs the same
command without ``--stream`` under the same cap, which cannot load the file.

    python bench/stream_memory.py [--gigabytes 1.0] [--cap-mb 400] [--epochs 1]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_data(path: Path, rows: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 28, 28))
    rng = np.random.default_rng(0)
    for i in range(0, rows, 65_536):
        n = min(65_536, rows - i)
        # blurry blobs rather than white noise, so there is something to learn
        base = rng.integers(0, 256, size=(n, 7, 7), dtype=np.uint8)
        out[i: i + n] = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    out.flush()
    del out


def run_capped(cmd: list[str], cap: int) -> tuple[int, float, str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    t = time.perf_counter()
    proc = subprocess.run(cmd, preexec_fn=limit, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t, (proc.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gigabytes", type=float, default=1.0)
    p.add_argument("--cap-mb", type=int, default=400)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    rows = int(args.gigabytes * 2**30 / 784)
    cap = args.cap_mb * 2**20
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "big.npy"
        write_data(data, rows)
        size = data.stat().st_size
        print(f"data: {rows:,} images 28x28 uint8, {size / 2**30:.2f} GiB on disk "
              f"({size * 4 / 2**30:.2f} GiB as float32 in memory); cap RLIMIT_DATA {args.cap_mb} MiB")
        base = [sys.executable, "-m", "vaekit", "train", str(data), "--epochs", str(args.epochs),
                "--test-fraction", "0.01", "--no-report", "--hidden", "400", "--latent-dim", "20"]
        status, seconds, last = run_capped([*base, "--stream", "--out", str(Path(tmp) / "mapped")], cap)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"with --stream: exit {status} in {seconds:.0f} s, peak RSS {peak:.0f} MiB "
              f"({size / 2**20 / max(peak, 1):.1f}x smaller than the file); last line: {last}")
        status, seconds, last = run_capped([*base, "--out", str(Path(tmp) / "loaded")], cap)
        print(f"without --stream, same cap: exit {status} after {seconds:.0f} s; last line: {last[:160]}")


if __name__ == "__main__":
    main()
