"""Evaluation as pure functions of a model and data."""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch


@torch.no_grad()
def elbo_terms(model, x: torch.Tensor, batch_size: int = 1000, beta: float = 1.0,
               generator: torch.Generator | None = None,
               autocast: contextlib.AbstractContextManager | None = None,
               y: torch.Tensor | None = None, objective: str = "elbo", k: int = 1) -> dict[str, float]:
    """Mean loss (the training objective), reconstruction and KL per example over ``x``, in nats.

    With the default objective, the negative ELBO from one reparameterized sample per example;
    pass a seeded ``generator`` for a repeatable value, labels ``y`` for a conditional model.
    """
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device, non_blocking=True)
        yb = None if y is None else y[i: i + batch_size].to(device)
        with autocast or contextlib.nullcontext():
            t = model(xb, beta, generator, y=yb, name=objective, k=k)
        sums += torch.stack([t.loss.sum(), t.rec.sum(), t.kl.sum()]).double()
    model.train(was_training)
    loss, rec, kl = (sums / max(len(x), 1)).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch_size: int = 1000,
                    y: torch.Tensor | None = None) -> torch.Tensor:
    """E_q[z|x] for every row of ``x``, in order: ``(n, latent_dim)``."""
    device = next(model.parameters()).device
    out = [model.encode(x[i: i + batch_size].to(device),
                        None if y is None else y[i: i + batch_size]).mean.float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.latent_dim)


