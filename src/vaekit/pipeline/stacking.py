"""Stacking a model on a trained run (``--stack-on RUN``, the M1+M2 of Kingma et al. 2014): the
frozen front read from its run, the code dimensions it uses (its active units), and the options
this fixes for the top. The stacked model itself is :class:`vaekit.models.stacked.StackedVAE`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from vaekit.config.options import OptionError
from vaekit.config.settings import ModelConfig
from vaekit.errors import DataError, RunDirError
from vaekit.evaluation.measures import posterior_means
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir

ACTIVE_VARIANCE = 0.01  # Cov_x E[z_d|x] above this: an active unit (Burda et al. 2015)
ACTIVE_ROWS = 10_000  # training rows whose codes decide which units are active


@torch.no_grad()
def describe_front(front: VAEModel, cfg: ModelConfig, x_train: torch.Tensor) -> str:
    """The ``stack`` field for stacking on ``front``: its configuration, example shape and the
    code dimensions it uses on the training rows (its active units). DataError for a front
    that is not a plain one-layer VAE without labels, or whose codes carry nothing."""
    if cfg.top_latent_dims or cfg.conditional or cfg.semi_supervised or cfg.stack:
        raise DataError("stacking needs a run of a one-layer VAE without labels (no "
                        "top_latent_dims, conditional, semi_supervised or stack_on)")
    z = posterior_means(front, x_train[:ACTIVE_ROWS]).double()
    keep = torch.nonzero(z.var(0, unbiased=False) > ACTIVE_VARIANCE).flatten().tolist()
    if not keep:
        raise DataError("its encoder's codes carry no information about this data (no active "
                        "unit), so there is nothing to stack on")
    return json.dumps({"model": asdict(cfg), "data_shape": list(front.data_shape), "keep": keep},
                      separators=(",", ":"))


def stack_front(cfg, data, given) -> tuple[VAEModel, list[str]]:
    """The frozen front of a stacked run (the trained model of ``stack_on``), described in
    ``cfg.model.stack``; and the lines of the options this fixes for the top (``given`` None:
    the configuration is taken as it is). Every problem names the option."""
    where = f"stack_on {cfg.model.stack_on}"
    try:
        front, front_cfg = RunDir(cfg.model.stack_on).load_model("cpu")
        if front.data_shape != data.shape:
            raise DataError(f"it was trained on examples of shape {front.data_shape}, but "
                            f"{data.name} has shape {data.shape}")
        cfg.model.stack = describe_front(front, front_cfg.model, data.x_train)
    except (RunDirError, DataError) as e:
        raise OptionError(f"{where}: {e}", "stack_on") from None
    cfg.model.stack_on = str(Path(cfg.model.stack_on).resolve())
    return front, stack_choices(cfg, None if given is None else set(given))


def stack_choices(cfg, given: set[str] | None) -> list[str]:
    """The top's options a stacked run fixes: its likelihood models real-valued codes
    (``gaussian-predicted`` unless given; ``given`` None takes the configuration as it is), as
    they are (``preprocess none``)."""
    m, lines = cfg.model, []
    if given is not None and "likelihood" not in given:
        m.likelihood = "gaussian-predicted"
        lines.append("likelihood: gaussian-predicted (the stacked model's data are the real-valued "
                     "codes of the front); override with --likelihood")
    if m.preprocess not in ("none", "auto"):
        raise OptionError("stack_on models the front's codes as they are: use preprocess none",
                          "preprocess", "stack_on")
    m.preprocess = "none"
    return lines
