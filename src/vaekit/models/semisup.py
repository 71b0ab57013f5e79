"""The semi-supervised VAE M2 of Kingma, Rezende, Mohamed & Welling 2014.

Generative model ``p(y) p(z) p(x|y,z)``: ``p(y)`` uniform over ``C`` classes, ``p(z) = N(0, I)``,
the decoder reads ``[z, one-hot y]``. Inference ``q(y|x) q(z|x,y)``: a classifier (the same
body as the encoder, ``C`` outputs) and the encoder with the label joining at its first dense
layer. A row's label is either observed (``y >= 0``) or unknown (``-1``):

- observed, the labelled bound ``L(x,y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))``;
- unknown, ``U(x) = sum_y q(y|x) L(x,y) + H(q(y|x))``, the sum over classes done exactly.

Both are one formula, ``E_w[log p(x|y,z)] - E_w[KL_z] - KL(w || p(y))`` with class weights
``w = q(y|x)`` for an unknown label and the point mass at an observed one, so the KL term
(``kl_dims``: the style dimensions, then one entry per class) and the importance weights
(``log w = log sum_{y in S} p(y) p(x|y,z_y) p(z_y) / q(z_y|x,y)``, ``S`` all classes or the
observed one) are defined per row whatever its label. Training adds ``alpha * (-log q(y|x))``
for labelled rows (eq. 9 of the paper); like every vaekit objective it is per example, and
only the trainer averages.

The code of a row, as :meth:`encode`, :meth:`decode` and the rest of vaekit see it, is
``[z, one-hot y]`` (``latent_dim = style_dim + C``): the label is a latent variable, observed
for some rows. Its posterior mean is ``[sum_y q(y|x) E[z|x,y], q(y|x)]``, so embeddings,
reconstructions, interpolations and samples need no labels.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, kl_divergence

from vaekit.config.settings import ModelConfig
from vaekit.parts.distributions import full_precision
from .vae import SampleTerms, VAEModel
from vaekit.parts.objectives import LossTerms
from vaekit.parts.posteriors import POSTERIORS
from vaekit.parts.priors import PRIORS


class ClassState(NamedTuple):
    """What inference computes once per batch: ``log q(y|x)`` ``(b, C)`` and the encoder's raw
    parameters of ``q(z|x,y)`` for every class, ``(C, b, P)``."""

    log_qy: torch.Tensor
    params: torch.Tensor


class CodePosterior:
    """``q(z, y | x) = q(y|x) q(z|x,y)`` over the code ``[z, one-hot y]``.

    Parameters
    ----------
    probs : torch.Tensor
        Class weights ``(b, C)``: ``q(y|x)``, or one-hot where the label is observed.
    style : Distribution
        ``q(z|x,y)`` for every class, batch shape ``(C, b)``.
    """

    def __init__(self, probs: torch.Tensor, style: Distribution) -> None:
        self.probs, self.style = probs, style

    @property
    def mean(self) -> torch.Tensor:
        """``[sum_y q(y|x) E[z|x,y], q(y|x)]``, ``(b, style_dim + C)``."""
        z = (self.probs.T.unsqueeze(-1) * self.style.mean).sum(0)
        return torch.cat([z, self.probs.to(z.dtype)], -1)


def all_class_heads(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x, one_hot(c))`` for every class ``c``: ``(C, b, out)``.

    The label joins the encoder at its first dense layer (:class:`vaekit.parts.nets.Encoder`), so
    that layer's input part is computed once and each class adds its weight column: the same
    numbers as ``C`` encoder calls, for the price of one plus ``C`` passes through the rest of
    the head.
    """
    h = encoder.features(x)
    head = encoder.head
    first, rest = (head[0], head[1:]) if isinstance(head, nn.Sequential) else (head, nn.Identity())
    n = h.shape[-1]
    base = F.linear(h, first.weight[:, :n], first.bias)  # (b, hidden)
    per_class = first.weight[:, n:].T.to(base.dtype)  # (C, hidden): W_y e_c
    return rest(base.unsqueeze(0) + per_class.unsqueeze(1))  # (C, b, out)


