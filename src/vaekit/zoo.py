"""``build_model``: the model a configuration describes (kept apart from model.py, so that the
ladder VAE, M2 and the VAE-GAN can subclass :class:`~vaekit.model.VAEModel` without an import
cycle)."""

from __future__ import annotations

from .config import ModelConfig
from .hierarchy import LadderVAE
from .model import VAEModel
from .semisup import SemiSupervisedVAE
from .stack import StackedVAE
from .vaegan import VAEGAN

# Objectives whose model has more parts than the VAE: the VAE-GAN's discriminator.
OBJECTIVE_MODELS: dict[str, type[VAEModel]] = {"vaegan": VAEGAN}


def build_model(config: ModelConfig, data_shape: tuple[int, ...], objective: str = "elbo") -> VAEModel:
    """The model ``config`` describes for training ``objective``: a :class:`VAEModel`, a ladder
    VAE with upper layers, the semi-supervised M2 (possibly stacked on a frozen VAE), or a
    :class:`~vaekit.vaegan.VAEGAN` for ``objective='vaegan'``."""
    if objective in OBJECTIVE_MODELS:
        return OBJECTIVE_MODELS[objective](config, data_shape)
    if config.stack:
        return StackedVAE(config, data_shape)
    if config.semi_supervised:
        return SemiSupervisedVAE(config, data_shape)
    if config.top_latent_dims:
        return LadderVAE(config, data_shape)
    return VAEModel(config, data_shape)
