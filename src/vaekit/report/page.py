"""A self-contained HTML report of a run, results first.

The page opens with the headline numbers (the loss of the kept epoch, log p(x) ± its standard
error, active units, bits/dim) and any warning in plain words; the configuration is folded away;
then the training curves, the evaluation as a table, the latent space (maps over epochs in one
shared projection), and for images the reconstructions and samples, a morph between two classes
and latent traversals per dimension; for vectors a per-feature view of data, reconstructions and
samples.

Everything is read through :class:`~vaekit.runs.directory.RunDir`'s validated readers. Images are embedded
as base64 PNGs and the page loads nothing from the network and runs no script. Every piece of
text that comes from a file or the user (config values, data names, labels) is HTML-escaped.
The layout reflows from a laptop screen down to 800 px and below without horizontal scrolling:
figures are grids of small panels, and wide tables scroll inside their own box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaekit.version import __version__
from . import figures as viz
from vaekit.data import Dataset
from vaekit.pipeline import run_data
from vaekit.evaluation.measures import latent_diagnostics, posterior_means
from vaekit.io.files import atomic_write_text
from vaekit.io.images import grid_png
from vaekit.sampling.paths import dimension_sweep
from vaekit.sampling.morph import interpolation_ends, morph, morph_classes, typical_row
from .columns import columns_section
from .sections import (config_section, esc, evaluation_section, features_section,
                       fig_img, headline, img, num, objective_words, training_notes,
                       training_section)
from vaekit.runs.directory import RunDir
from vaekit.evaluation.collapse import collapse_note
from vaekit.errors import VaekitError
from vaekit.evaluation.quality import read as read_quality
from .quality import quality_section

__all__ = ["build_report", "write_report", "num", "objective_words"]

DIAGNOSTIC_ROWS = 5000  # test examples behind the diagnostics and interpolation

CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1b1b1b; background: #fff; max-width: 72rem; margin: 0 auto;
       padding: 1.25rem clamp(0.75rem, 3vw, 2rem) 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 0.2rem; overflow-wrap: anywhere; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 0.7rem; padding-bottom: 0.25rem; border-bottom: 1px solid #d8d8d8; }
a { color: #0b5cad; }
.muted, nav { color: #595959; font-size: 0.92rem; overflow-wrap: anywhere; }
nav a { margin-right: 0.9rem; white-space: nowrap; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 14rem), 1fr));
         gap: 0.8rem; margin: 1rem 0 0.8rem; }
.stat { border: 1px solid #d8d8d8; border-radius: 8px; padding: 0.7rem 0.95rem; background: #f8f9fa; }
.stat .label { font-size: 0.8rem; color: #595959; text-transform: uppercase; letter-spacing: 0.05em; }
.stat .value { font-size: 1.65rem; font-weight: 650; font-variant-numeric: tabular-nums;
               overflow-wrap: anywhere; line-height: 1.25; margin: 0.15rem 0; }
.stat .detail { font-size: 0.85rem; color: #4d4d4d; line-height: 1.35; }
ul.notes { list-style: none; padding: 0; margin: 0.6rem 0; }
ul.notes li { padding: 0.55rem 0.95rem; margin: 0.45rem 0; border-radius: 4px; overflow-wrap: anywhere; }
li.warn { background: #fff4d4; border-left: 4px solid #b87d00; }
li.warn::before { content: "Warning: "; font-weight: 650; }
li.info { background: #eaf2fb; border-left: 4px solid #2f6fb0; }
details { border: 1px solid #d8d8d8; border-radius: 8px; padding: 0.55rem 0.95rem; margin: 1rem 0; }
summary { cursor: pointer; font-weight: 600; overflow-wrap: anywhere; }
details[open] > summary { margin-bottom: 0.5rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9rem; font-variant-numeric: tabular-nums; margin: 0.4rem 0; }
th, td { padding: 0.28rem 0.75rem; border-bottom: 1px solid #e2e2e2; text-align: right; white-space: nowrap; }
th { background: #f1f3f5; font-weight: 600; border-bottom: 1px solid #c8c8c8; }
.key { text-align: left; }
td.key:not(:first-child) { white-space: normal; min-width: 10rem; }
#evaluation + .scroll > table { width: 100%; }  /* so its unit column wraps on a narrow screen */
.stat .error { font-size: 1.1rem; font-weight: 600; white-space: nowrap; }
tr.changed td, tr.kept td { font-weight: 650; }
tr.changed td:first-child, tr.kept td:first-child { box-shadow: inset 3px 0 #2f6fb0; }
img { max-width: 100%; height: auto; }
img.pixels { image-rendering: pixelated; border: 1px solid #d8d8d8; }
figure { margin: 1rem 0; }
figcaption, .caption { color: #444; font-size: 0.9rem; margin-top: 0.35rem; }
.grid { display: grid; gap: 0.8rem 1rem; align-items: start; justify-items: center;
        grid-template-columns: repeat(auto-fill, minmax(min(100%, var(--cell)), 1fr)); }
.grid figure { margin: 0; }
.curves { --cell: 300px; } .latent { --cell: 250px; } .features { --cell: 235px; }
.samples { --cell: 240px; }
.key-strip { text-align: center; }
.legend { font-size: 0.92rem; margin: 0.3rem 0 0.6rem; }
.legend .item { display: inline-block; margin-right: 1.1rem; white-space: nowrap; }
.legend .swatch { display: inline-block; width: 1.8rem; height: 0; vertical-align: middle;
                  margin-right: 0.4rem; border-top: 3px solid; }
.pair { display: grid; gap: 0.8rem 1.2rem; align-items: start;
        grid-template-columns: repeat(2, minmax(0, 1fr)); }
.pair figure { margin: 0; }
@media (max-width: 640px) { .pair { grid-template-columns: minmax(0, 1fr); } }
footer { margin-top: 3rem; color: #595959; font-size: 0.85rem; overflow-wrap: anywhere; }
"""
LINES = {"-": "solid", "--": "dashed", ":": "dotted"}
# The HTML keys' swatches, in the figures' own colours and line styles.
CSS += "".join(f".swatch.{k} {{ border-top: 3px {LINES[line]} {colour}; }}\n"
               for k, (colour, line, _) in viz.SERIES.items())
