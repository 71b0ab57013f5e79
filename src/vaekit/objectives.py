"""Training objectives, kept per example; only the trainer averages over a batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import Independent, kl_divergence


class LossTerms(NamedTuple):
    """Per-example terms in nats, each ``(batch,)``.

    ``loss = rec + beta * kl`` is the negative (beta-)ELBO; ``rec = -E_q[log p(x|z)]`` is
    estimated with one reparameterized sample; ``kl = KL(q(z|x) || p(z))`` is in closed form.
    """

    loss: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor
    kl_dims: torch.Tensor | None = None  # (batch, latent) when q and p factorise over dimensions


def negative_elbo(model, x: torch.Tensor, beta: float = 1.0,
                  generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> LossTerms:
    """Negative beta-ELBO of ``model`` on the batch ``x``, per example.

    Parameters
    ----------
    model : vaekit.model.VAEModel
        Provides ``encode``, ``decode`` and ``prior``.
    x : torch.Tensor
        ``(batch, *data_shape)``.
    beta : float
        Weight of the KL term; 1 gives the ELBO (Higgins et al. 2017 for beta != 1).
    generator : torch.Generator, optional
        Source of the reparameterization noise.
    noise : torch.Tensor, optional
        The standard-normal noise itself, ``(batch, latent)``, instead of drawing it.
    """
    qz = model.encode(x)
    z = qz.rsample(generator=generator, noise=noise)  # (batch, latent)
    rec = -model.decode(z).log_prob(x)
    pz = model.prior()
    if isinstance(qz, Independent) and isinstance(pz, Independent):
        kl_dims = kl_divergence(qz.base_dist, pz.base_dist)  # closed form, per dimension
        kl = kl_dims.sum(-1)
    else:
        kl_dims, kl = None, kl_divergence(qz, pz)
    return LossTerms(rec + beta * kl, rec, kl, kl_dims)
