"""``build_model``: the model a configuration describes, and the training step a model kind
brings of its own. Every model kind is one module of this package and a row here."""

from __future__ import annotations

from vaekit.config.settings import ModelConfig
from .ladder import LadderVAE
from .vae import VAEModel
from .semisup import SemiSupervisedVAE
from .stacked import StackedVAE
from .vaegan import VAEGAN
from .vaegan_update import AdversarialUpdate

# Objectives whose model has more parts than the VAE: the VAE-GAN's discriminator.
OBJECTIVE_MODELS: dict[str, type[VAEModel]] = {"vaegan": VAEGAN}
# Models with a training step of their own, which the trainer runs instead of its plain step:
# the class of that update, built as ``update(model, trainer)``.
UPDATES: dict[type, type] = {VAEGAN: AdversarialUpdate}


def own_update(model, trainer):
    """The training step ``model`` brings (its row in :data:`UPDATES`), or None for the plain step."""
    update = UPDATES.get(type(model))
    return None if update is None else update(model, trainer)


def build_model(config: ModelConfig, data_shape: tuple[int, ...], objective: str = "elbo") -> VAEModel:
    """The model ``config`` describes for training ``objective``: a :class:`VAEModel`, a ladder
    VAE with upper layers, the semi-supervised M2 (possibly stacked on a frozen VAE), or a
    :class:`~vaekit.models.vaegan.VAEGAN` for ``objective='vaegan'``."""
    if objective in OBJECTIVE_MODELS:
        return OBJECTIVE_MODELS[objective](config, data_shape)
    if config.stack:
        return StackedVAE(config, data_shape)
    if config.semi_supervised:
        return SemiSupervisedVAE(config, data_shape)
    if config.top_latent_dims:
        return LadderVAE(config, data_shape)
    return VAEModel(config, data_shape)
