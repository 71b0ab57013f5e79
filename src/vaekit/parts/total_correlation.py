"""The total correlation of the aggregate posterior, estimated on a minibatch (Chen et al. 2018).

beta-TCVAE (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs")
splits the ELBO's KL term, averaged over the data, into three parts,

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || prod_d q(z_d)) + sum_d KL(q(z_d) || p(z_d)),

the index-code mutual information, the total correlation (TC) and the dimension-wise KL, where
q(z) = (1/N) sum_n q(z|x_n) is the aggregate posterior. Its log-density at a code needs the
whole data set, so it is estimated on the minibatch: minibatch-weighted sampling (MWS, Chen et
al. 2018, Sec. 4.1),

    log q(z_i) ~= logsumexp_j log q(z_i|x_j) - log(N M),

over the M examples j of the batch, and the same for each dimension's marginal q(z_id). Given
N, MWS differs from the batch's own mixture, log (1/M) sum_j q(z_i|x_j), by -log N in every
log-density, which is (D - 1) log N in the TC: a constant that changes no gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.distributions import Independent, Normal

from vaekit.errors import ConfigError


def diagonal_parts(qz) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` ``(b, L)`` of a posterior that factorises over latent dimensions (a
    diagonal normal), else a ConfigError: the marginals q(z_d|x) must be at hand."""
    if not (isinstance(qz, Independent) and isinstance(qz.base_dist, Normal)):
        raise ConfigError("the total correlation needs a posterior that factorises over latent "
                          f"dimensions (posterior diagonal), got {type(qz).__name__}")
    return qz.base_dist.loc, qz.base_dist.scale


def pairwise_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log q(z_{s,i,d} | x_j) for every sample s, code i, example j and dimension d.

    Parameters
    ----------
    z : torch.Tensor
        ``(k, b, L)`` codes, code ``i`` drawn from q(z|x_i).
    loc, scale : torch.Tensor
        ``(b, L)`` the diagonal posteriors q(z|x_j) of the same batch.

    Returns
    -------
    torch.Tensor
        ``(k, b, b, L)``: ``[s, i, j, d]`` is log N(z_{s,i,d}; loc_{j,d}, scale_{j,d}^2).
    """
    u = (z[:, :, None, :] - loc) / scale  # (k, b, b, L)
    return -0.5 * u * u - scale.log() - 0.5 * math.log(2 * math.pi)


def aggregate_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                          dataset_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch estimates of log q(z_i) and of each log q(z_id) at the batch's own codes.

    Parameters
    ----------
    z, loc, scale : torch.Tensor
        As in :func:`pairwise_log_density`.
    dataset_size : int, optional
        N: minibatch-weighted sampling (Chen et al. 2018), ``logsumexp_j - log(N M)``. None:
        the batch's own mixture, ``logsumexp_j - log M`` (MWS without its constant).

    Returns
    -------
    log_qz : torch.Tensor
        ``(k, b)`` estimates of log q(z_i).
    log_qz_dims : torch.Tensor
        ``(k, b, L)`` estimates of log q(z_id), each dimension's marginal.
    """
    m = pairwise_log_density(z, loc, scale)
    norm = math.log(loc.shape[0]) + (math.log(dataset_size) if dataset_size else 0.0)
    return (torch.logsumexp(m.sum(-1), dim=2) - norm,   # joint: product over dims, then mixture
            torch.logsumexp(m, dim=2) - norm)           # each marginal: mixture per dimension


def total_correlation(z: torch.Tensor, qz, dataset_size: int | None = None) -> torch.Tensor:
    """Minibatch estimate of log q(z_i) - sum_d log q(z_id) for every code: ``(k, b)``.

    Averaged over the codes, it estimates the total correlation KL(q(z) || prod_d q(z_d)) of
    the aggregate posterior. ``qz`` is the batch's diagonal posterior (``(b, L)``), ``z``
    ``(k, b, L)`` codes drawn from it; ``dataset_size`` as in :func:`aggregate_log_density`.
    """
    loc, scale = diagonal_parts(qz)
    log_qz, log_qz_dims = aggregate_log_density(z, loc, scale, dataset_size)
    return log_qz - log_qz_dims.sum(-1)


class KLDecomposition(NamedTuple):
    """The three parts of the sampled KL, ``(k, b)`` each, in nats (Chen et al. 2018, eq. 2):
    ``mutual_info`` log q(z|x) - log q(z), ``total_correlation`` log q(z) - sum_d log q(z_d),
    ``dimwise_kl`` sum_d log q(z_d) - log p(z). They add up to log q(z|x) - log p(z)."""

    mutual_info: torch.Tensor
    total_correlation: torch.Tensor
    dimwise_kl: torch.Tensor


def decompose_kl(z: torch.Tensor, qz, pz, dataset_size: int | None = None) -> KLDecomposition:
    """Split log q(z|x) - log p(z) at the codes ``z`` ``(k, b, L)`` into the three parts of
    :class:`KLDecomposition`, with the minibatch estimates of :func:`aggregate_log_density`.

    ``pz`` is the prior (its ``log_prob`` over whole codes); for a prior that factorises, the
    last part is sum_d [log q(z_d) - log p(z_d)], the dimension-wise KL.
    """
    loc, scale = diagonal_parts(qz)
    log_qz, log_qz_dims = aggregate_log_density(z, loc, scale, dataset_size)
    marginals = log_qz_dims.sum(-1)
    return KLDecomposition(qz.log_prob(z) - log_qz, log_qz - marginals, marginals - pz.log_prob(z))
