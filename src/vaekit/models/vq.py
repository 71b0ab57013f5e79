"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning"):
the encoder's output, a grid of vectors for a conv or resnet body (a row of ``latent_dim``
vectors for an mlp), is replaced position by position by the nearest of ``K`` codebook vectors;
the decoder reads the quantized grid.

- Gradients pass the quantization by the straight-through estimator: ``z_q = z_e + sg(e - z_e)``,
  so the encoder output receives the gradient taken at the quantized point (paper, eq. 3).
- The commitment loss ``commitment * ||z_e - sg(e)||^2`` (beta = 0.25, the paper's) keeps the
  encoder near its codes; summed over positions and dimensions, per example, like the
  reconstruction term.
- The codebook follows exponential moving averages of the encoder outputs assigned to each
  code (Razavi, van den Oord & Vinyals 2019, "VQ-VAE-2", App. A.1; decay 0.99) with
  Laplace-smoothed counts, so that a code with no assignment is never divided by zero
  (``codebook_update ema``, the default); ``codebook_update loss`` is the paper's codebook term
  ``||sg(z_e) - e||^2`` stepped by Adam instead.
- Under EMA updates the codebook starts at encoder outputs of the first training batch.
- Dead codes are restarted: a code no encoder output was assigned to for ``dead_code_steps``
  training steps in a row is moved onto one of the batch's encoder outputs, those farthest from
  their nearest code first (deterministic, so no random stream joins the checkpoint).
- Codebook usage: each epoch's row reports ``train_perplexity``, ``exp`` of the entropy of the
  codes' share of the epoch's assignments (K when all codes are used equally, 1 when one code
  takes all), ``train_codes_used``, ``train_commitment`` and the restarts so far.

As a latent variable model the VQ-VAE has a deterministic posterior ``q(c|x)``, a point mass on
the nearest codes ``c(x)``, and trains under a uniform prior over the ``K^P`` code grids of ``P``
positions: its KL is the constant ``P log K`` (paper, Sec. 3.1), so ``rec + kl`` in the metrics
is a true negative ELBO under that prior. The commitment and codebook terms join only the
training step's loss. A learned prior over the code grid is fitted afterwards as a second stage,
the ``pixelcnn`` sampler (:mod:`vaekit.sampling.pixelcnn`); with it, ``-log p(x) <= -log
p(x|c(x)) - log p(c(x))``.

Every statistic the codebook keeps (the codebook, the EMA counts and sums, the idle steps, the
restart count) is a module buffer, saved with the weights and in the checkpoint, so a resumed
run continues bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.config.settings import ModelConfig
from vaekit.errors import ConfigError
from vaekit.parts.distributions import full_precision
from vaekit.parts.objectives import LossTerms
from .vae import SampleTerms, VAEModel

LAPLACE_EPS = 1e-5  # additive smoothing of the EMA counts (Sonnet's VectorQuantizerEMA epsilon)


class VectorQuantizer(nn.Module):
    """Nearest-code quantization of ``(b, P, D)`` vectors with a ``(K, D)`` codebook.

    Parameters
    ----------
    size, dim : int
        ``K`` codes of ``D`` numbers.
    update : str
        ``ema`` (the codebook is a buffer moved by moving averages) or ``loss`` (a parameter
        moved by Adam along the codebook term).
    decay : float
        EMA decay.
    dead_after : int
        Training steps without an assignment after which a code is restarted (0: never).
    """

    def __init__(self, size: int, dim: int, update: str = "ema", decay: float = 0.99,
                 dead_after: int = 100) -> None:
        super().__init__()
        self.size, self.dim, self.update_rule = size, dim, update
        self.decay, self.dead_after = decay, dead_after
        init = torch.empty(size, dim).uniform_(-1 / size, 1 / size)  # as the paper's code
        if update == "ema":
            self.register_buffer("codebook", init)
            # the starting codebook counts as one assignment per code: the first EMA steps
            # then move codes by a share of their batch means, never divide by a zero count
            self.register_buffer("ema_count", torch.ones(size))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("idle_steps", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.int64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        # this epoch's assignments per code and summed commitment (rows): reset by the epoch's
        # metrics, so not part of the checkpoint (which is written between epochs)
        self.register_buffer("usage", torch.zeros(size, dtype=torch.float64), persistent=False)
        self.register_buffer("commit_sum", torch.zeros(2, dtype=torch.float64), persistent=False)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean distance) of each row of ``z`` ``(N, D)``:
        ``(N,)`` int64; ties go to the lower index."""
        e = self.codebook
        d = z.square().sum(-1, keepdim=True) - 2 * z @ e.t() + e.square().sum(-1)  # (N, K)
        return d.argmin(-1)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """Codes of indices ``(...,)`` -> ``(..., D)``."""
        return self.codebook[index]

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_st, index, commitment, codebook_loss)`` for encoder outputs ``z_e`` ``(b, P, D)``:
        the straight-through codes ``(b, P, D)`` (values of the codes, gradient to ``z_e``), the
        code indices ``(b, P)``, and per example ``||z_e - sg(e)||^2`` and ``||sg(z_e) - e||^2``
        ``(b,)`` (the latter 0 under EMA updates). A call in training mode with gradients on (a
        training step) updates the codebook."""
        z_e = full_precision(z_e)
        b, p, d = z_e.shape
        flat = z_e.reshape(-1, d)
        step = self.training and torch.is_grad_enabled()  # a training step, not an evaluation
        if step and self.update_rule == "ema":
            self.start(flat.detach())
        index = self.nearest(flat.detach())
        z_q = self.lookup(index).view(b, p, d)
        commitment = (z_e - z_q.detach()).square().sum((1, 2))
        codebook_loss = ((z_e.detach() - z_q).square().sum((1, 2)) if self.update_rule == "loss"
                         else commitment.new_zeros(b))
        if step:
            self.update(flat.detach(), index, commitment.detach())
        z_st = z_e + (z_q - z_e).detach()
        return z_st, index.view(b, p), commitment, codebook_loss

    @torch.no_grad()
    def update(self, z: torch.Tensor, index: torch.Tensor, commitment: torch.Tensor) -> None:
        """One training step's codebook statistics from its encoder outputs ``z`` ``(N, D)`` and
        their codes ``index`` ``(N,)``: the EMA step, usage, idle counts, dead-code restarts.
        All on the device, no host sync."""
        counts = torch.bincount(index, minlength=self.size).to(z.dtype)  # (K,)
        if self.update_rule == "ema":
            sums = torch.zeros_like(self.ema_sum).index_add_(0, index, z)  # (K, D)
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            self.codebook.copy_(self.ema_sum / smoothed_counts(self.ema_count).unsqueeze(1))
        self.usage.add_(counts.double())
        self.commit_sum.add_(torch.stack([commitment.double().sum(),
                                          commitment.new_tensor(len(commitment), dtype=torch.float64)]))
        self.idle_steps.copy_(torch.where(counts > 0, 0, self.idle_steps + 1))
        if self.dead_after > 0:
            self.restart(z, index)

    @torch.no_grad()
    def start(self, z: torch.Tensor) -> None:
        """At the first training step, before its quantization, codes from the batch's encoder outputs ``z`` ``(N, D)``
        (evenly spaced rows), as their EMA sums with a count of one each: the uniform start
        values sit far from the outputs, which would all pick one code. No host sync."""
        picks = z[torch.arange(self.size, device=z.device) * len(z) // self.size]  # (K, D)
        for t, new in ((self.codebook, picks), (self.ema_sum, picks),
                       (self.ema_count, torch.ones_like(self.ema_count))):
            t.copy_(torch.where(self.started, t, new))
        self.started.fill_(True)

    @torch.no_grad()
    def restart(self, z: torch.Tensor, index: torch.Tensor) -> None:
        """Move every code idle for ``dead_after`` steps onto one of this batch's encoder outputs
        ``z`` ``(N, D)``, the farthest from its code first (the i-th dead code gets the i-th
        farthest output; with more dead codes than outputs they repeat)."""
        dead = self.idle_steps >= self.dead_after  # (K,)
        error = (z - self.codebook[index]).square().sum(-1)  # (N,)
        order = error.argsort(descending=True, stable=True)
        rank = (dead.cumsum(0) - 1).clamp(min=0) % len(z)  # dead code j -> the rank-th output
        fresh = z[order[rank]]  # (K, D)
        keep = ~dead.unsqueeze(1)
        self.codebook.copy_(torch.where(keep, self.codebook, fresh))
        if self.update_rule == "ema":
            self.ema_sum.copy_(torch.where(keep, self.ema_sum, fresh))
            self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))
        self.idle_steps.copy_(torch.where(dead, 0, self.idle_steps))
        self.restarts.add_(dead.sum())

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's codebook usage (one host sync), and reset for the next epoch."""
        n = self.usage.sum()
        row = {"train_perplexity": float(perplexity(self.usage)) if n > 0 else float("nan"),
               "train_codes_used": int((self.usage > 0).sum()),
               "train_commitment": float(self.commit_sum[0] / self.commit_sum[1].clamp(min=1)),
               "dead_code_restarts": int(self.restarts)}
        self.usage.zero_()
        self.commit_sum.zero_()
        return row


