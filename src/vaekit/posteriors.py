"""Posterior families q(z|x): encoder outputs -> a distribution over the latent code."""

from __future__ import annotations

import torch
from torch import nn

from .distributions import DiagonalNormal
from .registry import Registry

POSTERIORS: Registry[type] = Registry("posterior")


@POSTERIORS.register("diagonal")
class DiagonalGaussianPosterior(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar) + min_var)) from the encoder's (mu, logvar).

    The variance floor keeps the density finite; an unbounded posterior variance is the
    most common source of NaNs in VAEs (002_0b1c8e9715ecc3b6.txt, "Lower bounding the
    Inference Model Variance", which uses 1e-5).
    """

    def __init__(self, latent_dim: int, min_var: float = 1e-5) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_var = min_var

    @staticmethod
    def param_dim(latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, params: torch.Tensor) -> DiagonalNormal:
        mu, logvar = params.float().chunk(2, dim=-1)  # (batch, latent) each
        return DiagonalNormal(mu, torch.sqrt(torch.exp(logvar) + self.min_var))
