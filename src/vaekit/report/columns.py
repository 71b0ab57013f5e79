"""The report's view of a table (a model with a column schema): each column by its name and type,
real against synthetic rows, the reconstruction error in each column's own units, and the two
association matrices.

Synthetic rows are draws from p(x|z) with z from the prior, what ``vaekit sample`` writes for a
table; reconstructions are the decoder's means (most probable level of a levelled column) at
the posterior mean. Fidelity scores follow SDMetrics' definitions
(:mod:`vaekit.evaluation.fidelity`).
"""

from __future__ import annotations

import numpy as np
import torch

from vaekit.data.schema import LEVELLED
from vaekit.evaluation.fidelity import association, column_shapes, quality

from . import figures as viz
from .sections import FEATURE_ROWS, esc, fig_img, figure, legend, num, sig, table

MAX_PANELS = 12  # column panels drawn; the rest are in the table
MAX_LEVELS = 8  # levels drawn per levelled column, the rest as "other"
MAX_NAMED = 40  # association matrices name their columns up to this many


@torch.no_grad()
def columns_section(model, schema, x: torch.Tensor, seed: int) -> str:
    """The section for a model of a table; ``x`` are encoded real rows (NaN where missing)."""
    x = x[:FEATURE_ROWS].to(model.device)
    recon = torch.cat([model.reconstruct(x[i: i + 1000]) for i in range(0, len(x), 1000)])
    n_synth = min(FEATURE_ROWS, max(1000, len(x)))
    g = torch.Generator(model.device).manual_seed(seed)
    synth = model.decode(model.sample_prior(n_synth, g)).sample(generator=g)
    flat = lambda t: t.float().cpu().numpy().astype(np.float64)  # noqa: E731
    real, rec, syn = flat(x), flat(recon), flat(synth)
    numeric = np.array([c.kind not in LEVELLED for c in schema.columns])
    shapes = column_shapes(real, syn, numeric)
    q = quality(real, syn, numeric)

    rows = []
    for j, col in enumerate(schema.columns):
        seen = ~np.isnan(real[:, j])
        if numeric[j]:
            err = np.sqrt(np.mean((rec[seen, j] - real[seen, j]) ** 2)) if seen.any() else np.nan
            rows.append([col.name, col.kind, _spread(real[seen, j]), _spread(syn[:, j]),
                         num(shapes[j]), f"RMSE {sig(err)}"])
        else:
            acc = np.mean(rec[seen, j] == real[seen, j]) if seen.any() else np.nan
            rows.append([col.name, col.kind, _top(real[seen, j], col.levels),
                         _top(syn[:, j], col.levels), num(shapes[j]),
                         f"{100 * acc:.1f}% right" if np.isfinite(acc) else "—"])
    pick = np.arange(len(shapes)) if len(shapes) <= MAX_PANELS else \
        np.sort(np.argsort(np.nan_to_num(shapes, nan=2.0), kind="stable")[:MAX_PANELS])
    panels = "".join(
        fig_img(_panel(real[:, j], rec[:, j], syn[:, j], col, numeric[j]), col.name)
        for j, col in ((j, schema.columns[j]) for j in pick))
    which = (f"all {len(shapes)} columns" if len(pick) == len(shapes) else
             f"the {len(pick)} of {len(shapes)} columns whose synthetic shape is furthest from "
             "the data's (the lowest column-shape scores)")
    key = legend([("data", f"data ({len(real)} rows)"), ("reconstruction", "their reconstructions"),
                  ("samples", f"{n_synth} synthetic rows")])
    pairs = ""
    if len(shapes) >= 2:
        a_real = association(real, numeric)
        a_syn = association(syn, numeric, reference=real)
        names = [c.name for c in schema.columns] if len(shapes) <= MAX_NAMED else None
        pairs = figure(fig_img(_association_figure(a_real, a_syn, names), "association matrices"),
                       "Association of each pair of columns in the data (left) and in the synthetic "
                       "rows (right): Pearson r for two numeric columns (−1 to 1), Cramér's V for "
                       "a pair with a levelled column (0 to 1; a numeric column in 10 bins of the "
                       "data's range), each on the rows where both cells are observed.")
    scores = (f"<p>Fidelity of {n_synth} synthetic rows to the {len(real)} data rows, by the "
              f"definitions of SDMetrics' quality report: column shapes {num(q.shapes)}, column "
              f"pair trends {num(q.trends)}, overall {num(q.overall)} (1 is the data itself; "
              "<code>vaekit sample RUN --out rows.csv</code> writes such rows).</p>")
    return ('<h2 id="columns">Columns: data, reconstructions and synthetic rows</h2>'
            + scores + key
            + figure(panels, f"Each of {which}, in its own units: the data as grey bars, "
                     "reconstructions (the decoder's mean, or its most probable level, at the "
                     "posterior mean) as a solid line, synthetic rows (draws from p(x|z), z from "
                     "the prior) as a dashed line.", grid="features")
            + table(["column", "type", "data", "synthetic", "column shape",
                     "reconstruction error (own units)"], rows, text=(0, 1, 2, 3, 5))
            + pairs)


