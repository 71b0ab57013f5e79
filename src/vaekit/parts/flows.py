"""Inverse autoregressive flow (IAF) posteriors (Kingma et al. 2016, "Improved Variational
Inference with Inverse Autoregressive Flow").

q(z|x) starts from the encoder's diagonal Gaussian, ``z_0 = mu + sigma * eps``, and applies
``T`` autoregressive steps, each with the numerically stable gated update of the paper (its
eq. 14): ``[m, s] = MADE(z_{t-1}, h)``, ``g = sigmoid(s)``, ``z_t = g * z_{t-1} + (1 - g) * m``,
where output ``i`` of the masked network (Germain et al. 2015) sees only inputs ``< i`` and the
context ``h`` from the encoder. The Jacobian of a step is triangular with diagonal ``g``, so

    log q(z_T|x) = log N(z_0; mu, diag(sigma^2)) - sum_t sum_i log g_t,i        (exact).

Steps alternate the order of the variables (odd steps see ``z`` reversed), so every variable
is conditioned on every other after two steps. ``log_prob`` of a code this distribution just
drew reuses the terms of the draw; any other code is inverted exactly, one variable at a time
(``L`` network passes per step: cheap for the latent sizes of a VAE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from .distributions import full_precision

STEPS = 2  # flow steps; the paper's MNIST models used 1 to 8 (Kingma et al. 2016, Table 2)
GATE_BIAS = 1.0  # starts each gate near 1, each step near the identity (Kingma et al. 2016, Sec. 4)
LOG_2PI = math.log(2 * math.pi)


def hidden_width(latent_dim: int) -> int:
    """Default hidden width of each step's masked network: ``max(16, 8 L)``."""
    return max(16, 8 * latent_dim)


def hidden_degrees(latent_dim: int, hidden: int) -> torch.Tensor:
    """MADE degrees ``(hidden,)``: unit ``k`` sees inputs ``1..m_k``, ``m_k = k mod (L - 1) + 1``."""
    return torch.arange(hidden) % max(latent_dim - 1, 1) + 1


class MaskedStep(nn.Module):
    """One IAF step: a one-hidden-layer masked network (MADE) with a context input.

    Output ``i`` (of ``m`` and of ``s``) depends on ``z_{<i}`` and ``h`` only, so the Jacobian
    of the step is lower triangular.

    Parameters
    ----------
    latent_dim : int
        Size ``L`` of the code.
    context_dim : int
        Size of the context ``h``.
    hidden : int
        Hidden units.
    """

    def __init__(self, latent_dim: int, context_dim: int, hidden: int) -> None:
        super().__init__()
        n = latent_dim
        self.latent_dim = n
        # nn.Linear's initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from the global RNG
        self.w_in = nn.Parameter(_uniform((hidden, n), n + context_dim))  # (H, L)
        self.w_ctx = nn.Parameter(_uniform((hidden, context_dim), n + context_dim))  # (H, C)
        self.b_in = nn.Parameter(_uniform((hidden,), n + context_dim))
        self.w_out = nn.Parameter(_uniform((2 * n, hidden), hidden))  # (2L, H): m rows, then s rows
        self.b_out = nn.Parameter(torch.cat([torch.zeros(n), torch.full((n,), GATE_BIAS)]))
        deg = hidden_degrees(n, hidden)
        inputs = torch.arange(1, n + 1)
        self.register_buffer("mask_in", (inputs[None, :] <= deg[:, None]).float(), persistent=False)
        outputs = inputs.repeat(2)  # the degree of output row j is j mod L + 1
        self.register_buffer("mask_out", (outputs[:, None] > deg[None, :]).float(), persistent=False)

    def weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``(w_in, w_ctx, b_in, w_out, b_out)`` masked and in ``dtype`` (a float32 flow can
        score float64 codes: the encoder output sets the precision)."""
        w_in, w_out = self.w_in * self.mask_in, self.w_out * self.mask_out
        return tuple(w.to(dtype) for w in (w_in, self.w_ctx, self.b_in, w_out, self.b_out))

    def net(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, s)``, each ``(..., L)``, for codes ``(..., L)`` and context ``(..., C)``
        (broadcast against each other)."""
        w_in, w_ctx, b_in, w_out, b_out = self.weights(z.dtype)
        hid = torch.tanh(z @ w_in.T + h @ w_ctx.T + b_in)  # (..., H)
        out = hid @ w_out.T + b_out  # (..., 2L)
        return out[..., :self.latent_dim], out[..., self.latent_dim:]

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_t, sum_i log g_i)`` for ``z_{t-1}``: the gated update, Kingma et al. 2016 eq. 14."""
        m, s = self.net(z, h)
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(-1)

    def inverse(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_{t-1}, sum_i log g_i)`` with ``forward(z_{t-1}) = (y, .)``, exactly.

        Pass ``i`` recovers variable ``i`` from the ones before it, which are already exact, so
        its ``(m_i, g_i)`` are those of the forward step: ``L`` passes. Each pass adds variable
        ``i``'s column to the hidden pre-activation (a rank-one update) and evaluates only the
        two output rows it needs.
        """
        n = self.latent_dim
        shape = torch.broadcast_shapes(y.shape, h.shape[:-1] + (n,))
        y = y.expand(shape)
        w_in, w_ctx, b_in, w_out, b_out = self.weights(y.dtype)
        pre = (h @ w_ctx.T + b_in).expand(*shape[:-1], -1)  # (..., H): z = 0 so far
        cols, log_gate = [], y.new_zeros(shape[:-1])
        for i in range(n):
            m_i, s_i = (torch.tanh(pre) @ w_out[[i, n + i]].T + b_out[[i, n + i]]).unbind(-1)
            z_i = (y[..., i] - torch.sigmoid(-s_i) * m_i) / torch.sigmoid(s_i)  # 1 - sigmoid(s) = sigmoid(-s)
            pre = pre + z_i.unsqueeze(-1) * w_in[:, i]  # out of place: autograd keeps every pass
            cols.append(z_i)
            log_gate = log_gate + F.logsigmoid(s_i)
        return torch.stack(cols, -1), log_gate


