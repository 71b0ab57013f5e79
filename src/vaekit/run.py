"""The run directory: config.json, model.safetensors, metrics.jsonl, checkpoint, images/.

Model files are safetensors plus JSON; nothing is ever unpickled.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .config import RunConfig
from .errors import ConfigError, RunDirError
from .fileio import atomic_write_bytes, atomic_write_text, write_json
from .model import VAEModel
from .zoo import build_model

FORMAT_VERSION = 1  # bump when config.json or the tensor names change incompatibly


class RunDir:
    """Paths and atomic reads/writes of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.model = self.path / "model.safetensors"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoint = self.path / "checkpoint.safetensors"
        self.checkpoint_meta = self.path / "checkpoint.json"
        self.images = self.path / "images"
        self.latent = self.path / "latent"  # posterior means of test examples, one file per epoch
        self.evaluation = self.path / "evaluation.json"
        self.report = self.path / "report.html"

    # -- creating -------------------------------------------------------------------------
    def prepare(self, resume: bool, overwrite: bool, dry_run: bool = False) -> None:
        """Check that training may write here; ``overwrite`` clears only vaekit's own files.

        With ``dry_run`` only the checks run (what every distributed process does before the
        main one changes anything).
        """
        if resume:
            if not self.checkpoint_meta.exists():
                raise RunDirError(f"{self.path} has no checkpoint to resume from; "
                                  "start a new run without --resume")
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --out")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                raise RunDirError(f"{self.path} already exists; pass --resume to continue that run, "
                                  "--overwrite to replace it, or choose another --out")
            if not self.config.exists():
                raise RunDirError(f"{self.path} is not empty and is not a vaekit run directory; "
                                  "refusing to overwrite it, choose another --out")
            if dry_run:
                return
            for p in (self.config, self.model, self.metrics, self.checkpoint, self.checkpoint_meta,
                      self.evaluation, self.report):
                p.unlink(missing_ok=True)
            shutil.rmtree(self.images, ignore_errors=True)
            shutil.rmtree(self.latent, ignore_errors=True)
        if dry_run:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {self.path}: {e.strerror or e}; "
                              "choose another --out") from None

    def write_config(self, config: RunConfig, data_shape: tuple[int, ...]) -> None:
        write_json(self.config, {"format_version": FORMAT_VERSION, "vaekit_version": __version__,
                                 "data_shape": list(data_shape), **config.to_dict()})

    def write_model(self, model: VAEModel) -> None:
        atomic_write_bytes(self.model, st_save(state_tensors(model), {"format": "vaekit-model"}))

    def write_latent(self, epoch: int, z: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Posterior means of the shown test examples at ``epoch`` (labels once, at epoch 1)."""
        write_npy(self.latent / f"epoch_{epoch}.npy", z.float().cpu().numpy())
        if labels is not None and not (self.latent / "labels.npy").exists():
            write_npy(self.latent / "labels.npy", labels.cpu().numpy())

    def latent_snapshots(self) -> tuple[list[tuple[int, np.ndarray]], np.ndarray | None]:
        """``[(epoch, means)]`` in epoch order, and the labels if saved."""
        files = sorted(self.latent.glob("epoch_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
        snaps = [(int(p.stem.split("_")[1]), np.load(p, allow_pickle=False)) for p in files]
        labels_file = self.latent / "labels.npy"
        labels = np.load(labels_file, allow_pickle=False) if labels_file.exists() else None
        return snaps, labels

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        try:
            return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as e:
            raise RunDirError(f"{self.metrics} is damaged ({e})") from None

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))

    # -- reading --------------------------------------------------------------------------
    def read_config(self) -> tuple[RunConfig, tuple[int, ...]]:
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist")
        if not self.config.exists():
            raise RunDirError(f"{self.path} has no config.json: it is not a vaekit run directory "
                              "(or its training never started)")
        try:
            d = json.loads(self.config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirError(f"{self.config} is not readable JSON ({e}); the run is damaged") from None
        if not isinstance(d, dict):
            raise RunDirError(f"{self.config} is not a vaekit config")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise RunDirError(f"{self.path} has run format {d.get('format_version')} (written by vaekit "
                              f"{d.get('vaekit_version')}); this vaekit {__version__} reads format "
                              f"{FORMAT_VERSION}, so the run is newer than this vaekit: upgrade vaekit to read it")
        try:
            cfg = RunConfig.from_dict(d)
            shape = tuple(int(s) for s in d["data_shape"])
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"{self.config} is not a valid vaekit config: {e}") from None
        return cfg, shape

    def load_model(self, device: str | torch.device = "cpu") -> tuple[VAEModel, RunConfig]:
        """The trained model of this run and its configuration."""
        cfg, shape = self.read_config()
        model = build_model(cfg.model, shape)
        if not self.model.exists():
            raise RunDirError(f"{self.path} has no model.safetensors yet; train it first "
                              "(or resume it with vaekit train --resume)")
        load_state_tensors(model, read_safetensors(self.model))
        return model.to(device).eval(), cfg


    # -- the checkpoint ----------------------------------------------------------------------
    def write_checkpoint(self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         generators: dict[str, torch.Generator], meta: dict[str, Any]) -> None:
        """Weights, optimizer state and RNG states in safetensors; ``epoch`` and ``meta`` in JSON."""
        opt_state = optimizer.state_dict()
        tensors = {f"model.{k}": v for k, v in state_tensors(model).items()}
        for i, st in opt_state["state"].items():
            for k, v in st.items():
                tensors[f"optim.{i}.{k}"] = v.detach().cpu().contiguous()
        for name, g in generators.items():
            tensors[f"rng.{name}"] = g.get_state().cpu()
        atomic_write_bytes(self.checkpoint, st_save(tensors))
        write_json(self.checkpoint_meta, {"epoch": epoch, "param_groups": opt_state["param_groups"],
                                          **meta})

    def read_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        generators: dict[str, torch.Generator]) -> dict[str, Any]:
        """Restore what :meth:`write_checkpoint` wrote into ``model``, ``optimizer`` and
        ``generators``; returns the metadata (``epoch``, ``history``, ...)."""
        try:
            meta = json.loads(self.checkpoint_meta.read_text())
            groups = meta.pop("param_groups")
            meta["epoch"], meta["history"]  # noqa: B018 (both must be there)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunDirError(f"{self.checkpoint_meta} is damaged ({e}); cannot resume") from None
        tensors = read_safetensors(self.checkpoint)
        load_state_tensors(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        for name, g in generators.items():
            g.set_state(tensors[f"rng.{name}"])  # a CPU byte tensor on every device
        return meta


def write_npy(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything else (a pickle, a truncated file) is refused."""
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunDirError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                          "it may be truncated or not a vaekit file") from None


def load_state_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load weights with a clear error for missing, unexpected or mis-shaped tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise RunDirError(f"model file does not match config.json (missing tensors {missing[:3]}, "
                          f"unexpected {extra[:3]})")
    for k, v in expected.items():
        if tensors[k].shape != v.shape:
            raise RunDirError(f"model file does not match config.json: tensor '{k}' has shape "
                              f"{tuple(tensors[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict(tensors)
