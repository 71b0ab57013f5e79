"""The run directory as a store: recognition, one lock, atomic replacement, validated reads.

A run directory holds ``config.json`` (with the ``"format": "vaekit-run"`` marker),
``model.safetensors``, ``metrics.jsonl``, ``checkpoint.safetensors`` (one atomic unit:
:mod:`vaekit.runs.checkpoint`), ``images/`` and ``latent/``. :data:`vaekit.runs.layout.OWNED` lists every name
vaekit writes; a folder is a run only if its config says so and it holds nothing else, and
``--overwrite`` removes nothing else. Model files are safetensors plus JSON; nothing is ever
unpickled.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from vaekit.version import __version__
from . import checkpoint
from .checkpoint import state_tensors
from vaekit.config.settings import RunConfig
from vaekit.errors import RunDirError
from vaekit.io.files import (atomic_write_bytes, atomic_write_text, drain_writes, exclusive_lock,
                             lock_writers, read_regular, write_json)
from vaekit.models.vae import VAEModel
from .reading import RunReading, load_state_tensors, metrics_text
from .layout import (CARD, CARD_MARKER, CHECKPOINT, CONFIG, EVALUATION, LOCK_NAME, METRICS, MODEL,
                     MODEL_FORMAT, OWNED_DIRS, REPORT, STAGING_MARKER, STAGING_NAME, TEMP,
                     is_owned)
from .store import FORMAT_VERSION, JSON_LIMIT, RUN_FORMAT, parse_json

__all__ = ["RunDir", "FORMAT_VERSION", "write_npy", "state_tensors", "load_state_tensors"]


def is_card(path: Path) -> bool:
    """Whether ``path`` is a model card vaekit wrote (a user's README.md is never touched)."""
    try:
        with open(path, "rb") as f:
            return CARD_MARKER.encode() in f.read(64 * 1024)
    except OSError:
        return False


class RunDir(RunReading):
    """Paths, lock, and validated reads and atomic writes of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / CONFIG
        self.model = self.path / MODEL
        self.metrics = self.path / METRICS
        self.checkpoint = self.path / CHECKPOINT
        self.images = self.path / "images"
        self.latent = self.path / "latent"  # posterior means of test examples, one file per epoch
        self.evaluation = self.path / EVALUATION
        self.report = self.path / REPORT
        self.lock_file = self.path / LOCK_NAME
        self.staging = self.path / STAGING_NAME

    # -- recognition ------------------------------------------------------------------------
    def foreign_files(self, limit: int = 3) -> list[str]:
        """Up to ``limit`` entries vaekit did not write (symlinks count: vaekit writes none).

        The staging folder of an unfinished ``--overwrite`` is checked as a run of its own.
        """
        found: list[str] = []
        writers = lock_writers(self.path, LOCK_NAME)

        def walk(rel: str, base: str) -> None:
            # rel: the folder's path inside the run; base: the same folder as a run sees it
            for name in sorted(os.listdir(self.path / rel)):
                if len(found) >= limit:
                    return
                path, inner = f"{rel}/{name}".lstrip("/"), f"{base}/{name}".lstrip("/")
                mode = os.lstat(self.path / path).st_mode
                if stat.S_ISDIR(mode) and not rel and name == STAGING_NAME:
                    walk(path, "")
                elif stat.S_ISDIR(mode) and not base and name in OWNED_DIRS:
                    walk(path, name)
                elif stat.S_ISDIR(mode):
                    found.append(path + "/")
                elif inner == CARD and stat.S_ISREG(mode) and is_card(self.path / path):
                    continue
                elif rel == STAGING_NAME and name == STAGING_MARKER and stat.S_ISREG(mode):
                    continue
                elif not (stat.S_ISREG(mode) and is_owned(inner, writers)):
                    found.append(path)  # a symlink, FIFO, device, or a file of someone else's
        walk("", "")
        return found

    def check_replaceable(self) -> None:
        """Refuse unless this folder is a recognised vaekit run holding only vaekit's files."""
        try:
            d = parse_json(read_regular(self.config, JSON_LIMIT, RunDirError), str(self.config))
        except RunDirError as e:
            raise RunDirError(f"{self.path} is not empty and is not a vaekit run directory ({e}); "
                              "refusing to overwrite it: choose another --out") from None
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise RunDirError(f"{self.path} is not empty and its config.json has no \"format\": "
                              f"\"{RUN_FORMAT}\" marker, so it is not a vaekit run; refusing to "
                              "overwrite it: choose another --out")
        try:
            foreign = self.foreign_files()
        except OSError as e:
            raise RunDirError(f"cannot look inside {e.filename or self.path} ({e.strerror or e}); "
                              "refusing to overwrite what cannot be checked") from None
        if foreign:
            raise RunDirError(f"{self.path} holds files vaekit did not write (e.g. {foreign[0]}); "
                              "refusing to overwrite it: move them out or choose another --out")

    # -- creating, replacing ----------------------------------------------------------------
    def prepare(self, resume: bool, overwrite: bool, dry_run: bool = False) -> None:
        """Check that training may write here, and make it ready.

        ``resume`` needs a valid run (it may have no finished epoch yet: training then simply
        starts). ``overwrite`` needs a recognised run holding only vaekit's files, and moves
        them aside (:meth:`rollback` restores them; the new run's first checkpoint deletes
        them). With ``dry_run`` only the checks run (what every distributed process does
        before the main one changes anything). Takes :meth:`lock` for its own duration.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --out")
        self.check_staging()
        if resume:
            if not self.path.is_dir():
                raise RunDirError(f"{self.path} does not exist, so there is no run to resume; "
                                  "start a new run without --resume")
            self.read_config()
            # what the end of training reads again (the card): damaged, it is refused now,
            # before an epoch is trained, not after the run has changed
            self.read_evaluation()
            if not self.has_checkpoint() and self.metrics.is_file() and self.metrics.stat().st_size:
                # metrics.jsonl is written after the checkpoint: epochs finished, and then the
                # checkpoint was removed. Starting over would replace their model.
                raise RunDirError(f"{self.path} has finished epochs (metrics.jsonl) but no "
                                  "checkpoint.safetensors, so it cannot be resumed exactly; "
                                  "start it anew with --overwrite, or choose another --out")
            if not dry_run:
                with self.lock():
                    if self.staging.exists() and self.has_checkpoint():
                        self.commit()  # an earlier overwrite finished but was killed before tidying
                    self._remove_stale_temps()
            return
        if self.path.is_dir() and any(n != LOCK_NAME for n in os.listdir(self.path)):
            if not overwrite:
                raise RunDirError(f"{self.path} already exists; pass --resume to continue that run, "
                                  "--overwrite to replace it, or choose another --out")
            self.check_replaceable()
            if dry_run:
                return
            with self.lock():
                self._stage_old_run()
            return
        if dry_run:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {self.path}: {e.strerror or e}; "
                              "choose another --out") from None

    def _remove_stale_temps(self) -> None:
        """Delete the temp files of writes a kill cut short: only those whose writer's mark the
        lock file recorded (under the lock no write is in progress)."""
        writers = lock_writers(self.path, LOCK_NAME)
        for folder in ("", *sorted(OWNED_DIRS)):
            if (self.path / folder).is_dir():
                for name in os.listdir(self.path / folder):
                    rel = f"{folder}/{name}".lstrip("/")
                    if TEMP.fullmatch(rel) and is_owned(rel, writers) and (self.path / rel).is_file():
                        (self.path / rel).unlink(missing_ok=True)

    def _top_entries(self) -> list[str]:
        return [n for n in sorted(os.listdir(self.path)) if n not in (LOCK_NAME, STAGING_NAME)]

    def _staged(self) -> list[str]:
        return [n for n in sorted(os.listdir(self.staging)) if n != STAGING_MARKER]

    def _unstage(self) -> None:
        """Remove the (emptied) staging folder with its marker."""
        (self.staging / STAGING_MARKER).unlink(missing_ok=True)
        self.staging.rmdir()

    def _stage_old_run(self) -> None:
        """Move the old run's entries into the staging folder: renames, undone on any failure."""
        if self.staging.exists() and self.has_checkpoint():
            self.commit()
        if self.staging.exists():
            # An earlier --overwrite was killed before its first checkpoint: the staging folder
            # holds the last complete run; what is on top is that attempt's partial output.
            self._remove(self._top_entries())
            return
        moved: list[str] = []
        try:
            self.staging.mkdir()
            (self.staging / STAGING_MARKER).write_text("vaekit: the run an --overwrite replaces, "
                                                       "until the new run's first checkpoint\n")
            for name in self._top_entries():
                os.rename(self.path / name, self.staging / name)
                moved.append(name)
        except OSError as e:
            where = e.filename or self.path
            try:
                for name in reversed(moved):
                    os.rename(self.staging / name, self.path / name)
                self._unstage()
            except OSError:
                raise RunDirError(f"cannot overwrite {self.path} ({where}: {e.strerror or e}), and "
                                  f"the old run's files could not all be put back: they are in "
                                  f"{self.staging}") from None
            raise RunDirError(f"cannot overwrite {self.path} ({where}: {e.strerror or e}); the old "
                              "run is unchanged") from None

    def _remove(self, names: list[str]) -> None:
        try:
            for name in names:
                p = self.path / name
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError as e:
            raise RunDirError(f"cannot remove {e.filename or self.path}: {e.strerror or e}") from None

    def commit(self) -> None:
        """Delete the replaced run kept by ``--overwrite`` (the new run stands on its own)."""
        self.check_staging()
        shutil.rmtree(self.staging, ignore_errors=True)

    def rollback(self) -> bool:
        """Put back the run an ``--overwrite`` replaced, if the new run has no checkpoint yet.

        Call it when training fails (any exception, Ctrl-C included) after :meth:`prepare`.
        Returns whether an old run was restored; without one (a new or resumed run, or one
        past its first checkpoint) nothing changes.
        """
        if not self.staging.is_dir() or self.has_checkpoint():
            return False
        self.check_staging()
        with self.lock():
            self._remove(self._top_entries())
            try:
                for name in self._staged():
                    os.rename(self.staging / name, self.path / name)
                self._unstage()
            except OSError as e:
                raise RunDirError(f"cannot restore the replaced run ({e.strerror or e}); its files "
                                  f"are in {self.staging}") from None
        return True

    def has_checkpoint(self) -> bool:
        """Whether an epoch has finished (a run without one resumes from its start)."""
        return self.checkpoint.is_file()

    # -- the lock ---------------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager:
        """Hold the run's exclusive lock (``.vaekit.lock``, flock): a second writer, in another
        process, gets one clear RunDirError naming the holder's pid.

        Reentrant within a process; creates the directory if needed (and removes it again if
        it holds nothing but the lock on the way out).
        """
        return exclusive_lock(self.path, LOCK_NAME, RunDirError)

    def check_staging(self) -> None:
        """Refuse to touch a folder named like the staging folder that lacks vaekit's marker: it
        is a user's. Every step that moves into, restores from or deletes the staging folder
        (prepare, rollback, commit) asks this first."""
        if os.path.lexists(self.staging) and not (
                self.staging.is_dir() and not self.staging.is_symlink()
                and (self.staging / STAGING_MARKER).is_file()):
            raise RunDirError(f"{self.staging} was not made by vaekit (it has no {STAGING_MARKER} "
                              "marker): move it out of the run, or choose another --out")

    def folder(self, name: str, create: bool = True) -> Path:
        """The run's own folder ``name`` (one of the layout's folders), made if absent (unless
        ``create`` is False): the one
        way into a run's folders for every writer. A link or a file in its place (a user's, not
        vaekit's) is a RunDirError, so nothing is written or replaced through it."""
        if name not in OWNED_DIRS:
            raise ValueError(f"{name} is not a folder of the run layout")  # a bug
        p = self.path / name
        try:
            if create:
                os.mkdir(p)
        except FileExistsError:
            pass
        except OSError as e:
            raise RunDirError(f"cannot create {p} ({e.strerror or e})") from None
        if not os.path.lexists(p):
            return p
        mode = os.lstat(p).st_mode
        if not stat.S_ISDIR(mode):
            what = "a link" if stat.S_ISLNK(mode) else "not a folder"
            raise RunDirError(f"{p} is {what}: vaekit writes only into a run's own folders; move "
                              "it out of the run (it is not vaekit's), or choose another --out")
        return p

    # -- writing ----------------------------------------------------------------------------
    def write_config(self, config: RunConfig, data_shape: tuple[int, ...]) -> None:
        write_json(self.config, {"format": RUN_FORMAT, "format_version": FORMAT_VERSION,
                                 "vaekit_version": __version__, "data_shape": list(data_shape),
                                 **config.to_dict()})

    def write_model(self, model: VAEModel | dict[str, torch.Tensor]) -> None:
        """``model.safetensors``: a model's weights, or a state dict of them."""
        tensors = state_tensors(model) if isinstance(model, torch.nn.Module) else \
            {k: v.detach().cpu().contiguous() for k, v in model.items()}
        atomic_write_bytes(self.model, st_save(tensors, {"format": MODEL_FORMAT}))

    def save(self, config: RunConfig, data_shape: tuple[int, ...], model: VAEModel,
             overwrite: bool = False) -> None:
        """Write a model without training history (``VAE.save``) as one whole run: onto an
        existing run only with ``overwrite``, which replaces all of it, never a mix."""
        with self.lock():
            self.prepare(resume=False, overwrite=overwrite)
            try:
                self.write_config(config, data_shape)
                self.write_model(model)
            except BaseException:
                self.rollback()
                raise
            self.commit()

    def write_latent(self, epoch: int, z: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Posterior means of the shown test examples at ``epoch`` (labels once, at epoch 1)."""
        latent = self.folder("latent")
        write_npy(latent / f"epoch_{epoch}.npy", z.float().cpu().numpy())
        if labels is not None and not (latent / "labels.npy").exists():
            write_npy(latent / "labels.npy", labels.cpu().numpy())

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics, metrics_text(rows))

    def write_checkpoint(self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         generators: dict[str, torch.Generator], meta: dict[str, Any],
                         extra: dict[str, torch.optim.Optimizer] | None = None) -> None:
        """Weights, optimizer and RNG states, ``epoch`` and ``meta``: one file, one atomic write
        (``extra``: optimizers besides ``optimizer``, by name, such as the VAE-GAN's).

        The first checkpoint of a run that replaced another (``--overwrite``) commits it: the
        replaced run is deleted.
        """
        atomic_write_bytes(self.checkpoint, checkpoint.encode(epoch, model, optimizer, generators, meta,
                                                              extra))
        if self.staging.exists():
            drain_writes()  # the new checkpoint is in place before the old run is deleted
            self.commit()


def write_npy(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
