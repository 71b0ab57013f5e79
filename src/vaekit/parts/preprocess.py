"""Preprocessing that is part of the model: fitted on the training split, saved with the weights.

A preprocessor maps raw data ``x`` to model units ``u = f(x)`` before the encoder and before
the likelihood, and maps the decoder's distribution back to raw units, so callers only ever see
the user's units. For the affine maps here, ``u = (x - loc) / scale`` per feature, the change of
variables gives the raw density

    log p_x(x) = log p_u((x - loc) / scale) - sum_d log scale_d,

so every density number (ELBO, IWAE, log p(x), bits/dim) carries the log-Jacobian, and means
and samples come back as ``loc + scale * u``. ``loc`` and ``scale`` are persistent buffers of
the data shape: they travel in ``model.safetensors`` and checkpoints with the weights.

A preprocessor is chosen by name (``PREPROCESSORS``); ``none`` is the identity and adds no
tensors, so models without preprocessing keep their exact state dict and numbers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.errors import DataError
from vaekit.registry import Registry

PREPROCESSORS: Registry[type] = Registry("preprocess")
FIT_CHUNK_ROWS = 8192  # rows per pass of the float64 moment sums: no full-size float64 copy
CONSTANT_TOL = 10 * torch.finfo(torch.float32).eps  # relative spread below which a column is constant


class Preprocess(nn.Module):
    """The identity; subclasses map raw data to model units and back.

    Parameters
    ----------
    data_shape : tuple of int
        Shape of one example.
    """

    identity = True

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has set the statistics (always True for the identity)."""
        return True

    def fit(self, x: torch.Tensor) -> "Preprocess":
        """Set the statistics from the training rows ``x`` ``(n, *data_shape)``; returns self."""
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw data ``(..., *data_shape)`` -> model units."""
        return x

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """Model units ``(..., *data_shape)`` -> raw data."""
        return u

    def wrap(self, dist: Distribution) -> Distribution:
        """A distribution over one example in model units -> the same law in raw units."""
        return dist

    def describe(self) -> str:
        """One line for logs and reports."""
        return "none"


PREPROCESSORS.register("none")(Preprocess)


class AffineDistribution(Distribution):
    """The law of ``loc + scale * U`` for ``U ~ base``, a distribution over one whole example.

    ``log_prob(x) = base.log_prob((x - loc) / scale) - log_scale_sum``. ``x`` of shape
    ``(b, *event)`` meets a base of batch shape ``(k, b)`` by broadcasting: the data are mapped
    once, ``(b, *event)``, never copied per sample (importance sampling relies on it).

    Parameters
    ----------
    base : Distribution
        Batch shape ``(*batch)``, event shape ``event``.
    loc, scale : torch.Tensor
        ``event``-shaped (broadcast over the batch).
    log_scale_sum : torch.Tensor
        ``sum(log scale)``, a 0-d tensor (precomputed: it is the same for every example).
    """

    arg_constraints: dict = {}

    def __init__(self, base: Distribution, loc: torch.Tensor, scale: torch.Tensor,
                 log_scale_sum: torch.Tensor) -> None:
        self.base, self.loc, self.scale, self.log_scale_sum = base, loc, scale, log_scale_sum
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        u = (value.to(self.loc.dtype) - self.loc) / self.scale  # (b, *event): once, not per sample
        return self.base.log_prob(u) - self.log_scale_sum

    @property
    def mean(self) -> torch.Tensor:
        return self.loc + self.scale * self.base.mean

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.square() * self.base.variance

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.loc + self.scale * self.base.sample(sample_shape)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.loc + self.scale * self.base.rsample(sample_shape)


class AffinePreprocess(Preprocess):
    """``u = (x - loc) / scale`` per feature, with ``loc`` and ``scale`` fitted on training data.

    ``loc``, ``scale`` and ``fitted_rows`` (the rows they were fitted on; 0 before
    :meth:`fit`) are persistent buffers. Subclasses choose ``scale`` from the per-feature
    mean and variance in :meth:`choose_scale`.
    """

    identity = False

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__(data_shape)
        self.register_buffer("loc", torch.zeros(self.data_shape))
        self.register_buffer("scale", torch.ones(self.data_shape))
        self.register_buffer("fitted_rows", torch.zeros((), dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return bool(self.fitted_rows > 0)

    @torch.no_grad()
    def fit(self, x) -> "AffinePreprocess":
        """Per-feature mean and variance of ``x`` ``(n, *data_shape)``, in float64.

        ``x`` may be a tensor or anything that gives tensors for row slices (a memory-mapped
        source); it is read in chunks. Raises DataError for no rows or a wrong shape.
        """
        n = len(x)
        if n == 0:
            raise DataError("cannot fit the preprocessing on no training rows")
        total = torch.zeros(self.data_shape, dtype=torch.float64)
        shift = None  # the first row: sums of (x - shift) keep the variance exact for large means
        sq = torch.zeros(self.data_shape, dtype=torch.float64)
        for start in range(0, n, FIT_CHUNK_ROWS):
            rows = torch.as_tensor(x[start: start + FIT_CHUNK_ROWS]).to("cpu", torch.float64)
            if tuple(rows.shape[1:]) != self.data_shape:
                raise DataError(f"preprocessing expects rows of shape {self.data_shape}, got "
                                f"{tuple(rows.shape[1:])}")
            shift = rows[0].clone() if shift is None else shift
            d = rows - shift
            total += d.sum(0)
            sq += d.square().sum(0)
        mean_d = total / n
        var = (sq / n - mean_d.square()).clamp(min=0.0)  # population variance, as StandardScaler
        mean = shift + mean_d
        scale = self.choose_scale(mean, var)
        self.loc.copy_(mean.to(self.loc.dtype))
        self.scale.copy_(scale.to(self.scale.dtype))
        self.fitted_rows.fill_(n)
        return self

    def choose_scale(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) / self.scale

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * u

    def wrap(self, dist: Distribution) -> Distribution:
        return AffineDistribution(dist, self.loc, self.scale, self.scale.log().sum())

    def describe(self) -> str:
        s = self.scale.flatten()
        return (f"{self.name}: loc in [{float(self.loc.min()):.4g}, {float(self.loc.max()):.4g}], "
                f"scale in [{float(s.min()):.4g}, {float(s.max()):.4g}]")


@PREPROCESSORS.register("standardize")
class Standardize(AffinePreprocess):
    """Each feature to mean 0 and standard deviation 1 on the training split.

    A feature that is constant there (standard deviation 0, or below float32 resolution
    relative to its mean) keeps scale 1, as scikit-learn's ``StandardScaler`` does: it is only
    centred, so it neither divides by zero nor makes its log-Jacobian explode, and a different
    value at test time stays finite.
    """

    name = "standardize"

    def choose_scale(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        std = var.sqrt()
        constant = (std == 0) | (std < CONSTANT_TOL * mean.abs())
        return torch.where(constant, torch.ones_like(std), std)


@PREPROCESSORS.register("standardize-shared")
class SharedStandardize(AffinePreprocess):
    """Each feature centred, all divided by one scale: the root mean variance of the features.

    An isotropic likelihood (one standard deviation for all features) stays isotropic in raw
    units, so the model family is the one asked for: a linear VAE with a learned global
    standard deviation is still exactly probabilistic PCA of the raw data (Tipping & Bishop
    1999), which per-feature scaling would change. Scale 1 if every feature is constant.
    """

    name = "standardize-shared"

    def choose_scale(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        rms = var.mean().sqrt()
        constant = (rms == 0) | (rms < CONSTANT_TOL * mean.abs().mean())
        return torch.ones_like(var) if constant else rms.expand_as(var).clone()


def build_preprocess(name: str, data_shape: tuple[int, ...]) -> Preprocess:
    """The preprocessor registered as ``name`` for examples of ``data_shape``."""
    return PREPROCESSORS[name](data_shape)
