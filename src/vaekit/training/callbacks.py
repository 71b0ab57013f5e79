"""What happens around the training loop: the run directory, TensorBoard, the epoch line.

Each is a :class:`vaekit.training.trainer.Callback`; the pipeline picks the ones a run needs.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from vaekit.config.settings import RunConfig
from vaekit.data import Dataset
from vaekit.extras import require
from vaekit.evaluation.measures import classification_error, posterior_means
from vaekit.io.files import drain_writes
from vaekit.io.stops import held_stops
from vaekit.io.images import display_scale, save_grid
from vaekit.runs.directory import RunDir
from .trainer import Callback, Trainer

SAMPLE_SEED_OFFSET = 2_000_003  # the report's prior draws: the same every epoch
LATENT_MAP_POINTS = 2000  # test examples whose codes are kept every epoch for the latent map
# An epoch's results are written once its training took this many times the last write's cost:
# writing stays under about 1/WRITE_RATIO of the run (bench/busy_machine.py, docs/benchmarks.md)
WRITE_RATIO = 10


def shown_split(data: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows pictured every epoch: the test split, or the training split without one."""
    return (data.x_test, data.y_test) if len(data.x_test) else (data.x_train, data.y_train)


def latent_map_rows(n: int) -> slice | torch.Tensor:
    """The rows whose codes the latent maps keep: all, or :data:`LATENT_MAP_POINTS` evenly spaced
    ones, so that data sorted by class (or a generated grid, like ``shapes``) is pictured whole."""
    if n <= LATENT_MAP_POINTS:
        return slice(0, n)
    return torch.linspace(0, n - 1, LATENT_MAP_POINTS, dtype=torch.float64).round().long()


class RunDirWriter(Callback):
    """Writes a run directory: ``config.json`` at the start, then the images, the latent map,
    the kept weights, the checkpoint (one atomic unit) and the metrics, as of one epoch.

    They are written after every epoch whose training took at least :data:`WRITE_RATIO` times
    what the last write cost, so that a run of tiny epochs (a small table: 4 updates an epoch)
    does not spend most of its time writing, and always after the last epoch and when training
    stops. A kill loses at most the epochs since the last write, which a resume replays
    bit-identically; between writes the kept epoch's weights wait in memory.

    With ``resume``, restores the trainer from the run's checkpoint first (when it has one: a
    run interrupted in its first epoch simply starts).
    """

    def __init__(self, run_dir: RunDir, config: RunConfig, resume: bool = False) -> None:
        self.rd, self.config, self.resume = run_dir, config, resume
        self.kept: dict[str, torch.Tensor] | None = None  # the kept epoch's weights, not yet written
        self.written = 0  # the epoch the run directory holds
        self.since = time.perf_counter()  # end of the last write
        self.cost = 0.0  # seconds the last write took

    def on_fit_start(self, trainer: Trainer, data: Dataset) -> None:
        if self.resume and self.rd.has_checkpoint():
            meta = self.rd.read_checkpoint(trainer.model, trainer.optimizer, trainer.generators(),
                                           expect={"lr": trainer.config.lr,
                                                   "lr_schedule": trainer.config.lr_schedule,
                                                   "epochs": trainer.config.epochs},
                                           extra=trainer.extra_optimizers())
            trainer.restore(meta["epoch"], meta["history"])
            if trainer.epoch >= trainer.config.epochs:
                trainer.log(f"run already finished {trainer.epoch} epochs; raise --epochs to "
                            "train further")
        self.written = trainer.epoch
        if trainer.world.is_main:
            self.rd.write_config(self.config, data.shape)
        self.since = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        if not trainer.world.is_main:
            return
        kept_now = row.get("best_epoch", row["epoch"]) == row["epoch"]
        last = row["epoch"] >= trainer.config.epochs or bool(trainer.stop_reason)
        if last or time.perf_counter() - self.since >= WRITE_RATIO * self.cost:
            self.write(trainer, data, row, kept_now)
        elif kept_now:  # model.safetensors gets these weights at the next write
            self.kept = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def on_loop_end(self, trainer: Trainer, data: Dataset) -> None:
        """The last epochs, when the loop ended for a reason no epoch knew (a time budget)."""
        if trainer.world.is_main and trainer.history and self.written < trainer.epoch:
            row = trainer.history[-1]
            self.write(trainer, data, row, row.get("best_epoch", row["epoch"]) == row["epoch"])

    def write(self, trainer: Trainer, data: Dataset, row: dict[str, Any], kept_now: bool) -> None:
        with held_stops():  # one unit: a stop request waits until the epoch is written whole
            self._write(trainer, data, row, kept_now)

    def _write(self, trainer: Trainer, data: Dataset, row: dict[str, Any], kept_now: bool) -> None:
        start = time.perf_counter()
        rd, model, epoch = self.rd, trainer.model, row["epoch"]
        x_show, y_show = shown_split(data)
        if data.is_image:
            write_images(rd, model, epoch, x_show, y_show, trainer.config.seed)
        rows = latent_map_rows(len(x_show))
        y_in = y_show[rows] if model.cond_dim else None
        rd.write_latent(epoch, posterior_means(model, x_show[rows], y=y_in),
                        None if y_show is None else y_show[rows])
        if kept_now or self.kept is not None:  # model.safetensors holds the kept weights
            rd.write_model(model if kept_now else self.kept)
            self.kept = None
        rd.write_checkpoint(epoch, model, trainer.optimizer, trainer.generators(),
                            {"precision": trainer.precision, "history": trainer.history},
                            trainer.extra_optimizers())
        rd.write_metrics(trainer.history)
        self.written, self.since = epoch, time.perf_counter()
        self.cost = self.since - start