def smoothed_counts(count: torch.Tensor, eps: float = LAPLACE_EPS) -> torch.Tensor:
    """Laplace-smoothed EMA counts ``(N_i + eps) / (n + K eps) * n``, ``n = sum_i N_i``: the same
    total, every count positive (Razavi et al. 2019, App. A.1; Sonnet's VectorQuantizerEMA)."""
    n = count.sum()
    return (count + eps) / (n + len(count) * eps) * n


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """``exp(-sum_i p_i log p_i)`` of the usage ``p = counts / sum(counts)`` (0 log 0 = 0)."""
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


class CodebookPoint(Distribution):
    """q(c|x) of a VQ-VAE: a point mass on the quantized codes, flat ``(b, P * D)``.

    ``mean`` and every draw are the codes themselves (straight-through: their gradient goes to
    the encoder output); ``index`` ``(b, P)`` are the code indices, ``commitment`` and
    ``codebook_loss`` ``(b,)`` the training terms of :class:`VectorQuantizer`.
    """

    arg_constraints: dict = {}

    def __init__(self, codes: torch.Tensor, index: torch.Tensor, commitment: torch.Tensor,
                 codebook_loss: torch.Tensor) -> None:
        self.codes, self.index = codes, index
        self.commitment, self.codebook_loss = commitment, codebook_loss
        super().__init__(codes.shape[:-1], codes.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.codes

    def rsample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.codes.expand(*torch.Size(sample_shape), *self.codes.shape)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample(sample_shape).detach()


class GridEncoder(nn.Module):
    """A conv body's feature stack kept as a grid, then a 1x1 conv to ``D`` channels:
    ``(b, *in_shape)`` -> ``(b, P, D)``, positions in row-major order."""

    def __init__(self, features: nn.Module, channels: int, dim: int) -> None:
        super().__init__()
        self.features, self.proj = features, nn.Conv2d(channels, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.features(x))  # (b, D, h, w)
        return h.flatten(2).transpose(1, 2)


class GridDecoder(nn.Module):
    """Flat codes ``(N, P * D)`` -> the grid ``(N, D, h, w)`` -> a 1x1 conv to the body
    decoder's width at that grid, then the rest of the body's decoder (its upsampling)."""

    def __init__(self, grid: tuple[int, int], dim: int, channels: int, tail: nn.Module) -> None:
        super().__init__()
        self.grid, self.dim = tuple(grid), dim
        self.proj, self.act, self.tail = nn.Conv2d(dim, channels, 1), nn.LeakyReLU(0.2), tail

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = z.reshape(len(z), -1, self.dim).transpose(1, 2).unflatten(2, self.grid)
        return self.tail(self.act(self.proj(g)))


class VectorEncoder(nn.Module):
    """An mlp body's encoder with ``P * D`` outputs, read as ``P`` vectors: ``(b, P, D)``."""

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder, self.dim = encoder, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).unflatten(-1, (-1, self.dim))


