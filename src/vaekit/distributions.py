"""Shared distribution objects for the posterior, prior and likelihood families.

Each family is a small ``nn.Module`` (:mod:`vaekit.posteriors`, :mod:`vaekit.priors`,
:mod:`vaekit.likelihoods`) that turns raw network outputs into a distribution whose event covers
one whole example, so ``log_prob`` is already summed over the data (or latent) dimensions and
stays per example (design.md, rules 2 and 3).
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal

class DiagonalNormal(Independent):
    """Normal with diagonal covariance over the last dimension; ``rsample`` takes a generator.

    torch.distributions draws from the global RNG; passing a ``torch.Generator`` keeps
    training reproducible and resumable, and lets distributed ranks share noise.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def rsample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None):
        """``loc + eps * scale`` with ``eps ~ N(0, I)`` drawn from ``generator``, or given as ``noise``.

        Given noise lets distributed ranks use slices of one global draw, so training does not
        depend on the number of processes.
        """
        base = self.base_dist
        if noise is None:
            shape = self._extended_shape(torch.Size(sample_shape))
            noise = torch.randn(shape, generator=generator, dtype=base.loc.dtype, device=base.loc.device)
        return base.loc + noise * base.scale  # reparameterization trick, Kingma & Welling 2013
