"""``build_model``: the model a configuration describes (kept apart from model.py, so that the
ladder VAE and M2 can subclass :class:`~vaekit.model.VAEModel` without an import cycle)."""

from __future__ import annotations

from .config import ModelConfig
from .hierarchy import LadderVAE
from .model import VAEModel
from .semisup import SemiSupervisedVAE
from .stack import StackedVAE


def build_model(config: ModelConfig, data_shape: tuple[int, ...]) -> VAEModel:
    """The model ``config`` describes: a :class:`VAEModel`, a ladder VAE with upper layers, or
    the semi-supervised M2, each possibly stacked on a frozen VAE."""
    if config.stack:
        return StackedVAE(config, data_shape)
    if config.semi_supervised:
        return SemiSupervisedVAE(config, data_shape)
    if config.top_latent_dims:
        return LadderVAE(config, data_shape)
    return VAEModel(config, data_shape)
