"""A self-contained HTML report of a run: configuration, metrics, evaluation and every figure.

Images are embedded as base64 PNGs and the page loads nothing from the network. Every piece of
text that comes from a file or the user (config values, data names, labels) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, viz
from .data import Dataset
from .fileio import atomic_write_text
from .images import grid_png
from .run import RunDir

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: right; }
th { background: #f2f2f2; } td.key, th.key { text-align: left; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.note { background: #fff6d6; border-left: 4px solid #c99a00; padding: 0.6rem 1rem; }
.muted { color: #666; font-size: 0.9rem; }
figure { margin: 1rem 0; } figcaption { color: #444; font-size: 0.9rem; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def figure(png: bytes, caption: str) -> str:
    return f"<figure>{img_tag(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th class="{"key" if i == 0 else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"key" if i == 0 else ""}">{esc(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def objective_words(train) -> str:
    """What the reported loss is, in words."""
    if train.objective == "iwae":
        return f"negative IWAE bound, k = {train.k}"
    return "negative ELBO" + (f", averaged over k = {train.k} samples" if train.k > 1 else "")


def collapse_note(active: int, latent_dim: int) -> str | None:
    """A plain-words warning when the posterior carries little or no information."""
    if active == 0:
        return ("Posterior collapse: no latent dimension carries information about the input "
                "(every q(z|x) matches the prior), so the decoder ignores z and samples all look "
                "alike. Try a smaller --beta, KL warm-up, fewer epochs of a too-strong decoder, or "
                "check that the data vary.")
    if active < latent_dim / 2:
        return (f"Only {active} of {latent_dim} latent dimensions are in use; the others match the "
                "prior. That is normal when --latent-dim is larger than the data needs, but if "
                "reconstructions are poor, try a smaller --beta.")
    return None


def build_report(run: str | Path, data: Dataset | None = None, method: str = "pca") -> str:
    """The report's HTML for the run directory ``run``.

    Parameters
    ----------
    run : path
        A run directory written by ``vaekit train``.
    data : Dataset, optional
        The run's data, if already in memory; otherwise it is loaded from the run's config
        (diagnostics are skipped with a note if it cannot be).
    method : {'pca', 'tsne'}
        Projection of latent maps when the latent space has more than 2 dimensions.
    """
    import torch

    from .data import load_data
    from .errors import VaekitError
    from .evaluate import latent_diagnostics

    rd = RunDir(run)
    model, cfg = rd.load_model()
    history = rd.read_metrics()
    parts = [f"<h1>vaekit run {esc(rd.path.name)}</h1>",
             f'<p class="muted">{esc(rd.path.resolve())} &middot; data {esc(cfg.data.data)} &middot; '
             f"vaekit {esc(__version__)}</p>"]
    if history:
        last = history[-1]
        key = "test_loss" if "test_loss" in last else "train_loss"
        parts.append(f"<p>After {last['epoch']} epochs the {esc(key.replace('_', ' '))} is "
                     f"<b>{last[key]:.3f}</b> nats per example ({esc(objective_words(cfg.train))}).</p>")

    # Diagnostics on the test split (training split when there is none).
    diag_html, x_show, y_show = "", None, None
    try:
        data = data or load_data(cfg.data.data, cfg.data.test_fraction, log=lambda s: None)
        x_show, y_show = (data.x_test, data.y_test) if len(data.x_test) else (data.x_train, data.y_train)
        y_show = y_show[:5000] if model.cond_dim and y_show is not None else None
        diag = latent_diagnostics(model, x_show[:5000], y=y_show)
        var = np.array(diag["posterior_mean_variance"])
        note = collapse_note(diag["active_units"], model.latent_dim)
        if note:
            parts.append(f'<p class="note">{esc(note)}</p>')
        if diag["kl_per_dim"] is not None:
            diag_html = figure(png(viz.kl_per_dim(diag["kl_per_dim"], var > 0.01)),
                               "Mean KL of each latent dimension over the test examples; hollow bars "
                               "are inactive units (Cov_x E[z_d|x] <= 0.01, Burda et al. 2015).")
        else:
            diag_html = (f"<p>{diag['active_units']} of {model.latent_dim} latent dimensions are "
                         "active (Cov_x E[z_d|x] > 0.01); the KL does not split into dimensions "
                         f"for this posterior and prior ({esc(model.kl_estimator)} KL).</p>")
    except VaekitError as e:
        diag_html = f'<p class="note">Diagnostics skipped: the data could not be loaded ({esc(e)}).</p>'

    parts.append("<h2>Configuration</h2>")
    cfg_rows = [[f"{section}.{k}", v] for section, values in cfg.to_dict().items()
                for k, v in values.items()]
    parts.append(table(["setting", "value"], cfg_rows))

    if history:
        parts.append("<h2>Training</h2>")
        parts.append(figure(png(viz.loss_curves(history)),
                            "Negative ELBO and its two terms per epoch, in nats per example."))
        cols = [c for c in history[0] if c != "epoch"]
        parts.append(table(["epoch", *cols], [[r["epoch"], *(fmt(r.get(c, "")) for c in cols)]
                                              for r in history]))

    ev = rd.read_evaluation()  # validated: a damaged evaluation.json is one clear error
    if ev is not None:
        parts.append("<h2>Evaluation</h2>")
        rows = [[k, fmt(v)] for k, v in ev.items() if k != "kl_per_dim"]
        parts.append(table(["measure", "value"], rows))
        parts.append('<p class="muted">Means per example in nats; log_likelihood is the '
                     "importance-sampled log p(x), higher is better.</p>")

    parts.append("<h2>Latent space</h2>")
    snaps, labels = rd.latent_snapshots()
    if snaps:
        pick = sorted({snaps[i][0] for i in np.linspace(0, len(snaps) - 1, min(4, len(snaps))).astype(int)})
        chosen = [s for s in snaps if s[0] in pick]
        how = "the latent itself" if model.latent_dim <= 2 else f"projected by {method.upper()}"
        parts.append(figure(png(viz.latent_maps(chosen, labels, method)),
                            f"Posterior means of {len(chosen[0][1])} test examples at epochs "
                            f"{', '.join(map(str, pick))} ({how}), coloured by label where there are labels."))
    if model.latent_dim == 2 and len(model.data_shape) == 3 and not model.cond_dim:
        parts.append(figure(grid_png(viz.manifold(model), 15),
                            "Decoded manifold: decoder means over a 15 x 15 grid of z at Gaussian quantiles."))
    parts.append(diag_html)

    if len(model.data_shape) == 3:
        parts.append("<h2>Reconstructions and samples</h2>")
        for name, caption in (("reconstruction", "test inputs (top) above their reconstructions"),
                              ("samples", "decoded draws from the prior (the same draws every epoch)")):
            epochs = rd.image_epochs(name)
            for e in sorted({epochs[0], epochs[-1]}) if epochs else []:
                parts.append(figure(rd.read_image(name, e), f"Epoch {e}: {caption}."))
        if x_show is not None and len(x_show) >= 2:
            with torch.no_grad():
                y2 = None if y_show is None else y_show[:2]
                z = model.encode(x_show[:2], y2).mean
                codes = viz.interpolation_codes(z[0], z[1], 10, spherical=False)
                parts.append(figure(grid_png(model.decode(codes, None if y2 is None else y2[:1]).mean.float(), 10),
                                    "Interpolation between the posterior means of the first two test "
                                    "examples (10 steps)."))

    body = "\n".join(parts)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vaekit report: {esc(rd.path.name)}</title><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def png(fig) -> bytes:
    return viz.png_bytes(fig)


def write_report(run: str | Path, out: str | Path | None = None, data: Dataset | None = None,
                 method: str = "pca") -> Path:
    """Write the report (default ``RUN/report.html``) and return its path."""
    out = Path(out) if out else RunDir(run).report
    atomic_write_text(out, build_report(run, data, method))
    return out