@torch.no_grad()
def importance_sample(model, x: torch.Tensor, k: int = 1000, batch_size: int = 100,
                      max_rows: int = 4096, generator: torch.Generator | None = None,
                      progress: Callable[[int], None] | None = None,
                      y: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance-sampled log p(x) per example, with the posterior as proposal.

    ``log (1/k) sum_i p(x, z_i) / q(z_i | x)``, ``z_i ~ q(z | x)``: exactly ``k`` samples per
    example, combined with logsumexp (Burda et al. 2015, eq. 8). Examples are taken
    ``batch_size`` at a time and the ``k`` samples in chunks of at most ``max_rows`` decoder rows,
    so memory stays bounded whatever ``k`` is (4096 rows keep a chunk's logits in cache: it
    measured fastest here).

    Parameters
    ----------
    model : VAEModel
    x : torch.Tensor
        ``(n, *data_shape)``.
    k : int
        Importance samples per example (k = 1 gives a one-sample ELBO).
    batch_size, max_rows : int
        Examples per encoder batch; decoder rows (samples x examples) per chunk.
    generator : torch.Generator, optional
        Source of the samples, for a repeatable estimate.
    progress : callable, optional
        Called with the number of examples finished after each batch.
    y : torch.Tensor, optional
        Labels, for a conditional model.

    Returns
    -------
    log_likelihood : torch.Tensor
        ``(n,)`` float64, in nats: a lower bound on log p(x) in expectation that tightens as
        ``k`` grows.
    expected_log_px : torch.Tensor
        ``(n,)`` float64, the mean of ``log p(x | z_i)`` over the same samples: the
        reconstruction term of the ELBO.
    log_ratio : torch.Tensor
        ``(n,)`` float64, the mean of ``log p(z_i) - log q(z_i | x)``: minus a Monte Carlo
        estimate of the KL term.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lls, recs, ratios = [], [], []
    pz = model.prior()  # once: the vamp prior encodes its pseudo-inputs to build it
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device, non_blocking=True)
        yb = None if y is None else y[i: i + batch_size].to(device)
        state = model.infer(xb, yb)  # the encoder runs once per batch, not per chunk
        chunk = max(1, max_rows // len(xb))
        log_w, log_px, log_ratio = [], [], []
        for s in range(0, k, chunk):
            t = model.terms(xb, yb, min(chunk, k - s), generator, weights=True, state=state, prior=pz)
            log_px.append(t.log_px)
            log_ratio.append(t.log_ratio)
            log_w.append(t.log_px + t.log_ratio)
        log_w = torch.cat(log_w).double()  # (k, b)
        lls.append((torch.logsumexp(log_w, 0) - math.log(k)).cpu())
        recs.append(torch.cat(log_px).double().mean(0).cpu())
        ratios.append(torch.cat(log_ratio).double().mean(0).cpu())
        if progress is not None:
            progress(len(xb))
    model.train(was_training)
    empty = torch.zeros(0, dtype=torch.float64)
    return (torch.cat(lls), torch.cat(recs), torch.cat(ratios)) if lls else (empty, empty, empty)


def log_likelihood(model, x: torch.Tensor, k: int = 1000, **kw) -> torch.Tensor:
    """Importance-sampled log p(x) per example; see :func:`importance_sample`."""
    return importance_sample(model, x, k, **kw)[0]


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def evaluate(model, x: torch.Tensor, k: int = 1000, seed: int = 0, batch_size: int = 100,
             progress: Callable[[int], None] | None = None, y: torch.Tensor | None = None) -> dict:
    """Everything ``vaekit evaluate`` reports, as means per example in nats.

    Returns a dict with ``elbo``, ``rec``, ``kl`` (``elbo = -(rec + kl)``; ``rec`` averages
    ``-log p(x|z)`` over the ``k`` samples; ``kl`` is in closed form or, where there is none, the
    Monte Carlo mean of ``log q - log p`` over the same samples: ``kl_estimator`` says which),
    ``log_likelihood`` and its standard error across examples, ``importance_samples``,
    ``n_examples``, ``active_units``, ``kl_per_dim`` (None where the KL does not factorise), and
    ``bits_per_dim`` (where the likelihood is a probability of discrete data: Bernoulli on binary
    data, the discretized logistic mixture; else None).
    """
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    ll, log_px, log_ratio = importance_sample(model, x, k, batch_size=batch_size, generator=g,
                                              progress=progress, y=y)
    diag = latent_diagnostics(model, x, y=y, seed=seed)
    n = len(x)
    rec = float(-log_px.mean())
    kl = float(sum(diag["kl_per_dim"])) if diag["kl_per_dim"] is not None else float(-log_ratio.mean())
    d = math.prod(model.data_shape)
    discrete = len(x) > 0 and model.likelihood.discrete(x)
    return {
        "elbo": -(rec + kl), "rec": rec, "kl": kl, "kl_estimator": model.kl_estimator,
        "log_likelihood": float(ll.mean()),
        "log_likelihood_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "importance_samples": k, "n_examples": n,
        "active_units": diag["active_units"], "kl_per_dim": diag["kl_per_dim"],
        "bits_per_dim": float(-ll.mean() / (d * math.log(2))) if discrete else None,
    }


@torch.no_grad()
def latent_diagnostics(model, x: torch.Tensor, batch_size: int = 1000,
                       threshold: float = 0.01, y: torch.Tensor | None = None, seed: int = 0) -> dict:
    """KL per latent dimension and active units (Burda et al. 2015, Sec. 5.2).

    A dimension is active when ``Cov_x(E_q[z_d | x]) > threshold``. ``kl_per_dim`` is in closed
    form where the KL factorises over dimensions (for a ladder VAE, given one sample of the
    layers above), else None.
    """
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    means, kls = [], []
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device)
        yb = None if y is None else y[i: i + batch_size].to(device)
        means.append(model.encode(xb, yb).mean.double().cpu())
        kl_dims = model.terms(xb, yb, 1, g).kl_dims
        kls.append(None if kl_dims is None else kl_dims[0].double().cpu())
    model.train(was_training)
    mu = torch.cat(means)
    var = mu.var(0, unbiased=False) if len(mu) > 1 else torch.zeros(mu.shape[1], dtype=torch.float64)
    factorised = bool(kls) and all(k is not None for k in kls)
    return {"kl_per_dim": torch.cat(kls).mean(0).tolist() if factorised else None,
            "active_units": int((var > threshold).sum()),
            "posterior_mean_variance": var.tolist()}
