"""Distances between sets of feature vectors: the Fréchet distance and k-NN precision/recall.

Pure functions of two ``(n, d)`` arrays (features of real and of generated examples); what the
features are is :mod:`vaekit.evaluation.featurenet`'s business, how samples are drawn :mod:`vaekit.evaluation.quality`'s.

- Fréchet distance of the Gaussians fitted to each set (Heusel et al. 2017, the formula of FID;
  Dowson & Landau 1982): ``|mu_1 - mu_2|^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2))``.
- Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
  balls around its points, each ball's radius the distance to the point's k-th nearest neighbour
  in its own set; precision is the fraction of generated points inside the real manifold,
  recall the fraction of real points inside the generated one.
"""

from __future__ import annotations

import numpy as np
import torch

DISTANCE_ROWS = 2048  # rows of a distance block: (2048, n) float64 stays near 160 MB for n = 10^4


def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (unbiased, ``n - 1``) in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (n, d) with n >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues
    below 0, rounding errors, are taken as 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    ``tr((C_1 C_2)^(1/2))`` is computed as ``tr((S C_2 S)^(1/2))`` with ``S = C_1^(1/2)``: the
    two matrices are similar, and the second is symmetric positive semi-definite, so its
    eigenvalues are real and its square root needs no complex arithmetic (unlike ``sqrtm`` of
    the non-symmetric product, which FID code must clean of imaginary parts).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s = psd_sqrt(cov1)
    m = s @ cov2 @ s
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)
    return max(d, 0.0)  # a distance; rounding can leave -1e-12 for identical sets


def frechet_distance_of(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """:func:`frechet_distance` of the Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def _blocks(a: torch.Tensor, b: torch.Tensor):
    """Euclidean distances from ``a`` to ``b`` in row blocks: yields ``(start, (rows, len(b)))``."""
    for i in range(0, len(a), DISTANCE_ROWS):
        # the matrix-product form (|a|^2 + |b|^2 - 2 a.b): 6x faster; in float64 its rounding
        # (~1e-8 relative) is far below any gap between neighbours that matters here
        yield i, torch.cdist(a[i: i + DISTANCE_ROWS], b, compute_mode="use_mm_for_euclid_dist")


def knn_radii(f: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``f`` to its k-th nearest other row (itself excluded): ``(n,)``."""
    if not 1 <= k < len(f):
        raise ValueError(f"k must be in 1..{len(f) - 1} for {len(f)} points, got {k}")
    out = torch.empty(len(f), dtype=f.dtype)
    for i, d in _blocks(f, f):
        out[i: i + len(d)] = d.kthvalue(k + 1, dim=1).values  # the 1st is the point itself (0)
    return out


def coverage_fraction(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of ``points`` inside at least one ball ``|p - centres_i| <= radii_i``."""
    inside = torch.zeros(len(points), dtype=torch.bool)
    for i, d in _blocks(points, centres):
        inside[i: i + len(d)] = (d <= radii).any(1)
    return float(inside.double().mean())


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                     k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real``.

    Parameters
    ----------
    real, fake : array of shape (n, d), (m, d)
        Feature vectors; computed in float64.
    k : int
        Neighbour whose distance is each ball's radius; 3, as in the paper.

    Returns
    -------
    (precision, recall) : floats in [0, 1]
        Precision: fraction of ``fake`` inside the balls around ``real``; recall: fraction of
        ``real`` inside the balls around ``fake``.
    """
    r = torch.as_tensor(np.asarray(real, np.float64))
    f = torch.as_tensor(np.asarray(fake, np.float64))
    precision = coverage_fraction(f, r, knn_radii(r, k))
    recall = coverage_fraction(r, f, knn_radii(f, k))
    return precision, recall


__all__ = ["gaussian_stats", "frechet_distance", "frechet_distance_of", "knn_radii",
           "precision_recall", "psd_sqrt"]
