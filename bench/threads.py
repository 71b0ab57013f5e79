"""Where one CPU thread beats torch's default for a training step: models of growing size
(MLP widths on 30-d and 784-d data, batch 128), each step timed with 1 thread and with the
default, in this process, in turn; prints each model's work per step (multiply-adds, counted
as vaekit.compute.threads counts them) and the ratio. The crossover sets SMALL_STEP.

    python bench/threads.py [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaekit.compute.threads import SMALL_STEP, step_work
from vaekit.config.settings import RunConfig
from vaekit.models.build import build_model


def step_seconds(model, x, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for i in range(steps + 10):
        if i == 10:
            t0 = time.perf_counter()
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = model(x[idx]).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    default = torch.get_num_threads()
    print(f"torch default threads: {default}; SMALL_STEP = {SMALL_STEP:.0e} multiply-adds")
    print(f"{'data':>5} {'hidden':>7} {'M madds/step':>13} {'1 thread ms':>12} {f'{default} threads ms':>13} {'ratio':>6}")
    for d in (30, 784):
        for hidden in (16, 64, 128, 256, 400, 800):
            cfg = RunConfig().update({"hidden": (hidden,), "latent_dim": 8 if d == 30 else 20,
                                      "likelihood": "gaussian"})
            torch.manual_seed(0)
            model = build_model(cfg.model, (d,))
            x = torch.rand(4096, d)
            work = step_work(model, (d,), 128)
            one, many = [], []
            for _ in range(args.rounds):
                one.append(step_seconds(model, x, args.steps, 1))
                many.append(step_seconds(model, x, args.steps, default))
            a, b = statistics.median(one), statistics.median(many)
            print(f"{d:>5} {hidden:>7} {work / 1e6:>13.1f} {1e3 * a:>12.3f} {1e3 * b:>13.3f} {a / b:>6.2f}")
    torch.set_num_threads(default)


if __name__ == "__main__":
    main()