class SemiSupervisedVAE(VAEModel):
    """M2: a VAE whose latent is a style ``z`` and a class ``y``, with a classifier ``q(y|x)``.

    Parameters as :class:`vaekit.models.vae.VAEModel`; ``config.num_classes`` is the number of
    classes, ``config.alpha`` the weight of the classification term, ``config.latent_dim`` the
    size of ``z``. The prior must be ``normal`` (checked by ``ModelConfig.validate``).
    """

    semi_supervised = True

    def build_latent(self, config: ModelConfig) -> None:
        posterior_cls = POSTERIORS[config.posterior]
        self.classes, self.style_dim, self.alpha = config.num_classes, config.latent_dim, config.alpha
        self.latent_dim = self.decoder_in_dim = config.latent_dim + config.num_classes
        self.posterior = posterior_cls(config.latent_dim, min_var=config.min_var)
        self.prior_dist = PRIORS[config.prior].from_config(config.latent_dim, self.data_shape, config)
        self.encoder = self.body.encoder(posterior_cls.param_dim(config.latent_dim), self.classes)
        self.classifier = self.body.encoder(self.classes)  # logits of q(y|x)

    @property
    def noise_dim(self) -> int:
        """One style draw per class: ``(C, style_dim)`` per code, flattened. Independent draws
        (as Kingma et al. draw them); one draw shared by the classes of a row let the classifier
        memorise the labelled rows and its validation error rise (docs/semi_supervised.md)."""
        return self.classes * self.style_dim

    @property
    def kl_estimator(self) -> str:
        return "analytic"  # KL of z per class in closed form, KL of y a finite sum

    # -- the classifier ----------------------------------------------------------------------
    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(y|x)`` of raw rows, ``(b, C)``."""
        return F.log_softmax(full_precision(self.classifier(self.inputs(x))), -1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """``q(y|x)`` of every row, ``(n, C)`` on the CPU (float32, or float64 for a float64
        model), in eval mode."""
        was = self.training
        self.eval()
        out = [self.class_log_probs(x[i: i + batch_size].to(self.device)).exp().cpu()
               for i in range(0, len(x), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.classes)

    # -- inference ---------------------------------------------------------------------------
    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ClassState:
        u = self.inputs(x)
        log_qy = F.log_softmax(full_precision(self.classifier(u)), -1)
        return ClassState(log_qy, all_class_heads(self.encoder, u))

    def class_weights(self, log_qy: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``(b, C)``: ``q(y|x)`` where the label is unknown (-1), one-hot where it is observed."""
        probs = log_qy.exp()
        if y is None:
            return probs
        y = torch.as_tensor(y, device=probs.device).long().reshape(-1)
        known = (y >= 0).unsqueeze(-1)
        return torch.where(known, F.one_hot(y.clamp(min=0), self.classes).to(probs.dtype), probs)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> CodePosterior:
        """``q(z, y|x)`` of raw rows; observed labels ``y`` (``-1``: unknown) fix the class."""
        state = self.infer(x)
        return CodePosterior(self.class_weights(state.log_qy, y), self.posterior(state.params))

    # -- the prior ---------------------------------------------------------------------------
    def codes(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[z, one-hot y]``, ``(n, latent_dim)``."""
        return torch.cat([z, F.one_hot(y.long(), self.classes).to(z.dtype)], -1)

    def sample_prior(self, n: int, generator: torch.Generator | None = None,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` codes from ``p(z) p(y)`` (or of the classes ``y``), ``(n, latent_dim)``."""
        z = self.prior_dist.sample(n, generator)
        if y is None:
            y = torch.randint(self.classes, (n,), generator=generator,
                              device=generator.device if generator is not None else z.device)
        y = torch.as_tensor(y, device=z.device).reshape(-1).expand(n)
        return self.codes(z, y)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means of ``n`` draws from the prior, of the classes ``y`` when given."""
        return self.decode(self.sample_prior(n, generator, y)).mean

    # -- the bound ---------------------------------------------------------------------------
    def class_terms(self, x: torch.Tensor, params: torch.Tensor, classes: torch.Tensor,
                    eps: torch.Tensor, pz: Distribution, weights: bool):
        """Terms of ``(class, row)`` pairs: ``params`` ``(c, b, P)``, ``classes`` ``(c, b)``,
        ``eps`` ``(k, c, b, L)``. Returns ``log p(x|y,z)``
        ``(k, c, b)``, the KL of z per dimension ``(c, b, L)`` (or ``(c, b, 1)`` when it does not
        factorise) and, with ``weights``, ``log p(z) - log q(z|x,y)`` ``(k, c, b)``."""
        qz = self.posterior(params)  # batch (c, b)
        z = qz.rsample(noise=eps)  # (k, c, b, L)
        c = F.one_hot(classes, self.classes).to(z.dtype)
        log_px = self.observe(self.decoder_params(z, c)).log_prob(x)  # (k, c, b)
        if isinstance(qz, Independent) and isinstance(pz, Independent):
            kl = kl_divergence(qz.base_dist, pz.base_dist)  # (c, b, L)
        else:
            kl = kl_divergence(qz, pz).unsqueeze(-1)
        ratio = pz.log_prob(z) - qz.log_prob(z) if weights else None
        return log_px, kl, ratio

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
              weights: bool = False, state: Any = None,
              prior: Distribution | None = None) -> SampleTerms:
        """Per-sample terms of each row's bound: ``U(x)`` where ``y`` is -1 (or not given),
        ``L(x, y)`` where it is observed. See :class:`vaekit.models.vae.SampleTerms`; ``kl_dims``
        is ``(k, b, style_dim + C)``: the style KL per dimension, then the label's
        ``w_c log(w_c / p(c))`` per class."""
        st = self.infer(x) if state is None else state
        b, C = len(x), self.classes
        if noise is None:
            noise = torch.randn(k, b, self.noise_dim, generator=generator, device=st.params.device)
        eps = noise.unflatten(-1, (C, self.style_dim)).movedim(-2, 1)  # (k, C, b, L): class c's draw
        pz = self.prior() if prior is None else prior
        y = torch.full((b,), -1, device=st.log_qy.device) if y is None else \
            torch.as_tensor(y, device=st.log_qy.device).long().reshape(-1)
        log_p = -math.log(C)  # uniform p(y)
        w = self.class_weights(st.log_qy, y)  # (b, C)
        out_px, out_z, out_w = [], [], []
        groups = [(torch.nonzero(y < 0).flatten(), None), (torch.nonzero(y >= 0).flatten(), y)]
        for rows, labels in groups:
            if not len(rows):
                continue
            if labels is None:  # every class, weighted by q(y|x)
                classes = torch.arange(C, device=rows.device).unsqueeze(1).expand(C, len(rows))
                params, wc, e = st.params[:, rows], w[rows].T, eps[:, :, rows]  # (C, r, ...)
            else:  # the observed class only, weight 1
                classes = labels[rows].unsqueeze(0)  # (1, r)
                params = st.params[classes[0], rows].unsqueeze(0)
                wc, e = torch.ones_like(classes, dtype=w.dtype), eps[:, classes[0], rows].unsqueeze(1)
            log_px, kl, ratio = self.class_terms(x[rows], params, classes, e, pz, weights)
            out_px.append((rows, (wc * log_px).sum(1)))  # (k, r)
            out_z.append((rows, (wc.unsqueeze(-1) * kl).sum(0)))  # (r, L)
            if weights:  # stratified over the classes in S: log sum_y p(y) p(x, z_y | y) / q(z_y | x, y)
                out_w.append((rows, torch.logsumexp(log_p + log_px + ratio, 1)))
        log_px = scatter(out_px, (k, b), 1)
        kl_z = scatter(out_z, (b, out_z[0][1].shape[-1]), 0)
        log_w = torch.where((y >= 0).unsqueeze(-1), torch.zeros_like(st.log_qy), st.log_qy)
        kl_y = w * (log_w - log_p)  # (b, C): KL(w || p(y)) per class; finite where w = 0
        kl_dims = torch.cat([kl_z, kl_y.to(kl_z.dtype)], -1).expand(k, -1, -1)
        log_ratio = scatter(out_w, (k, b), 1) - log_px if weights else None
        factorised = kl_z.shape[-1] == self.style_dim
        return SampleTerms(log_px, kl_dims.sum(-1), kl_dims if factorised else None, log_ratio)

    def forward(self, x: torch.Tensor, beta: float = 1.0,
                generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                name: str = "elbo", k: int = 1) -> LossTerms:
        """Per-example loss: ``-U(x)`` for unlabelled rows, ``-L(x, y) + alpha * (-log q(y|x))``
        for labelled ones (Kingma et al. 2014, eq. 9), with the KL term weighted by ``beta``;
        ``rec`` and ``kl`` are the bound's terms, averaged over ``k`` codes. ``name`` must be
        ``elbo`` (checked by ``ModelConfig.validate``)."""
        state = self.infer(x)
        t = self.terms(x, y, k, generator, noise, state=state)
        rec, kl = -t.log_px.mean(0), t.kl.mean(0)
        loss = rec + beta * kl
        if y is not None and self.alpha > 0:
            y = torch.as_tensor(y, device=loss.device).long().reshape(-1)
            ce = -state.log_qy.gather(1, y.clamp(min=0).unsqueeze(1)).squeeze(1)
            loss = loss + self.alpha * torch.where(y >= 0, ce, torch.zeros_like(ce))
        return LossTerms(loss, rec, kl, None if t.kl_dims is None else t.kl_dims.mean(0))


def scatter(parts: list[tuple[torch.Tensor, torch.Tensor]], shape: tuple[int, ...],
            dim: int) -> torch.Tensor:
    """Put each ``(rows, values)`` part at its rows along ``dim`` of a zero tensor (autograd-safe)."""
    out = torch.zeros(shape, dtype=parts[0][1].dtype, device=parts[0][1].device)
    for rows, values in parts:
        out = out.index_copy(dim, rows, values)
    return out
