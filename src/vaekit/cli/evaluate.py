"""The commands that measure: evaluate (ELBO, log p(x), diagnostics, sample quality), score
(log p(x) per row) and baseline (a classic model in the same units)."""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from vaekit.data import load_data
from vaekit.errors import DataError
from vaekit.evaluation import quality
from vaekit.evaluation.baselines import BASELINES, fit_baseline
from vaekit.evaluation.disentangle import disentanglement_scores
from vaekit.evaluation.measures import (classification_error, evaluate,
                                        evaluate_without_likelihood, log_likelihood,
                                        posterior_means)
from vaekit.evaluation.quality import describe_metric, FILE, merge, table_lines
from vaekit.io.files import atomic_write_text, json_dumps
from vaekit.parts.objectives import check_density, trains_likelihood
from vaekit.pipeline import metric_classifier, run_sampler, save_evaluation
from vaekit.report.card import write_card
from vaekit.report.page import write_report
from vaekit.runs.directory import RunDir
from vaekit.training.tracking import log_files
from .common import check_out, run_data, run_rows, say


def sample_quality(args: argparse.Namespace, model, cfg, x, y) -> tuple[dict, dict]:
    """The sample-quality metric of each of ``args.sampler`` against the rows ``x``:
    ``(settings, results)`` for :func:`vaekit.evaluation.quality.merge`."""

    if model.cond_dim and y is None:
        raise DataError("a conditional model's samples need labels: evaluate on labelled rows")
    clf = metric_classifier(cfg, model.device, say)
    fitted = {name: run_sampler(args.run, model, cfg, name, log=say) for name in args.sampler}
    say(f"sample quality: {args.draws} draws of {args.samples} samples from "
        f"{', '.join(fitted)} against {len(x)} rows")
    results = quality.measure_samplers(model, clf, x, fitted, args.samples, args.draws, args.seed, y,
                                       log=say)
    settings = quality.settings(clf, args.data or cfg.data.data, args.split if args.data else "test",
                                len(x), args.samples, args.draws, args.seed)
    return settings, results


def density_labels(model, y):
    """The labels a density needs: a conditional model's (log p(x|y)); a semi-supervised
    model's densities are of x alone, its labels only say which class a row is."""
    return y if model.cond_dim else None


def classification(model, x, y) -> dict:
    """A semi-supervised model's test error on the labelled rows (``y >= 0``) of ``x``."""

    error = None if y is None else classification_error(model, x, y)
    if error is None:
        return {}  # unlabelled data: the bounds only
    return {"classification_error": error, "n_labelled": int((y >= 0).sum())}


