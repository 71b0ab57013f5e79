"""The VAE-GAN hybrid (Larsen, Sønderby, Larochelle & Winther 2016, "Autoencoding beyond pixels
using a learned similarity metric"): a VAE whose reconstruction term is measured in the features
of a discriminator that is trained, as in a GAN, to tell data from reconstructions and from
decoded prior draws.

With ``x~ = Dec(z)``, ``z ~ q(z|x)``, ``x_p = Dec(z_p)``, ``z_p ~ p(z)`` and ``Dis_l`` the
discriminator's hidden layer ``l`` (paper, eq. 6-9):

- ``L_prior = KL(q(z|x) || p(z))``;
- ``L_llike = -log N(Dis_l(x) | Dis_l(x~), s^2 I)``, a Gaussian likelihood in feature space,
  plus ``pixel_weight`` times the decoder likelihood's own ``-log p(x|z)``;
- ``L_GAN = log D(x) + log(1 - D(x~)) + log(1 - D(x_p))``.

Each part of the network follows its own loss (Algorithm 1): the encoder (and a learned prior)
``L_prior + L_llike``; the decoder ``gamma * L_llike - L_GAN``, with the non-saturating
``-log D`` of Goodfellow et al. 2014 for the decoder's GAN term; the discriminator ``-L_GAN``
(binary cross-entropy). So the encoder never sees the GAN gradient and the discriminator never
the reconstruction: three backward passes restricted to their parameters.

Where this departs from the paper, and why (measured on MNIST, docs/vaegan.md):

- ``s^2`` is the running variance of the features over the data, not 1: the paper's
  discriminator is batch-normalised, ours is not (outputs must not depend on the batch), and
  its raw features were ~0.1 in scale, so with ``s = 1`` the reconstruction term was a few
  nats and the posterior collapsed to the prior;
- the element-wise term ``-log p(x|z)`` stays beside the feature term (``pixel_weight`` 1; 0 is
  the paper's): a discriminator's features do not see every pixel direction, the decoder's
  sigmoid outputs saturate, and without it the samples were speckled and scored worse than the
  plain VAE's;
- the decoder's GAN term uses the non-saturating form, and the balance rule of Larsen et al.'s
  code pauses one side when the other wins (:mod:`vaekit.models.vaegan_update`).

The model (:class:`VAEGAN`) is a :class:`~vaekit.models.vae.VAEModel` with one more part, so it is
saved, loaded, exported (encoder and decoder) and drawn from like any run; the trainer runs
:class:`~vaekit.models.vaegan_update.AdversarialUpdate` in place of its plain step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from vaekit.config.settings import ModelConfig
from vaekit.errors import ConfigError
from .vae import VAEModel
from vaekit.parts.nets import Body
from vaekit.parts.objectives import LossTerms

LEAK = 0.2  # LeakyReLU slope in the discriminator (Radford et al. 2015)
SCALE_MOMENTUM = 0.99  # the feature variance follows the last ~100 training batches
MIN_FEATURE_VAR = 1e-6


class Discriminator(nn.Module):
    """Data or generated? ``trunk`` maps a batch in model units to the features ``Dis_l``
    ``(b, f)`` whose Gaussian likelihood is the reconstruction term; ``head`` maps them to one
    logit per example.

    The likelihood is ``N(Dis_l(x) | Dis_l(x~), s^2 I)`` with ``s^2`` the features' variance
    over the data (averaged over features), a running estimate kept in buffers (so it is saved
    and resumed with the weights) and updated by each training step from the batch's data.
    The paper's ``s = 1`` presumes its batch-normalised discriminator, whose features have
    unit scale; this one has no batch norm (outputs must not depend on the batch), and its raw
    features are ~0.1 in scale, so with ``s = 1`` the reconstruction term was a few nats and
    the posterior collapsed to the prior (measured on the 8x8 digits).

    Built from the model's own body (:func:`discriminator_for`), so it composes with every body
    that has a hidden layer.
    """

    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head
        self.register_buffer("feature_ema", torch.zeros(()))  # EMA of the variance from 0, uncorrected
        self.register_buffer("feature_updates", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (b, f), logits (b,))`` for ``x`` ``(b, *data_shape)`` in model units."""
        h = self.trunk(x)
        return h, self.head(h).squeeze(-1)

    def feature_var(self) -> torch.Tensor:
        """``s^2``: the bias-corrected running variance (1 before the first update), 0-d."""
        n = self.feature_updates
        corrected = self.feature_ema / (1 - SCALE_MOMENTUM ** n.clamp(min=1))
        return torch.where(n > 0, corrected, torch.ones_like(corrected)).clamp(min=MIN_FEATURE_VAR)

    @torch.no_grad()
    def track(self, features: torch.Tensor) -> None:
        """Update ``s^2`` from the features ``(b, f)`` of a batch of data (a non-finite batch
        variance leaves it as it is)."""
        var = features.float().var(0, unbiased=False).mean()
        ok = torch.isfinite(var)
        new = SCALE_MOMENTUM * self.feature_ema + (1 - SCALE_MOMENTUM) * var
        self.feature_ema.copy_(torch.where(ok, new, self.feature_ema))
        self.feature_updates.add_(ok.float())

    def nll(self, target: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``-log N(target | mean, s^2 I)`` per row of features ``(b, f)``, in nats: ``(b,)``."""
        return feature_nll(target, mean, self.feature_var())


def discriminator_for(body: Body) -> Discriminator:
    """The body's encoder with one output, split at the layer whose features ``Dis_l`` are.

    A conv stack (conv, resnet): ``Dis_l`` is its flattened output, the last convolutional
    layer, as the paper takes a convolutional layer; its dense head gives the logit. An mlp:
    ``Dis_l`` is the last hidden layer. ReLUs become LeakyReLUs (slope 0.2), whose features do
    not die, so every feature keeps a gradient for the reconstruction term.
    """
    enc = body.encoder(1, 0)
    if any(True for _ in enc.features.parameters()):
        trunk, head = enc.features, enc.head
    elif isinstance(enc.head, nn.Sequential) and len(enc.head) > 1:
        trunk, head = nn.Sequential(enc.features, *enc.head[:-1]), enc.head[-1]
    else:
        raise ConfigError("objective vaegan needs a body with a hidden layer, whose features "
                          "measure reconstructions: use arch mlp, conv or resnet")
    return Discriminator(leaky(trunk), leaky(head))


def leaky(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.ReLU`` replaced by ``nn.LeakyReLU(LEAK)``, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.LeakyReLU(LEAK))
        else:
            leaky(child)
    return module


class VAEGAN(VAEModel):
    """A :class:`~vaekit.models.vae.VAEModel` with a :class:`Discriminator`.

    The encoder, decoder, prior and likelihood are built first, exactly as for the plain VAE
    (the same seed gives the same initial weights); the discriminator after them. The
    likelihood's mean maps decoder outputs to data (``sigmoid`` of Bernoulli logits, the
    Gaussian mean), and its ``-log p(x|z)``, weighted by ``config.pixel_weight``, joins the
    feature term (docs/vaegan.md: why); its training step is :class:`vaekit.models.vaegan_update.AdversarialUpdate` (its row in :data:`vaekit.models.build.VARIANTS`).
    """

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__(config, data_shape)
        if config.conditional or config.top_latent_dims:
            raise ConfigError("objective vaegan takes an unconditional model with one latent layer")
        self.pixel_weight = config.pixel_weight
        self.discriminator = discriminator_for(self.body)

    def feature_terms(self, x: torch.Tensor, beta: float = 1.0,
                      generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                      y: torch.Tensor | None = None, k: int = 1) -> LossTerms:
        """The objective ``vaegan``'s terms for this model: :func:`feature_terms`."""
        return feature_terms(self, x, beta, generator, noise, y, k)


