"""Likelihood families p(x|z): decoder outputs -> a distribution over one whole example."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (Bernoulli, ContinuousBernoulli, Distribution, Independent,
                                 Laplace, Normal)

from .errors import DataError
from .registry import Registry

LIKELIHOODS: Registry[type] = Registry("likelihood")


class Likelihood(nn.Module):
    """p(x|z) family: ``forward(decoder_output) -> Distribution`` over one whole example."""

    params_per_dim = 1  # decoder outputs this many channels per data channel

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_ndims = len(data_shape)

    @classmethod
    def from_config(cls, data_shape: tuple[int, ...], config) -> "Likelihood":
        """Build from a :class:`vaekit.config.ModelConfig`, taking the options this family uses."""
        return cls(data_shape)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """Raise DataError if ``x`` lies outside this likelihood's support."""


class IndependentBernoulli(Independent):
    """Bernoulli over a whole example whose ``log_prob`` broadcasts ``value`` without copying it.

    ``log p(x) = sum_d x_d * l_d - softplus(l_d)``: the same number as ``-BCE_with_logits``
    (stable for any logit), in two passes over the logits; ``x`` of shape ``(batch, ...)`` meets
    logits of shape ``(samples, batch, ...)`` by broadcasting, as importance sampling needs.
    """

    def __init__(self, logits: torch.Tensor, event_ndims: int) -> None:
        super().__init__(Bernoulli(logits=logits, validate_args=False), event_ndims,
                         validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        nll = torch.addcmul(F.softplus(logits), logits, value, value=-1)  # elementwise -log p
        return -nll.flatten(-self.reinterpreted_batch_ndims).sum(-1)


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Bernoulli from logits (the reference's sigmoid decoder, without its unstable log)."""

    def forward(self, logits: torch.Tensor) -> Distribution:
        return IndependentBernoulli(logits.float(), self.event_ndims)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{what}: values span [{lo:g}, {hi:g}] but the bernoulli likelihood needs data in "
                "[0, 1]; rescale the data to [0, 1] or use --likelihood gaussian")


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Gaussian around the decoder's mean with one standard deviation for all dimensions.

    Fixed at ``obs_std``, or learned (``learn_obs_std``, starting at ``obs_std``) with its
    variance floored at ``min_obs_var`` so that it cannot collapse to zero
    (002_0b1c8e9715ecc3b6.txt, "Lower bounding the Generative Model Variance").
    """

    def __init__(self, data_shape: tuple[int, ...], obs_std: float = 1.0,
                 learn_obs_std: bool = False, min_obs_var: float = 1e-6) -> None:
        super().__init__(data_shape)
        self.min_obs_var = min_obs_var
        log_std = torch.tensor(math.log(obs_std))
        if learn_obs_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std, persistent=False)

    @classmethod
    def from_config(cls, data_shape, config) -> "GaussianLikelihood":
        return cls(data_shape, obs_std=config.obs_std, learn_obs_std=config.learn_obs_std,
                   min_obs_var=config.min_obs_var)

    @property
    def scale(self) -> torch.Tensor:
        """The standard deviation in use, floor included (a 0-d tensor)."""
        if isinstance(self.log_std, nn.Parameter):
            return torch.sqrt(torch.exp(2 * self.log_std.float()) + self.min_obs_var)
        return torch.exp(self.log_std.float())

    def forward(self, loc: torch.Tensor) -> Distribution:
        loc = loc.float()
        return Independent(Normal(loc, self.scale, validate_args=False),  # scale broadcasts
                           self.event_ndims, validate_args=False)


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(GaussianLikelihood):
    """Laplace around the decoder's output: an L1 reconstruction loss, robust to outliers.

    One scale for all dimensions, fixed at ``obs_std`` or learned like the gaussian's.
    """

    def forward(self, loc: torch.Tensor) -> Distribution:
        loc = loc.float()
        return Independent(Laplace(loc, self.scale, validate_args=False), self.event_ndims,
                           validate_args=False)


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """The normalised density for data in [0, 1] (Loaiza-Ganem & Cunningham 2019).

    The Bernoulli "likelihood" of grey pixels is not a density; this one is, so its log p(x)
    compares with other densities. Its mean, not its logits' sigmoid, is what samples show.
    """

    def forward(self, logits: torch.Tensor) -> Distribution:
        return Independent(ContinuousBernoulli(logits=logits.float(), validate_args=False),
                           self.event_ndims, validate_args=False)

    check_data = BernoulliLikelihood.check_data
