"""Training objectives, kept per example; only the trainer averages over a batch.

Each objective is a function of the model's per-sample terms (:meth:`vaekit.models.vae.VAEModel.terms`),
registered by the name ``--objective`` takes.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from vaekit.registry import Registry
from vaekit.errors import ConfigError
from .total_correlation import total_correlation

OBJECTIVES: Registry[Callable] = Registry("objective")


class LossTerms(NamedTuple):
    """Per-example terms in nats, each ``(batch,)``.

    ``loss`` is what training minimises (for the ELBO, ``rec + beta * kl``);
    ``rec = -E_q[log p(x|z)]`` and ``kl = KL(q(z|x) || p(z))`` are averaged over the ``k``
    samples, the KL in closed form where it exists (``model.kl_estimator`` says which).
    ``tc`` is the minibatch estimate of the total correlation where the objective has one
    (``tcvae``), else None.
    """

    loss: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor
    kl_dims: torch.Tensor | None = None  # (batch, latent) when q and p factorise over dimensions
    tc: torch.Tensor | None = None


def objective(name: str) -> Callable:
    """The objective function registered as ``name`` (``elbo``, ``iwae`` or ``vaegan``)."""
    return OBJECTIVES[name]


@OBJECTIVES.register("elbo")
def negative_elbo(model, x: torch.Tensor, beta: float = 1.0,
                  generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                  k: int = 1) -> LossTerms:
    """Negative beta-ELBO of ``model`` on the batch ``x``, per example, averaged over ``k`` codes.

    Parameters
    ----------
    model : vaekit.models.vae.VAEModel
    x : torch.Tensor
        ``(batch, *data_shape)``.
    beta : float
        Weight of the KL term; 1 gives the ELBO (Higgins et al. 2017 for beta != 1).
    generator : torch.Generator, optional
        Source of the reparameterization noise.
    noise : torch.Tensor, optional
        The standard-normal noise itself, ``(k, batch, model.noise_dim)``, instead of drawing it.
    y : torch.Tensor, optional
        Labels, for a conditional model.
    k : int
        Reparameterized samples per example.
    """
    t = model.terms(x, y, k, generator, noise)
    rec, kl = -sample_mean(t.log_px), sample_mean(t.kl)
    loss = rec + kl if beta == 1 else rec + beta * kl  # the same numbers, one kernel fewer
    return LossTerms(loss, rec, kl, None if t.kl_dims is None else sample_mean(t.kl_dims))


def sample_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over the leading sample dimension; with one sample, that sample (a view, exact)."""
    return t[0] if t.shape[0] == 1 else t.mean(0)


@OBJECTIVES.register("iwae")
def negative_iwae(model, x: torch.Tensor, beta: float = 1.0,
                  generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                  k: int = 1) -> LossTerms:
    """Negative importance-weighted bound with ``k`` samples (Burda et al. 2015, eq. 8).

    ``loss = -log (1/k) sum_i p(x|z_i)^1 [p(z_i)/q(z_i|x)]^beta``: with ``beta = 1`` the IWAE
    bound, which tightens towards log p(x) as ``k`` grows and equals the ELBO at ``k = 1``.
    ``rec`` and ``kl`` report the ELBO's terms over the same samples. Arguments as
    :func:`negative_elbo`.
    """
    t = model.terms(x, y, k, generator, noise, weights=True)
    log_w = t.log_px + beta * t.log_ratio  # (k, batch)
    loss = -(torch.logsumexp(log_w, 0) - math.log(k))
    kl_dims = None if t.kl_dims is None else sample_mean(t.kl_dims)
    return LossTerms(loss, -sample_mean(t.log_px), sample_mean(t.kl), kl_dims)


