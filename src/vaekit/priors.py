"""Prior families p(z)."""

from __future__ import annotations

import torch
from torch import nn

from .distributions import DiagonalNormal
from .registry import Registry

PRIORS: Registry[type] = Registry("prior")


@PRIORS.register("normal")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> DiagonalNormal:
        return DiagonalNormal(self.loc, self.scale)