CSS += (f".swatch.kept {{ width: 0; height: 1rem; border-top: 0; "
        f"border-left: 2px dotted {viz.KEPT_COLOUR}; }}\n"
        f".swatch.data {{ border-top: 0.75rem solid {viz.FEATURE_COLOURS['data']}; }}\n"
        f".swatch.reconstruction {{ border-top: 3px solid {viz.FEATURE_COLOURS['reconstruction']}; }}\n"
        f".swatch.samples {{ border-top: 3px dashed {viz.FEATURE_COLOURS['samples']}; }}\n")
MANIFOLD_PX = 480  # about this wide: decoded images of the 15 x 15 manifold grid, never smoothed

def describe_model(model, cfg) -> str:
    """``mlp 64 → 2-d latent; bernoulli likelihood, diagonal posterior, normal prior``."""
    m = cfg.model
    hidden = ",".join(map(str, m.hidden)) if m.hidden else "default widths"
    ladder = f" + {','.join(map(str, m.top_latent_dims))} above" if m.top_latent_dims else ""
    cond = ", conditional on the label" if model.cond_dim else ""
    return (f"{m.arch} {hidden} → {model.latent_dim}-d latent{ladder}; {m.likelihood} likelihood, "
            f"{m.posterior} posterior, {m.prior} prior{cond}")


