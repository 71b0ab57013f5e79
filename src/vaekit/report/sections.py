"""The sections of the HTML report, each a function of validated run contents returning HTML.

:mod:`vaekit.report.page` reads the run (through :class:`~vaekit.runs.directory.RunDir` only) and assembles the
page; the functions here format. Every piece of text that comes from a file or the user goes
through :func:`esc`; numbers go through :func:`num`, which writes a true minus sign (U+2212).
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
from typing import Any, Sequence

import numpy as np
import torch

from . import figures as viz
from vaekit.config.settings import RunConfig, option_fields
from vaekit.config.options import flag
from vaekit.parts.objectives import loss_words, trains_likelihood
from vaekit.runs.store import kept_row

FEATURE_ROWS = 5000  # data rows (and at most this many prior draws) behind the per-feature view


# -- formatting ---------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(v: Any, digits: int = 3) -> str:
    """A number for people: fixed decimals, a real minus sign, '—' where there is none."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (bool, str)):
        return str(v)
    text = f"{v:,}" if isinstance(v, int) else f"{v:,.{digits}f}"
    return text.replace("-", "\u2212")


def sig(v: float) -> str:
    """Four significant digits (feature values come in any unit)."""
    return "—" if not math.isfinite(v) else f"{v:.4g}".replace("-", "\u2212")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    return struct.unpack(">II", png[16:24])