def feature_nll(target: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``-log N(target | mean, var I)`` per row of features ``(b, f)``, in nats: ``(b,)``
    float32; ``var`` a 0-d tensor."""
    target, mean = target.float(), mean.float()
    return (0.5 * (target - mean).square().sum(-1) / var
            + 0.5 * target.shape[-1] * torch.log(2 * math.pi * var))


class Forward(NamedTuple):
    """One forward pass of a VAE-GAN on a batch of ``b`` examples.

    ``terms`` are the encoder's per-example terms (``rec``: the feature term plus
    ``pixel_weight`` times ``pixel``; ``kl = L_prior``); ``pixel`` is ``-log p(x|z)`` of the
    decoder's likelihood, ``(b,)``; ``logits`` are the discriminator's ``(b,)`` for the data,
    then ``(b,)`` for the reconstructions and ``(m,)`` for the prior draws.
    """

    terms: LossTerms
    pixel: torch.Tensor
    logits: torch.Tensor


def forward(model: VAEGAN, x: torch.Tensor, beta: float, noise: torch.Tensor | None = None,
            generator: torch.Generator | None = None, z_prior: torch.Tensor | None = None,
            track: bool = False) -> Forward:
    """Reconstructions (and decoded prior draws ``z_prior``) through one decoder pass, data and
    generated examples through one discriminator pass.

    Parameters
    ----------
    model : VAEGAN
    x : torch.Tensor
        Raw data ``(b, *data_shape)``.
    beta : float
        Weight of the KL term in ``terms.loss``.
    noise : torch.Tensor, optional
        Reparameterization noise ``(1, b, latent)``; else drawn from ``generator``.
    z_prior : torch.Tensor, optional
        Prior draws ``(m, latent)`` to decode as well.
    track : bool
        Update the feature variance from this batch first (training steps).
    """
    b = len(x)
    qz = model.encode(x)
    z = qz.rsample((1,), generator=generator, noise=noise)  # (1, b, latent)
    kl, kl_dims, _ = model.kl_terms(qz, z)
    codes = z[0] if z_prior is None else torch.cat([z[0], z_prior.to(z.dtype)])
    params = model.decoder_params(codes, None)  # (b + m, ...): one decoder pass
    generated = model.likelihood(params).mean  # model units, what the discriminator sees
    feats, logits = model.discriminator(torch.cat([model.preprocess(x), generated]))
    if track:
        model.discriminator.track(feats[:b])
    rec = model.discriminator.nll(feats[:b], feats[b: 2 * b])  # Dis_l(x) under N(Dis_l(x~), s^2 I)
    pixel = -model.observe(params[:b]).log_prob(x)  # the likelihood's own term, in raw units
    if model.pixel_weight:
        rec = rec + model.pixel_weight * pixel
    kl, kl_dims = kl[0], None if kl_dims is None else kl_dims[0]
    loss = rec + kl if beta == 1 else rec + beta * kl
    return Forward(LossTerms(loss, rec, kl, kl_dims), pixel, logits.float())


def feature_terms(model, x: torch.Tensor, beta: float = 1.0,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                  y: torch.Tensor | None = None, k: int = 1) -> LossTerms:
    """The encoder's loss of a VAE-GAN per example: ``L_llike + beta * L_prior`` in nats, the
    reconstruction term in the discriminator's features plus ``pixel_weight`` times the
    likelihood's ``-log p(x|z)`` (see :mod:`vaekit.models.vaegan`).

    Arguments as :func:`vaekit.parts.objectives.negative_elbo`; one code per example.
    """
    if not isinstance(model, VAEGAN):
        raise ConfigError("objective vaegan needs a model with a discriminator (vaekit.models.vaegan."
                          "VAEGAN): build it with build_model(config, shape, objective='vaegan')")
    if k != 1 or y is not None:
        raise ConfigError("objective vaegan takes k 1 and no labels")
    return forward(model, x, beta, noise, generator).terms
