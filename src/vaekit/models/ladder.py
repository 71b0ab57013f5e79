"""A VAE with several stochastic layers and top-down (ladder) inference (Sønderby et al. 2016).

Generative model: ``z_T ~ p(z_T)``, ``z_i ~ N(mu_p, var_p)(z_{i+1})`` for ``i = T-1 .. 1``,
``x ~ p(x | z_1)``. Inference runs a deterministic bottom-up pass that gives each layer a
"likelihood" Gaussian ``N(mu_hat_i, var_hat_i)``, then goes top-down: the top posterior is
``N(mu_hat_T, var_hat_T)`` and each lower one the precision-weighted product of
``N(mu_hat_i, var_hat_i)`` with the generative conditional ``p(z_i | z_{i+1})`` (eq. 17-19 of
the ladder-VAE paper). So inference and generation share the top-down path, and each layer's
KL is in closed form given the sampled layer above.

The code of an example is the concatenation ``[z_1, ..., z_T]``: ``latent_dim`` is the sum of
the layer sizes, ``encode`` gives the top-down path at posterior means, and the decoder reads
``z_1``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence

from vaekit.config.settings import ModelConfig
from vaekit.parts.distributions import DiagonalNormal, full_precision
from .vae import SampleTerms, VAEModel
from vaekit.parts.priors import PRIORS


def gaussian(params: torch.Tensor, min_var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split raw ``(..., 2L)`` parameters into a mean and a floored variance.

    The variance is ``softplus(raw) + min_var`` (as in the ladder-VAE paper), not ``exp(raw)``:
    in the precision-weighted merge an uninformative unit drives its bottom-up variance up, and
    an exponential overflowed to inf there (a KL of inf, every step skipped) after ~300 epochs
    of binarized MNIST; softplus grows linearly.
    """
    mu, raw = full_precision(params).chunk(2, dim=-1)
    return mu, F.softplus(raw) + min_var