def _spread(v: np.ndarray) -> str:
    return "—" if not len(v) else f"{sig(v.mean())} ± {sig(v.std())}"


def _top(codes: np.ndarray, levels) -> str:
    """The most common level and its share."""
    if not len(codes):
        return "—"
    counts = np.bincount(codes.astype(np.int64), minlength=len(levels))
    i = int(counts.argmax())
    return f"{levels[i] if i < len(levels) else i}: {100 * counts[i] / counts.sum():.0f}%"


def _panel(real: np.ndarray, rec: np.ndarray, syn: np.ndarray, col, numeric: bool):
    seen = ~np.isnan(real)
    title = col.name if len(col.name) <= 28 else col.name[:27] + "…"
    if numeric:
        return viz.feature_panel(real[seen], rec[seen], syn, title)
    return _level_panel(real[seen], rec[seen], syn, list(col.levels), title)


def _level_panel(real: np.ndarray, rec: np.ndarray, syn: np.ndarray, levels: list, title: str):
    """Shares of each level: the data as grey bars, reconstructions and synthetic rows as
    marked lines; the :data:`MAX_LEVELS` - 1 commonest levels of the data, the rest as other."""
    plt = viz._plt()
    k = len(levels)
    share = lambda c: np.bincount(c.astype(np.int64), minlength=k)[:k] / max(len(c), 1)  # noqa: E731
    r, c, s = share(real), share(rec), share(syn)
    order = np.argsort(-r, kind="stable")
    if k > MAX_LEVELS:
        keep, rest = order[:MAX_LEVELS - 1], order[MAX_LEVELS - 1:]
        r, c, s = (np.r_[v[keep], v[rest].sum()] for v in (r, c, s))
        names = [str(levels[i]) for i in keep] + ["other"]
    else:
        r, c, s = r[order], c[order], s[order]
        names = [str(levels[i]) for i in order]
    names = [n if len(n) <= 10 else n[:9] + "…" for n in names]
    fig, ax = plt.subplots(figsize=(2.6, 2.0))
    idx = np.arange(len(names))
    ax.bar(idx, r, color=viz.FEATURE_COLOURS["data"], width=0.8)
    ax.plot(idx, c, "o-", color=viz.FEATURE_COLOURS["reconstruction"], linewidth=1.7, markersize=3)
    ax.plot(idx, s, "s--", color=viz.FEATURE_COLOURS["samples"], linewidth=1.7, markersize=3)
    ax.set_xticks(idx, names, rotation=45 if len(names) > 3 else 0,
                  ha="right" if len(names) > 3 else "center", fontsize=8)
    ax.set_title(title)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    fig.tight_layout()
    return fig


def _association_figure(real: np.ndarray, synth: np.ndarray, names: list[str] | None):
    plt = viz._plt()
    d = len(real)
    size = min(5.0, 2.2 + 0.12 * d)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 0.8, size))
    for ax, m, title in zip(axes, (real, synth), ("data", "synthetic rows")):
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(title)
        if names is not None:
            short = [n if len(n) <= 16 else n[:15] + "…" for n in names]
            ax.set_xticks(range(d), short, rotation=90, fontsize=7)
            ax.set_yticks(range(d), short if ax is axes[0] else [], fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return fig
