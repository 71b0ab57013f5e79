"""Posterior families q(z|x): encoder outputs -> a distribution over the latent code."""

from __future__ import annotations

import torch
from torch import nn

from .distributions import CholeskyNormal, DiagonalNormal, full_precision
from vaekit.registry import Registry

from .flows import IAFPosterior

POSTERIORS: Registry[type] = Registry("posterior")


@POSTERIORS.register("diagonal")
class DiagonalGaussianPosterior(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar) + min_var)) from the encoder's (mu, logvar).

    The variance floor keeps the density finite; an unbounded posterior variance is the
    most common source of NaNs in VAEs (Shu 2018, "Density estimation: VAEs", "Lower bounding the
    Inference Model Variance", which uses 1e-5).
    """

    def __init__(self, latent_dim: int, min_var: float = 1e-5) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_var = min_var

    @staticmethod
    def param_dim(latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, params: torch.Tensor) -> DiagonalNormal:
        mu, logvar = full_precision(params).chunk(2, dim=-1)  # (batch, latent) each
        return DiagonalNormal(mu, torch.sqrt(torch.exp(logvar) + self.min_var))


@POSTERIORS.register("full-covariance")
class CholeskyGaussianPosterior(nn.Module):
    """q(z|x) = N(mu, L L^T) with a full covariance given by its Cholesky factor L.

    The encoder outputs ``param_dim(L) = 2L + L(L-1)/2`` numbers per example, in this order:
    the mean ``(L,)``, the raw diagonal ``(L,)``, and the strictly-lower entries of ``L``
    (row by row, ``torch.tril_indices(L, L, -1)`` order). The diagonal is
    ``L_ii = sqrt(exp(raw_i) + min_var)``: positive, so ``L L^T`` is positive definite, and
    floored as in the diagonal family (Kingma & Welling 2013, the reparameterization trick).

    Parameters
    ----------
    latent_dim : int
        Size ``L`` of the latent code.
    min_var : float
        Floor on the squared diagonal of ``L`` (hence on every posterior variance).
    """

    def __init__(self, latent_dim: int, min_var: float = 1e-5) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_var = min_var
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    @staticmethod
    def param_dim(latent_dim: int) -> int:
        return 2 * latent_dim + latent_dim * (latent_dim - 1) // 2

    def forward(self, params: torch.Tensor) -> CholeskyNormal:
        """``params`` ``(batch, param_dim)`` -> a distribution with batch ``(batch,)``, event ``(L,)``."""
        params = full_precision(params)  # bf16 encoder outputs: the density needs full precision
        n = self.latent_dim
        mu, raw_diag, lower = params[..., :n], params[..., n:2 * n], params[..., 2 * n:]
        diag = torch.sqrt(torch.exp(raw_diag) + self.min_var)  # (batch, L)
        tril = torch.diag_embed(diag)  # (batch, L, L)
        tril[..., self._rows, self._cols] = lower  # in place on a fresh tensor: autograd is fine
        return CholeskyNormal(mu, tril)


POSTERIORS.register("iaf")(IAFPosterior)  # inverse autoregressive flow, Kingma et al. 2016 (flows.py)