def progress_bar(total: int, desc: str):
    """Progress of a long job: a tqdm bar on a terminal, else a line on stderr every 5% with
    the rate and the time left (so logs of batch jobs show it too). Returns (update, close)."""
    if sys.stderr.isatty():
        bar = tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)
        return bar.update, bar.close

    state = {"done": 0, "next": 0.05, "t0": time.perf_counter()}

    def update(n: int) -> None:
        state["done"] += n
        frac = state["done"] / max(total, 1)
        if frac >= state["next"] and state["done"] < total:
            rate = state["done"] / max(time.perf_counter() - state["t0"], 1e-9)
            print(f"{desc}: {100 * frac:.0f}% ({state['done']}/{total}), {rate:.1f} ex/s, "
                  f"{(total - state['done']) / rate:.0f} s left", file=sys.stderr, flush=True)
            state["next"] = (int(frac / 0.05) + 1) * 0.05
    return update, lambda: None


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, cfg, r = run_data(args)
    x, y = r.x, r.y
    if len(x) == 0:
        raise DataError("no examples to evaluate")
    density = trains_likelihood(cfg.train.objective)
    if density:
        update, close = progress_bar(len(x), f"log p(x), K={args.importance_samples}")
        try:  # a semi-supervised model's bound is of x alone (U(x)); its labels give the error
            res = evaluate(model, x, args.importance_samples, seed=args.seed, progress=update,
                           y=density_labels(model, y))
        finally:
            close()
    else:  # a VAE-GAN: no density to estimate (see evaluate_without_likelihood)
        res = evaluate_without_likelihood(model, x, seed=args.seed, y=y)
    res = {"data": args.data or cfg.data.data, "split": args.split if args.data else "test", **res}
    if getattr(model, "semi_supervised", False):
        res |= classification(model, x, y)
    measured = sample_quality(args, model, cfg, x, y) if args.samples else None
    if r.factors is not None:  # data with known factors (shapes, an .npz with f_*): MIG and DCI
        res |= disentanglement_scores(posterior_means(model, x, y=y).numpy(), r.factors,
                                      random_state=args.seed)  # flat keys: mig, dci_*, n_rows
    rd = RunDir(args.run)
    with rd.lock():
        written = save_evaluation(rd, res)
        quality_doc = None
        if measured is not None:
            quality_doc = merge(rd.path, *measured)
            written.append(FILE)
        write_card(rd.path, keep_foreign=True)
        log_files(rd.path, ["evaluation.json", "README.md"], metrics=res)  # when logged to MLflow
        refresh = rd.report.exists() and ("evaluation.json" in written or measured is not None)
        if refresh:
            write_report(rd.path)
    kept = "" if "evaluation.json" in written else " (evaluation.json keeps its larger K)"
    print(f"saved {', '.join(written)}{kept}{'; report.html refreshed' if refresh else ''}",
          file=sys.stderr)
    if args.json:  # NaN and inf as null: the output stays JSON
        print(json_dumps(res if quality_doc is None else {**res, "sample_quality": quality_doc}))
        return 0
    rows = [("examples", f"{res['n_examples']}")]
    if density:
        rows += [("log p(x)", f"{res['log_likelihood']:.3f} +- {res['log_likelihood_stderr']:.3f} "
                              f"nats (K = {res['importance_samples']} importance samples)"),
                 ("ELBO", f"{res['elbo']:.3f} nats = -(rec {res['rec']:.3f} + KL {res['kl']:.3f})")]
    else:
        rows += [("log p(x), ELBO", f"not reported: objective {cfg.train.objective} does not fit "
                                    "the decoder as a likelihood (a GAN term drives it too), so "
                                    "they would not measure this model"),
                 ("KL", f"{res['kl']:.3f} nats")]
    rows += [("reconstruction", f"{res['reconstruction_mse']:.6g} mean squared error per value "
                                "(decoder mean at the posterior mean)"),
             ("KL estimator", res["kl_estimator"]),
             ("active units", f"{res['active_units']} of {model.latent_dim} "
                             "(Cov_x E[z_d|x] > 0.01)")]
    if res["bits_per_dim"] is not None:
        rows.append(("bits/dim", f"{res['bits_per_dim']:.4f}"))
    if res["kl_per_dim"] is not None:
        rows.append(("KL per dim", " ".join(f"{v:.2f}" for v in res["kl_per_dim"])))
    if "classification_error" in res:
        rows.append(("error", f"{100 * res['classification_error']:.2f}% of "
                              f"{res['n_labelled']} labelled rows misclassified by q(y|x)"))
    if "mig" in res:
        d = res
        rows.append(("MIG", f"{d['mig']:.3f} (Chen et al. 2018)"))
        rows.append(("DCI", f"disentanglement {d['dci_disentanglement']:.3f}, completeness "
                            f"{d['dci_completeness']:.3f}, informativeness "
                            f"{d['dci_informativeness']:.3f} (Eastwood & Williams 2018)"))
    print(f"evaluation of {args.run} on {res['data']} ({res['split']}); per example"
          + (", higher log p(x) is better" if density else ""))
    for name, value in rows:
        print(f"  {name:<13} {value}")
    if quality_doc is not None:
        print(f"sample quality ({describe_metric(quality_doc)}):")
        for line in table_lines(quality_doc):
            print(f"  {line}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".csv",))
    model, cfg, x, y = run_rows(args)
    check_density(cfg.train.objective, "score")
    g = torch.Generator(model.device).manual_seed(args.seed)
    update, close = progress_bar(len(x), f"log p(x), K={args.importance_samples}")
    try:
        ll = log_likelihood(model, x, args.importance_samples, generator=g, progress=update,
                            y=density_labels(model, y))
    finally:
        close()
    lines = ["index,log_likelihood"] + [f"{i},{v:.10g}" for i, v in enumerate(ll.tolist())]
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote log p(x) of {len(ll)} rows to {out} (outlier score: -log_likelihood)")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    BASELINES[args.model]  # an unknown name fails before the data is loaded
    data = load_data(args.data, args.test_fraction, log=lambda s: print(s, file=sys.stderr))
    res = fit_baseline(args.model, data, args.components, args.seed)
    print(f"{res['model']} on {data.name}: test log p(x) {res['log_likelihood']:.3f} +- "
          f"{res['log_likelihood_stderr']:.3f} nats per example ({res['n_examples']} test examples, "
          f"{res['n_parameters']:,} parameters)")
    print("units: nats per example, summed over dimensions, as 'vaekit evaluate' reports. This is a "
          "density of continuous values: compare it with a VAE of a continuous likelihood "
          "(gaussian), not with a Bernoulli one, whose log p(x) is of a probability")
    return 0
