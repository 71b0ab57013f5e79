"""The commands that use a trained run (and ``datasets``/``baseline``), each a few lines over
:mod:`vaekit.pipeline`; :mod:`vaekit.cli` parses their arguments."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DataError


def check_out(path: str, suffixes: Sequence[str]) -> Path:
    if not path or not path.strip():
        raise ConfigError(f"--out needs a file name ending in {' or '.join(suffixes)}")
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out must end in {' or '.join(suffixes)}, got '{path}'")
    if out.is_dir():
        raise ConfigError(f"--out {path} is a directory; give a file name")
    return out


def run_data(args: argparse.Namespace, images: str | None = None):
    """The model of RUN, its configuration, and the checked rows of DATA (or its test split)
    with their labels and known factors (:class:`vaekit.pipeline.Rows`, tensors on the model's
    device)."""
    from .pipeline import data_rows, load_run

    model, cfg = load_run(args.run, args.device)
    if images and len(model.data_shape) != 3:
        raise ConfigError(f"this model's data are not images, so {images} cannot be drawn")
    r = data_rows(model, cfg, args.data, args.split)
    to = (lambda t: None if t is None else t.to(model.device))
    return model, cfg, type(r)(r.x.to(model.device), to(r.y), to(r.labels), r.factors, r.factor_names)


def run_rows(args: argparse.Namespace, images: str | None = None):
    """The model of RUN, its configuration, and the checked rows of DATA (or its test split)."""
    model, cfg, r = run_data(args, images)
    return model, cfg, r.x, r.y


def cmd_sample(args: argparse.Namespace) -> int:
    from .images import save_grid
    from .pipeline import load_run, sample
    from .run import write_npy

    from .pipeline import check_label, run_sampler

    out = check_out(args.out, (".png", ".npy"))
    model, cfg = load_run(args.run, args.device)
    if out.suffix.lower() == ".png" and len(model.data_shape) != 3:
        raise ConfigError("this model's data are not images; write samples to a .npy file")
    check_label(model, args.label)  # before a sampler is fitted
    fitted = None if args.sampler == "prior" else run_sampler(args.run, model, cfg, args.sampler, log=say)
    x = sample(model, args.n, args.seed, args.label, fitted)
    if out.suffix.lower() == ".png":
        save_grid(x, out, nrow=math.ceil(math.sqrt(args.n)))
    else:
        write_npy(out, x.numpy())
    print(f"wrote {args.n} samples ({args.sampler} sampler) to {out}")
    return 0


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_fit_sampler(args: argparse.Namespace) -> int:
    from .pipeline import load_run, run_sampler

    model, cfg = load_run(args.run, args.device)
    s = run_sampler(args.run, model, cfg, args.sampler, fit="always", log=say)
    print(f"fitted the {args.sampler} sampler of {args.run} ({s.describe()}) in "
          f"{s.record['seconds']:.1f} s")
    return 0


def sample_quality(args: argparse.Namespace, model, cfg, x, y) -> tuple[dict, dict]:
    """The sample-quality metric of each of ``args.sampler`` against the rows ``x``:
    ``(settings, results)`` for :func:`vaekit.quality.merge`."""
    from . import quality
    from .pipeline import metric_classifier, run_sampler

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


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid

    out = check_out(args.out, (".png",))
    model, _, x, y = run_rows(args, "reconstructions")
    x, y = x[: args.n], None if y is None else y[: args.n]
    save_grid(torch.cat([x, model.reconstruct(x, y)]), out, nrow=len(x))
    print(f"wrote {len(x)} inputs above their reconstructions to {out}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .evaluate import posterior_means
    from .fileio import atomic_write_text
    from .run import write_npy

    out = check_out(args.out, (".npy", ".csv"))
    model, _, x, y = run_rows(args)
    z = posterior_means(model, x, y=y).numpy()
    if out.suffix.lower() == ".npy":
        write_npy(out, z)
    else:
        header = ",".join(f"z{i}" for i in range(z.shape[1]))
        lines = [header] + [",".join(f"{v:.9g}" for v in row) for row in z]
        atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {len(z)} posterior means ({z.shape[1]} dimensions) to {out}")
    return 0


def density_labels(model, y):
    """The labels a density needs: a conditional model's (log p(x|y)); a semi-supervised
    model's densities are of x alone, its labels only say which class a row is."""
    return y if model.cond_dim else None


def classification(model, x, y) -> dict:
    """A semi-supervised model's test error on the labelled rows (``y >= 0``) of ``x``."""
    from .evaluate import classification_error

    error = None if y is None else classification_error(model, x, y)
    if error is None:
        return {}  # unlabelled data: the bounds only
    return {"classification_error": error, "n_labelled": int((y >= 0).sum())}