class LadderVAE(VAEModel):
    """Hierarchical VAE: ``--latent-dim`` is the bottom layer, ``--top-latent-dims`` the ones above.

    Parameters as :class:`vaekit.models.vae.VAEModel`; the posterior must be ``diagonal`` (the
    precision-weighted merge is defined for diagonal Gaussians) and the prior ``normal`` or
    ``mixture`` (it sits on the top layer).
    """

    def build_latent(self, config: ModelConfig) -> None:
        # diagonal posterior and a normal or mixture prior: checked by ModelConfig.validate
        self.dims = (config.latent_dim, *config.top_latent_dims)  # bottom-up
        self.latent_dim = sum(self.dims)
        self.decoder_in_dim = self.dims[0]
        self.min_var = config.min_var
        width = self.body.hidden[-1] if self.body.hidden else 256
        self.encoder = self.body.encoder(width, self.cond_dim)  # bottom-up features d_1
        self.up = nn.ModuleList(nn.Linear(width, width) for _ in self.dims[1:])  # d_i from d_{i-1}
        self.q_heads = nn.ModuleList(nn.Linear(width, 2 * d) for d in self.dims)
        # p(z_i | z_{i+1}) for the layers below the top
        self.p_nets = nn.ModuleList(
            nn.Sequential(nn.Linear(above, width), nn.LeakyReLU(0.1), nn.Linear(width, 2 * d))
            for d, above in zip(self.dims[:-1], self.dims[1:]))
        self.prior_dist = PRIORS[config.prior].from_config(self.dims[-1], self.data_shape, config)

    @property
    def kl_estimator(self) -> str:
        return "analytic-per-layer" if self.prior_dist.analytic_kl else "monte-carlo"

    def decoder_params(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return super().decoder_params(z[..., : self.dims[0]], c)  # the decoder reads z_1

    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Bottom-up pass from raw ``x``: ``[(mu_hat_i, var_hat_i)]`` per layer, bottom first, ``(b, L_i)``."""
        d = F.leaky_relu(self.encoder(self.inputs(x), self.condition(y, len(x))), 0.1)
        hats = [gaussian(self.q_heads[0](d), self.min_var)]
        for up, head in zip(self.up, self.q_heads[1:]):
            d = F.leaky_relu(up(d), 0.1)
            hats.append(gaussian(head(d), self.min_var))
        return hats

    def top_down(self, hats, eps: list[torch.Tensor | None]):
        """Walk down from the top; ``eps[i]`` is layer i's noise, or None for the posterior mean.

        Yields, top first, ``(i, q_mu, q_var, p_mu, p_var, z)``; ``p_mu``/``p_var`` are None for
        the top layer, whose prior is the prior module.
        """
        z = None
        for i in reversed(range(len(self.dims))):
            mu_hat, var_hat = hats[i]
            if z is None:
                mu, var, p_mu, p_var = mu_hat, var_hat, None, None
            else:
                p_mu, p_var = gaussian(self.p_nets[i](z), self.min_var)
                prec = 1 / var_hat + 1 / p_var  # precision-weighted merge (ladder VAE, eq. 18-19)
                mu, var = (mu_hat / var_hat + p_mu / p_var) / prec, 1 / prec
            z = mu if eps[i] is None else mu + eps[i] * var.sqrt()
            yield i, mu, var, p_mu, p_var, z

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
              weights: bool = False, state: Any = None,
              prior: Distribution | None = None) -> SampleTerms:
        hats = self.infer(x, y) if state is None else state
        if noise is None:
            noise = torch.randn(k, len(x), self.latent_dim, generator=generator, device=hats[0][0].device)
        eps = list(noise.split(self.dims, -1))
        pz = self.prior() if prior is None else prior
        analytic = self.prior_dist.analytic_kl
        zs, kls, log_ratio = [None] * len(self.dims), [None] * len(self.dims), 0.0
        for i, mu, var, p_mu, p_var, z in self.top_down(hats, eps):
            zs[i] = z
            q = Normal(mu, var.sqrt(), validate_args=False)
            if p_mu is None:
                if analytic:
                    kls[i] = kl_divergence(q, pz.base_dist).expand(k, *mu.shape)
                else:
                    kls[i] = (q.log_prob(z).sum(-1) - pz.log_prob(z)).unsqueeze(-1)
                log_pz = pz.log_prob(z) if weights else None
            else:
                p = Normal(p_mu, p_var.sqrt(), validate_args=False)
                kls[i] = kl_divergence(q, p)  # closed form given the layer above: (k, b, L_i)
                log_pz = p.log_prob(z).sum(-1) if weights else None
            if weights:
                log_ratio = log_ratio + log_pz - q.log_prob(z).sum(-1)
        log_px = self.decode(zs[0], y).log_prob(x)  # raw units: preprocessing inverted
        kl = sum(t.sum(-1) for t in kls)
        kl_dims = torch.cat(kls, -1) if analytic else None
        return SampleTerms(log_px, kl, kl_dims, log_ratio if weights else None)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiagonalNormal:
        """The top-down path at posterior means: ``[z_1, ..., z_T]`` means and standard deviations."""
        hats = self.infer(x, y)
        mus, sds = [None] * len(self.dims), [None] * len(self.dims)
        for i, mu, var, *_ in self.top_down(hats, [None] * len(self.dims)):
            mus[i], sds[i] = mu, var.sqrt()
        return DiagonalNormal(torch.cat(mus, -1), torch.cat(sds, -1))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling, top layer first: ``(n, latent_dim)`` as ``[z_1, ..., z_T]``."""
        z = self.prior_dist.sample(n, generator)
        zs = [z]
        for i in reversed(range(len(self.dims) - 1)):
            p_mu, p_var = gaussian(self.p_nets[i](z), self.min_var)
            z = p_mu + p_var.sqrt() * torch.randn(p_mu.shape, generator=generator, device=p_mu.device)
            zs.insert(0, z)
        return torch.cat(zs, -1)
