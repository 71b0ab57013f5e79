"""The commands that measure: evaluate (ELBO, log p(x), diagnostics, sample quality), score
(log p(x) per row) and baseline (a classic model in the same units)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from vaekit.models.kinds import learned_prior, require
from vaekit.data import load_data
from vaekit.data.files import is_table
from vaekit.evaluation.baselines import BASELINES, fit_baseline
from vaekit.evaluation.disentangle import DEFAULT_ESTIMATOR, dci_words
from vaekit.evaluation.measures import log_likelihood
from vaekit.evaluation.quality import describe_metric, table_lines
from vaekit.io.files import atomic_write_text, json_dumps
from vaekit.report.card import write_card
from vaekit.report.page import write_report
from vaekit.pipeline.evaluating import density_labels, evaluate_run, save_run_evaluation
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import EVALUATION
from vaekit.training.tracking import log_files
from .common import check_out, run_data, run_rows, say


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
    k = 1 if learned_prior(cfg) else args.importance_samples  # a point-mass posterior: one sample
    update, close = progress_bar(len(r.x), f"log p(x), K={k}")
    try:
        ev = evaluate_run(args.run, model, cfg, r, data=args.data or cfg.data.data,
                          split=args.split if args.data else "test", k=args.importance_samples,
                          seed=args.seed, samples=args.samples, samplers=args.sampler,
                          draws=args.draws, progress=update, log=say)
    finally:
        close()
    res, density = ev.numbers, ev.density
    rd = RunDir(args.run)
    with rd.lock():
        written, quality_doc = save_run_evaluation(rd, ev)
        write_card(rd.path, keep_foreign=True)
        log_files(rd.path, [EVALUATION, "README.md"], metrics=res)  # when logged to MLflow
        refresh = rd.report.exists() and (EVALUATION in written or quality_doc is not None)
        if refresh:
            write_report(rd.path)
    kept = "" if EVALUATION in written else " (evaluation.json keeps its larger K)"
    print(f"saved {', '.join(written)}{kept}{'; report.html refreshed' if refresh else ''}",
          file=sys.stderr)
    if args.json:  # NaN and inf as null: the output stays JSON
        print(json_dumps(res if quality_doc is None else {**res, "sample_quality": quality_doc}))
        return 0
    rows = [("examples", f"{res['n_examples']}")]
    if res.get("code_prior") == "uniform":
        rows += [("log p(x)", f">= {res['log_likelihood']:.3f} +- {res['log_likelihood_stderr']:.3f} "
                              "nats with the uniform prior over codes (fit the pixelcnn prior "
                              "for a tighter bound)")]
    elif res.get("code_prior"):
        rows += [("log p(x)", f">= {res['log_likelihood']:.3f} +- {res['log_likelihood_stderr']:.3f} "
                              f"nats = -(rec {res['code_rec']:.3f} + prior {res['code_prior_nll']:.3f}): "
                              f"-log p(x|c(x)) - log p(c(x)), {res['code_prior']} prior over the "
                              f"codes c(x) (uniform: {res['uniform_prior_nll']:.3f})"),
                 ("codebook", f"perplexity {res['code_perplexity']:.1f} of the codes of these rows")]
    if density and "code_prior" in res:
        rows += [("ELBO", f"{res['elbo']:.3f} nats = -(rec {res['rec']:.3f} + KL {res['kl']:.3f}), "
                          "the uniform prior over codes")]
    elif density:
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
                            f"{d['dci_informativeness']:.3f} (Eastwood & Williams 2018; "
                            f"{dci_words(DEFAULT_ESTIMATOR)})"))
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
    require(cfg, "density", "vaekit score")
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
    table = Path(args.data).is_file() and is_table(Path(args.data))
    data = load_data(args.data, args.test_fraction, log=lambda s: print(s, file=sys.stderr),
                     table=table)
    res = fit_baseline(args.model, data, args.components, args.seed)
    print(f"{res['model']}: {res['size']}", file=sys.stderr)
    print(f"{res['model']} on {data.name}: test log p(x) {res['log_likelihood']:.3f} +- "
          f"{res['log_likelihood_stderr']:.3f} nats per example ({res['n_examples']} test examples, "
          f"{res['n_parameters']:,} parameters)")
    if table:
        print("units: nats per row, summed over the observed cells, as 'vaekit evaluate' reports "
              "for a VAE of this table: masses for counts and levels, densities in each column's "
              "units for continuous and positive columns")
    else:
        print("units: nats per example, summed over dimensions, as 'vaekit evaluate' reports. This "
              "is a density of continuous values: compare it with a VAE of a continuous likelihood "
              "(gaussian), not with a Bernoulli one, whose log p(x) is of a probability")
    return 0
