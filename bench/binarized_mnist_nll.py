"""Test negative log-likelihood on dynamically binarized MNIST within a wall-clock budget.

Trains one configuration on ``binarized-mnist`` (training images re-binarized every epoch, a
fixed binarized test set) for at most ``--minutes`` of wall-clock time (no epoch starts that
would end past the budget), then estimates the test log-likelihood with ``--k`` (default 5000)
importance samples, as Burda et al. (2015) report it, and prints the NLL with its standard error.

The configuration is a TOML file of ``vaekit train`` flag names (``--config``) and/or flags after
``--``; ``epochs`` is set high so that the budget decides. Targets (issue 4; IWAE paper, Table 1):
one stochastic layer <= 86.8 nats (their VAE, 3280 epochs), best configuration <= 84.0.

Example::

    python bench/binarized_mnist_nll.py --minutes 60 --config bench/configs/nll_one_layer.toml \\
        --out runs/nll-one-layer
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vaekit.config import RunConfig, read_toml
from vaekit.data import load_data
from vaekit.evaluate import evaluate
from vaekit.model import build_model
from vaekit.run import RunDir
from vaekit.train import Trainer, TrainingDiverged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="training budget (default 60)")
    p.add_argument("--config", help="TOML file of 'vaekit train' flag names")
    p.add_argument("--k", type=int, default=5000, help="importance samples per test image (default 5000)")
    p.add_argument("--eval-batch", type=int, default=20, help="test images per importance batch")
    p.add_argument("--out", default="runs/binarized-mnist-nll", help="run directory (overwritten)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="flag values on top of --config, e.g. latent-dim=50 objective=iwae")
    args = p.parse_args()

    cfg = RunConfig()
    flat = read_toml(args.config) if args.config else {}
    for item in args.set:
        key, _, value = item.partition("=")
        flat[key] = json.loads(value) if value[:1].isdigit() or value[:1] in "-[" else value
    flat.setdefault("epochs", 100_000)
    flat["max_minutes"] = args.minutes
    cfg.update(flat)
    cfg.data.data = "binarized-mnist"
    cfg.validate()

    data = load_data("binarized-mnist", log=lambda s: print(s, file=sys.stderr))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, data.shape)
    trainer = Trainer(model, cfg.train, log=lambda s: print(s, flush=True), progress=False)
    rd = RunDir(args.out)
    rd.prepare(resume=False, overwrite=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config: {json.dumps(flat)}; {n_params:,} parameters; {trainer.device} {trainer.precision}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    stopped = None
    try:
        history = trainer.fit(data, rd, cfg)
        model = trainer.model
    except TrainingDiverged as e:  # evaluate the last finished epoch, and say so
        stopped = str(e)
        print(f"training diverged: {e}", flush=True)
        history = trainer.history
        model, _ = rd.load_model(trainer.device)
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    res = evaluate(model, data.x_test, k=args.k, seed=0, batch_size=args.eval_batch)
    eval_s = time.perf_counter() - t1
    out = {"config": flat, "epochs": len(history), "train_minutes": round(train_s / 60, 2),
           "eval_minutes": round(eval_s / 60, 2), "parameters": n_params,
           "test_nll": -res["log_likelihood"], "test_nll_stderr": res["log_likelihood_stderr"],
           "test_neg_elbo": -res["elbo"], "kl": res["kl"], "kl_estimator": res["kl_estimator"],
           "active_units": res["active_units"], "importance_samples": args.k,
           "last_epoch": history[-1] if history else None, "diverged": stopped}
    Path(rd.path / "nll.json").write_text(json.dumps(out, indent=1))
    print(f"\n{len(history)} epochs in {train_s / 60:.1f} min; test NLL (k={args.k}) "
          f"{out['test_nll']:.2f} +- {out['test_nll_stderr']:.2f} nats, negative ELBO "
          f"{out['test_neg_elbo']:.2f}, {res['active_units']} active units; evaluation "
          f"{eval_s / 60:.1f} min")


if __name__ == "__main__":
    main()