def grid_parts(body, dim: int, params_per_dim: int) -> tuple[nn.Module, nn.Module] | None:
    """Encoder and decoder that keep a conv body's grid (conv, resnet: a body with ``grid``):
    its conv features without their flattening, and its decoder from the layer after the
    dense part's reshape to the grid; None for a body without a grid (mlp)."""
    grid = getattr(body, "grid", None)
    if grid is None:
        return None
    features = body.encoder(1, 0).features
    layers = list(features)
    if layers and isinstance(layers[-1], nn.Flatten):
        layers = layers[:-1]
    with torch.no_grad():
        channels = nn.Sequential(*layers)(torch.zeros(1, *body.in_shape)).shape[1]
    decoder = list(body.decoder(1, params_per_dim))
    cut = next(i for i, m in enumerate(decoder) if isinstance(m, nn.Unflatten))
    width = decoder[cut].unflattened_size[0]
    return (GridEncoder(nn.Sequential(*layers), channels, dim),
            GridDecoder(grid, dim, width, nn.Sequential(*decoder[cut + 1:])))


class VQVAE(VAEModel):
    """A :class:`~vaekit.models.vae.VAEModel` whose latent is a codebook (see the module's notes).

    ``positions`` is ``P`` (the grid's height x width for a conv or resnet body, ``latent_dim``
    for an mlp) and ``latent_dim`` the size of a flat code, ``P * code_dim``; codes handed to
    :meth:`decode` are flat ``(..., b, P * code_dim)``, position-major.
    """

    def build_latent(self, config: ModelConfig) -> None:
        if config.conditional or config.top_latent_dims or config.semi_supervised or config.stack:
            raise ConfigError("latent vq takes an unconditional model with one latent layer")
        d = config.code_dim
        self.quantizer = VectorQuantizer(config.codebook_size, d, config.codebook_update,
                                         config.codebook_decay, config.dead_code_steps)
        self.commitment = config.commitment
        parts = grid_parts(self.body, d, self.likelihood.params_per_dim)
        if parts is None:
            self.positions = config.latent_dim
            self.encoder = VectorEncoder(self.body.encoder(self.positions * d), d)
        else:
            self.positions = math.prod(self.body.grid)
            self.encoder, grid_decoder = parts
            self.__dict__["_grid_decoder"] = grid_decoder  # not a submodule until it replaces the decoder
        self.latent_dim = self.decoder_in_dim = self.positions * d
        if parts is not None:
            self.decoder_in_dim = 1  # the body's dense decoder, built next, is replaced: keep it small

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigError("latent vq trains in one process (its codebook statistics are not "
                              "all-reduced across processes); run without torchrun")
        super().__init__(config, data_shape)
        grid_decoder = self.__dict__.pop("_grid_decoder", None)
        if grid_decoder is not None:
            self.decoder = grid_decoder  # the body's dense decoder head is not used

    # -- the latent --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> CodebookPoint:
        """q(c|x): the quantized codes of a raw batch (see :class:`CodebookPoint`)."""
        self.condition(y, len(x))  # refuses labels the model cannot take
        z_st, index, commitment, codebook_loss = self.quantizer(self.encoder(self.inputs(x)))
        return CodebookPoint(z_st.flatten(1), index, commitment, codebook_loss)

    def code_index(self, x: torch.Tensor) -> torch.Tensor:
        """The code indices ``c(x)`` ``(b, P)`` of a raw batch (no codebook update)."""
        with torch.no_grad():
            z_e = full_precision(self.encoder(self.inputs(x)))
        return self.quantizer.nearest(z_e.reshape(-1, z_e.shape[-1])).view(len(x), -1)

    def index_of_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Flat codes ``(n, P * D)`` (rows of the codebook, as :meth:`encode` gives) -> their
        indices ``(n, P)``."""
        return self.quantizer.nearest(z.reshape(-1, self.quantizer.dim)).view(len(z), -1)

    def codes_of_index(self, index: torch.Tensor) -> torch.Tensor:
        """Indices ``(n, P)`` -> flat codes ``(n, P * D)``, what :meth:`decode` reads."""
        return self.quantizer.lookup(index).flatten(1)

    def prior(self) -> None:
        """The uniform prior over code grids has no parameters: nothing to build."""
        return None

    @property
    def analytic_kl(self) -> bool:
        return True  # KL(point mass || uniform) = P log K exactly

    @property
    def noise_dim(self) -> int:
        return 1  # no noise: the codes are deterministic (1 keeps the callers' shapes valid)

    def uniform_kl(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """``P log K`` nats, the KL of the point mass on ``c(x)`` from the uniform prior."""
        return like.new_full(shape, self.positions * math.log(self.quantizer.size))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` code grids from the uniform prior, flat ``(n, P * D)``."""
        index = torch.randint(0, self.quantizer.size, (n, self.positions), generator=generator,
                              device=self.quantizer.codebook.device)
        return self.codes_of_index(index)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y).mean, y).mean

    def terms(self, x, y=None, k=1, generator=None, noise=None, weights=False, state=None,
              prior=None) -> SampleTerms:
        """As :meth:`VAEModel.terms`; every one of the ``k`` codes is ``c(x)``, ``kl`` is
        ``P log K`` and ``log_ratio`` (``log p(c) - log q(c|x)`` with ``q(c(x)|x) = 1``) its
        negative."""
        qc = self.encode(x, y) if state is None else state
        log_px = self.decode(qc.rsample((k,)), y).log_prob(x)  # (k, b)
        kl = self.uniform_kl(tuple(log_px.shape), log_px)
        return SampleTerms(log_px, kl, None, -kl if weights else None)

    def forward(self, x: torch.Tensor, beta: float = 1.0, generator=None, noise=None, y=None,
                name: str = "elbo", k: int = 1) -> LossTerms:
        """Per-example terms: ``rec = -log p(x|c(x))``, ``kl = P log K``; in training the loss
        adds ``commitment * ||z_e - sg(e)||^2`` (and the codebook term of ``codebook_update
        loss``); in evaluation it is the negative ELBO ``rec + beta * kl``."""
        if name != "elbo":
            raise ConfigError(f"latent vq trains with objective elbo, not {name}")
        qc = self.encode(x, y)
        t = self.terms(x, y, 1, state=qc)
        rec, kl = -t.log_px[0], t.kl[0]
        loss = rec + beta * kl
        if self.training:
            loss = loss + self.commitment * qc.commitment + qc.codebook_loss
        return LossTerms(loss, rec, kl)

    def epoch_metrics(self) -> dict[str, float]:
        return self.quantizer.epoch_metrics()
