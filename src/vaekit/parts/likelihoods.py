"""Likelihood families p(x|z): decoder outputs -> a distribution over one whole example."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (Bernoulli, ContinuousBernoulli, Distribution, Independent,
                                 Laplace, Normal)

from .distributions import full_precision
from vaekit.errors import ConfigError, DataError
from vaekit.registry import Registry

LIKELIHOODS: Registry[type] = Registry("likelihood")


def require_unit_interval(x: torch.Tensor, what: str, needs: str) -> None:
    """DataError unless every value of ``x`` lies in [0, 1]; ``needs`` says why and what to do.

    ``x`` is a tensor or rows streamed from disk; both have ``aminmax`` (one pass over the data).
    """
    lo, hi = (float(v) for v in x.aminmax())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{what}: values span [{lo:g}, {hi:g}] but {needs} or use --likelihood gaussian")


class Likelihood(nn.Module):
    """p(x|z) family: ``forward(decoder_output) -> Distribution`` over one whole example.

    ``params_per_dim`` is the number of decoder channels per data channel; a family whose
    count depends on its options sets it per instance in ``__init__``, so read it from the
    instance. ``real_valued`` families (support all reals) accept standardized data
    (:mod:`vaekit.parts.preprocess`); the others need data in [0, 1].
    """

    params_per_dim: int = 1
    real_valued: bool = False  # a density on all reals: raw data may be standardized for it

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_ndims = len(data_shape)

    @classmethod
    def from_config(cls, data_shape: tuple[int, ...], config) -> "Likelihood":
        """Build from a :class:`vaekit.config.settings.ModelConfig`, taking the options this family uses."""
        return cls(data_shape)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """Raise DataError if ``x`` lies outside this likelihood's support."""

    # -- the encoder's view of the data: the one hook for data the encoder cannot eat as is --
    def feature_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example as the encoder sees it (:meth:`features`): the data's own."""
        return tuple(data_shape)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input for (preprocessed) data ``x``: ``x`` itself for every family but
        one whose data hold codes or missing cells (:class:`vaekit.parts.tables.TableLikelihood`)."""
        return x

    def discrete(self, x: torch.Tensor) -> bool:
        """Whether ``log_prob(x)`` is the log-probability of discrete values (so bits/dim make sense).

        Parameters
        ----------
        x : torch.Tensor
            Data ``(batch, *data_shape)`` that passed :meth:`check_data`.
        """
        return False


class IndependentBernoulli(Independent):
    """Bernoulli over a whole example whose ``log_prob`` broadcasts ``value`` without copying it.

    ``log p(x) = sum_d x_d * l_d - softplus(l_d)``: the same number as ``-BCE_with_logits``
    (stable for any logit), in two passes over the logits; ``x`` of shape ``(batch, ...)`` meets
    logits of shape ``(samples, batch, ...)`` by broadcasting, as importance sampling needs.
    """

    def __init__(self, logits: torch.Tensor, event_ndims: int) -> None:
        base = Bernoulli.__new__(Bernoulli)  # Bernoulli(logits=logits) without broadcast_all
        base.logits = base._param = logits
        Distribution.__init__(base, logits.shape, validate_args=False)
        super().__init__(base, event_ndims, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        nll = torch.addcmul(F.softplus(logits), logits, value, value=-1)  # elementwise -log p
        return -nll.flatten(-self.reinterpreted_batch_ndims).sum(-1)


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Bernoulli from logits (the reference's sigmoid decoder, without its unstable log)."""

    def forward(self, logits: torch.Tensor) -> Distribution:
        return IndependentBernoulli(full_precision(logits), self.event_ndims)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        require_unit_interval(x, what, "the bernoulli likelihood needs data in [0, 1]; rescale "
                                       "the data to [0, 1]")

    def discrete(self, x: torch.Tensor) -> bool:
        """True for binary data: then ``log_prob`` is a probability mass, not a pseudo-likelihood."""
        return bool(((x == 0) | (x == 1)).all())


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Gaussian around the decoder's mean with one standard deviation for all dimensions.

    Fixed at ``obs_std``, or learned (``learn_obs_std``, starting at ``obs_std``) with its
    variance floored at ``min_obs_var`` so that it cannot collapse to zero
    (Shu 2018, "Density estimation: VAEs", "Lower bounding the generative model variance").
    """

    real_valued = True

    def __init__(self, data_shape: tuple[int, ...], obs_std: float = 1.0,
                 learn_obs_std: bool = False, min_obs_var: float = 1e-6) -> None:
        super().__init__(data_shape)
        self.min_obs_var = min_obs_var
        self.obs_std = obs_std  # exact, for float64 evaluation of a fixed scale
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
            return torch.sqrt(torch.exp(2 * full_precision(self.log_std)) + self.min_obs_var)
        if self.log_std.dtype == torch.float64:  # the float32 buffer rounded the value
            return torch.tensor(self.obs_std, dtype=torch.float64, device=self.log_std.device)
        return torch.exp(full_precision(self.log_std))

    def forward(self, loc: torch.Tensor) -> Distribution:
        loc = full_precision(loc)
        return Independent(Normal(loc, self.scale, validate_args=False),  # scale broadcasts
                           self.event_ndims, validate_args=False)


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(GaussianLikelihood):
    """Laplace around the decoder's output: an L1 reconstruction loss, robust to outliers.

    One scale for all dimensions, fixed at ``obs_std`` or learned like the gaussian's.
    """

    def forward(self, loc: torch.Tensor) -> Distribution:
        loc = full_precision(loc)
        return Independent(Laplace(loc, self.scale, validate_args=False), self.event_ndims,
                           validate_args=False)


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """The normalised density for data in [0, 1] (Loaiza-Ganem & Cunningham 2019).

    The Bernoulli "likelihood" of grey pixels is not a density; this one is, so its log p(x)
    compares with other densities. Its mean, not its logits' sigmoid, is what samples show.
    """

    def forward(self, logits: torch.Tensor) -> Distribution:
        return Independent(ContinuousBernoulli(logits=full_precision(logits), validate_args=False),
                           self.event_ndims, validate_args=False)

    check_data = BernoulliLikelihood.check_data


@LIKELIHOODS.register("gaussian-predicted")
class PredictedGaussianLikelihood(Likelihood):
    """Gaussian whose mean and per-dimension variance both come from the decoder.

    The decoder's first ``C`` channels (or ``d`` features) are the mean, the next ``C`` the raw
    log-variance; the variance is ``exp(raw) + min_obs_var``, floored so that the density cannot
    grow without bound when the mean fits the data (Shu 2018, "Density estimation: VAEs", "Lower bounding
    the Generative Model Variance").

    Parameters
    ----------
    data_shape : tuple of int
        Shape of one example.
    min_obs_var : float
        Variance floor; must be positive for the density to stay bounded.
    """

    params_per_dim = 2
    real_valued = True

    def __init__(self, data_shape: tuple[int, ...], min_obs_var: float = 1e-6) -> None:
        super().__init__(data_shape)
        self.min_obs_var = min_obs_var

    @classmethod
    def from_config(cls, data_shape, config) -> "PredictedGaussianLikelihood":
        return cls(data_shape, min_obs_var=config.min_obs_var)

    def forward(self, params: torch.Tensor) -> Distribution:
        """``params`` ``(..., 2C, H, W)`` or ``(..., 2d)`` -> Gaussian over ``(..., C, H, W)``."""
        # split the channel (or feature) axis, wherever leading sample dims put it
        loc, raw = full_precision(params).chunk(2, dim=-self.event_ndims)
        scale = torch.sqrt(torch.exp(raw) + self.min_obs_var)
        return Independent(Normal(loc, scale, validate_args=False), self.event_ndims,
                           validate_args=False)


BINS = 255  # 8-bit data: values k / 255, k = 0..255
MIN_LOG_SCALE = -7.0 - math.log(2.0)  # PixelCNN++'s floor of -7 on [-1, 1], in [0, 1] units


def discretized_logistic_log_prob(x: torch.Tensor, loc: torch.Tensor,
                                  log_scale: torch.Tensor) -> torch.Tensor:
    """log P(value == x) for a logistic discretised to the bins ``[x - 0.5/255, x + 0.5/255]``.

    Elementwise (broadcasting); ``x`` holds values ``k / 255`` in [0, 1]. The end bins take the
    tails: P(0) = CDF(0.5/255) and P(1) = 1 - CDF(1 - 0.5/255) (Salimans et al. 2017, PixelCNN++).
    """
    half = 0.5 / BINS
    inv_scale = torch.exp(-log_scale)
    centred = x - loc
    upper, lower = inv_scale * (centred + half), inv_scale * (centred - half)
    # log(sigmoid(a) - sigmoid(b)) for a > b, taken on the side of the mean where both
    # sigmoids are small (sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a)), so far tails
    # keep full relative precision; then log(s_a - s_b) = log s_a + log(1 - exp(log s_b - log s_a)).
    right = centred > 0
    a = torch.where(right, -lower, upper)
    b = torch.where(right, -upper, lower)
    log_a = F.logsigmoid(a)
    tiny = torch.finfo(log_a.dtype).tiny  # the clamp keeps log and its gradient finite
    log_bin = log_a + torch.log(torch.clamp(-torch.expm1(F.logsigmoid(b) - log_a), min=tiny))
    # a bin of width w (in scale units) much narrower than the scale cancels in the line above
    # (relative error ~ eps / w); there the density at the centre x width (error ~ w^2) is
    # better, and the two errors meet near w = eps^(1/3): 5e-3 in float32, 6e-6 in float64
    mid = inv_scale * centred
    log_mid = mid - log_scale - 2.0 * F.softplus(mid) - math.log(BINS)
    narrow = inv_scale / BINS < torch.finfo(log_a.dtype).eps ** (1 / 3)
    log_bin = torch.where(narrow, log_mid, log_bin)
    log_bin = torch.where(x < half, F.logsigmoid(upper), log_bin)  # value 0: (-inf, 0.5/255]
    return torch.where(x > 1 - half, F.logsigmoid(-lower), log_bin)  # value 1: [1 - 0.5/255, inf)


class DiscretizedLogisticMixture(Distribution):
    """Independent discretised logistic mixtures, one per sub-pixel, over one whole example.

    Parameters
    ----------
    logits, loc, log_scale : torch.Tensor
        ``(*batch, K, *event)``: mixture logits, means in data units ([0, 1]) and log-scales
        (already floored) of the ``K`` components of each sub-pixel.
    event_ndims : int
        Number of trailing data dimensions.
    """

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                 event_ndims: int) -> None:
        self.logits, self.loc, self.log_scale = logits, loc, log_scale
        self.component_dim = -event_ndims - 1
        super().__init__(loc.shape[:self.component_dim], loc.shape[self.component_dim + 1:],
                         validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Discrete log-probability of ``value`` ``(*batch, *event)``, summed over the event.

        ``value`` broadcasts against the batch: ``(b, ...)`` data meet ``(s, b, ...)`` parameters.
        """
        x = torch.round(value.to(self.loc.dtype) * BINS) / BINS  # the bin centre, on the 8-bit grid
        x = x.unsqueeze(self.component_dim)
        log_components = discretized_logistic_log_prob(x, self.loc, self.log_scale)
        log_weights = F.log_softmax(self.logits, dim=self.component_dim)
        log_p = torch.logsumexp(log_weights + log_components, dim=self.component_dim)
        return log_p.flatten(-len(self.event_shape)).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """The mixture's mean, clamped to [0, 1]: what reconstructions and samples show."""
        weights = torch.softmax(self.logits, dim=self.component_dim)
        return (weights * self.loc).sum(self.component_dim).clamp(0.0, 1.0)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """8-bit values ``k / 255`` drawn from the mixture, shape ``(*sample_shape, *batch, *event)``."""
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            u = torch.rand(shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
            gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
            k = torch.argmax(self.logits + gumbel, dim=self.component_dim, keepdim=True)  # Gumbel-max
            loc = torch.gather(self.loc.expand(shape), self.component_dim, k)
            scale = torch.gather(self.log_scale.expand(shape), self.component_dim, k).exp()
            v = torch.rand(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
            v = v.clamp(1e-7, 1 - 1e-7)
            y = loc + scale * (torch.log(v) - torch.log1p(-v))  # inverse logistic CDF
            return (torch.round(y.squeeze(self.component_dim) * BINS) / BINS).clamp(0.0, 1.0)


@LIKELIHOODS.register("logistic-mixture")
class LogisticMixtureLikelihood(Likelihood):
    """Discretised mixture of logistics for 8-bit data (Salimans et al. 2017, PixelCNN++).

    Each sub-pixel (channel of a pixel, or feature) is independent given z, with ``K``
    logistic components binned to the 256 values ``k / 255``. Everything stays in the data's
    [0, 1] units (PixelCNN++ maps to [-1, 1]; the probabilities are the same): bins are
    ``x +- 0.5/255``, and the end bins reach to -inf and +inf. ``log_prob`` is a discrete
    log-probability, so ``-log_prob / (D ln 2)`` is bits/dim as the literature reports it.

    The decoder gives ``3K`` channels per data channel, in three blocks of ``K * C``: mixture
    logits, means and raw log-scales, each ordered (component, channel). Log-scales are
    floored at :data:`MIN_LOG_SCALE` as in PixelCNN++.

    Parameters
    ----------
    data_shape : tuple of int
        Shape of one example.
    mixtures : int
        Components per sub-pixel, ``K``.
    """

    def __init__(self, data_shape: tuple[int, ...], mixtures: int = 5) -> None:
        super().__init__(data_shape)
        if mixtures < 1:
            raise ConfigError(f"--mixtures must be a positive number of components, got {mixtures}")
        self.mixtures = mixtures
        self.channels = data_shape[0]
        self.params_per_dim = 3 * mixtures

    @classmethod
    def from_config(cls, data_shape, config) -> "LogisticMixtureLikelihood":
        return cls(data_shape, mixtures=config.mixtures)

    def forward(self, params: torch.Tensor) -> Distribution:
        """``params`` ``(..., 3K*C, H, W)`` or ``(..., 3K*d)`` -> mixture over ``(..., C, H, W)``."""
        dim = -self.event_ndims
        # (..., 3K*C, ...) -> (..., 3, K, C, ...): block, component, channel
        parts = full_precision(params).unflatten(dim, (3, self.mixtures, self.channels))
        logits, loc, raw_log_scale = parts.unbind(dim - 2)
        return DiscretizedLogisticMixture(logits, loc, raw_log_scale.clamp(min=MIN_LOG_SCALE),
                                          self.event_ndims)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        require_unit_interval(x, what, "the logistic-mixture likelihood needs 8-bit data scaled "
                                       "to [0, 1] (values k/255); rescale it")
        for start in range(0, len(x), 4096):  # in chunks: no full-size temporary
            rows = x[start: start + 4096]
            off = (rows - torch.round(rows * BINS) / BINS).abs()
            if float(off.max()) > 1e-4:
                bad = float(rows.flatten()[off.flatten().argmax()])
                raise DataError(
                    f"{what}: the logistic-mixture likelihood needs 8-bit data (values k/255 in "
                    f"[0, 1]) but found {bad:.6g}; use --likelihood gaussian for continuous data")

    def discrete(self, x: torch.Tensor) -> bool:
        """Always True: ``log_prob`` is the probability of the 8-bit values."""
        return True