def latent_section(rd: RunDir, model, method: str, diag: dict | None) -> str:
    parts = ['<h2 id="latent">Latent space</h2>']
    snaps, labels = rd.latent_snapshots()
    if snaps:
        pick = sorted({snaps[i][0] for i in np.linspace(0, len(snaps) - 1, min(4, len(snaps))).astype(int)})
        chosen = [s for s in snaps if s[0] in pick]
        how = ("the latent itself" if model.latent_dim <= 2 else
               "one PCA fitted on the last epoch and applied to every epoch" if method == "pca" else
               "t-SNE, each epoch aligned to the last by rotation, scale and shift")
        xys, axis = viz.project_epochs([z for _, z in chosen], method)
        limits = viz.shared_limits(xys)  # one frame: the clusters stay where they form
        panels = "".join(fig_img(viz.latent_map(xy, labels, f"epoch {e}", legend=False, axis=axis,
                                                limits=limits), f"latent map at epoch {e}")
                         for (e, _), xy in zip(chosen, xys))
        key = ("" if labels is None else '<div class="key-strip">'
               + fig_img(viz.class_key(list(np.unique(labels))), "colour and marker of each label")
               + "</div>")
        parts.append(f'<figure><div class="grid latent">{panels}</div>{key}<figcaption>'
                     f"{esc(f'Posterior means of {len(chosen[0][1])} test examples at epochs ')}"
                     f"{esc(', '.join(map(str, pick)))} ({esc(how)})"
                     f"{esc(', coloured by label' if labels is not None else '')}.</figcaption></figure>")
    pair = []
    if model.latent_dim == 2 and len(model.data_shape) == 3 and not model.cond_dim:
        n, h = 15, model.data_shape[-2]
        scale = max(1, MANIFOLD_PX // (n * (h + 2) + 2))  # grid_png's 2-px separators
        png = grid_png(viz.manifold(model, n), n, scale)
        pair.append(f"<figure>{img(png, 'decoded manifold', pixels=True)}"
                    "<figcaption>Decoded manifold: decoder means over a 15 × 15 grid of z at "
                    "Gaussian quantiles.</figcaption></figure>")
    if diag is not None and diag["kl_per_dim"] is not None:
        active = np.array(diag["posterior_mean_variance"]) > 0.01
        pair.append(f"<figure>{fig_img(viz.kl_per_dim(diag['kl_per_dim'], active), 'KL per dimension')}"
                    "<figcaption>Mean KL of each latent dimension over the test examples; hollow "
                    "bars are inactive units (Cov_x E[z_d|x] ≤ 0.01, Burda et al. 2015)."
                    "</figcaption></figure>")
    elif diag is not None:
        pair.append(f"<p>{diag['active_units']} of {model.latent_dim} latent dimensions are "
                    "active (Cov_x E[z_d|x] > 0.01); the KL does not split into dimensions for "
                    f"this posterior and prior ({esc(model.kl_estimator)} KL).</p>")
    if len(pair) == 2 and model.latent_dim <= 10:  # side by side only while the KL chart is narrow
        parts.append(f'<div class="pair">{"".join(pair)}</div>')
    else:
        parts.extend(pair)
    return "".join(parts)


def images_section(rd: RunDir, model, x_show, y_show, labels=None) -> str:
    """Reconstructions and samples over epochs, and a morph: between the representatives of two
    classes (3 and 8 where both exist, :func:`vaekit.sampling.morph.morph_classes`) when the data has ``labels``,
    else between the first two test examples."""
    tiles = []
    for name, caption in (("reconstruction", "test inputs (top) above their reconstructions"),
                          ("samples", "decoded draws from the prior (the same draws every epoch)")):
        epochs = rd.image_epochs(name)
        for e in sorted({epochs[0], epochs[-1]}) if epochs else []:
            tiles.append(f"<figure>{img(rd.read_image(name, e), f'{name} at epoch {e}', pixels=True)}"
                         f"<figcaption>Epoch {e}: {esc(caption)}.</figcaption></figure>")
    out = ['<h2 id="images">Reconstructions and samples</h2>', f'<div class="pair">{"".join(tiles)}</div>']
    if x_show is None or len(x_show) < 2:
        return "".join(out)
    ends, words = [0, 1], "the first two test examples"
    if labels is not None and len(np.unique(labels.numpy())) >= 2:
        a, b = morph_classes(labels.tolist())
        ends = interpolation_ends(model, x_show, y_show, labels, a, b, True, ("", ""))
        words = (f"a typical test example of class {a} and one of class {b} (each the example "
                 "whose posterior mean is nearest its class's mean code)")
    png = grid_png(morph(model, x_show[ends], None if y_show is None else y_show[ends], 10), 12)
    caption = (f"Morph from {words}: the two inputs at the ends, between them the decoder means "
               "at 10 points on the straight line between their posterior means.")
    out.append(f"<figure>{img(png, 'morph', pixels=True)}<figcaption>{esc(caption)}"
               "</figcaption></figure>")
    return "".join(out)


TRAVERSAL_ROWS = 10  # latent dimensions drawn, those with the largest KL
TRAVERSAL_STEPS = 9


def traversal_section(model, x_show, y_show, diag: dict | None) -> str:
    """Latent traversals: one row per latent dimension, ordered by KL (largest first), the
    dimension swept over its test codes' 2nd..98th percentile around a typical test example."""
    import torch

    if x_show is None or not len(x_show) or diag is None:
        return ""
    codes = posterior_means(model, x_show, y=y_show)
    kl = diag["kl_per_dim"]
    key = np.asarray(kl if kl is not None else diag["posterior_mean_variance"])
    dims = [int(d) for d in np.argsort(-key, kind="stable")[:TRAVERSAL_ROWS]]
    q = torch.quantile(codes[:, dims].double(), torch.tensor([0.02, 0.98], dtype=torch.float64), dim=0)
    values = torch.stack([torch.linspace(float(lo), float(hi), TRAVERSAL_STEPS)
                          for lo, hi in zip(q[0], q[1])]).to(codes.dtype)
    base = typical_row(codes)
    sweep = dimension_sweep(codes[base], dims, values).to(model.device)
    with torch.no_grad():
        images = model.decode(sweep, None if y_show is None else y_show[base: base + 1]).mean.float().cpu()
    what = "KL" if kl is not None else "var E[z|x]"
    names = [f"z{d}  {what} {key[d]:.2f}" for d in dims]
    more = (f" (the {TRAVERSAL_ROWS} of {model.latent_dim} with the largest {what})"
            if model.latent_dim > TRAVERSAL_ROWS else "")
    caption = (f"Each row varies one latent dimension{more}, ordered by its mean "
               f"{'KL' if kl is not None else 'posterior-mean variance'} over the test examples, "
               "from the 2nd to the 98th percentile of its test codes, with the other dimensions "
               "at the code of a typical test example (the one whose posterior mean is nearest "
               "the mean code); the images are decoder means. A "
               "dimension that holds one factor of the data changes one thing along its row; "
               "an inactive one changes nothing.")
    return ('<h2 id="traversals">Latent traversals</h2>'
            f"<figure>{fig_img(viz.traversal_figure(images, names, TRAVERSAL_STEPS), 'latent traversals')}"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def build_report(run: str | Path, data: Dataset | None = None, method: str = "pca") -> str:
    """The report's HTML for the run directory ``run``.

    Parameters
    ----------
    run : path
        A run directory written by ``vaekit train``.
    data : Dataset, optional
        The run's data, if already in memory; otherwise it is loaded from the run's config
        (diagnostics and the per-feature view are skipped with a warning if it cannot be).
    method : {'pca', 'tsne'}
        Projection of latent maps when the latent space has more than 2 dimensions.
    """
    rd = RunDir(run)
    model, cfg = rd.load_model()
    history = rd.read_metrics()
    ev = rd.read_evaluation()  # validated: a damaged evaluation.json is one clear error
    quality = quality_section(rd.path, model, read_quality(rd.path), cfg.train.seed)
    notes = training_notes(history, cfg, str(rd.path))

    # Diagnostics on the test split (training split when there is none).
    diag, x_show, y_show, labels_show, sizes = None, None, None, None, ""
    try:
        data = data or run_data(cfg, log=lambda s: None)
        x_show, y_show = (data.x_test, data.y_test) if len(data.x_test) else (data.x_train, data.y_train)
        x_show = x_show[:DIAGNOSTIC_ROWS]
        labels_show = None if y_show is None else y_show[:DIAGNOSTIC_ROWS]  # the data's labels
        y_show = labels_show if model.cond_dim else None  # the labels the model reads
        diag = latent_diagnostics(model, x_show, y=y_show)
        sizes = f" · {len(data.x_train):,} train / {len(data.x_test):,} test examples"
    except VaekitError as e:
        x_show = y_show = labels_show = None
        notes.append(("warn", f"Diagnostics, interpolations and the per-feature view are skipped: "
                              f"the data could not be loaded ({e})."))
    active = ev.get("active_units") if ev else None
    active = diag["active_units"] if active is None and diag is not None else active
    kl = ev.get("kl") if ev else None
    if kl is None and diag is not None and diag["kl_per_dim"] is not None:
        kl = float(sum(diag["kl_per_dim"]))
    if active is not None:
        note = collapse_note(active, model.latent_dim,
                             kl if isinstance(kl, float) and np.isfinite(kl) else None)
        if note:
            notes.insert(0, ("warn", note))

    is_image = len(model.data_shape) == 3
    shape = "×".join(map(str, model.data_shape))
    seconds = sum(r.get("seconds", 0) for r in history if np.isfinite(r.get("seconds", 0)))
    trained = f" · {history[-1]['epoch']} epochs in {seconds:.1f} s" if history else ""
    links = [("summary", "Summary"), ("configuration", "Configuration")]
    links += [("training", "Training")] if history else []
    links += [("evaluation", "Evaluation")] if ev is not None else []
    links += [("latent", "Latent space")]
    schema = getattr(model.likelihood, "schema", None)  # a table's columns
    links += [("images", "Reconstructions and samples")] if is_image else (
        [] if x_show is None else [("columns", "Columns")] if schema is not None else
        [("features", "Features")])
    links += [("traversals", "Traversals")] if is_image and diag is not None else []
    links += [("sample-quality", "Sample quality")] if quality else []
    parts = [f"<header><h1>vaekit run {esc(rd.path.name)}</h1>",
             f'<p class="muted">data {esc(cfg.data.data)} · examples of shape {esc(shape)}'
             f"{esc(sizes)} · {esc(describe_model(model, cfg))}{esc(trained)}</p>",
             "<nav>" + "".join(f'<a href="#{k}">{v}</a>' for k, v in links) + "</nav></header>",
             headline(history, ev, cfg, model.latent_dim, active, notes, str(rd.path)),
             config_section(cfg)]
    if history:
        parts.append(training_section(history, cfg))
    if ev is not None:
        parts.append(evaluation_section(ev, model.latent_dim, cfg.train.objective,
                                        table_run=schema is not None))
    parts.append(latent_section(rd, model, method, diag))
    if is_image:
        parts.append(images_section(rd, model, x_show, y_show, labels_show))
        parts.append(traversal_section(model, x_show, y_show, diag))
    elif x_show is not None and schema is not None:
        parts.append(columns_section(model, schema, x_show, cfg.train.seed))
    elif x_show is not None:
        parts.append(features_section(model, x_show, y_show, cfg.train.seed))
    if quality:
        parts.append(quality)
    parts.append(f"<footer>{esc(rd.path.resolve())} · written by vaekit {esc(__version__)}</footer>")
    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>vaekit report: {esc(rd.path.name)}</title><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_report(run: str | Path, out: str | Path | None = None, data: Dataset | None = None,
                 method: str = "pca") -> Path:
    """Write the report (default ``RUN/report.html``) and return its path."""
    out = Path(out) if out else RunDir(run).report
    atomic_write_text(out, build_report(run, data, method))
    return out

