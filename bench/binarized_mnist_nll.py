"""Test negative log-likelihood on dynamically binarized MNIST within a wall-clock budget.

Trains one configuration on ``binarized-mnist`` (training images re-binarized every epoch, a
fixed binarized test set) for at most ``--minutes`` of wall-clock time (no epoch starts that
would end past the budget), then estimates the test log-likelihood with ``--k`` (default 5000)
importance samples, as Burda et al. (2015) report it, and prints the NLL with its standard error.

The configuration is a TOML file of ``vaekit train`` flag names (``--config``) and/or flags after
``--set``; ``epochs`` is set high unless given, so that the budget decides. Targets (issue 4; IWAE
paper, Table 1): one stochastic layer <= 86.8 nats (their VAE, 3280 epochs), best configuration
<= 84.0. Results: docs/binarized_mnist_nll.md.

``--check N`` re-estimates the first N test images with an importance sampler written here from
``torch.distributions`` alone, so that vaekit's numbers are checked by code that shares nothing
with them but the trained networks; ``--eval-only`` runs that check on a model trained before.

Example::

    OMP_NUM_THREADS=1 python bench/binarized_mnist_nll.py --minutes 60 \\
        --config bench/configs/nll_iwae_vamp.toml --out runs/nll-iwae-vamp --check 200
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import distributions as D

from vaekit.config.settings import RunConfig
from vaekit.config.options import read_toml
from vaekit.data import load_data
from vaekit.evaluation.measures import evaluate, importance_sample
from vaekit import pipeline
from vaekit.runs.directory import RunDir
from vaekit.training.trainer import TrainingDiverged


@torch.no_grad()
def independent_log_likelihood(model, x: torch.Tensor, k: int, seed: int = 1) -> torch.Tensor:
    """log p(x) per example by importance sampling written from torch.distributions alone.

    Only the trained networks come from vaekit (its encoder's Gaussian parameters, its decoder's
    logits, the pseudo-inputs' posteriors); every density is a stock torch distribution in
    float64 and the estimator is spelled out here, so vaekit's importance sampler, its mixture
    density and its Bernoulli likelihood are checked by code that shares none of them. For one
    stochastic layer, an ``mlp`` body, a diagonal posterior, a Bernoulli decoder and any of the
    three priors.
    """
    def gaussian(q):  # vaekit's DiagonalNormal -> stock Normal, float64
        return D.Independent(D.Normal(q.base_dist.loc.double(), q.base_dist.scale.double()), 1)

    prior = model.prior()
    if isinstance(prior, D.MixtureSameFamily):  # mixture or vamp: rebuild as stock torch
        pz = D.MixtureSameFamily(D.Categorical(logits=prior.mixture_distribution.logits.double()),
                                 gaussian(prior.component_distribution))
    else:
        pz = gaussian(prior)
    g = torch.Generator().manual_seed(seed)
    out = []
    for xi in x:
        xi = xi.reshape(1, -1)
        q = gaussian(model.encode(xi))  # batch (1,)
        logs = []
        for n in [500] * (k // 500) + ([k % 500] if k % 500 else []):
            eps = torch.randn(n, 1, q.event_shape[0], generator=g, dtype=torch.float64)
            z = q.base_dist.loc + q.base_dist.scale * eps  # (n, 1, L), reparameterized draws
            logits = model.decoder_params(z.float(), None).double().reshape(n, 1, -1)
            log_px = D.Independent(D.Bernoulli(logits=logits), 1).log_prob(xi.double())
            logs.append(log_px + pz.log_prob(z) - q.log_prob(z))  # (n, 1)
        out.append(torch.logsumexp(torch.cat(logs), 0) - math.log(k))
    return torch.cat(out)


def cross_check(model, x: torch.Tensor, k: int) -> dict:
    """vaekit's importance sampler and :func:`independent_log_likelihood` on the same images.

    The two use different draws, so their per-image estimates differ by Monte Carlo noise; the
    mean difference is reported with its paired standard error.
    """
    ours = importance_sample(model, x, k=k, batch_size=20, generator=torch.Generator().manual_seed(0))[0]
    theirs = independent_log_likelihood(model, x, k).to(ours.dtype)
    diff = ours - theirs
    report = {"images": len(x), "importance_samples": k, "vaekit_nll": -ours.mean().item(),
              "independent_nll": -theirs.mean().item(), "difference": diff.mean().item(),
              "difference_stderr": (diff.std() / math.sqrt(len(x))).item()}
    print(f"cross-check on the first {len(x)} test images (k={k}): vaekit NLL "
          f"{report['vaekit_nll']:.3f}, independent torch.distributions NLL "
          f"{report['independent_nll']:.3f}, difference {report['difference']:+.3f} +- "
          f"{report['difference_stderr']:.3f} nats", flush=True)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="training budget (default 60)")
    p.add_argument("--config", help="TOML file of 'vaekit train' flag names")
    p.add_argument("--k", type=int, default=5000, help="importance samples per test image (default 5000)")
    p.add_argument("--eval-batch", type=int, default=20, help="test images per importance batch")
    p.add_argument("--out", default="runs/binarized-mnist-nll", help="run directory (overwritten)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="also estimate log p(x) of the first N test images with an independent "
                        "torch.distributions importance sampler, and compare")
    p.add_argument("--eval-only", action="store_true",
                   help="skip training: run only the --check cross-check, on the model already in --out")
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
    rd = RunDir(args.out)
    if args.eval_only:  # the cross-check alone, on a model this script trained before
        if not args.check:
            p.error("--eval-only runs the --check N cross-check; give N")
        model, _ = rd.load_model(torch.device("cpu"))
        report = cross_check(model.eval(), data.x_test[:args.check], args.k)
        saved = json.loads((rd.path / "nll.json").read_text())
        saved["check"] = report
        (rd.path / "nll.json").write_text(json.dumps(saved, indent=1))
        return
    print(f"config: {json.dumps(flat)}; torch threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    stopped = None
    try:
        res = pipeline.train(cfg, data, out=rd.path, overwrite=rd.path.exists(),
                             log=lambda s: print(s, flush=True), progress=False)
        history, model = res.history, res.model
    except TrainingDiverged as e:  # evaluate the last finished epoch, and say so
        stopped = str(e)
        print(f"training diverged: {e}", flush=True)
        history = rd.read_metrics()
        model, _ = rd.load_model()
    n_params = sum(p.numel() for p in model.parameters())
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
    if args.check:
        out["check"] = cross_check(model.eval(), data.x_test[:args.check], args.k)
    Path(rd.path / "nll.json").write_text(json.dumps(out, indent=1))
    print(f"\n{len(history)} epochs in {train_s / 60:.1f} min; test NLL (k={args.k}) "
          f"{out['test_nll']:.2f} +- {out['test_nll_stderr']:.2f} nats, negative ELBO "
          f"{out['test_neg_elbo']:.2f}, {res['active_units']} active units; evaluation "
          f"{eval_s / 60:.1f} min")


if __name__ == "__main__":
    main()
