"""Figures: loss curves, KL per dimension, latent maps, decoded manifolds, interpolations.

matplotlib is imported here alone (and lazily), so training and the CLI start fast. Figures aim
at print: titles, labelled axes, readable sizes, and colour maps that stay ordered in greyscale
(viridis, with a marker shape per class as well).
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch

MARKERS = "o^sDvP*Xh<"


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                         "figure.dpi": 110, "savefig.bbox": "tight"})
    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _plt().close(fig)
    return buf.getvalue()


def loss_curves(history: Sequence[dict]):
    """Train and test loss, reconstruction and KL per epoch (nats per example)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in zip(axes, ("loss", "rec", "kl"),
                              ("negative ELBO", "reconstruction  -E[log p(x|z)]", "KL(q(z|x) || p(z))")):
        for split, style in (("train", "-o"), ("test", "--s")):
            values = [r.get(f"{split}_{key}") for r in history]
            if all(v is not None for v in values):
                ax.plot(epochs, values, style, color="0.15" if split == "train" else "0.55",
                        markersize=3, label=split)
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per example")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def kl_per_dim(kl: Sequence[float], active: Sequence[bool]):
    """Bar chart of the mean KL of each latent dimension; inactive units drawn hollow."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(kl) + 1.5), 3))
    idx = np.arange(len(kl))
    ax.bar(idx, kl, color=["0.25" if a else "white" for a in active], edgecolor="0.1")
    ax.set_xticks(idx)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats per example)")
    ax.set_title(f"KL per dimension: {int(sum(active))} of {len(kl)} units active")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def project_2d(z: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of codes: the codes themselves when 2-D, else PCA or t-SNE."""
    if z.shape[1] == 1:
        return np.c_[z, np.zeros(len(z))], "z"
    if z.shape[1] == 2:
        return z, "z"
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, init="pca", random_state=seed, perplexity=min(30, len(z) - 1)).fit_transform(z), "t-SNE"
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(z), "PC"


def latent_map(z: np.ndarray, labels: np.ndarray | None, title: str, method: str = "pca", ax=None):
    """Scatter of posterior means in 2-D, coloured (and shaped) by label when there are labels."""
    plt = _plt()
    xy, axis = project_2d(z, method)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, color="0.2", alpha=0.6, linewidths=0)
    else:
        classes = np.unique(labels)
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, len(classes)))
        for c, colour, marker in zip(classes, colours, MARKERS * len(classes)):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=colour, marker=marker, alpha=0.7,
                       linewidths=0, label=str(c))
        ax.legend(markerscale=2, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_title(title)
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    return fig


def latent_maps(snapshots: Sequence[tuple[int, np.ndarray]], labels: np.ndarray | None,
                method: str = "pca"):
    """Latent maps of several epochs side by side: how the clusters form."""
    plt = _plt()
    n = len(snapshots)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.8, 3.6), squeeze=False)
    for ax, (epoch, z) in zip(axes[0], snapshots):
        latent_map(z, labels, f"epoch {epoch}", method, ax=ax)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
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


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between codes ``a`` and ``b`` (White 2016) at fractions ``t``."""
    na, nb = a.norm(), b.norm()
    omega = torch.arccos(torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / so


def interpolation_codes(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool) -> torch.Tensor:
    """``(steps, latent)`` codes from ``a`` to ``b`` inclusive."""
    t = torch.linspace(0, 1, steps, device=a.device)
    return slerp(a, b, t) if spherical else torch.lerp(a, b, t[:, None])


def traversal_codes(z: torch.Tensor, dims: Sequence[int], span: float, steps: int) -> torch.Tensor:
    """``(len(dims) * steps, latent)``: row r moves dimension ``dims[r]`` of ``z`` by ``-span..span``."""
    offsets = torch.linspace(-span, span, steps, device=z.device)
    codes = z.repeat(len(dims) * steps, 1)
    for r, d in enumerate(dims):
        codes[r * steps: (r + 1) * steps, d] += offsets
    return codes