def img(png: bytes, alt: str, pixels: bool = False) -> str:
    """An embedded PNG. Figures are rendered at :data:`viz.REPORT_DPI` and shown at half their
    pixel width (one figure inch = 100 CSS px); pixel grids at their own size, never smoothed."""
    w, h = png_size(png)
    scale = 1 if pixels else viz.REPORT_DPI // viz.CSS_PX_PER_INCH
    cls = ' class="pixels"' if pixels else ""
    return (f'<img{cls} alt="{esc(alt)}" width="{w // scale}" height="{h // scale}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def fig_img(fig, alt: str) -> str:
    return img(viz.png_bytes(fig, viz.REPORT_DPI), alt)


def figure(content: str, caption: str, grid: str | None = None) -> str:
    """``content`` (img tags) in a figure; with ``grid`` (a class), laid out as a reflowing grid."""
    inner = f'<div class="grid {grid}">{content}</div>' if grid else content
    return f"<figure>{inner}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], row_classes: Sequence[str] = (),
          text: Sequence[int] = (0,)) -> str:
    """A table in a horizontally scrolling wrapper; columns ``text`` are left-aligned text, the
    others right-aligned numbers. Cells are escaped."""
    def cells(tag: str, values: Sequence[Any]) -> str:
        return "".join(f'<{tag} class="{"key" if i in text else "n"}">{esc(v)}</{tag}>'
                       for i, v in enumerate(values))
    body = "".join(f'<tr class="{esc(row_classes[i]) if i < len(row_classes) else ""}">'
                   f"{cells('td', r)}</tr>" for i, r in enumerate(rows))
    return (f'<div class="scroll"><table><thead><tr>{cells("th", header)}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


# -- the headline -------------------------------------------------------------------------------
def objective_words(train) -> str:
    """What the reported loss is, in words (:func:`vaekit.parts.objectives.loss_words`)."""
    return loss_words(train)


def stat(key: str, label: str, value: str, detail: str, raw: Any = None, error: str = "") -> str:
    """A headline card; ``raw`` (the unrounded number) goes in ``data-value`` for scripts."""
    data = f' data-value="{esc(repr(raw))}"' if raw is not None else ""
    err = f' <span class="error">{esc(error)}</span>' if error else ""
    return (f'<div class="stat" id="stat-{key}"><div class="label">{esc(label)}</div>'
            f'<div class="value"{data}>{esc(value)}{err}</div><div class="detail">{esc(detail)}</div></div>')


def headline(history: list[dict], ev: dict | None, cfg: RunConfig, latent_dim: int,
             active: int | None, warnings: list[tuple[str, str]], run_name: str) -> str:
    """The summary at the top: the loss, log p(x) ± its error, active units, bits/dim, warnings."""
    cards = []
    if history:
        row, done = kept_row(history), history[-1]["epoch"]
        split = next((s for s in ("test", "val", "train") if math.isfinite(row.get(f"{s}_loss", math.nan))),
                     "test")
        when = (f"kept epoch {row['epoch']} of {done} trained" if row["epoch"] != done
                else f"epoch {done} of {cfg.train.epochs}")
        cards.append(stat("loss", f"{split} loss", num(row.get(f"{split}_loss")),
                          f"nats per example ({objective_words(cfg.train)}), {when}",
                          row.get(f"{split}_loss")))
    if not trains_likelihood(cfg.train.objective):  # a VAE-GAN: no density to show
        mse = None if ev is None else ev.get("reconstruction_mse")
        cards.append(stat("reconstruction", "reconstruction error",
                          "not evaluated" if ev is None else num(mse, 5),
                          f"mean squared error per value, decoder mean at the posterior mean; "
                          f"log p(x) is not reported: objective {cfg.train.objective} does not "
                          "fit the decoder as a likelihood" + ("" if ev is not None else
                                                       f"; run: vaekit evaluate {run_name}"), mse))
    elif ev is not None:
        cards.append(stat("log-px", "log p(x)", num(ev.get("log_likelihood")),
                          f"nats per example ± standard error, K = {num(ev.get('importance_samples'))} "
                          f"importance samples, {num(ev.get('n_examples'))} examples; higher is better",
                          ev.get("log_likelihood"), f"± {num(ev.get('log_likelihood_stderr'))}"))
    else:
        cards.append(stat("log-px", "log p(x)", "not evaluated",
                          f"run: vaekit evaluate {run_name} (then the report is refreshed)"))
    error_card(cards, history, ev)
    cards.append(stat("active", "active units",
                      "—" if active is None else f"{active} of {latent_dim}",
                      "latent dimensions in use (Cov_x E[z_d|x] > 0.01)", active))
    if ev is not None and ev.get("bits_per_dim") is not None:
        cards.append(stat("bits", "bits per dimension", num(ev["bits_per_dim"]),
                          "−log₂ p(x) per data dimension; lower is better", ev["bits_per_dim"]))
    notes = "".join(f'<li class="{kind}">{esc(text)}</li>' for kind, text in warnings)
    return (f'<section id="summary" aria-label="Summary"><div class="stats">{"".join(cards)}</div>'
            + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</section>")


def error_card(cards: list[str], history: list[dict], ev: dict | None) -> None:
    """A semi-supervised model's classification error: from the evaluation, else the kept epoch."""
    error, what = (ev or {}).get("classification_error"), "vaekit evaluate"
    if error is None and history:
        row = kept_row(history)
        error, what = row.get("test_error", row.get("val_error")), f"epoch {row['epoch']}"
        what = f"{'test' if 'test_error' in row else 'validation'} rows, {what}"
    if isinstance(error, (int, float)) and math.isfinite(error):
        cards.append(stat("error", "classification error", f"{100 * error:.2f}%",
                          f"labelled rows misclassified by q(y|x) ({what}); lower is better", error))


def training_notes(history: list[dict], cfg: RunConfig, run_name: str) -> list[tuple[str, str]]:
    """Skipped steps, non-finite metrics, and how training ended (early stopping, a budget)."""
    out: list[tuple[str, str]] = []
    if not history:
        return [("info", "This run holds no per-epoch metrics: no epoch has finished yet, or the "
                         "model was saved from Python (VAE.save) rather than trained by vaekit train.")]
    skips = {r["epoch"]: int(r.get("skipped_steps") or 0) for r in history
             if math.isfinite(r.get("skipped_steps") or 0)}
    total = sum(skips.values())
    if total:
        where = ", ".join(str(e) for e, s in skips.items() if s)
        out.append(("warn", f"{total} training step{'s were' if total > 1 else ' was'} skipped "
                            f"because the loss or a gradient was not finite (epoch {where}). A few "
                            "are harmless; many mean the steps are too large: try a lower --lr or "
                            "--clip-grad 10."))
    if any(not math.isfinite(v) for r in history for k, v in r.items()
           if k.endswith(("_loss", "_rec", "_kl")) and isinstance(v, float)):
        out.append(("warn", "Some per-epoch metrics are not finite (shown as —)."))
    test = [(r["epoch"], r["test_loss"]) for r in history if math.isfinite(r.get("test_loss", math.nan))]
    # (a VAE-GAN's losses are in a changing feature space: a rise is no sign of overfitting)
    if test and "best_epoch" not in history[-1] and trains_likelihood(cfg.train.objective):
        best = min(test, key=lambda t: t[1])
        if test[-1][1] - best[1] > 0.1 + 0.02 * abs(best[1]):
            out.append(("warn", f"The test loss rose from {num(best[1])} at epoch {best[0]} to "
                                f"{num(test[-1][1])} at epoch {test[-1][0]}: the model overfits. "
                                "Hold out a validation split and keep the best epoch with "
                                "--val-fraction 0.1 --patience 10, or train fewer epochs."))
    last, planned = history[-1], cfg.train.epochs
    done, kept, patience = last["epoch"], last.get("best_epoch"), cfg.train.patience
    budget = (f" (the --max-minutes {cfg.train.max_minutes:g} budget, or an interruption)"
              if cfg.train.max_minutes > 0 else " (it was interrupted, or is still running)")
    resume = f"; vaekit train {cfg.data.data} --resume --out {run_name} continues it"
    if kept:
        if done < planned and patience and done - kept >= patience:
            why = (f"training stopped after epoch {done} of {planned} because the validation loss "
                   f"had not improved for {patience} epoch{'s' if patience > 1 else ''} "
                   f"(--patience {patience})")
        elif done < planned:
            why = f"training stopped after epoch {done} of {planned}{budget}{resume}"
        else:
            why = f"all {planned} epochs ran"
        row = kept_row(history)
        later = (" The numbers and figures below are of the kept model, except the curves and "
                 "per-epoch images, which show every epoch." if kept != done else "")
        out.append(("info", f"Early stopping kept the weights of epoch {kept}, the lowest "
                            f"validation loss ({num(row.get('val_loss'))} nats); {why}.{later}"))
    elif done < planned:
        out.append(("warn", f"Training stopped after epoch {done} of {planned}{budget}{resume}."))
    return out


# -- configuration ------------------------------------------------------------------------------
def option_value(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v)) or "none"
    if v is None or v == "":
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def shown_value(name: str, v: Any) -> str:
    """An option's value for the table; a table's column schema (JSON, kept in config.json) as
    its size, since the Columns section shows the columns."""
    if name == "schema" and isinstance(v, str) and v:
        try:
            columns = json.loads(v).get("columns", [])
            return f"{len(columns)} columns (the Columns section lists them; config.json holds it)"
        except (ValueError, AttributeError):
            pass
    return option_value(v)


def config_section(cfg: RunConfig) -> str:
    """Every option in a folded table, those that differ from the defaults first."""
    flat, defaults, fields = cfg.flat(), RunConfig().flat(), option_fields()
    internal = {n for n, (_, f) in fields.items() if f.metadata["scope"] == "internal"}
    names = [n for n in flat if n not in internal]
    changed = [n for n in names if flat[n] != defaults.get(n)]
    order = changed + [n for n in names if n not in changed] + sorted(internal & set(flat))
    rows = [[flag(n) if n not in internal else f"{n} (set by vaekit)", shown_value(n, flat[n]),
             option_value(defaults.get(n))] for n in order]
    shown = ", ".join(f"{flag(n)} {option_value(flat[n])}" for n in changed[:8])
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    summary = (f"{len(changed)} option{'s differ' if len(changed) != 1 else ' differs'} from the defaults: "
               f"{shown}{more}" if changed else "every option at its default")
    return (f'<details id="configuration"><summary>Configuration <span class="muted">'
            f"({esc(summary)})</span></summary>"
            + table(["option", "value", "default"], rows,
                    ["changed"] * len(changed) + [""] * (len(order) - len(changed)), text=(0, 1, 2))
            + "</details>")


# -- training and evaluation --------------------------------------------------------------------
def legend(items: Sequence[tuple[str, str]]) -> str:
    """A key drawn in HTML (crisp at any size): ``(swatch class, words)`` pairs."""
    return ('<p class="legend">' + "".join(f'<span class="item"><span class="swatch {k}"></span>'
                                           f"{esc(words)}</span>" for k, words in items) + "</p>")


SPLIT_WORDS = {"train": "training split", "val": "validation split", "test": "test split"}


def training_section(history: list[dict], cfg: RunConfig) -> str:
    density = trains_likelihood(cfg.train.objective)
    titles = {"loss": objective_words(cfg.train) if density else "VAE-GAN encoder loss",
              "rec": None if density else "reconstruction −log N(Dis_l(x) | Dis_l(x̃), s²I)"}
    panels = "".join(fig_img(viz.loss_panel(history, key, titles.get(key), legend=False),
                             viz.LOSS_TITLES[key] if titles.get(key) is None else titles[key])
                     for key in ("loss", "rec", "kl"))
    caption = "The loss and its two terms per epoch, in nats per example."
    if not density:
        caption += (" The VAE-GAN's reconstruction term is measured in the features of each epoch's "
                    "discriminator (Larsen et al. 2016), so its level is not comparable between "
                    "epochs; the dis_* columns below follow the adversarial game (mean D on data, "
                    "reconstructions and prior draws; fractions of steps the balance rule paused).")
    splits = [s for s in viz.SERIES if any(math.isfinite(r.get(f"{s}_loss", math.nan)) for r in history)]
    kept = kept_row(history)["epoch"] if "best_epoch" in history[-1] else None
    key = [(s, SPLIT_WORDS[s]) for s in splits]
    key += [("kept", f"kept epoch ({kept})")] if kept and kept != history[-1]["epoch"] else []
    cols = [c for c in history[0] if c != "epoch"]
    for r in history[1:]:
        cols += [c for c in r if c not in cols and c != "epoch"]

    def cell(c: str, v: Any) -> Any:
        if v is None:
            return ""
        return f"{v:.2f}" if c == "seconds" else num(v) if isinstance(v, float) else v
    rows = [[r["epoch"], *(cell(c, r.get(c)) for c in cols)] for r in history]
    return ('<h2 id="training">Training</h2>' + legend(key)
            + figure(panels, caption, grid="curves")
            + f"<details><summary>Per-epoch metrics ({len(history)} epochs)</summary>"
            + table(["epoch", *(c.replace("_", " ") for c in cols)], rows,
                    ["kept" if r["epoch"] == kept else "" for r in history])
            + "</details>")


EVALUATION_NAMES = {"log_likelihood", "log_likelihood_stderr", "elbo", "rec", "kl", "kl_estimator",
                    "importance_samples", "n_examples", "active_units", "kl_per_dim", "bits_per_dim",
                    "data", "split", "reconstruction_mse"}


def evaluation_section(ev: dict, latent_dim: int, objective: str = "elbo", table_run: bool = False) -> str:
    """The evaluation as a table a person reads: names, units, log p(x) with its error (for an
    ``objective`` that fitted the likelihood; else why there is none). For a table
    (``table_run``) the reconstruction error is per column, in the Columns section: one squared
    error summed over columns in their raw units would mean nothing."""
    get = ev.get
    on = ""
    if isinstance(get("split"), str) or isinstance(get("data"), str):
        split = f"the {get('split')} split" if isinstance(get("split"), str) else "the data"
        on = f", on {split}" + (f" of {get('data')}" if isinstance(get("data"), str) else "")
    kl_how = "closed form" if get("kl_estimator") == "analytic" else "Monte Carlo estimate"
    density = trains_likelihood(objective)
    rows = []
    if density:
        rows += [["log p(x), importance-sampled", f"{num(get('log_likelihood'))} ± "
                  f"{num(get('log_likelihood_stderr'))}", "nats per example ± standard error; higher is better"],
                 ["ELBO", num(get("elbo")), "nats per example; a lower bound on log p(x)"]]
        if isinstance(get("elbo"), float) and isinstance(get("log_likelihood"), float):
            rows.append(["gap log p(x) − ELBO", num(get("log_likelihood") - get("elbo")),
                         "nats; how loose the bound is"])
        rows.append(["reconstruction −E[log p(x|z)]", num(get("rec")), "nats per example"])
    else:
        rows.append(["log p(x), ELBO", "not reported", f"objective {objective} does not fit the "
                     "decoder as a likelihood (a GAN term drives it too), so they would not "
                     "measure this model"])
    if table_run:
        rows.append(["reconstruction error", "per column", "in each column's own units: the "
                     "Columns section"])
    elif get("reconstruction_mse") is not None:
        rows.append(["reconstruction error", num(get("reconstruction_mse"), 5), "mean squared error "
                     "per value, in the data's units (decoder mean at the posterior mean)"])
    rows += [["KL(q(z|x) ‖ p(z))", num(get("kl")), f"nats per example, {kl_how}"]]
    if get("bits_per_dim") is not None:
        rows.append(["bits per dimension", num(get("bits_per_dim")), "−log₂ p(x) / dimensions"])
    if get("active_units") is not None:
        rows.append(["active units", f"{get('active_units')} of {latent_dim}", "Cov_x E[z_d|x] > 0.01"])
    rows += [["examples evaluated", num(get("n_examples")), ""]]
    if density:
        rows.append(["importance samples K", num(get("importance_samples")), "per example"])
    from vaekit.evaluation.disentangle import dci_label

    rows += [[k.replace("_", " "), num(v) if isinstance(v, (int, float)) else v, dci_label(k)]
             for k, v in ev.items() if k not in EVALUATION_NAMES and not isinstance(v, list)]
    return ('<h2 id="evaluation">Evaluation</h2>'
            + table(["measure", "value", "unit"], rows, text=(0, 2))
            + f'<p class="muted">From the last vaekit evaluate{esc(on)}: means per example, each '
              "summed over the data's dimensions.</p>")


# -- tabular data -------------------------------------------------------------------------------
@torch.no_grad()
def features_section(model, x: torch.Tensor, y: torch.Tensor | None, seed: int) -> str:
    """For vector data: per feature, the data against its reconstructions and against samples."""
    x = x[:FEATURE_ROWS].to(model.device)
    y = y[:FEATURE_ROWS].to(model.device) if model.cond_dim and y is not None else None
    recon = torch.cat([model.reconstruct(x[i: i + 1000], None if y is None else y[i: i + 1000])
                       for i in range(0, len(x), 1000)])
    n_samples = min(FEATURE_ROWS, max(1000, len(x)))
    g = torch.Generator(model.device).manual_seed(seed)
    labels = None
    if model.cond_dim:  # draws for the data's own labels, so the mixture of classes matches
        labels = (y.repeat(-(-n_samples // len(y)))[:n_samples] if y is not None
                  else torch.arange(n_samples, device=model.device) % model.cond_dim)
    samples = model.generate(n_samples, g, labels)
    flat = lambda t: t.float().reshape(len(t), -1).cpu().numpy().astype(np.float64)  # noqa: E731
    xd, rd, sd = flat(x), flat(recon), flat(samples)
    pick = viz.pick_features(xd)
    names = [f"feature {i}" if model.data_shape == (xd.shape[1],) else
             "x[" + ", ".join(map(str, np.unravel_index(i, model.data_shape))) + "]" for i in pick]
    panels = "".join(fig_img(viz.feature_panel(xd[:, j], rd[:, j], sd[:, j], name), name)
                     for j, name in zip(pick, names))
    key = legend([("data", f"data ({len(xd)} rows)"), ("reconstruction", "their reconstructions"),
                  ("samples", f"{n_samples} samples from the prior")])
    which = (f"all {xd.shape[1]} features" if len(pick) == xd.shape[1] else
             f"the {len(pick)} of {xd.shape[1]} features with the largest standard deviation")
    rmse = np.sqrt(np.mean((rd - xd) ** 2, 0))
    rows = [[name, sig(xd[:, j].mean()), sig(xd[:, j].std()), sig(rmse[j]), sig(sd[:, j].mean()),
             sig(sd[:, j].std())] for j, name in zip(pick, names)]
    return ('<h2 id="features">Features: data, reconstructions and samples</h2>' + key
            + figure(panels, f"Histograms of {which}, in the data's own units, on shared bins: the "
                     "data as grey bars, the decoder means at the posterior means (reconstructions) "
                     "as solid lines, the decoder means of draws from the prior (samples) as dashed "
                     "lines. Where the model fits, both lines follow the bars. Decoder means leave "
                     "out the likelihood's noise, so they spread less than the data; a solid line "
                     "that is one narrow spike means the reconstructions ignore the input there.",
                     grid="features")
            + table(["feature", "data mean", "data sd", "reconstruction RMSE", "samples mean",
                     "samples sd"], rows))
