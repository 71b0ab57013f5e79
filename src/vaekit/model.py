"""The VAE as a composition: encoder body, posterior family, prior, decoder body, likelihood."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from .config import ModelConfig
from .likelihoods import LIKELIHOODS
from .posteriors import POSTERIORS
from .priors import PRIORS
from .nets import BODIES
from .objectives import LossTerms, negative_elbo


class VAEModel(nn.Module):
    """A variational autoencoder built from named parts.

    Parameters
    ----------
    config : ModelConfig
        Names of the parts and their sizes.
    data_shape : tuple of int
        Shape of one example: ``(d,)`` or ``(C, H, W)``.
    """

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.data_shape = tuple(data_shape)
        self.latent_dim = config.latent_dim
        body = BODIES[config.arch](self.data_shape, config.hidden)
        posterior_cls = POSTERIORS[config.posterior]
        likelihood_cls = LIKELIHOODS[config.likelihood]
        self.posterior = posterior_cls(config.latent_dim, min_var=config.min_var)
        self.prior_dist = PRIORS[config.prior](config.latent_dim)
        self.likelihood = likelihood_cls.from_config(self.data_shape, config)
        self.encoder = body.encoder(posterior_cls.param_dim(config.latent_dim))
        self.decoder = body.decoder(config.latent_dim, likelihood_cls.params_per_dim)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch ``(batch, *data_shape)``."""
        return self.posterior(self.encoder(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for a batch of codes ``(batch, latent_dim)``."""
        return self.likelihood(self.decoder(z))

    def prior(self) -> Distribution:
        """p(z)."""
        return self.prior_dist()

    def forward(self, x: torch.Tensor, beta: float = 1.0,
                generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> LossTerms:
        """Per-example negative ELBO terms (see :func:`vaekit.objectives.negative_elbo`)."""
        return negative_elbo(self, x, beta, generator, noise)
