"""One-class MNIST: vaekit's likelihood score against scikit-learn baselines.

The protocol of Ruff et al. 2018 (Deep SVDD, Sec. 4.1): for each digit ``c``, every model is
fit on the MNIST *training* images of digit ``c`` only (about 6,000), then scores all 10,000
*test* images; the AUROC of the score for the label "not c" (anomaly = 1 where the test label is
not ``c``) is reported per digit and averaged over the ten digits. Deep SVDD's published mean is
0.948.

Methods, all fit on the same images and scoring the same test set (higher score = more anomalous):

- vaekit: a :class:`vaekit.models.vae.VAEModel` trained with :class:`vaekit.training.trainer.Trainer`; the score
  is ``-log p(x)`` from :func:`vaekit.evaluation.measures.log_likelihood` with ``K`` importance samples.
- IsolationForest: ``-score_samples``, fixed ``random_state``.
- GaussianMixture: ``-score_samples`` (its covariance type is printed with the results).
- PCA: ``-score_samples`` of probabilistic PCA (Tipping & Bishop 1999).

Pixels are used as vaekit's ``mnist`` dataset gives them, ``/255`` in [0, 1], for every method.
One configuration serves all ten digits. ``--split val`` replaces the test set by the last 10,000
training images (models are then fit on the first 50,000's digit ``c``): choose settings there so
that the test labels are never used for tuning.

The defaults are the settings chosen on ``--split val`` (docs/one_class_mnist.md): vaekit's MLP
784-400-16 with a Gaussian likelihood whose one standard deviation is learned, 50 epochs, Adam
1e-3, batch 128, K = 100; IsolationForest with 100 trees; GaussianMixture with 2 full-covariance
components, reg_covar 1e-2; PCA with 32 components.

    python bench/one_class_mnist.py [--digits 0,...,9] [--epochs 50] [--latent-dim 16]
                                    [--hidden 400] [--importance-samples 100] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import time

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

from vaekit import pipeline
from vaekit.config.settings import ModelConfig, RunConfig, TrainConfig
from vaekit.config.options import parse_hidden
from vaekit.data import Dataset, load_data
from vaekit.evaluation.measures import log_likelihood

DEEP_SVDD_MEAN = 0.948  # Ruff et al. 2018, Table 1, one-class MNIST, mean over the ten digits
VAL_SIZE = 10_000  # --split val: the last 10,000 training images stand in for the test set


def splits(data: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_fit, y_fit, x_eval, y_eval) for ``split`` ``test`` (the protocol) or ``val``."""
    if split == "test":
        return data.x_train, data.y_train, data.x_test, data.y_test
    n = len(data.x_train) - VAL_SIZE
    return data.x_train[:n], data.y_train[:n], data.x_train[n:], data.y_train[n:]


def vaekit_scores(x_fit: torch.Tensor, x_eval: torch.Tensor, model_cfg: ModelConfig,
                  train_cfg: TrainConfig, k: int, binarize: bool, seed: int) -> tuple[np.ndarray, str]:
    """Train a VAE on ``x_fit``; ``-log p(x)`` for every row of ``x_eval`` and a note on the fit."""
    data = Dataset("one-class", x_fit, x_fit[:0], binarize=binarize)  # no test part: no peeking
    if model_cfg is None:  # --defaults: only the seed is given, vaekit chooses the rest
        cfg = RunConfig().update({"seed": seed})
        given = {"seed"}
    else:
        cfg, given = RunConfig(model_cfg, replace(train_cfg, seed=seed)), set(RunConfig().flat())
    cfg.data.data = "one-class"
    res = pipeline.train(cfg, data, given=given, log=lambda _: None, progress=False, epoch_log=False)
    model, model_cfg = res.model, res.config.model
    gen = torch.Generator(model.device).manual_seed(seed)
    scores = -log_likelihood(model, x_eval, k=k, generator=gen).numpy()
    note = f"obs std {model.likelihood.scale.item():.4f}; " if model_cfg.likelihood == "gaussian" else ""
    last = res.history[-1]
    note += (f"{model_cfg.likelihood}, {len(res.history)} epochs, kept {last.get('best_epoch', last['epoch'])}; ")
    return scores, note


def baseline_scores(x_fit: np.ndarray, x_eval: np.ndarray, args) -> dict[str, np.ndarray]:
    """-score_samples of each scikit-learn baseline, fit on ``x_fit`` (rows are flat images)."""
    models = {  # column names carry the settings, so the table says what was run
        f"IsolationForest ({args.if_trees} trees)":
            IsolationForest(n_estimators=args.if_trees, random_state=args.seed),
        f"GMM ({args.gmm_components} {args.gmm_covariance})":
            GaussianMixture(args.gmm_components, covariance_type=args.gmm_covariance,
                            reg_covar=args.gmm_reg, random_state=args.seed),
        f"PCA ({args.pca_components})": PCA(n_components=args.pca_components, svd_solver="full"),
    }
    return {name: -m.fit(x_fit).score_samples(x_eval) for name, m in models.items()}


