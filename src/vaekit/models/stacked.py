"""A model of the codes of a frozen, trained VAE: the stacked M1+M2 of Kingma et al. 2014.

``--stack-on RUN`` takes the trained one-layer VAE of ``RUN`` (M1), freezes it, and trains a
second model (the top; M2 with ``--semi-supervised``) on its codes ``z1 ~ q(z1|x)``, drawn
afresh at every step as in the paper. Only the code dimensions M1 uses are modelled (its active
units, ``Cov_x E[z1_d|x] > 0.01``: the paper keeps those with a standard deviation above 0.1);
the others keep M1's prior ``N(0, 1)``. Together they are one generative model of ``x``,

    p(x) = int p1(x | z1) p_top(z1_active) N(z1_rest; 0, I) dz1,

so every entry point sees raw data: the bound of a row is
``E_q1[log p1(x|z1) + bound_top(z1_active) + log N(z1_rest) - log q1(z1|x)]``, and
``log p(x)`` is importance-sampled with ``q1`` times the top's proposal. M1's weights and
configuration are copied into the stacked model (``model.safetensors`` and the internal
``stack`` field), so the run stands on its own once trained.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.config.settings import ModelConfig, parse_stack
from vaekit.errors import DataError
from .vae import SampleTerms, VAEModel
from vaekit.parts.objectives import LossTerms
from vaekit.parts.preprocess import build_preprocess
from .semisup import SemiSupervisedVAE


class StackedVAE(nn.Module):
    """A frozen front VAE (M1) and a top model of its active codes (M2, or a plain VAE).

    Parameters
    ----------
    config : ModelConfig
        The top's configuration, whose ``stack`` field describes the front.
    data_shape : tuple of int
        Shape of one raw example (the front's).
    """

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        config.validate()
        front_cfg, shape, keep = parse_stack(config.stack)
        if tuple(data_shape) != shape:
            raise DataError(f"this stacked model's front was trained on examples of shape {shape}, "
                            f"not {tuple(data_shape)}")
        self.config, self.data_shape = config, tuple(data_shape)
        self.front = VAEModel(front_cfg, shape)
        self.front.requires_grad_(False)  # frozen: only the top learns
        top_cfg = replace(config, stack_on="", stack="")
        self.top = (SemiSupervisedVAE if top_cfg.semi_supervised else VAEModel)(top_cfg, (len(keep),))
        rest = sorted(set(range(self.front.latent_dim)) - set(keep))
        self.register_buffer("keep", torch.tensor(keep), persistent=False)
        self.register_buffer("rest", torch.tensor(rest, dtype=torch.long), persistent=False)
        self.preprocess = build_preprocess("none", self.data_shape)  # the front has its own
        self.cond_dim = 0
        self.semi_supervised = bool(top_cfg.semi_supervised)
        if self.semi_supervised:
            self.classes, self.alpha = self.top.classes, self.top.alpha

    # -- what the rest of vaekit reads ------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.top.parameters()).device

    @property
    def likelihood(self):
        """The front's p(x|z1): raw data are checked against its support."""
        return self.front.likelihood

    @property
    def latent_dim(self) -> int:
        return self.top.latent_dim

    @property
    def noise_dim(self) -> int:
        """The front's code, then the top's noise."""
        return self.front.latent_dim + self.top.noise_dim

    kl_estimator = "monte-carlo"  # log q1(z1|x) - log p(z1) with the top's bound inside

    def check_data(self, x: torch.Tensor, what: str) -> None:
        self.front.check_data(x, what)

    def discrete(self, x: torch.Tensor) -> bool:
        return self.front.discrete(x)

    def prior(self) -> Distribution:
        return self.top.prior()

    # -- codes -------------------------------------------------------------------------------
    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q1(z1|x) of raw rows."""
        with torch.no_grad():
            return self.front.encode(x)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The top's data: the front's posterior means on the kept dimensions, ``(b, D)``."""
        with torch.no_grad():
            return self.front.encode(x).mean.index_select(-1, self.keep)

    def lift(self, u: torch.Tensor) -> torch.Tensor:
        """Top data ``(..., D)`` -> a full front code, the other dimensions at their prior mean 0."""
        z = u.new_zeros(*u.shape[:-1], self.front.latent_dim)
        return z.index_copy(-1, self.keep, u)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return self.top.encode(self.codes(x), y)

    def decode(self, code: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x | top code): the top's mean code of z1, decoded by the front."""
        return self.front.decode(self.lift(self.top.decode(code, y).mean))

    def sample_prior(self, n: int, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        return self.top.sample_prior(n, generator, **kw)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        kw = {"y": y} if self.semi_supervised else {}
        return self.decode(self.sample_prior(n, generator, **kw)).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y).mean).mean

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The top's q(y|z1) at the front's posterior means (as the paper classifies)."""
        rows = [self.codes(x[i: i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)]
        return self.top.predict_proba(torch.cat(rows) if rows else x.new_zeros(0, len(self.keep)))

    # -- the bound ---------------------------------------------------------------------------
    def front_sample(self, x: torch.Tensor, k: int, noise: torch.Tensor, state: Any):
        """``k`` codes per row from q1 (no gradient: the front is frozen) and their terms:
        ``u`` ``(k * b, D)`` for the top, ``log p1(x|z1)``, ``log q1(z1|x)`` and the prior of
        the dimensions the top does not model, each ``(k, b)``."""
        q1 = self.infer(x) if state is None else state
        with torch.no_grad():
            z1 = q1.rsample(noise=noise[..., : self.front.latent_dim])  # (k, b, L1)
            log_px = self.front.decode(z1).log_prob(x)
            log_q1 = q1.log_prob(z1)
            rest = z1.index_select(-1, self.rest)
            log_rest = (-0.5 * rest.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return z1.index_select(-1, self.keep).reshape(k * len(x), -1), log_px, log_q1, log_rest

    def split_noise(self, x, k, generator, noise) -> tuple[torch.Tensor, torch.Tensor]:
        if noise is None:
            noise = torch.randn(k, len(x), self.noise_dim, generator=generator, device=self.device)
        return noise, noise[..., self.front.latent_dim:].reshape(1, k * len(x), -1)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
              weights: bool = False, state: Any = None,
              prior: Distribution | None = None) -> SampleTerms:
        noise, top_noise = self.split_noise(x, k, generator, noise)
        u, log_px, log_q1, log_rest = self.front_sample(x, k, noise, state)
        yk = None if y is None else torch.as_tensor(y, device=u.device).reshape(-1).repeat(k)
        t = self.top.terms(u, yk, 1, noise=top_noise, weights=weights, prior=prior)
        top_bound = (t.log_px - t.kl).reshape(k, -1)
        log_ratio = None
        if weights:  # the top's estimate of p(z1_active) in the importance weight
            log_ratio = (t.log_px + t.log_ratio).reshape(k, -1) + log_rest - log_q1
        return SampleTerms(log_px, log_q1 - log_rest - top_bound, None, log_ratio)

    def forward(self, x: torch.Tensor, beta: float = 1.0,
                generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                name: str = "elbo", k: int = 1) -> LossTerms:
        """The top's objective on ``k`` drawn codes per row, plus the frozen front's terms (no
        gradient), so ``rec + kl`` is the negative bound of ``x``; ``beta`` weighs the top's KL."""
        noise, top_noise = self.split_noise(x, k, generator, noise)
        u, log_px, log_q1, log_rest = self.front_sample(x, k, noise, None)
        yk = None if y is None else torch.as_tensor(y, device=u.device).reshape(-1).repeat(k)
        t = self.top(u, beta, noise=top_noise, y=yk, name=name, k=1)
        shape = (k, len(x))
        front = log_q1 - log_rest  # the front's share of the KL term
        loss = (front - log_px + t.loss.reshape(shape)).mean(0)
        kl = (front + t.rec.reshape(shape) + t.kl.reshape(shape)).mean(0)
        return LossTerms(loss, -log_px.mean(0), kl, None)
