"""The IAF posterior against the diagonal one, side by side on the same model, data and budget.

Issue 25 asks of the IAF posterior (Kingma et al. 2016) "a better test NLL than the diagonal
posterior, measured side by side". Both runs share everything but ``--posterior``: body, latent
size, objective, seed, epochs (the same Adam steps). The data are scikit-learn's 8x8 digits
(offline), binarized as binarized MNIST is: training images re-binarized every epoch (Bernoulli
draws with the grey levels as probabilities), one fixed binarized draw of the test images;
Bernoulli likelihood. Each run's test log p(x) is vaekit's importance-sampled estimate
(:func:`vaekit.evaluation.measures.importance_sample`, ``--k`` samples per image); both use the same
images, so the difference is reported with its paired standard error. Wall-clock training
time is printed too (the flow costs more per step).

Example::

    OMP_NUM_THREADS=1 python bench/iaf.py --epochs 300 --k 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from vaekit import pipeline
from vaekit.config.settings import RunConfig
from vaekit.data import load_data
from vaekit.evaluation.measures import evaluate, importance_sample


def binarized_digits(seed: int = 0):
    """digits with dynamic binarization of the training split and a fixed binarized test split."""
    data = load_data("digits", log=lambda s: None)
    g = torch.Generator().manual_seed(seed)
    x_test = torch.bernoulli(data.x_test, generator=g)
    return dataclasses.replace(data, x_test=x_test, binarize=True)


def run(posterior: str, data, args) -> dict:
    cfg = RunConfig()
    cfg.update({"posterior": posterior, "latent_dim": args.latent_dim, "hidden": args.hidden,
                "epochs": args.epochs, "likelihood": "bernoulli", "seed": args.seed,
                "objective": args.objective, "k": args.train_k, "precision": "fp32"})
    cfg.data.data = "digits"
    t0 = time.perf_counter()
    model = pipeline.train(cfg, data, log=lambda s: None, progress=False, epoch_log=False).model.eval()
    seconds = time.perf_counter() - t0
    ll = importance_sample(model, data.x_test, k=args.k, seed=0)[0]
    res = evaluate(model, data.x_test, k=args.k, seed=0)
    return {"posterior": posterior, "seconds": seconds, "ll": ll, "nll": -ll.mean().item(),
            "stderr": (ll.std() / math.sqrt(len(ll))).item(), "neg_elbo": -res["elbo"], "kl": res["kl"],
            "active": res["active_units"],
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=300,
                   help="epochs of each run (default 300: about 3,900 Adam steps)")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", default="200,200", help="hidden widths of the mlp body")
    p.add_argument("--objective", default="elbo", help="elbo or iwae")
    p.add_argument("--train-k", type=int, default=1, help="samples per example in the objective")
    p.add_argument("--k", type=int, default=1000, help="importance samples per test image")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = binarized_digits()
    print(f"binarized digits: {len(data.x_train)} train / {len(data.x_test)} test; latent "
          f"{args.latent_dim}, mlp {args.hidden}, {args.objective} k={args.train_k}, "
          f"{args.epochs} epochs, seed {args.seed}; test log p(x) with k={args.k}; torch threads "
          f"{torch.get_num_threads()}", flush=True)
    rows = [run(name, data, args) for name in ("diagonal", "iaf")]
    for r in rows:
        print(f"{r['posterior']:>8}: test NLL {r['nll']:.2f} +- {r['stderr']:.2f} nats, negative "
              f"ELBO {r['neg_elbo']:.2f}, KL {r['kl']:.2f}, {r['active']} active units, "
              f"{r['parameters']:,} parameters, trained in {r['seconds']:.0f} s", flush=True)
    diag, flow = rows
    diff = diag["ll"] - flow["ll"]  # per image: NLL(iaf) - NLL(diagonal)
    print(f"iaf - diagonal: test NLL {diff.mean().item():+.2f} +- "
          f"{(diff.std() / math.sqrt(len(diff))).item():.2f} nats (paired, same images); "
          f"training time ratio {flow['seconds'] / diag['seconds']:.2f}x")


if __name__ == "__main__":
    main()
