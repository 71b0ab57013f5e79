"""A deep hierarchical VAE in the style of NVAE and VDVAE (Vahdat & Kautz 2020; Child 2021),
sized for a CPU: ``--latent deep``.

Generative model, top group first: a learned constant state ``s_L``; ``z_L ~ N(0, I)``; for each
group below, ``z_i ~ p(z_i | s_i) = N(mu_p(s_i), sigma_p(s_i))``, where the top-down state
``s_i = cell_i(s_{i+1}, z_{i+1})`` is a residual cell of everything above; ``x ~ p(x | s_0)``,
the decoder reading the state after the bottom group.

Inference is bidirectional (NVAE, Sec. 3): a deterministic bottom-up pass (the body's encoder,
then one residual cell per group) gives features ``d_1 .. d_L``, bottom first; the top-down pass
is the generative one, and each group's posterior is NVAE's residual normal relative to its prior
(eq. 2): ``q(z_i | x, z_>i) = N(mu_p + dmu, sigma_p * dsigma)`` with ``(dmu, log dsigma)`` from the
top-down state and ``d_i``. Its KL given the groups above is in closed form.

Groups are vectors and the cells are MLP residual cells on the body's flat features (a conv or
resnet body supplies its encoder and decoder around them), not NVAE's spatial grids: that keeps
one step within a CPU's reach. Group sizes are ``latent_dim`` (the bottom group) and
``top_latent_dims`` (the groups above, bottom-up); without ``top_latent_dims``, four groups of
``latent_dim``. The code of an example, what ``encode``, ``sample_prior`` and ``decode`` pass
around, is the concatenation ``[z_1, ..., z_L]``; ``decode`` runs the top-down cells on it.

Stability (the measures those papers found necessary):
- each residual branch's last layer starts at 0.1 / sqrt(cells) of the default scale (VDVAE's
  scaled initialisation), so the untrained network is near identity through the residual stack;
- log standard deviations pass a soft clamp ``5 tanh(raw / 5)`` (NVAE's code), so no variance
  overflows or reaches 0;
- KL balancing during warm-up (``--kl-warmup``; NVAE, App. A): while the KL weight is below 1,
  each group's KL is weighted by its batch-mean KL per latent unit (plus 0.01), normalized to a
  mean of 1, so that no group is switched off early; at full weight the loss is the ELBO;
- gradient-norm control is the trainer's ``--clip-grad``, and steps with a non-finite loss or
  gradient are skipped as for every kind (VDVAE's skip threshold on the norm is not built here).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal

from vaekit.config.settings import ModelConfig
from vaekit.errors import ConfigError
from vaekit.parts.distributions import DiagonalNormal, full_precision
from vaekit.parts.objectives import LossTerms, sample_mean
from .vae import SampleTerms, VAEModel

DEFAULT_GROUPS = 4  # groups when top_latent_dims is not given: latent_dim each
BALANCE_FLOOR = 0.01  # added to each group's KL before balancing (NVAE's kl_balancer)


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """``bound * tanh(x / bound)``: identity near 0, never beyond ``+-bound`` (NVAE's soft_clamp5)."""
    return bound * torch.tanh(x / bound)


class ResidualCell(nn.Module):
    """``h + f([h, extra])`` with ``f`` two SiLU layers (Swish, as NVAE's cells), the last layer
    scaled by ``scale`` at initialisation (VDVAE). ``(..., width)`` -> ``(..., width)``."""

    def __init__(self, width: int, extra: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)  # per example: no batch statistics, evaluation = training
        self.f = nn.Sequential(nn.Linear(width + extra, width), nn.SiLU(), nn.Linear(width, width))
        with torch.no_grad():
            self.f[-1].weight.mul_(scale)
            self.f[-1].bias.zero_()

    def forward(self, h: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        u = F.silu(self.norm(h))
        if extra is not None:
            u = torch.cat([u, extra], -1)
        return h + self.f(u)


class DeepVAE(VAEModel):
    """The deep hierarchy of the module's notes.

    Parameters as :class:`vaekit.models.vae.VAEModel` (``latent deep``; posterior diagonal and
    prior normal: checked by ``ModelConfig.validate``).
    """

    def build_latent(self, config: ModelConfig) -> None:
        if config.conditional or config.semi_supervised or config.stack:
            raise ConfigError("latent deep takes an unconditional model")
        self.dims = tuple(config.top_latent_dims and (config.latent_dim, *config.top_latent_dims)
                          or (config.latent_dim,) * DEFAULT_GROUPS)  # bottom-up
        self.latent_dim = sum(self.dims)
        width = self.body.hidden[-1] if self.body.hidden else 256
        self.width = self.decoder_in_dim = width
        n = len(self.dims)
        scale = 0.1 / math.sqrt(2 * n)
        self.encoder = self.body.encoder(width, 0)  # bottom-up features before the cells
        self.up = nn.ModuleList(ResidualCell(width, 0, scale) for _ in self.dims)  # d_1 .. d_L
        self.start = nn.Parameter(torch.zeros(width))  # s_L, the top's state
        # prior heads of the groups below the top (its prior is N(0, I)), posterior heads of all
        self.p_heads = nn.ModuleList(nn.Linear(width, 2 * d) for d in self.dims[:-1])
        self.q_heads = nn.ModuleList(nn.Linear(2 * width, 2 * d) for d in self.dims)
        for head in (*self.p_heads, *self.q_heads):  # start at q = p = N(0, I)
            nn.init.zeros_(head.bias)
            head.weight.data.mul_(0.1)
        self.down = nn.ModuleList(ResidualCell(width, d, scale) for d in self.dims)  # s from z
        self.prior_dist = None  # the top's N(0, I) is built where it is used

    # -- the two passes ----------------------------------------------------------------------
    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Bottom-up pass from raw ``x``: features ``[d_1, ..., d_L]``, bottom first, ``(b, width)``."""
        self.condition(y, len(x))  # refuses labels this model cannot take
        d = self.encoder(self.inputs(x), None)
        feats = []
        for cell in self.up:
            d = cell(d)
            feats.append(d)
        return feats

    def prior_params(self, i: int, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``p(z_i | s_i)``; the top's is N(0, I)."""
        if i == len(self.dims) - 1:
            zeros = s.new_zeros(*s.shape[:-1], self.dims[i])
            return zeros, torch.ones_like(zeros)
        mu, raw = full_precision(self.p_heads[i](s)).chunk(2, -1)
        return mu, soft_clamp(raw).exp()

    def top_down(self, feats: list[torch.Tensor] | None, eps: list[torch.Tensor | None],
                 zs: list[torch.Tensor] | None = None, lead: tuple[int, ...] = ()
                 ) -> tuple[list[tuple], torch.Tensor]:
        """Walk down the groups, top first: the steps ``(i, q_mu, q_sd, p_mu, p_sd, z)`` in that
        order, and the last state (what the decoder reads).

        With ``feats`` (the bottom-up pass), ``z_i`` comes from the posterior: its mean where
        ``eps[i]`` is None, else ``mu + sd * eps[i]``; ``q_mu``/``q_sd`` are None without
        ``feats``, and ``z_i`` is then ``zs[i]`` when given, else a draw from the prior with
        ``eps[i]``. ``lead`` is the shape of the leading dimensions of the state
        (``(k, b)``).
        """
        s = self.start.expand(*lead, self.width)
        steps = []
        for i in reversed(range(len(self.dims))):
            p_mu, p_sd = self.prior_params(i, s)
            q_mu = q_sd = None
            if feats is not None:
                d = feats[i].expand(*s.shape[:-1], self.width)
                dmu, draw = full_precision(self.q_heads[i](torch.cat([s, d], -1))).chunk(2, -1)
                q_mu, q_sd = p_mu + dmu, p_sd * soft_clamp(draw).exp()  # NVAE eq. 2
                z = q_mu if eps[i] is None else q_mu + q_sd * eps[i]
            elif zs is not None:
                z = zs[i]
            else:
                z = p_mu + p_sd * eps[i]
            steps.append((i, q_mu, q_sd, p_mu, p_sd, z))
            s = self.down[i](s, z.to(s.dtype))
        return steps, s

    def decoder_params(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Codes ``(..., b, latent_dim)`` -> the top-down state -> decoder output."""
        zs = list(z.split(self.dims, -1))
        _, state = self.top_down(None, [None] * len(self.dims), zs, tuple(z.shape[:-1]))
        return super().decoder_params(state, c)

    # -- the primitive every objective uses -------------------------------------------------
    @property
    def analytic_kl(self) -> bool:
        return True

    @property
    def kl_estimator(self) -> str:
        return "analytic-per-layer"

    def prior(self) -> None:
        """The priors are built on the way down: nothing to build once."""
        return None

    def group_terms(self, x: torch.Tensor, k: int, generator: torch.Generator | None,
                    noise: torch.Tensor | None, weights: bool, state: Any):
        """``log p(x|z)`` ``(k, b)``, per-group KLs (list, bottom first, each ``(k, b, L_i)``)
        and ``log p(z) - log q(z|x)`` ``(k, b)`` or None."""
        feats = self.infer(x) if state is None else state
        b = len(x)
        if noise is None:
            noise = torch.randn(k, b, self.latent_dim, generator=generator, device=feats[0].device)
        eps = list(full_precision(noise).split(self.dims, -1))
        kls: list[Any] = [None] * len(self.dims)
        log_ratio = 0.0
        steps, state = self.top_down(feats, eps, lead=(k, b))
        for i, q_mu, q_sd, p_mu, p_sd, z in steps:
            q = Normal(q_mu, q_sd, validate_args=False)
            p = Normal(p_mu, p_sd, validate_args=False)
            # KL of two Gaussians given the groups above (Kingma & Welling 2013, App. B)
            kls[i] = (torch.log(p_sd / q_sd) + (q_sd.square() + (q_mu - p_mu).square())
                      / (2 * p_sd.square()) - 0.5)
            if weights:
                log_ratio = log_ratio + (p.log_prob(z) - q.log_prob(z)).sum(-1)
        log_px = self.observe(super().decoder_params(state, None)).log_prob(x)  # (k, b)
        return log_px, kls, (log_ratio if weights else None)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
              weights: bool = False, state: Any = None,
              prior: Distribution | None = None) -> SampleTerms:
        """As :meth:`VAEModel.terms`: ``kl`` is the sum of the groups' closed-form KLs given the
        sampled groups above, ``kl_dims`` their concatenation bottom first, ``log_ratio`` sums
        ``log p(z_i | z_>i) - log q(z_i | x, z_>i)`` over the groups."""
        self.condition(y, len(x))
        log_px, kls, log_ratio = self.group_terms(x, k, generator, noise, weights, state)
        kl_dims = torch.cat(kls, -1)
        return SampleTerms(log_px, kl_dims.sum(-1), kl_dims, log_ratio)

    def forward(self, x: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                name: str = "elbo", k: int = 1) -> LossTerms:
        """Objective ``name``; for ``elbo`` in training with ``beta < 1`` (KL warm-up) the loss
        weights the groups' KLs by KL balancing (NVAE, App. A), the reported terms stay the
        ELBO's."""
        if name != "elbo" or not (self.training and beta < 1):
            return super().forward(x, beta, generator, noise, y, name, k)
        self.condition(y, len(x))
        log_px, kls, _ = self.group_terms(x, k, generator, noise, False, None)
        group_kl = torch.stack([sample_mean(t.sum(-1)) for t in kls], -1)  # (b, groups)
        size = group_kl.new_tensor(self.dims)
        gamma = (group_kl.detach().abs().mean(0) + BALANCE_FLOOR) / size  # per latent unit
        gamma = gamma / gamma.mean()
        rec = -sample_mean(log_px)
        kl = group_kl.sum(-1)
        kl_dims = sample_mean(torch.cat(kls, -1))
        return LossTerms(rec + beta * (group_kl * gamma).sum(-1), rec, kl, kl_dims)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiagonalNormal:
        """The top-down path at posterior means: ``[z_1, ..., z_L]`` means and standard deviations."""
        feats = self.infer(x, y)
        mus, sds = [None] * len(self.dims), [None] * len(self.dims)
        for i, mu, sd, *_ in self.top_down(feats, [None] * len(self.dims), lead=(len(x),))[0]:
            mus[i], sds[i] = mu, sd
        return DiagonalNormal(torch.cat(mus, -1), torch.cat(sds, -1))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling, top group first: ``(n, latent_dim)`` as ``[z_1, ..., z_L]``."""
        zs: list[Any] = [None] * len(self.dims)
        dev = self.start.device
        eps = [torch.randn(n, d, generator=generator, device=dev) for d in self.dims]
        for i, _, _, _, _, z in self.top_down(None, eps, lead=(n,))[0]:
            zs[i] = z
        return torch.cat(zs, -1)
