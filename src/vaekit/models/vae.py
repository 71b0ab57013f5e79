"""The VAE as a composition: encoder body, posterior family, prior, decoder body, likelihood.

Every objective and estimator works from one primitive, :meth:`VAEModel.terms`: ``k``
reparameterized codes per example with ``log p(x|z)``, the KL term (closed form where it
exists) and, when asked, the log importance ratio ``log p(z) - log q(z|x)``. The ELBO, the
IWAE bound and importance-sampled log-likelihoods are functions of these numbers, so a new
posterior, prior or model (:class:`vaekit.models.ladder.LadderVAE`) gets all of them at once.

Preprocessing (:mod:`vaekit.parts.preprocess`) is part of the model: ``encode`` takes raw data and
``decode`` returns a distribution in raw units (its ``log_prob`` includes the log-Jacobian), so
every density and every decoded output is in the user's units without the caller knowing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, kl_divergence

from vaekit.config.settings import ModelConfig
from vaekit.errors import DataError
from vaekit.parts.likelihoods import LIKELIHOODS
from vaekit.parts.nets import BODIES
from vaekit.parts.objectives import LossTerms, objective
from vaekit.parts.posteriors import POSTERIORS
from vaekit.parts.preprocess import build_preprocess
from vaekit.parts.priors import PRIORS


class SampleTerms(NamedTuple):
    """Per-sample terms of ``k`` codes for each of ``b`` examples, in nats.

    ``log_px`` is ``(k, b)``. ``kl`` is ``(k, b)``: KL(q || p) in closed form where it exists
    (then equal across samples, or given the sampled upper layers of a hierarchy), else its
    one-sample Monte Carlo estimate ``log q(z|x) - log p(z)``. ``kl_dims`` is ``(k, b, latent)``
    when the KL factorises over latent dimensions, else None. ``log_ratio`` is
    ``log p(z) - log q(z|x)``, ``(k, b)``, when asked for (importance weights), else None.
    """

    log_px: torch.Tensor
    kl: torch.Tensor
    kl_dims: torch.Tensor | None
    log_ratio: torch.Tensor | None


class VAEModel(nn.Module):
    """A variational autoencoder built from named parts.

    Parameters
    ----------
    config : ModelConfig
        Names of the parts and their sizes.
    data_shape : tuple of int
        Shape of one example: ``(d,)`` or ``(C, H, W)``.
    """

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.data_shape = tuple(data_shape)
        self.cond_dim = config.num_classes if config.conditional else 0
        self.body = BODIES[config.arch](self.data_shape, config.hidden)
        self.likelihood = LIKELIHOODS[config.likelihood].from_config(self.data_shape, config)
        self.body.in_shape = self.likelihood.feature_shape(self.data_shape)
        self.preprocess = build_preprocess(config.preprocess, self.data_shape)
        self.build_latent(config)
        self.decoder = self.body.decoder(self.decoder_in_dim + self.cond_dim,
                                         self.likelihood.params_per_dim)

    def build_latent(self, config: ModelConfig) -> None:
        """Encoder, posterior and prior of a single stochastic layer (the combination of parts
        is checked by ``ModelConfig.validate``)."""
        posterior_cls = POSTERIORS[config.posterior]
        self.latent_dim = self.decoder_in_dim = config.latent_dim
        self.posterior = posterior_cls(config.latent_dim, min_var=config.min_var)
        self.prior_dist = PRIORS[config.prior].from_config(config.latent_dim, self.data_shape, config)
        self.encoder = self.body.encoder(posterior_cls.param_dim(config.latent_dim), self.cond_dim)

    # -- conditioning ----------------------------------------------------------------------
    def condition(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """One-hot labels ``(n, num_classes)`` for a conditional model, else None."""
        if not self.cond_dim:
            return None
        if y is None:
            raise DataError("this model is conditional (--conditional): it needs labels with its "
                            "data (--label for sampling)")
        y = torch.as_tensor(y, device=self.device).long().reshape(-1)
        if len(y) == 1 and n != 1:
            y = y.expand(n)
        if len(y) != n or y.min() < 0 or y.max() >= self.cond_dim:
            raise DataError(f"labels must be {n} integers in 0..{self.cond_dim - 1}")
        return F.one_hot(y, self.cond_dim).float()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- the parts -------------------------------------------------------------------------
    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads for a raw batch: the preprocessed data, mapped by the
        likelihood's :meth:`~vaekit.parts.likelihoods.Likelihood.features` (the data themselves
        except for a table: standardized numbers, one-hot levels, missing-cell indicators)."""
        return self.likelihood.features(self.preprocess(x))

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x) (q(z|x,y) when conditional) for a raw batch ``(batch, *data_shape)``."""
        return self.posterior(self.encoder(self.inputs(x), self.condition(y, len(x))))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) (p(x|z,y)) in raw units for codes ``(..., batch, latent_dim)``."""
        return self.observe(self.decoder_params(z, self.condition(y, z.shape[-2])))

    def observe(self, params: torch.Tensor) -> Distribution:
        """Decoder output -> the likelihood in raw units (preprocessing inverted, log-Jacobian in)."""
        return self.preprocess.wrap(self.likelihood(params))

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """Raise DataError if raw data ``x`` lie outside the likelihood's support.

        Also refuses a model whose preprocessing was never fitted (``model.preprocess.fit``).
        """
        if not self.preprocess.fitted:
            raise RuntimeError("the model's preprocessing is not fitted: call "
                               "model.preprocess.fit(x_train) on the training split first")
        self.likelihood.check_data(x, what)

    def discrete(self, x: torch.Tensor) -> bool:
        """Whether ``decode(z).log_prob(x)`` is a probability of discrete values (bits/dim apply)."""
        return self.preprocess.identity and self.likelihood.discrete(x)

    def decoder_params(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Decoder output for codes with any leading sample dimensions: ``(..., b, params...)``."""
        if c is not None:
            z = torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], -1)
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, z.shape[-1])).unflatten(0, lead)

    def prior(self) -> Distribution:
        """p(z)."""
        return self.prior_dist(self.encode_pseudo)

    def encode_pseudo(self, u: torch.Tensor) -> Distribution:
        """The posterior of pseudo-inputs (for the VampPrior), which live in model units."""
        return self.posterior(self.encoder(u))

    @property
    def analytic_kl(self) -> bool:
        """Whether KL(q || p) has a closed form: the prior's and the posterior's say (a flow
        posterior has none)."""
        return self.prior_dist.analytic_kl and getattr(getattr(self, "posterior", None), "analytic_kl", True)

    @property
    def kl_estimator(self) -> str:
        """``analytic`` when the KL term is in closed form, else ``monte-carlo``."""
        return "analytic" if self.analytic_kl else "monte-carlo"

    @property
    def noise_dim(self) -> int:
        """Standard-normal numbers one code needs (the trainer draws them for all processes)."""
        return self.latent_dim

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes from p(z), ``(n, latent_dim)``."""
        return self.prior_dist.sample(n, generator, self.encode_pseudo)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means of ``n`` draws from the prior (given labels ``y`` when conditional)."""
        return self.decode(self.sample_prior(n, generator), y).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means at the posterior means: ``(b, *data_shape)``."""
        return self.decode(self.encode(x, y).mean, y).mean

    def epoch_metrics(self) -> dict[str, Any]:
        """Numbers of the training epoch just ended that this kind keeps itself, for its row in
        ``metrics.jsonl`` (a VQ-VAE's codebook usage); called once per epoch, after its steps."""
        return {}

    # -- the primitive every objective uses ----------------------------------------------------
    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """The deterministic part of inference, reusable across sample chunks: here q(z|x)."""
        return self.encode(x, y)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
              weights: bool = False, state: Any = None,
              prior: Distribution | None = None) -> SampleTerms:
        """``k`` codes per example and their terms; see :class:`SampleTerms`.

        Parameters
        ----------
        x : torch.Tensor
            ``(b, *data_shape)``.
        y : torch.Tensor, optional
            Labels ``(b,)`` for a conditional model.
        k : int
            Codes per example.
        generator : torch.Generator, optional
            Source of the noise; or give ``noise`` itself, ``(k, b, noise_dim)``.
        weights : bool
            Also return ``log_ratio`` (needed by IWAE and importance sampling).
        state : optional
            What :meth:`infer` returned for ``x``, to skip the encoder.
        prior : Distribution, optional
            What :meth:`prior` returned, to skip rebuilding it (the vamp prior encodes its
            pseudo-inputs); only valid while the parameters do not change.
        """
        qz = self.infer(x, y) if state is None else state
        z = qz.rsample((k,), generator=generator, noise=noise)  # (k, b, latent)
        log_px = self.decode(z, y).log_prob(x)  # x broadcast over samples: (k, b)
        return SampleTerms(log_px, *self.kl_terms(qz, z, prior, weights))

    def kl_terms(self, qz: Distribution, z: torch.Tensor, prior: Distribution | None = None,
                 weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``kl``, ``kl_dims`` and ``log_ratio`` of :class:`SampleTerms` for codes ``z``
        ``(k, b, latent)`` drawn from ``qz``; arguments as :meth:`terms`."""
        k = z.shape[0]
        pz = self.prior() if prior is None else prior
        log_ratio = pz.log_prob(z) - qz.log_prob(z) if weights or not self.analytic_kl else None
        kl_dims = None
        if not self.analytic_kl:
            kl = -log_ratio
        elif isinstance(qz, Independent) and isinstance(pz, Independent):
            kl_dims = kl_divergence(qz.base_dist, pz.base_dist).expand(k, *qz.batch_shape, -1)
            kl = kl_dims.sum(-1)
        else:
            kl = kl_divergence(qz, pz).expand(k, -1)
        return kl, kl_dims, log_ratio

    def forward(self, x: torch.Tensor, beta: float = 1.0,
                generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, y: torch.Tensor | None = None,
                name: str = "elbo", k: int = 1) -> LossTerms:
        """Per-example loss terms of objective ``name`` (see :mod:`vaekit.parts.objectives`)."""
        return objective(name)(self, x, beta, generator, noise, y, k)
