"""``build_model``: the model a configuration describes (kept apart from model.py, so that the
ladder VAE can subclass :class:`~vaekit.model.VAEModel` without an import cycle)."""

from __future__ import annotations

from .config import ModelConfig
from .hierarchy import LadderVAE
from .model import VAEModel


def build_model(config: ModelConfig, data_shape: tuple[int, ...]) -> VAEModel:
    """The model ``config`` describes: a :class:`VAEModel`, or a ladder VAE with upper layers."""
    if config.top_latent_dims:
        return LadderVAE(config, data_shape)
    return VAEModel(config, data_shape)
