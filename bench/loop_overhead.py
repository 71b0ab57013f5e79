"""How much vaekit's trainer costs over a minimal hand-written loop of the same model.

Both train the reference model (mlp 784-400-20, Bernoulli, Adam 1e-3, batch 128) on MNIST for
the same epochs, in this process, on data already in memory, in the same precision:

- bare: the least a PyTorch user would write: an index slice per batch, the encoder and
  decoder as two ``nn.Sequential``, ``binary_cross_entropy_with_logits`` plus the closed-form
  KL, fused Adam, no evaluation and nothing written;
- vaekit: ``pipeline.train`` writing a full run directory (config, weights, checkpoint, metrics,
  images and latent maps every epoch) and evaluating the test set every epoch;
- bare+ftz: the bare loop with denormals flushed to zero, as vaekit's trainer does on the CPU
  (Adam moments of rarely-updated weights decay into the denormal range, which x86 computes
  slowly): the ratio against it is the cost of vaekit's machinery alone.

Rounds rotate the order; it prints each round's ratios and the medians.

    python bench/loop_overhead.py [--epochs 3] [--rounds 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vaekit import pipeline
from vaekit.config.settings import RunConfig
from vaekit.data import load_data
from vaekit.compute.runtime import autocast_for, resolve_precision, set_flush_denormal


def bare_loop(x: torch.Tensor, epochs: int, precision: str, seed: int, ftz: bool = False) -> float:
    """Seconds for ``epochs`` epochs of the minimal loop (with ``ftz``: denormals flushed to
    zero on every thread, as vaekit's trainer does)."""
    torch.manual_seed(seed)
    set_flush_denormal(ftz)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
    dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    cast = autocast_for(torch.device("cpu"), precision)
    g = torch.Generator().manual_seed(seed)
    flat = x.flatten(1)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            xb = flat[perm[i: i + 128]]
            with cast:
                mu, logvar = enc(xb).chunk(2, -1)
                z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
                logits = dec(z)
                rec = F.binary_cross_entropy_with_logits(logits.float(), xb, reduction="sum")
                kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum()
                loss = (rec + kl) / len(xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elapsed = time.perf_counter() - t0
    set_flush_denormal(False)
    return elapsed


def vaekit_train(data, epochs: int, precision: str, seed: int, out: Path) -> float:
    cfg = RunConfig()
    cfg.update({"epochs": epochs, "precision": precision, "seed": seed, "device": "cpu"})
    cfg.data.data = "mnist"
    t0 = time.perf_counter()
    pipeline.train(cfg, data, out=out, overwrite=out.exists(), log=lambda s: None, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (both loops alike)")
    args = p.parse_args()
    precision = resolve_precision(torch.device("cpu"), args.precision)
    data = load_data("mnist", log=lambda s: print(s, file=sys.stderr))
    ratios: dict[str, list[float]] = {"bare": [], "bare+ftz": []}
    runs = {"bare": lambda r: bare_loop(data.x_train, args.epochs, precision, r),
            "bare+ftz": lambda r: bare_loop(data.x_train, args.epochs, precision, r, ftz=True)}
    with tempfile.TemporaryDirectory() as tmp:
        vaekit_train(data, 1, precision, 0, Path(tmp) / "warm")  # first-call costs, all sides
        bare_loop(data.x_train[:2048], 1, precision, 0)
        runs["vaekit"] = lambda r: vaekit_train(data, args.epochs, precision, r, Path(tmp) / f"run{r}")
        for r in range(args.rounds):
            order = ["bare", "vaekit", "bare+ftz"]
            order = order[r % 3:] + order[: r % 3]  # each side goes first in turn
            t = {name: runs[name](r) for name in order}
            for name in ratios:
                ratios[name].append(t["vaekit"] / t[name])
            print(f"round {r + 1}: bare {t['bare']:.2f} s, bare+ftz {t['bare+ftz']:.2f} s, vaekit "
                  f"{t['vaekit']:.2f} s; ratio {ratios['bare'][-1]:.3f} ({ratios['bare+ftz'][-1]:.3f} "
                  f"against bare+ftz) ({args.epochs} epochs, {precision}, "
                  f"{torch.get_num_threads()} threads)", flush=True)
    print(f"median vaekit / bare loop: {statistics.median(ratios['bare']):.3f}x over {args.rounds} "
          "rounds (target <= 1.10x)")
    print(f"median vaekit / bare loop with denormals flushed: "
          f"{statistics.median(ratios['bare+ftz']):.3f}x (vaekit's machinery alone)")


if __name__ == "__main__":
    main()