def markdown_table(digits: list[int], aurocs: dict[str, list[float]]) -> str:
    methods = list(aurocs)
    lines = ["| digit | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for i, c in enumerate(digits):
        best = max(aurocs[m][i] for m in methods)
        cells = [f"**{aurocs[m][i]:.4f}**" if aurocs[m][i] == best else f"{aurocs[m][i]:.4f}"
                 for m in methods]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    means = {m: float(np.mean(v)) for m, v in aurocs.items()}
    lines.append("| **mean** | " + " | ".join(f"**{means[m]:.4f}**" for m in methods) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", help="comma-separated normal classes (default: all ten)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="test: the protocol; val: fit on the first 50,000 training images, score "
                        "the last 10,000 (for choosing settings without the test labels)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--defaults", action="store_true",
                   help="vaekit with its data-chosen defaults (only the seed given): no setting "
                        "picked for this benchmark")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: digits 0,1, 5 epochs, K=10 (where not given)")
    g = p.add_argument_group("vaekit")
    g.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
    g.add_argument("--hidden", default="400", help="widths like 400 or 512,256")
    g.add_argument("--latent-dim", type=int, default=16)
    g.add_argument("--likelihood", default="gaussian", choices=["bernoulli", "gaussian"])
    g.add_argument("--obs-std", type=float, default=1.0,
                   help="gaussian likelihood's standard deviation (the start, when learned)")
    g.add_argument("--learn-obs-std", action=argparse.BooleanOptionalAction, default=True,
                   help="learn the gaussian's one standard deviation (gaussian only)")
    g.add_argument("--beta", type=float, default=1.0)
    g.add_argument("--epochs", type=int, help="default 50")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--binarize", action="store_true",
                   help="dynamically binarize training batches (scoring stays on [0, 1] pixels)")
    g.add_argument("--importance-samples", type=int, help="K for log p(x) (default 100)")
    g.add_argument("--device", default="cpu")
    g.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    b = p.add_argument_group("scikit-learn baselines")
    b.add_argument("--no-baselines", action="store_true", help="vaekit only (for sweeps)")
    b.add_argument("--if-trees", type=int, default=100)
    b.add_argument("--gmm-components", type=int, default=2)
    b.add_argument("--gmm-covariance", default="full", choices=["full", "tied", "diag", "spherical"])
    b.add_argument("--gmm-reg", type=float, default=1e-2, help="reg_covar added to the variances")
    b.add_argument("--pca-components", type=int, default=32)
    p.add_argument("--json", help="also write the per-digit AUROCs and settings here")
    args = p.parse_args()
    for name, full, quick in (("digits", "0,1,2,3,4,5,6,7,8,9", "0,1"), ("epochs", 50, 5),
                              ("importance_samples", 100, 10)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    t_start = time.perf_counter()
    digits = [int(c) for c in args.digits.split(",")]
    model_cfg = None if args.defaults else ModelConfig(arch=args.arch, hidden=parse_hidden(args.hidden), latent_dim=args.latent_dim,
                            likelihood=args.likelihood, obs_std=args.obs_std,
                            learn_obs_std=args.learn_obs_std and args.likelihood == "gaussian")
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, beta=args.beta,
                            seed=args.seed, device=args.device, precision=args.precision)
    settings = {
        "split": args.split, "digits": digits, "seed": args.seed,
        "vaekit_model": "defaults" if args.defaults else vars(model_cfg),
        "vaekit_train": "defaults" if args.defaults else vars(train_cfg),
        "binarize": args.binarize, "importance_samples": args.importance_samples,
        "baselines": None if args.no_baselines else {
            "IsolationForest": {"n_estimators": args.if_trees, "random_state": args.seed},
            "GaussianMixture": {"n_components": args.gmm_components, "covariance_type": args.gmm_covariance,
                                "reg_covar": args.gmm_reg, "random_state": args.seed},
            "PCA": {"n_components": args.pca_components, "score": "probabilistic PCA log-likelihood"}},
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("configuration: " + json.dumps(settings), flush=True)

    data = load_data("mnist", log=lambda _: None)
    x_fit_all, y_fit_all, x_eval, y_eval = splits(data, args.split)
    x_eval_flat = x_eval.flatten(1).numpy().astype(np.float64)
    aurocs: dict[str, list[float]] = {}
    for c in digits:
        t0 = time.perf_counter()
        x_fit = x_fit_all[y_fit_all == c]
        anomaly = (y_eval != c).numpy().astype(int)
        vae, note = vaekit_scores(x_fit, x_eval, model_cfg, train_cfg, args.importance_samples,
                                  args.binarize, args.seed)
        scores = {"vaekit": vae}
        t_vae = time.perf_counter() - t0
        if not args.no_baselines:
            scores |= baseline_scores(x_fit.flatten(1).numpy().astype(np.float64), x_eval_flat, args)
        for name, s in scores.items():
            aurocs.setdefault(name, []).append(float(roc_auc_score(anomaly, s)))
        line = ", ".join(f"{m} {v[-1]:.4f}" for m, v in aurocs.items())
        print(f"digit {c}: {len(x_fit)} images; {note}{line}"
              + f"  ({t_vae:.0f}s vaekit, {time.perf_counter() - t0:.0f}s all)", flush=True)

    wall = time.perf_counter() - t_start
    means = {m: float(np.mean(v)) for m, v in aurocs.items()}
    best = max(means, key=means.get)
    print(f"\nAUROC, anomaly = not the digit ({args.split} split):\n")
    print(markdown_table(digits, aurocs))
    print(f"\nbest on average: {best} ({means[best]:.4f})")
    others = [m for m in means if m != "vaekit"]
    if len(digits) == 10 and args.split == "test":
        reached = means["vaekit"] >= DEEP_SVDD_MEAN and all(means["vaekit"] > means[m] for m in others)
        print(f"target (vaekit mean >= {DEEP_SVDD_MEAN} and above every baseline): "
              f"{'reached' if reached else 'NOT reached'}")
    print(f"wall time: {wall:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "auroc": aurocs, "mean": means, "wall_s": wall}, f, indent=1)


if __name__ == "__main__":
    main()
