"""Prior families p(z).

Every prior is an ``nn.Module`` with the same interface:

- ``from_config(latent_dim, data_shape, config)`` builds it from a :class:`vaekit.config.settings.ModelConfig`;
- ``forward(encode=None)`` returns a distribution over codes ``(L,)`` whose ``log_prob`` broadcasts
  over leading dimensions (``(s, b, L) -> (s, b)``); ``encode`` maps inputs to q(z|x) and only the
  ``vamp`` prior needs it;
- ``sample(n, generator=None, encode=None)`` returns ``(n, L)`` codes, all randomness from
  ``generator`` (drawn on its device, then moved to the module's);
- ``analytic_kl`` says whether KL(q || p) has a closed form; otherwise the objectives estimate it
  by Monte Carlo, ``log q(z) - log p(z)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import CholeskyNormal, DiagonalNormal, GaussianMixture, UnitNormal
from vaekit.errors import ConfigError
from vaekit.registry import Registry

PRIORS: Registry[type] = Registry("prior")

Encode = Callable[[torch.Tensor], Distribution]  # x (batch, *data_shape) -> q(z|x)


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard-normal draws on the generator's device, moved to ``like``'s device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _components(config) -> int:
    k = int(config.prior_components)
    if k < 1:
        raise ConfigError(f"--prior-components must be at least 1, got {k}")
    return k


@PRIORS.register("normal")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I); the KL from a Gaussian posterior has a closed form.

    Parameters
    ----------
    latent_dim : int
        Size ``L`` of the latent code.
    """

    analytic_kl = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    @classmethod
    def from_config(cls, latent_dim: int, data_shape: tuple[int, ...], config) -> "StandardNormalPrior":
        """Build from a :class:`vaekit.config.settings.ModelConfig` (nothing in it is needed)."""
        return cls(latent_dim)

    def forward(self, encode: Encode | None = None) -> DiagonalNormal:
        """N(0, I) as a :class:`DiagonalNormal` over a :class:`UnitNormal` (callers use its
        ``base_dist``); ``encode`` is ignored."""
        cached = self.__dict__.get("_dist")
        if cached is None or cached.base_dist.loc is not self.loc:  # buffers moved: rebuild
            cached = self.__dict__["_dist"] = DiagonalNormal(self.loc, self.scale, base=UnitNormal)
        return cached

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               encode: Encode | None = None) -> torch.Tensor:
        """``(n, L)`` draws; the same numbers as ``self().rsample((n,), generator=generator)``."""
        return self.forward().rsample(noise=_noise((n, self.latent_dim), generator, self.loc))


@PRIORS.register("mixture")
class MixtureOfGaussiansPrior(nn.Module):
    """Learned mixture of ``K`` diagonal Gaussians, p(z) = sum_k pi_k N(mu_k, diag(sigma_k^2)).

    A multimodal prior the posterior can cluster into (the Gaussian-mixture family of
    Shu 2018, "Density estimation: variational autoencoders", latent variable models, used as p(z)). Means start as N(0, 1)
    draws so the components begin apart; log-scales and mixture logits start at 0 (unit
    scales, equal weights). Variances are floored at ``min_var`` so no component can collapse
    to a point of infinite density.

    Parameters
    ----------
    latent_dim : int
        Size ``L`` of the latent code.
    components : int
        Number ``K`` of Gaussians.
    min_var : float
        Floor on each component variance.
    """

    analytic_kl = False

    def __init__(self, latent_dim: int, components: int = 10, min_var: float = 1e-5) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_var = min_var
        self.means = nn.Parameter(torch.randn(components, latent_dim))  # (K, L); global RNG, like nn.Linear
        self.log_scales = nn.Parameter(torch.zeros(components, latent_dim))  # (K, L)
        self.logits = nn.Parameter(torch.zeros(components))  # (K,)

    @classmethod
    def from_config(cls, latent_dim: int, data_shape: tuple[int, ...], config) -> "MixtureOfGaussiansPrior":
        """``K = config.prior_components``, variance floor ``config.min_var``."""
        return cls(latent_dim, _components(config), min_var=config.min_var)

    def forward(self, encode: Encode | None = None) -> GaussianMixture:
        """The mixture, batch shape ``()``, event ``(L,)``; ``encode`` is ignored."""
        scale = torch.sqrt(torch.exp(2 * self.log_scales) + self.min_var)
        return GaussianMixture(self.logits, DiagonalNormal(self.means, scale))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               encode: Encode | None = None) -> torch.Tensor:
        """``(n, L)`` draws: a component by its weight, then a Gaussian draw from it."""
        return self.forward().sample((n,), generator=generator)


@PRIORS.register("vamp")
class VampPrior(nn.Module):
    """VampPrior: p(z) = (1/K) sum_k q(z | u_k) over ``K`` learned pseudo-inputs ``u_k``.

    Tomczak & Welling 2018, "VAE with a VampPrior": the prior is the aggregate posterior of a
    learned set of inputs, so it shares the encoder and adapts to it. Pseudo-inputs start as
    N(0.5, 0.1^2) draws clipped to [0, 1]: mid-grey, near the centre of data scaled to [0, 1]
    and varied enough that their posteriors differ. They are unconstrained afterwards (Tomczak's
    hard-tanh clip would stop the gradient of any pixel that reaches a bound).

    Diagonal and full-covariance posteriors are supported.

    Parameters
    ----------
    latent_dim : int
        Size ``L`` of the latent code.
    data_shape : tuple of int
        Shape of one input, ``(d,)`` or ``(C, H, W)``.
    components : int
        Number ``K`` of pseudo-inputs.
    """

    analytic_kl = False

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...], components: int = 10) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        init = (0.5 + 0.1 * torch.randn(components, *data_shape)).clamp_(0.0, 1.0)
        self.pseudo_inputs = nn.Parameter(init)  # (K, *data_shape)

    @classmethod
    def from_config(cls, latent_dim: int, data_shape: tuple[int, ...], config) -> "VampPrior":
        """``K = config.prior_components`` pseudo-inputs shaped like one example."""
        return cls(latent_dim, tuple(data_shape), _components(config))

    def forward(self, encode: Encode | None = None) -> GaussianMixture:
        """Equal-weight mixture of ``encode(pseudo_inputs)``; gradients reach the pseudo-inputs."""
        if encode is None:
            raise ConfigError("the vamp prior needs the encoder")
        qz = encode(self.pseudo_inputs)  # batch (K,), event (L,)
        if not isinstance(qz, (DiagonalNormal, CholeskyNormal)):
            raise ConfigError(f"the vamp prior works with --posterior diagonal or full-covariance; "
                              f"this posterior gives {type(qz).__name__}")
        logits = torch.zeros(qz.batch_shape, dtype=qz.mean.dtype, device=qz.mean.device)  # (K,)
        return GaussianMixture(logits, qz)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               encode: Encode | None = None) -> torch.Tensor:
        """``(n, L)`` draws: a pseudo-input uniformly, then a draw from its posterior."""
        return self.forward(encode).sample((n,), generator=generator)
