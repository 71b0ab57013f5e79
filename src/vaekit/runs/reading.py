"""Reading a run directory: every file validated before use (:mod:`vaekit.runs.store`). A mixin of
:class:`vaekit.runs.directory.RunDir`, which supplies the paths (``config``, ``model``, ``checkpoint``,
``metrics``, ``evaluation``, ``latent``, ``images``) and :meth:`has_checkpoint`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import checkpoint
from vaekit.config.settings import RunConfig
from vaekit.errors import RunDirError
from vaekit.io.files import atomic_write_text, json_dumps, read_regular
from vaekit.models.vae import VAEModel
from .layout import MODEL_FORMAT
from .store import (METRICS_LIMIT, check_evaluation, check_tensors, numbered, parse_config,
                    read_json, read_latent, read_metrics, read_png, read_safetensors)
from vaekit.models.build import build_model


class RunReading:
    """The reading half of :class:`vaekit.runs.directory.RunDir`."""

    def read_config(self) -> tuple[RunConfig, tuple[int, ...]]:
        """The validated configuration and example shape of this run."""
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist")
        if not self.config.exists():
            raise RunDirError(f"{self.path} has no config.json: it is not a vaekit run directory "
                              "(or its training never started)")
        return parse_config(read_json(self.config), self.config)

    def load_model(self, device: str | torch.device = "cpu") -> tuple[VAEModel, RunConfig]:
        """The trained model of this run and its configuration (every tensor checked)."""
        cfg, shape = self.read_config()
        model = build_model(cfg.model, shape, cfg.train.objective)
        if not self.model.exists():
            raise RunDirError(f"{self.path} has no model.safetensors yet; train it first "
                              "(or resume it with vaekit train --resume)")
        tensors, metadata = read_safetensors(self.model)
        metadata = metadata or {}
        if set(metadata) - {"format"} or metadata.get("format", MODEL_FORMAT) != MODEL_FORMAT:
            raise RunDirError(f"{self.model} has metadata vaekit does not write "
                              f"({str(sorted(metadata))[:80]}); it is not this run's model file: "
                              "train the run again (--overwrite)")
        load_state_tensors(model, tensors, str(self.model))
        return model.to(device).eval(), cfg

    def read_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        generators: dict[str, torch.Generator],
                        expect: dict[str, Any] | None = None,
                        extra: dict[str, torch.optim.Optimizer] | None = None) -> dict[str, Any]:
        """Restore what :meth:`write_checkpoint` wrote into ``model``, ``optimizer`` and
        ``generators``, after checking all of it; returns the metadata (``epoch``,
        ``history``, ``precision``, ...).

        Parameters
        ----------
        expect : dict, optional
            What the checkpoint must agree with: ``lr``, ``lr_schedule`` and ``epochs`` (the
            most epochs it may have finished); a key not given takes config.json's value.
        extra : dict, optional
            The optimizers besides ``optimizer`` that :meth:`write_checkpoint` was given.

        Returns
        -------
        dict
            ``{"epoch": 0, "history": []}`` with nothing restored when no epoch has finished
            (:meth:`has_checkpoint` is False). ``metrics.jsonl`` is rewritten from the
            checkpoint's history if a kill between the two writes left it behind.
        """
        if not self.has_checkpoint():
            return {"epoch": 0, "history": []}
        if expect is None or not {"lr", "lr_schedule", "epochs"} <= set(expect):
            train = self.read_config()[0].train
            expect = {"lr": train.lr, "lr_schedule": train.lr_schedule, "epochs": train.epochs,
                      **(expect or {})}
        tensors, metadata = read_safetensors(self.checkpoint)
        meta = checkpoint.decode(tensors, metadata, self.checkpoint, model, optimizer, generators,
                                 expect, extra)
        text = metrics_text(meta["history"])
        try:
            current = read_regular(self.metrics, METRICS_LIMIT, RunDirError).decode("utf-8", "replace")
        except RunDirError:
            current = None
        if current != text:
            atomic_write_text(self.metrics, text)
        return meta

    def checkpoint_info(self) -> dict[str, Any] | None:
        """The checkpoint's record (``epoch``, ``history``, ``precision``, ``param_groups``...)
        without restoring anything; None when no epoch has finished."""
        if not self.has_checkpoint():
            return None
        return checkpoint.read_meta(read_safetensors(self.checkpoint)[1], self.checkpoint)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch metrics (NaN where a value was not finite), validated row by row."""
        return read_metrics(self.metrics) if self.metrics.exists() else []

    def read_evaluation(self) -> dict[str, Any] | None:
        """The last ``vaekit evaluate`` results, or None if it never ran; a damaged file is a
        RunDirError (run ``vaekit evaluate`` again to rewrite it)."""
        if not self.evaluation.exists():
            return None
        return check_evaluation(read_json(self.evaluation), self.evaluation)

    def latent_snapshots(self) -> tuple[list[tuple[int, np.ndarray]], np.ndarray | None]:
        """``[(epoch, means)]`` in epoch order, and the labels if saved; names that are not
        ``epoch_<N>.npy`` are ignored, damaged files are a RunDirError."""
        return read_latent(self.latent)

    def image_epochs(self, name: str) -> list[int]:
        """Epochs with an ``images/<name>_<epoch>.png`` (other names are ignored)."""
        return numbered(self.images, name, ".png")

    def read_image(self, name: str, epoch: int) -> bytes:
        """The PNG bytes of ``images/<name>_<epoch>.png`` (refused if it is not a PNG)."""
        return read_png(self.images / f"{name}_{epoch}.png")


def metrics_text(rows: list[dict[str, Any]]) -> str:
    """``metrics.jsonl``: one strict-JSON object per epoch (non-finite values as null)."""
    return "".join(json_dumps(r) + "\n" for r in rows)


def load_state_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                       where: str = "model file") -> None:
    """Load weights after checking names, shapes, dtypes and finiteness against ``model``."""
    check_tensors(tensors, model.state_dict(), where)
    model.load_state_dict(tensors)
