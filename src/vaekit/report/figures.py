"""Figures: loss curves, KL per dimension, latent maps, per-feature histograms, decoded manifolds,
interpolations.

matplotlib is imported here alone (and lazily), so training and the CLI start fast. Figures are
sized for a laptop screen: one figure inch is shown as 100 CSS pixels (:data:`CSS_PX_PER_INCH`)
and rendered at twice that (:data:`REPORT_DPI`), so 10-point ticks stay 14 px tall and sharp on a
high-density screen. The report lays the small panels out in a grid that reflows with the window,
instead of one wide figure that shrinks until the minus signs vanish. Colours stay distinct in
greyscale (viridis with a marker shape per class; line styles as well as colours per series).
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch
from vaekit.io.images import grid

MARKERS = "o^sDvP*Xh<"
CSS_PX_PER_INCH = 100  # the report shows a figure inch as this many CSS pixels
REPORT_DPI = 2 * CSS_PX_PER_INCH  # rendered at 2x: sharp on high-density screens
# Okabe & Ito (2008) colour-blind-safe colours; each series also has its own line style.
SERIES = {"train": ("#222222", "-", "o"), "val": ("#D55E00", ":", "^"), "test": ("#0072B2", "--", "s")}
KEPT_COLOUR = "#666666"  # the early-stopping epoch's vertical line
FEATURE_COLOURS = {"data": "#BBBBBB", "reconstruction": "#0072B2", "samples": "#D55E00"}
STYLE = {"font.size": 11, "axes.titlesize": 11.5, "axes.labelsize": 11, "xtick.labelsize": 10,
         "ytick.labelsize": 10, "legend.fontsize": 10, "axes.unicode_minus": True,  # U+2212
         "font.family": "DejaVu Sans", "axes.spines.top": False, "axes.spines.right": False,
         "figure.dpi": 110, "savefig.bbox": "tight", "savefig.pad_inches": 0.06}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def png_bytes(fig, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (at ``dpi``, default the figure's own), and the figure closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    _plt().close(fig)
    return buf.getvalue()


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))


LOSS_TITLES = {"loss": "negative ELBO", "rec": "reconstruction −E[log p(x|z)]",
               "kl": "KL(q(z|x) ‖ p(z))"}


def loss_panel(history: Sequence[dict], key: str, title: str | None = None, legend: bool = True):
    """One term (``loss``, ``rec`` or ``kl``) per epoch for each split that has it, in nats per
    example; a dotted vertical line at the kept epoch when early stopping chose one. Without
    ``legend`` the caller draws one key for all panels (:data:`SERIES` gives the styles)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 2.7))
    epochs = [r["epoch"] for r in history]
    for split, (colour, line, marker) in SERIES.items():
        values = [r.get(f"{split}_{key}", math.nan) for r in history]
        if any(np.isfinite(v) for v in values):  # markers only while they stay apart
            ax.plot(epochs, values, line, marker=marker if len(epochs) <= 30 else None,
                    color=colour, markersize=3.5, linewidth=1.6, label=split)
    kept = history[-1].get("best_epoch") if history else None
    if kept and kept != history[-1]["epoch"]:
        ax.axvline(kept, color=KEPT_COLOUR, linestyle=(0, (1, 2)), linewidth=1.2, label="kept")
    ax.set_title(title or LOSS_TITLES[key])
    _integer_epochs(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(frameon=False, handlelength=2.2)
    fig.tight_layout()
    return fig


def kl_per_dim(kl: Sequence[float], active: Sequence[bool]):
    """Bar chart of the mean KL of each latent dimension; inactive units drawn hollow."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    d = len(kl)
    fig, ax = plt.subplots(figsize=(min(10.5, max(4.2, 0.28 * d + 1.8)), 2.7))
    idx = np.arange(d)
    ax.bar(idx, kl, color=["0.3" if a else "white" for a in active], edgecolor="0.1", linewidth=0.8)
    if d <= 20:
        ax.set_xticks(idx)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))
    ax.set_xlim(-0.7, d - 0.3)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL per dimension: {int(sum(active))} of {d} units active")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def project_2d(z: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of codes: the codes themselves when 2-D, else PCA or t-SNE."""
    xy, axis = project_epochs([z], method, seed)
    return xy[0], axis


def project_epochs(snapshots: Sequence[np.ndarray], method: str = "pca", seed: int = 0
                   ) -> tuple[list[np.ndarray], str]:
    """2-D coordinates of the same examples' codes at several epochs, in one shared frame.

    A 1-D or 2-D latent is drawn as it is. PCA is fitted on the last snapshot alone and applied
    to every one, so a code maps to the same point at every epoch and no axis flips sign between
    epochs (separate fits choose each component's sign afresh). t-SNE has no such map: each
    snapshot is embedded, then aligned to the last one's embedding by the rotation (or
    reflection), scale and shift that fit the same examples best (orthogonal Procrustes).

    Parameters
    ----------
    snapshots : sequence of np.ndarray
        ``(n, L)`` codes of the same ``n`` examples, in epoch order (the last is the reference).
    method : {'pca', 'tsne'}
    seed : int
        random_state of the projection.

    Returns
    -------
    (list of np.ndarray, str)
        ``(n, 2)`` coordinates per snapshot, and the axis name (``z``, ``PC`` or ``t-SNE``).
    """
    dim = snapshots[-1].shape[1]
    if dim <= 2:
        return [np.c_[z, np.zeros(len(z))] if dim == 1 else z for z in snapshots], "z"
    if method == "tsne":
        from sklearn.manifold import TSNE

        def embed(z: np.ndarray) -> np.ndarray:
            return TSNE(2, init="pca", random_state=seed,
                        perplexity=min(30, len(z) - 1)).fit_transform(z)
        ref = embed(snapshots[-1])
        return [align(embed(z), ref) for z in snapshots[:-1]] + [ref], "t-SNE"
    mean, components = principal_axes(snapshots[-1])
    return [(z - mean) @ components.T for z in snapshots], "PC"


def principal_axes(z: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the first ``k`` principal axes ``(k, L)`` of codes ``z``, each axis signed so
    that its largest entry is positive (scikit-learn's PCA convention). By NumPy's SVD: scikit-learn's
    import alone costs 1.3 s, a fifth of a small table's whole training."""
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    axes = np.zeros((k, z.shape[1]))
    axes[:min(k, len(vt))] = vt[:k]
    pivot = np.abs(axes).argmax(1)
    return mean, axes * np.where(axes[np.arange(k), pivot] < 0, -1.0, 1.0)[:, None]


def align(xy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``xy`` moved onto ``ref`` (the same rows) by the rotation or reflection, uniform scale and
    shift that minimise the squared distance (orthogonal Procrustes, Schönemann 1966)."""
    from scipy.linalg import orthogonal_procrustes

    a, b = xy - xy.mean(0), ref - ref.mean(0)
    if not np.any(a):
        return np.broadcast_to(ref.mean(0), xy.shape).copy()
    rotation, singular_sum = orthogonal_procrustes(a, b)
    return (singular_sum / np.sum(a * a)) * a @ rotation + ref.mean(0)


def class_colours(classes: Sequence) -> np.ndarray:
    """One viridis colour per class, in class order (ordered in greyscale too)."""
    return _plt().get_cmap("viridis")(np.linspace(0, 0.95, len(classes)))


def latent_map(z: np.ndarray, labels: np.ndarray | None, title: str, method: str = "pca", ax=None,
               legend: bool = True, axis: str | None = None,
               limits: tuple[tuple[float, float], tuple[float, float]] | None = None):
    """Scatter of posterior means in 2-D, coloured (and shaped) by label when there are labels.

    With ``axis`` (a name such as ``PC``), ``z`` is already projected ``(n, 2)`` coordinates
    (:func:`project_epochs`); ``limits`` fixes the x and y ranges, so that maps share them.
    """
    plt = _plt()
    xy, axis = (z, axis) if axis is not None else project_2d(z, method)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.9, 2.8))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, color="0.2", alpha=0.6, linewidths=0)
    else:
        classes = np.unique(labels)
        for c, colour, marker in zip(classes, class_colours(classes), MARKERS * len(classes)):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=colour, marker=marker, alpha=0.75,
                       linewidths=0, label=str(c))
        if legend:
            ax.legend(markerscale=2, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    from matplotlib.ticker import MaxNLocator

    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.set_title(title)
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    if fig is not None:
        fig.tight_layout()
    return fig


def shared_limits(points: Sequence[np.ndarray], margin: float = 0.05
                  ) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y ranges that hold every point of every ``(n, 2)`` array, with a small margin."""
    allxy = np.concatenate(points)
    lo, hi = allxy.min(0), allxy.max(0)
    pad = margin * np.where(hi > lo, hi - lo, 1.0)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def class_key(classes: Sequence):
    """A legend strip alone: the colour and marker of each class, shared by the latent maps."""
    from matplotlib.lines import Line2D

    plt = _plt()
    colours = class_colours(classes)
    handles = [Line2D([], [], linestyle="", marker=m, markersize=7, color=c, label=str(k))
               for k, c, m in zip(classes, colours, MARKERS * len(classes))]
    ncol = min(len(classes), 10)
    fig = plt.figure(figsize=(min(10.5, 0.75 * ncol + 1.0), 0.32 * math.ceil(len(classes) / ncol) + 0.2))
    fig.legend(handles=handles, loc="center", ncol=ncol, frameon=False, title=None,
               handletextpad=0.3, columnspacing=1.2)
    return fig


def pick_features(x: np.ndarray, limit: int = 12, all_up_to: int = 16) -> np.ndarray:
    """Indices of the features to show: all when there are at most ``all_up_to``, else the
    ``limit`` with the largest standard deviation (in the data's units), in column order."""
    d = x.shape[1]
    if d <= all_up_to:
        return np.arange(d)
    order = np.argsort(-x.std(0), kind="stable")  # ties: the earlier column first
    return np.sort(order[:limit])


def feature_panel(data: np.ndarray, recon: np.ndarray, samples: np.ndarray, title: str):
    """Histogram (as a density) of one feature: the data filled grey, its reconstructions a solid
    line, decoded draws from the prior a dashed line, on the same bins."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    # Bins span all of the data, and the model's values but for their 1% tails at each end.
    finite = [v[np.isfinite(v)] for v in (data, recon, samples)]
    ends = [(v.min(), v.max()) if i == 0 else tuple(np.quantile(v, [0.01, 0.99]))
            for i, v in enumerate(finite) if len(v)]
    lo, hi = (min(e[0] for e in ends), max(e[1] for e in ends)) if ends else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, int(np.clip(1.5 * math.sqrt(len(data)), 10, 40)) + 1)
    fig, ax = plt.subplots(figsize=(2.6, 2.0))
    clip = lambda v: np.clip(v[np.isfinite(v)], lo, hi)  # noqa: E731  (tails into the edge bins)
    tops = [ax.hist(clip(data), bins, density=True, color=FEATURE_COLOURS["data"], label="data")[0].max(),
            ax.hist(clip(recon), bins, density=True, histtype="step", linewidth=1.7,
                    color=FEATURE_COLOURS["reconstruction"], label="reconstruction")[0].max(),
            ax.hist(clip(samples), bins, density=True, histtype="step", linewidth=1.7, linestyle="--",
                    color=FEATURE_COLOURS["samples"], label="samples")[0].max()]
    if np.isfinite(tops).all() and tops[0] > 0:  # a spike of the model's runs off the top instead
        ax.set_ylim(0, 1.05 * min(max(tops), 2.5 * tops[0]))  # of flattening the data's bars
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.set_yticks([])  # a density's scale says little here; the shapes are the point
    ax.spines["left"].set_visible(False)
    fig.tight_layout()
    return fig


@torch.no_grad()
def manifold(model, n: int = 15, span: float = 0.95) -> torch.Tensor:
    """Decoder means over a grid of a 2-D latent at Gaussian quantiles (Kingma & Welling 2013, Fig. 4).

    Returns ``(n * n, C, H, W)`` images, row-major with z_2 decreasing down the rows.
    """
    from scipy.stats import norm

    q = torch.tensor(norm.ppf(np.linspace(1 - span, span, n)), dtype=torch.float32)
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1).to(model.device)
    return model.decode(z).mean.float().cpu()


def traversal_figure(images: torch.Tensor, row_labels: Sequence[str], steps: int):
    """Decoded traversals as one figure: a row of ``steps`` images per latent dimension, each
    row named on the left (``row_labels``), images drawn pixel for pixel (no smoothing)."""
    plt = _plt()
    g = grid(images, steps)  # (H', W') grey or (H', W', 3)
    h = images.shape[-2]
    rows = len(row_labels)
    width = min(10.5, max(4.0, 0.62 * steps + 1.6))
    fig, ax = plt.subplots(figsize=(width, width * g.shape[0] / g.shape[1] * 0.86 + 0.35))
    ax.imshow(g, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([2 + r * (h + 2) + h / 2 for r in range(rows)], list(row_labels))
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    return fig
