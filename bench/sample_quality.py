"""Sample quality on MNIST: one VAE's prior, ex-post and two-stage samples and a VAE-GAN's, side by side.

One run of this script trains everything it compares (through vaekit's pipeline, into normal
run directories under ``--out``) and prints, per row, the sample-quality metric of
:mod:`vaekit.evaluation.quality` (classifier FD, precision, recall; mean ± sd over ``--draws`` draws of
``--samples`` examples) against the evaluation rows, and for models the ELBO and the
reconstruction error on the same rows:

- real training images, drawn like samples (the floor: what a perfect sampler would score);
- the VAE with codes from its prior N(0, I);
- the same VAE with codes from the ex-post Gaussian mixture (Ghosh et al. 2020);
- the same VAE with codes from a two-stage VAE (Dai & Wipf 2019);
- the VAE-GAN (Larsen et al. 2016, ``--objective vaegan``) of the same body and latent size,
  with codes from its prior, compared with the VAE's prior row (its ELBO is not defined: the
  table shows its reconstruction error only).

A model is a named configuration in :data:`MODELS` and a row a (model, sampler) pair in
:data:`ROWS`, so another model (the VAE-GAN of issue 15, a vaekit run with another objective)
is one more entry in each.

``--split test`` (the protocol): models and the metric's classifier train on the 60,000 MNIST
training images; the evaluation rows are the 10,000 test images. ``--split val``: they train on
the first 50,000 training images and the last 10,000 stand in for the test set, for choosing
settings without the test images. The goal: each fitted sampler, and the VAE-GAN, lowers the
classifier FD of the VAE's prior sampling by at least 30%.

    python bench/sample_quality.py [--split test|val] [--epochs 30] [--latent-dim 16]
        [--samples 10000] [--draws 5] [--seed 1] [--out runs/sample-quality] [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vaekit import pipeline
from vaekit.evaluation import quality
from vaekit.sampling import samplers
from vaekit.config.settings import RunConfig
from vaekit.data import Dataset, load_data
from vaekit.evaluation.measures import elbo_terms
from vaekit.evaluation.featurenet import classifier_for
from vaekit.io.images import save_grid
from vaekit.parts.objectives import trains_likelihood

GOAL = 0.30  # each fitted sampler lowers the prior's classifier FD by at least this fraction
VAL_SIZE = 10_000


def models(args) -> dict[str, dict]:
    """Model name -> the options of its run (flag names, as in a TOML file)."""
    return {
        "vae": {"arch": "mlp", "hidden": args.hidden, "latent_dim": args.latent_dim,
                "likelihood": "bernoulli", "epochs": args.epochs, "batch_size": 128, "lr": 1e-3,
                "val_fraction": 0.1, "patience": 10, "seed": args.seed, "device": args.device,
                "precision": "fp32"},
        # the VAE-GAN at its defaults (gamma, pixel_weight: docs/vaegan.md); no validation split,
        # which its changing feature-space loss cannot use to keep a best epoch
        "vaegan": {"arch": "mlp", "hidden": args.hidden, "latent_dim": args.latent_dim,
                   "likelihood": "bernoulli", "objective": "vaegan", "epochs": args.epochs,
                   "batch_size": 128, "lr": 1e-3, "seed": args.seed, "device": args.device,
                   "precision": "fp32"},
    }


ROWS = [  # (label, model or None for real images, sampler)
    ("real images (training split): the floor", None, None),
    ("VAE, prior N(0, I)", "vae", "prior"),
    ("VAE, ex-post Gaussian mixture", "vae", "expost"),
    ("VAE, two-stage VAE", "vae", "two-stage"),
    ("VAE-GAN, prior N(0, I)", "vaegan", "prior"),
]
BASELINE = {"vaegan": "vae"}  # a model whose prior row is compared with another model's


def bench_data(split: str) -> Dataset:
    data = load_data("mnist", log=lambda _: None)
    if split == "test":
        return data
    n = len(data.x_train) - VAL_SIZE
    return Dataset("mnist-val", data.x_train[:n], data.x_train[n:], data.y_train[:n], data.y_train[n:])


@torch.no_grad()
def model_scores(model, x: torch.Tensor, seed: int, objective: str = "elbo") -> dict[str, float]:
    """ELBO and its reconstruction term (nats per image), and the per-pixel squared error of
    the reconstructions (decoder means at the posterior means), on the rows ``x``; a model
    whose ``objective`` never fitted its likelihood gets the error alone."""
    mse = sum(float(((model.reconstruct(x[i: i + 1000]) - x[i: i + 1000]) ** 2).sum())
              for i in range(0, len(x), 1000)) / x.numel()
    if not trains_likelihood(objective):  # the VAE-GAN: no ELBO to report (docs/vaegan.md)
        return {"elbo": None, "rec": None, "mse": mse}
    g = torch.Generator(model.device).manual_seed(seed)
    t = elbo_terms(model, x, 1000, generator=g)
    return {"elbo": -t["loss"], "rec": t["rec"], "mse": mse}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden", default="400", help="widths like 400 or 512,256")
    p.add_argument("--samples", type=int, default=10_000, help="generated examples per draw")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/sample-quality", help="folder for the run directories")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 2 draws of 2,000")
    p.add_argument("--json", help="also write the results and settings here")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.samples, args.draws = 2, 2000, 2
    t_start = time.perf_counter()
    say = lambda s: print(s, flush=True)  # noqa: E731
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, split {args.split}")
    data = bench_data(args.split)
    x_eval = data.x_test
    clf = classifier_for(data, args.device, log=say)
    timings: dict[str, float] = {"classifier (train or cache)": time.perf_counter() - t_start}

    trained, scores, fitted = {}, {}, {}
    for name, options in models(args).items():
        if not any(r[1] == name for r in ROWS):
            continue
        t0 = time.perf_counter()
        cfg = RunConfig().update(options)
        cfg.data.data = data.name
        print(f"{name}: {json.dumps(cfg.flat(), default=str)}", flush=True)
        res = pipeline.train(cfg, data, out=Path(args.out) / name, overwrite=True, log=say,
                             progress=False, epoch_log=False)
        trained[name] = res.model
        scores[name] = model_scores(res.model, x_eval, args.seed, cfg.train.objective)
        last = res.history[-1]
        elbo = scores[name]["elbo"]
        print(f"{name}: {last['epoch']} epochs, kept {last.get('best_epoch', last['epoch'])}; "
              + (f"ELBO {elbo:.2f} nats" if elbo is not None else
                 f"reconstruction MSE {scores[name]['mse']:.5f}"), flush=True)
        timings[f"train {name}"] = time.perf_counter() - t0
        for sampler in sorted({r[2] for r in ROWS if r[1] == name}):
            t0 = time.perf_counter()
            s = pipeline.fit_sampler(sampler, res.model, res.data.x_train, res.data.y_train,
                                     args.seed, log=say)
            if s.fitted:
                samplers.save(res.run_dir.path, s)  # as 'vaekit fit-sampler' would
                timings[f"fit {name} {sampler}"] = time.perf_counter() - t0
            fitted[(name, sampler)] = s

    feats = lambda x: clf.features(x)  # noqa: E731
    results = {}
    for label, name, sampler in ROWS:
        t0 = time.perf_counter()
        if name is None:  # real images, drawn without replacement from the training split
            draw = lambda n, g: data.x_train[torch.randperm(len(data.x_train), generator=g)[:n]]  # noqa: E731
            device = "cpu"
        else:
            draw = quality.model_draw(trained[name], fitted[(name, sampler)])
            device = trained[name].device
        r = quality.measure(feats, x_eval, draw, args.samples, args.draws, args.seed, device=device)
        results[label] = r | (scores[name] if name else {})
        png = Path(args.out) / f"samples_{name or 'real'}_{sampler or 'data'}.png"
        save_grid(draw(64, torch.Generator(device).manual_seed(args.seed)), png, nrow=8)
        timings[f"metric {label}"] = time.perf_counter() - t0
        print(f"{label}: classifier FD {r['classifier_fd']:.2f} ± {r['classifier_fd_sd']:.2f}, "
              f"precision {r['precision']:.3f}, recall {r['recall']:.3f} ({timings[f'metric {label}']:.0f} s)",
              flush=True)

    prior_fd = {name: results[label]["classifier_fd"] for label, name, s in ROWS if s == "prior"}
    print(f"\nSample quality on MNIST ({args.split} split: {len(x_eval):,} evaluation rows; "
          f"{args.draws} draws of {args.samples:,} samples; mean ± sd). Classifier: vaekit's "
          f"LeNet-sized CNN, test accuracy {100 * clf.accuracy:.2f}%, features: "
          f"{clf.record['feature_layer']}; classifier FD is not Inception FID.\n")
    print("| samples | classifier FD | vs VAE prior | precision | recall | ELBO (nats) | rec (nats) | recon. MSE/pixel |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts = []
    for label, name, sampler in ROWS:
        r = results[label]
        other = BASELINE.get(name)
        base = prior_fd.get(other or name)
        compared = base is not None and (sampler != "prior" or other is not None)
        change = f"{100 * (r['classifier_fd'] - base) / base:+.1f}%" if compared else ""
        cell = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        model_cells = (f"{cell(r['elbo'])} | {cell(r['rec'])} | {r['mse']:.5f}" if name else "— | — | —")
        print(f"| {label} | {r['classifier_fd']:.2f} ± {r['classifier_fd_sd']:.2f} | {change} | "
              f"{r['precision']:.3f} ± {r['precision_sd']:.3f} | {r['recall']:.3f} ± "
              f"{r['recall_sd']:.3f} | {model_cells} |")
        if compared:
            gain = (base - r["classifier_fd"]) / base
            verdicts.append(f"{label}: {100 * gain:.1f}% lower than the VAE's prior sampling "
                            f"({'goal met' if gain >= GOAL else 'goal NOT met'}, goal {100 * GOAL:.0f}%)")
    print()
    for v in verdicts:
        print(v)
    wall = time.perf_counter() - t_start
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"wall time: {wall:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {**vars(args), "models": models(args)}, "classifier": clf.record,
                       "results": results, "timings": timings, "wall_s": wall}, f, indent=1)


if __name__ == "__main__":
    main()