def _uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


class IAFNormal(Distribution):
    """The distribution of ``z_T`` (see the module docstring); batch ``loc.shape[:-1]``, event ``(L,)``.

    ``rsample`` takes a generator or the standard-normal noise itself, like
    :class:`vaekit.parts.distributions.DiagonalNormal`. ``mean`` is the flow applied to ``mu`` (the
    code of ``eps = 0``), not ``E[z|x]``, which has no closed form: embeddings, reconstructions
    and the exported encoder use this deterministic code.

    Parameters
    ----------
    loc, scale : torch.Tensor
        ``(*batch, L)`` mean and standard deviation of ``z_0``.
    context : torch.Tensor
        ``(*batch, C)`` context ``h`` from the encoder.
    steps : sequence of MaskedStep
        The flow; odd steps act on the reversed code.
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's Distribution reads it; no checked arguments)
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor,
                 steps) -> None:
        self.loc, self.scale, self.context, self.steps = loc, scale, context, list(steps)
        self._drawn: tuple[torch.Tensor, torch.Tensor] | None = None  # (z, log q(z)) of the last draw
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def flow(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_T, sum_t sum_i log g_t,i)`` for ``z_0`` ``(..., *batch, L)``."""
        z, log_gate = z0, z0.new_zeros(z0.shape[:-1])
        with torch.autocast(z0.device.type, enabled=False):  # a density: full precision (bf16 runs)
            for t, step in enumerate(self.steps):
                flip = t % 2 == 1
                z, lg = step(z.flip(-1) if flip else z, self.context)
                z = z.flip(-1) if flip else z
                log_gate = log_gate + lg
        return z, log_gate

    def unflow(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_0, sum_t sum_i log g_t,i)`` for ``z_T``: :meth:`flow` inverted step by step."""
        log_gate = z.new_zeros(())
        with torch.autocast(z.device.type, enabled=False):
            for t in reversed(range(len(self.steps))):
                flip = t % 2 == 1
                z, lg = self.steps[t].inverse(z.flip(-1) if flip else z, self.context)
                z = z.flip(-1) if flip else z
                log_gate = log_gate + lg
        return z, log_gate

    def base_log_prob(self, eps: torch.Tensor) -> torch.Tensor:
        """``log N(z_0; mu, diag(sigma^2))`` from the standardized ``eps = (z_0 - mu) / sigma``."""
        return -0.5 * (eps.square() + LOG_2PI).sum(-1) - self.scale.log().sum(-1)

    def rsample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``(*sample_shape, *batch, L)`` reparameterized draws; ``noise`` as ``(*sample_shape,
        *batch, L)`` standard-normal numbers instead of drawing them from ``generator``."""
        if noise is None:
            shape = self._extended_shape(torch.Size(sample_shape))
            noise = torch.randn(shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        z, log_gate = self.flow(self.loc + noise * self.scale)
        self._drawn = (z, self.base_log_prob(noise) - log_gate)
        return z

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log q(value|x)``, ``(..., *batch, L) -> (..., *batch)``, exact.

        The code returned by the last :meth:`rsample` (the same tensor object) costs nothing:
        its density was computed with it, as a function of the same parameters.
        """
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        z0, log_gate = self.unflow(value)
        return self.base_log_prob((z0 - self.loc) / self.scale) - log_gate

    @property
    def mean(self) -> torch.Tensor:
        """The flow at ``mu``, ``(*batch, L)`` (not ``E[z|x]``; see the class docstring)."""
        return self.flow(self.loc)[0]


class IAFPosterior(nn.Module):
    """q(z|x): a diagonal Gaussian followed by ``steps`` IAF steps (Kingma et al. 2016).

    The encoder outputs ``param_dim(L) = 3L`` numbers per example: the mean ``(L,)``, the
    log-variance ``(L,)`` (variance ``exp(logvar) + min_var``, floored as in the diagonal
    family) and the context ``h`` ``(L,)`` that every step's network reads. The KL term is
    estimated by Monte Carlo, ``log q(z|x) - log p(z)`` (``analytic_kl = False``).

    Parameters
    ----------
    latent_dim : int
        Size ``L`` of the latent code.
    min_var : float
        Floor on the variance of ``z_0``.
    steps : int
        Flow steps ``T``.
    hidden : int, optional
        Hidden units of each step's network (default :func:`hidden_width`).
    """

    analytic_kl = False

    def __init__(self, latent_dim: int, min_var: float = 1e-5, steps: int = STEPS,
                 hidden: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_var = min_var
        width = hidden_width(latent_dim) if hidden is None else hidden
        self.steps = nn.ModuleList(MaskedStep(latent_dim, latent_dim, width) for _ in range(steps))

    @staticmethod
    def param_dim(latent_dim: int) -> int:
        return 3 * latent_dim

    def forward(self, params: torch.Tensor) -> IAFNormal:
        """``params`` ``(*batch, 3L)`` -> a distribution with batch ``(*batch,)``, event ``(L,)``."""
        mu, logvar, context = full_precision(params).chunk(3, dim=-1)  # (*batch, L) each
        return IAFNormal(mu, torch.sqrt(torch.exp(logvar) + self.min_var), context, self.steps)
