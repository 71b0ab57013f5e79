"""Evaluation as pure functions of a model and data."""

from __future__ import annotations

import contextlib

import torch

from .objectives import negative_elbo


@torch.no_grad()
def elbo_terms(model, x: torch.Tensor, batch_size: int = 1000, beta: float = 1.0,
               generator: torch.Generator | None = None,
               autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """Mean negative ELBO, reconstruction and KL per example over ``x``, in nats.

    One reparameterized sample per example; pass a seeded ``generator`` for a repeatable value.
    """
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            t = negative_elbo(model, xb, beta, generator)
        sums += torch.stack([t.loss.sum(), t.rec.sum(), t.kl.sum()]).double()
    model.train(was_training)
    loss, rec, kl = (sums / max(len(x), 1)).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z|x] for every row of ``x``, in order: ``(n, latent_dim)``."""
    device = next(model.parameters()).device
    out = [model.encode(x[i: i + batch_size].to(device)).mean.float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.latent_dim)