def progress_bar(total: int, desc: str):
    """Progress of a long job: a tqdm bar on a terminal, else a line on stderr every 5% with
    the rate and the time left (so logs of batch jobs show it too). Returns (update, close)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)
        return bar.update, bar.close
    import time

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
    from .evaluate import evaluate
    from .fileio import json_dumps
    from .card import write_card
    from .tracking import log_files
    from .disentangle import DEFAULT_ESTIMATOR, dci_words, disentanglement_scores
    from .evaluate import posterior_means
    from .pipeline import save_evaluation
    from .run import RunDir
    from .evaluate import evaluate_without_likelihood
    from .objectives import trains_likelihood

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
            from .quality import FILE, merge

            quality_doc = merge(rd.path, *measured)
            written.append(FILE)
        write_card(rd.path, keep_foreign=True)
        log_files(rd.path, ["evaluation.json", "README.md"], metrics=res)  # when logged to MLflow
        refresh = rd.report.exists() and ("evaluation.json" in written or measured is not None)
        if refresh:
            from .report import write_report

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
                            f"{d['dci_informativeness']:.3f} (Eastwood & Williams 2018; "
                            f"{dci_words(DEFAULT_ESTIMATOR)})"))
    print(f"evaluation of {args.run} on {res['data']} ({res['split']}); per example"
          + (", higher log p(x) is better" if density else ""))
    for name, value in rows:
        print(f"  {name:<13} {value}")
    if quality_doc is not None:
        from .quality import describe_metric, table_lines

        print(f"sample quality ({describe_metric(quality_doc)}):")
        for line in table_lines(quality_doc):
            print(f"  {line}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import torch

    from .evaluate import log_likelihood
    from .fileio import atomic_write_text
    from .objectives import check_density

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
    from .baselines import BASELINES, fit_baseline
    from .data import load_data

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


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    import contextlib

    from .run import RunDir

    out = check_out(args.out, (".html",)) if args.out is not None else None
    # writing into the run takes its lock; a report written elsewhere only reads the run
    with RunDir(args.run).lock() if out is None else contextlib.nullcontext():
        print(f"wrote {write_report(args.run, out, method=args.projection)}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .images import save_grid
    from .morph import interpolation_ends, morph

    out = check_out(args.out, (".png",))
    by_label = args.from_label is not None or args.to_label is not None
    if by_label and (args.i is not None or args.j is not None):
        raise ConfigError("give the ends as rows (--from I --to J) or as classes (--from-label L "
                          "--to-label L), not both")
    if (args.i is None or args.j is None) and not (args.from_label is not None
                                                   and args.to_label is not None):
        raise ConfigError("give both ends: --from I --to J (rows), or --from-label L --to-label L "
                          "(a typical example of each class)")
    model, _, r = run_data(args, "an interpolation")
    ends = ((args.from_label, args.to_label), ("--from-label", "--to-label")) if by_label else (
        (args.i, args.j), ("--from", "--to"))
    i, j = interpolation_ends(model, r.x, r.y, r.labels, *ends[0], by_label, ends[1])
    save_grid(morph(model, r.x[[i, j]], None if r.y is None else r.y[[i, j]], args.steps,
                    args.spherical), out, nrow=args.steps + 2)
    kind = "spherical" if args.spherical else "linear"
    which = (f"class {args.from_label} (row {i})", f"class {args.to_label} (row {j})"
             ) if by_label else (f"input {i}", f"input {j}")
    print(f"wrote {which[0]}, {args.steps} decoded {kind} steps and {which[1]} to {out}")
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid
    from .viz import traversal_codes

    out = check_out(args.out, (".png",))
    model, _, x, y = run_rows(args, "a traversal")
    if not 0 <= args.index < len(x):
        raise ConfigError(f"--index {args.index} is out of range: the data has rows 0 to {len(x) - 1}")
    dims = args.dims if args.dims is not None else list(range(min(model.latent_dim, 10)))
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ConfigError(f"--dims {bad} out of range: the latent has dimensions 0 to {model.latent_dim - 1}")
    with torch.no_grad():
        y1 = None if y is None else y[args.index: args.index + 1]
        z = model.encode(x[args.index: args.index + 1], y1).mean[0]
        images = model.decode(traversal_codes(z, dims, args.range, args.steps), y1).mean
    save_grid(images, out, nrow=args.steps)
    print(f"wrote a traversal of dimensions {dims} (rows) over +-{args.range} around input "
          f"{args.index} to {out}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .data.fetch import cache_dir

    for name, ds in DATASETS.items():
        print(f"{name:<16} {ds.description}{' [cached]' if ds.cached() else ''}")
    print(f"\ncache: {cache_dir()} (set VAEKIT_DATA to move it); or give a path: .npy, .npz "
          "(x_train, x_test[, y_train, y_test]), .csv, or a folder of images")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import describe, export_onnx

    print(describe(export_onnx(args.run, args.out, overwrite=args.overwrite, opset=args.opset)))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .card import write_card

    print(f"wrote {write_card(args.run, license=args.license)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import comparison, read_runs, text_table, write_html
    from .fileio import json_dumps

    runs = read_runs(args.runs)
    if args.html:
        print(f"wrote {write_html(runs, args.html)}", file=sys.stderr)
    print(json_dumps(comparison(runs)) if args.json else text_table(comparison(runs)))
    return 0
