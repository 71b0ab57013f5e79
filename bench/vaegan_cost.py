"""What a VAE-GAN epoch costs against the plain VAE's: the same body, data and batches, in this
process, in turn (rounds rotate the order); the trainer alone (no run directory), evaluation
of the test split included.

    python bench/vaegan_cost.py [--rows 20000] [--rounds 3] [--precision auto] [--arch mlp]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaekit.config.settings import RunConfig
from vaekit.data import Dataset, load_data
from vaekit.training.trainer import Trainer
from vaekit.models.build import build_model


def epoch_seconds(objective: str, data: Dataset, args) -> float:
    cfg = RunConfig().update({"objective": objective, "arch": args.arch, "epochs": 1,
                              "precision": args.precision, "device": "cpu", "seed": 0})
    torch.manual_seed(0)
    model = build_model(cfg.model, data.shape, objective)
    model.preprocess.fit(data.x_train)
    trainer = Trainer(model, cfg.train, log=lambda s: None, progress=False)
    t0 = time.perf_counter()
    trainer.fit(data)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000, help="MNIST training images per epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--arch", default="mlp")
    args = p.parse_args()
    full = load_data("mnist", log=lambda s: None)
    data = Dataset("mnist", full.x_train[: args.rows], full.x_test[:2000])
    epoch_seconds("vaegan", Dataset("warm", data.x_train[:512], data.x_test[:64]), args)  # first calls
    ratios = []
    for r in range(args.rounds):
        order = ["elbo", "vaegan"][:: 1 if r % 2 == 0 else -1]
        t = {name: epoch_seconds(name, data, args) for name in order}
        ratios.append(t["vaegan"] / t["elbo"])
        print(f"round {r + 1}: VAE {t['elbo']:.2f} s, VAE-GAN {t['vaegan']:.2f} s per epoch of "
              f"{args.rows:,} images ({args.arch}, {args.precision}, {torch.get_num_threads()} "
              f"threads): {ratios[-1]:.2f}x", flush=True)
    print(f"median VAE-GAN / VAE epoch time: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
