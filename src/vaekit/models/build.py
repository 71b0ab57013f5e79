"""``build_model``: the model a configuration describes, and the training step a model kind
brings of its own. Every model kind is one module of this package and a row here."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from vaekit.config.settings import ModelConfig
from .ladder import LadderVAE
from .vae import VAEModel
from .semisup import SemiSupervisedVAE
from .stacked import StackedVAE
from .vaegan import VAEGAN
from .vaegan_update import AdversarialUpdate
from .vq import VQVAE
from .deep import DeepVAE

class Variant(NamedTuple):
    """A model kind an objective brings (the VAE-GAN: objective ``vaegan``): its model class,
    and the training step the trainer runs instead of its plain one (built as
    ``update(model, trainer)``; it names the optimizers it checkpoints), or None. Its loss is
    the objective's row in :data:`vaekit.parts.objectives.OBJECTIVES`, and whether evaluate and
    the report show a density follows that row's ``trains_likelihood``."""

    model: type[VAEModel]
    update: Callable[..., Any] | None = None


VARIANTS: dict[str, Variant] = {"vaegan": Variant(VAEGAN, AdversarialUpdate)}
# ``--latent`` -> the model class of a latent other than the Gaussian families (VQ-VAE: vq.py;
# the deep hierarchy: deep.py)
LATENTS: dict[str, type[VAEModel]] = {"vq": VQVAE, "deep": DeepVAE}


def own_update(model: VAEModel, trainer: Any):
    """The training step ``model``'s kind brings (its row in :data:`VARIANTS`), or None for the
    trainer's plain step."""
    update = next((v.update for v in VARIANTS.values() if type(model) is v.model), None)
    return None if update is None else update(model, trainer)


def build_model(config: ModelConfig, data_shape: tuple[int, ...], objective: str = "elbo") -> VAEModel:
    """The model ``config`` describes for training ``objective``: a :class:`VAEModel`, a ladder
    VAE with upper layers, the semi-supervised M2 (possibly stacked on a frozen VAE), or a
    :class:`~vaekit.models.vaegan.VAEGAN` for ``objective='vaegan'``, a VQ-VAE for
    ``latent='vq'``, a deep hierarchy for ``latent='deep'`` (their rows in :data:`LATENTS`)."""
    if objective in VARIANTS:
        return VARIANTS[objective].model(config, data_shape)
    if config.latent in LATENTS:
        return LATENTS[config.latent](config, data_shape)
    if config.stack:
        return StackedVAE(config, data_shape)
    if config.semi_supervised:
        return SemiSupervisedVAE(config, data_shape)
    if config.top_latent_dims:
        return LadderVAE(config, data_shape)
    return VAEModel(config, data_shape)