@torch.no_grad()
def write_images(rd: RunDir, model, epoch: int, x: torch.Tensor, y: torch.Tensor | None,
                 seed: int) -> None:
    """Inputs above their reconstructions; 64 samples (row r with label r when conditional)."""
    was_training = model.training
    model.eval()
    device = model.device
    scale = display_scale(x.shape[-2])
    xs = x[:8].to(device)
    ys = y[:8].to(device) if model.cond_dim else None
    images = rd.folder("images")
    save_grid(torch.cat([xs, model.reconstruct(xs, ys)]), images / f"reconstruction_{epoch}.png",
              len(xs), scale)
    g = torch.Generator(device).manual_seed(seed + SAMPLE_SEED_OFFSET)
    labels = (torch.arange(64, device=device) // 8) % model.cond_dim if model.cond_dim else None
    save_grid(model.generate(64, g, labels), images / f"samples_{epoch}.png", 8, scale)
    model.train(was_training)


class EarlyStopping(Callback):
    """Keeps the weights of the epoch with the lowest validation loss, and with ``patience``
    stops once that many epochs passed without a better one (Prechelt 1998).

    Each row gets ``best_epoch``; ``model.safetensors`` is written only at a best epoch (the
    checkpoint keeps the latest weights, for resume). At the end the model holds the best
    weights. A resumed run rebuilds the record from the metrics, and takes the best weights
    from ``run_dir`` when the best epoch came before the resume.
    """

    def __init__(self, patience: int = 0, run_dir: RunDir | None = None) -> None:
        self.patience, self.rd = patience, run_dir
        self.best_epoch, self.best, self.best_state = 0, float("inf"), None

    def on_fit_start(self, trainer: Trainer, data: Dataset) -> None:
        for row in trainer.history:  # a resumed run
            if row.get("val_loss", float("inf")) < self.best:
                self.best_epoch, self.best = row["epoch"], row["val_loss"]

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        if row["val_loss"] < self.best:
            self.best_epoch, self.best = row["epoch"], row["val_loss"]
            self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        row["best_epoch"] = self.best_epoch
        if self.patience and row["epoch"] - self.best_epoch >= self.patience \
                and row["epoch"] < trainer.config.epochs:
            trainer.stop_reason = (f"early stopping: the validation loss has not improved for "
                                   f"{self.patience} epochs")

    def on_fit_end(self, trainer: Trainer, data: Dataset) -> None:
        if not self.best_epoch or self.best_epoch == trainer.epoch:
            return
        if self.best_state is None and self.rd is not None:  # best epoch before a resume
            self.best_state = self.rd.load_model(trainer.device)[0].state_dict()
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class TensorBoardLogger(Callback):
    """Scalars as ``loss/train`` etc., and the epoch's image grids as written to ``images/``."""

    def __init__(self, run_dir: RunDir) -> None:
        require("tensorboard", "tensorboard", "--tensorboard logging")
        self.rd = run_dir
        self.writer = require("torch.utils.tensorboard", "tensorboard", "--tensorboard logging"
                              ).SummaryWriter(str(run_dir.folder("tensorboard")))

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        import numpy as np
        from PIL import Image

        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, float):
                split, _, name = key.partition("_")
                self.writer.add_scalar(f"{name}/{split}" if name else key, value, epoch)
        if data.is_image:
            drain_writes()  # the epoch's images are in place
            for name in ("reconstruction", "samples"):
                img = np.asarray(Image.open(self.rd.images / f"{name}_{epoch}.png").convert("RGB"))
                self.writer.add_image(name, img, epoch, dataformats="HWC")
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, data: Dataset) -> None:
        self.writer.close()


class EpochLog(Callback):
    """One line per epoch: train and test loss, the test terms, seconds."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        if not trainer.world.is_main:
            return
        line = f"epoch {row['epoch']:>3}/{trainer.config.epochs}  train {row['train_loss']:.4f}"
        if "val_loss" in row:
            line += f"  val {row['val_loss']:.4f}{' *' if row.get('best_epoch') == row['epoch'] else ''}"
        if "test_loss" in row:
            line += (f"  test {row['test_loss']:.4f} (rec {row['test_rec']:.2f}, "
                     f"kl {row['test_kl']:.2f})")
        if "dis_loss" in row:  # a VAE-GAN's discriminator (vaekit.models.vaegan_update)
            line += (f"  -log p(x|z) {row['pixel_rec']:.2f}; D(x) {row['dis_real']:.2f}, D(x~) "
                     f"{row['dis_recon']:.2f}, D(x_p) {row['dis_prior']:.2f}, paused "
                     f"{row['dis_paused']:.0%}/{row['gan_paused']:.0%}")
        errors = [f"{p} {100 * row[f'{p}_error']:.2f}%" for p in ("val", "test") if f"{p}_error" in row]
        if errors:  # a semi-supervised model's classification error
            line += f"  error {', '.join(errors)}"
        self.log(line + f"  {row['seconds']:.1f}s")


class ClassificationError(Callback):
    """Adds a semi-supervised model's classification error to each epoch's row: ``val_error``
    and ``test_error``, the fraction of labelled rows whose most probable class under q(y|x)
    is wrong (rows labelled -1 do not count; a part without labelled rows gets none)."""

    def __init__(self, val: tuple[torch.Tensor, torch.Tensor | None] | None) -> None:
        self.val = val

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        parts = [("val", *self.val)] if self.val is not None else []
        for part, x, y in [*parts, ("test", data.x_test, data.y_test)]:
            error = None if y is None else classification_error(trainer.model, x, y)
            if error is not None:
                row[f"{part}_error"] = error