@OBJECTIVES.register("tcvae")
def negative_tcvae(model, x: torch.Tensor, beta: float = 1.0,
                   generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                   k: int = 1) -> LossTerms:
    """Negative beta-TCVAE objective (Chen et al. 2018, eq. 4 with alpha = gamma = 1), per example.

    The ELBO's KL splits into index-code mutual information, total correlation (TC) and
    dimension-wise KL (:mod:`vaekit.parts.total_correlation`); beta-TCVAE weights the TC alone by
    ``beta``: ``loss = rec + MI + beta * TC + DWKL = rec + kl + (beta - 1) * tc``. The KL is the
    closed form where it exists (the sum MI + TC + DWKL of the paper is its one-sample estimate:
    the same in expectation, with less noise); ``tc`` is estimated on the batch by
    minibatch-weighted sampling without its constant (D - 1) log N, which has no gradient, so a
    code whose posterior does not depend on x has a TC of 0. ``beta = 1`` is the ELBO. Needs a
    diagonal posterior; under several processes the batch is each process's slice. Arguments as
    :func:`negative_elbo`.
    """
    qz = model.infer(x, y)
    if noise is None:  # drawn here, so that the TC sees the very codes the decoder gets
        loc = qz.mean
        noise = torch.randn(k, *loc.shape[:-1], model.noise_dim, generator=generator,
                            dtype=loc.dtype, device=loc.device)
    t = model.terms(x, y, k, noise=noise, state=qz)
    tc = total_correlation(qz.rsample((k,), noise=noise), qz).mean(0)
    rec, kl = -t.log_px.mean(0), t.kl.mean(0)
    kl_dims = None if t.kl_dims is None else t.kl_dims.mean(0)
    return LossTerms(rec + kl + (beta - 1) * tc, rec, kl, kl_dims, tc)


def reported_loss(rec: float, kl: float, beta: float, tc: float | None = None) -> float:
    """The objective at the target weight ``beta`` from mean terms, as the metrics report it:
    ``rec + beta * kl``, or with a total correlation (``tcvae``) ``rec + kl + (beta - 1) * tc``."""
    return rec + beta * kl if tc is None else rec + kl + (beta - 1) * tc


@OBJECTIVES.register("vaegan")
def negative_feature_elbo(model, x: torch.Tensor, beta: float = 1.0,
                          generator: torch.Generator | None = None,
                          noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                          k: int = 1) -> LossTerms:
    """The VAE-GAN's encoder loss (Larsen et al. 2016): ``rec + beta * kl`` with ``rec`` the
    negative Gaussian log-likelihood of the discriminator's features of ``x`` around those of
    its reconstruction; the model's own ``feature_terms`` (:func:`vaekit.models.vaegan.feature_terms`). Not a bound on log p(x)."""
    own = getattr(model, "feature_terms", None)  # the VAE-GAN's (vaekit.models.vaegan)
    if own is None:
        raise ConfigError("objective vaegan needs a model with a discriminator (vaekit.models.vaegan."
                          "VAEGAN): build it with build_model(config, shape, objective='vaegan')")
    return own(x, beta, generator, noise, y, k)


negative_feature_elbo.trains_likelihood = False  # type: ignore[attr-defined]


def trains_likelihood(name: str) -> bool:
    """Whether objective ``name`` fits the decoder's likelihood p(x|z) to the data, so that the
    ELBO and log p(x) measure the model (False for ``vaegan``, whose decoder also follows a GAN
    term and a reconstruction term in a discriminator's features)."""
    return getattr(OBJECTIVES[name], "trains_likelihood", True)


def loss_words(train) -> str:
    """What the per-epoch loss of a run trained with ``train`` (a TrainConfig) is, in words."""
    if train.objective == "iwae":
        return f"negative IWAE bound, k = {train.k}"
    if train.objective == "tcvae":
        return f"negative beta-TCVAE objective, beta = {train.beta:g}"
    if train.objective == "vaegan":
        return ("VAE-GAN encoder loss: reconstruction in the discriminator's features + KL; not "
                "an ELBO, and not comparable between epochs, as the discriminator changes")
    return "negative ELBO" + (f", averaged over k = {train.k} samples" if train.k > 1 else "")


def kl_weight(beta: float, warmup_epochs: int, epoch: int, step: int, steps: int) -> float:
    """The KL weight of a training step: ``beta``, ramped linearly from 0 over ``warmup_epochs``
    epochs step by step when warm-up is on (Bowman et al. 2016; Sønderby et al. 2016)."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, ((epoch - 1) * steps + step + 1) / (warmup_epochs * steps))


def summed_loss(terms: LossTerms, weight: float, free_bits: float = 0.0) -> torch.Tensor:
    """The loss of a batch, summed over its examples: ``sum(rec + weight * kl)``, or with free
    bits ``sum(rec) + weight * n * sum_d max(free_bits, mean_i KL_id)`` (Kingma et al. 2016).

    ``terms`` must come from the objective called with ``beta = weight``.
    """
    if free_bits <= 0 or len(terms.rec) == 0:
        return terms.loss.sum()
    if terms.kl_dims is None:
        raise ConfigError("free bits need a posterior and prior that factorise over latent "
                          "dimensions (posterior diagonal, prior normal)")
    kl_dims = terms.kl_dims.mean(0)  # (latent,)
    return terms.rec.sum() + weight * len(terms.rec) * torch.clamp(kl_dims, min=free_bits).sum()
