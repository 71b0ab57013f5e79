"""The trainer: a model-agnostic loop with per-epoch evaluation, checkpoints and resume.

Speed comes from keeping data in tensors (a batch is an index slice, no per-sample Python),
fused Adam, never syncing with the host inside an epoch (no ``.item()`` per step) and bf16
autocast where the hardware has it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Any, Callable

import torch

from .config import RunConfig, TrainConfig
from .data import Dataset
from .distributed import World
from .errors import ConfigError, DataError, VaekitError
from .evaluate import elbo_terms, posterior_means
from .images import display_scale, save_grid
from .model import VAEModel
from .run import RunDir

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise never touches the training generators
SAMPLE_SEED_OFFSET = 2_000_003
CHECK_EVERY = 20  # steps between host checks for a run of non-finite steps
LATENT_MAP_POINTS = 2000  # test examples whose codes are kept every epoch for the latent map


def slice_bounds(n: int, world: World) -> tuple[int, int]:
    """This process's ``[lo, hi)`` of a global batch of ``n``: contiguous, sizes differ by <= 1."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (world.rank < extra)


def check_labels(data: Dataset, num_classes: int) -> None:
    """A conditional model needs integer labels in ``0 .. num_classes - 1`` for every row."""
    for part, x, y in (("training", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if len(x) == 0:
            continue
        if y is None or len(y) != len(x):
            raise DataError(f"{data.name} ({part} part) has no labels, but --conditional needs "
                            "one per example (a built-in labelled dataset, an .npz with y_train/"
                            "y_test, or an image folder with one subfolder per class)")
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise DataError(f"{data.name} ({part} part) has labels outside 0..{num_classes - 1}, "
                            "the classes of the training part")


class TrainingDiverged(VaekitError):
    """Too many consecutive non-finite steps: training stops, the last checkpoint stays."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; a bare ``cuda`` gets its index."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # so device comparisons are exact
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 matrix multiplies run natively on this CPU."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 where ``device`` has native bf16 matrix units, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a clear error where bf16 is slow)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError("--precision bf16 needs a CPU with AVX512-BF16 or AMX (this one has "
                          "neither, so bf16 would be slower); use --precision fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_adam(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where PyTorch supports it (CPU and CUDA)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def tensorboard_writer(run_dir: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: "
                          "pip install 'vaekit[tensorboard]'") from None
    return SummaryWriter(str(run_dir.path / "tensorboard"))


def log_tensorboard(writer, row: dict[str, Any], run_dir: RunDir, images: bool) -> None:
    """Scalars as ``loss/train`` etc., and the epoch's image grids as written to ``images/``."""
    import numpy as np
    from PIL import Image

    epoch = row["epoch"]
    for key, value in row.items():
        if key != "epoch" and isinstance(value, float):
            split, _, name = key.partition("_")
            writer.add_scalar(f"{name}/{split}" if name else key, value, epoch)
    if images:
        for name in ("reconstruction", "samples"):
            img = np.asarray(Image.open(run_dir.images / f"{name}_{epoch}.png").convert("RGB"))
            writer.add_image(name, img, epoch, dataformats="HWC")
    writer.flush()


class Trainer:
    """Trains a :class:`VAEModel` on a :class:`Dataset`.

    Parameters
    ----------
    model : VAEModel
    config : TrainConfig
    log : callable
        Receives one line per epoch when no progress bar is shown.
    progress : bool, optional
        Show a progress bar; default: when stderr is a terminal.
    """

    def __init__(self, model: VAEModel, config: TrainConfig, log: Callable[[str], None] = print,
                 progress: bool | None = None, world: World = World()) -> None:
        config.validate()
        self.config = config
        self.world = world
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and world.size > 1:
            self.device = torch.device("cuda", world.local_rank)
        self.precision = resolve_precision(self.device, config.precision)  # what actually runs
        self.autocast = autocast_for(self.device, self.precision)
        self.model = model.to(self.device)
        # Under torchrun, DDP averages gradients across processes; evaluation and writing use
        # the plain module.
        self.train_model = model if world.size == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_adam(self.model, config.lr)
        self.fused = bool(self.optimizer.defaults.get("fused"))
        self.consecutive_bad = torch.zeros((), device=self.device)
        self.skipped_steps = 0
        self.run_dir: RunDir | None = None
        self.log = log if world.is_main else (lambda s: None)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and world.is_main
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.history: list[dict[str, Any]] = []

    # -- the loop --------------------------------------------------------------------------
    def check(self, data: Dataset) -> None:
        """Raise a user error if ``data`` cannot be modelled (before anything is written)."""
        if tuple(data.shape) != self.model.data_shape:
            raise DataError(f"{data.name} has examples of shape {data.shape}, but the model "
                            f"expects {self.model.data_shape}")
        self.model.likelihood.check_data(data.x_train, f"{data.name} (training part)")
        if len(data.x_test):
            self.model.likelihood.check_data(data.x_test, f"{data.name} (test part)")
        if self.model.cond_dim:
            check_labels(data, self.model.cond_dim)

    def fit(self, data: Dataset, run_dir: RunDir | None = None, run_config: RunConfig | None = None,
            resume: bool = False) -> list[dict[str, Any]]:
        """Train for ``config.epochs`` epochs (the remaining ones with ``resume``).

        Parameters
        ----------
        data : Dataset
        run_dir : RunDir, optional
            Where config, weights, metrics, checkpoints and images go; None keeps nothing on disk.
        run_config : RunConfig, optional
            Written to ``config.json`` (default: this trainer's settings).
        resume : bool
            Continue from ``run_dir``'s checkpoint.

        Returns
        -------
        list of dict
            The per-epoch metrics.
        """
        self.check(data)
        self.run_dir = run_dir
        self.tb = (tensorboard_writer(run_dir) if self.config.tensorboard and run_dir
                   and self.world.is_main else None)
        x_train = data.x_train.to(self.device)
        x_test = data.x_test.to(self.device)
        labels = self.model.cond_dim > 0  # a conditional model reads labels with its data
        y_train = data.y_train.to(self.device) if labels else None
        y_test = data.y_test.to(self.device) if labels and len(x_test) else None
        start = self.load_checkpoint() if resume else 0
        if run_dir and self.world.is_main:  # on resume too: --epochs may have changed
            run_dir.write_config(run_config or RunConfig(train=self.config), data.shape)
        began = time.perf_counter()
        for epoch in range(start + 1, self.config.epochs + 1):
            t0 = time.perf_counter()
            if self.out_of_time(t0 - began):
                self.log(f"stopping before epoch {epoch}: another epoch would pass --max-minutes "
                         f"{self.config.max_minutes:g}")
                break
            train = self.train_epoch(x_train, data.binarize, epoch, y_train)
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train[0], "train_rec": train[1],
                                   "train_kl": train[2], "skipped_steps": self.skipped_steps}
            if len(x_test):
                # Evaluated in fp32 whatever the training precision: reported numbers stay exact.
                ev = elbo_terms(self.model, x_test, self.config.eval_batch_size, self.config.beta,
                                self.eval_generator(), y=y_test, objective=self.config.objective,
                                k=self.config.k)
                row |= {"test_loss": ev["loss"], "test_rec": ev["rec"], "test_kl": ev["kl"]}
            row["seconds"] = round(time.perf_counter() - t0, 4)
            self.history.append(row)
            if self.run_dir and self.world.is_main:
                shown = (x_test, data.y_test) if len(x_test) else (x_train, data.y_train)
                self.write_epoch(epoch, *shown, data)
            self.log_epoch(row)
            if self.tb:
                log_tensorboard(self.tb, row, run_dir, data.is_image)
        if self.tb:
            self.tb.close()
        return self.history

    def train_epoch(self, x: torch.Tensor, binarize: bool, epoch: int,
                    y: torch.Tensor | None = None) -> list[float]:
        """One pass over ``x``; returns the epoch's mean [loss, rec, kl] over all processes.

        Each step takes the next global batch of the epoch's permutation (``batch_size`` per
        process times the number of processes) and draws its binarization and reparameterization
        noise for the whole global batch from the shared generator; each process keeps its
        slice. So the data order and every example's noise are the same whatever the process
        count, and the loss, scaled by ``world size / global batch``, averages to the global
        batch mean under DDP.
        """
        model, world, beta, k = self.train_model, self.world, self.config.beta, self.config.k
        model.train()
        n, gbs = len(x), self.config.batch_size * world.size
        perm = torch.randperm(n, generator=self.shuffle_gen).to(self.device)
        # Per-example rec and kl in epoch order, NaN where another process (or a skipped NaN
        # step) has them; summed once at the end, so the host never waits inside the loop.
        rec_kl = torch.full((2, n), float("nan"), device=self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        skipped = torch.zeros((), device=self.device)  # non-finite steps this epoch
        bar = self.bar(n, epoch)
        starts = range(0, n, gbs)
        slices = [slice_bounds(min(gbs, n - i), world) for i in starts]
        index = [perm[i + lo: i + hi] for i, (lo, hi) in zip(starts, slices)]
        batches = self.batches(x, index)
        for step, (i, (lo, hi), xb, idx) in enumerate(zip(starts, slices, batches, index)):
            g = min(gbs, n - i)  # this step's global batch
            u = (torch.rand(g, *x.shape[1:], generator=self.noise_gen, device=self.device)
                 if binarize else None)
            eps = torch.randn(k, g, self.model.noise_dim, generator=self.noise_gen, device=self.device)
            if binarize:
                xb = (u[lo:hi] < xb).to(xb.dtype)  # dynamic binarization: Bernoulli(pixel)
            weight = beta * self.warmup(epoch, step, len(starts))
            self.set_lr(epoch, step, len(starts))
            with self.autocast:
                terms = model(xb, weight, noise=eps[:, lo:hi], y=None if y is None else y[idx],
                              name=self.config.objective, k=k)
            loss = self.training_loss(terms, xb, weight) * (world.size / g)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bad = self.guarded_step(loss, params)
            skipped += bad
            self.consecutive_bad = (self.consecutive_bad + bad) * bad
            if step % CHECK_EVERY == CHECK_EVERY - 1 or i + gbs >= n:  # a rare host sync
                self.check_divergence(epoch)
            rec_kl[0, i + lo: i + hi] = terms.rec.detach()
            rec_kl[1, i + lo: i + hi] = terms.kl.detach()
            if bar is not None:
                bar.update(g)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{loss.item() / world.size:.2f}")
        if bar is not None:
            bar.close()
        self.skipped_steps = int(skipped)
        finite = torch.isfinite(rec_kl)  # skipped NaN steps do not count
        sums = torch.stack([rec_kl.nan_to_num(0.0, 0.0, 0.0).double().sum(1),
                            finite.double().sum(1)])
        world.all_reduce(sums)
        rec, kl = (sums[0] / sums[1]).tolist()
        return [rec + beta * kl, rec, kl]

    def out_of_time(self, elapsed: float) -> bool:
        """Whether one more epoch, as long as the last, would end past ``max_minutes``.

        Every process decides on the main process's clock, so all stop after the same epoch.
        """
        if self.config.max_minutes <= 0 or not self.history:
            return False
        last = self.history[-1]["seconds"]
        late = self.world.is_main and elapsed + last > 60 * self.config.max_minutes
        decision = torch.tensor(float(late), device=self.device)
        return bool(self.world.all_reduce(decision))  # the main process's answer, everywhere

    def set_lr(self, epoch: int, step: int, steps: int) -> None:
        """The learning rate of this step: constant, or cosine-annealed from ``lr`` to 0 over
        ``epochs`` (Loshchilov & Hutter 2017), step by step. It depends on the step alone, so
        ``--resume`` continues the same schedule."""
        if self.config.lr_schedule == "constant":
            return
        done = ((epoch - 1) * steps + step) / (self.config.epochs * steps)
        lr = 0.5 * self.config.lr * (1 + math.cos(math.pi * min(done, 1.0)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def warmup(self, epoch: int, step: int, steps: int) -> float:
        """Fraction of beta in use: a linear ramp over ``kl_warmup`` epochs (1 when off)."""
        if self.config.kl_warmup <= 0:
            return 1.0
        return min(1.0, ((epoch - 1) * steps + step + 1) / (self.config.kl_warmup * steps))

    def training_loss(self, terms, xb: torch.Tensor, weight: float) -> torch.Tensor:
        """The summed loss of this process's batch: ``sum(rec + weight * kl)``, or with free bits
        ``sum(rec) + weight * n * sum_d max(free_bits, mean_i KL_id)`` (Kingma et al. 2016)."""
        lam = self.config.free_bits
        if lam <= 0 or len(xb) == 0:
            return terms.loss.sum()
        if terms.kl_dims is None:
            raise ConfigError("--free-bits needs a posterior and prior that factorise over latent "
                              "dimensions")
        kl_dims = terms.kl_dims.mean(0)  # (latent,)
        return terms.rec.sum() + weight * len(xb) * torch.clamp(kl_dims, min=lam).sum()

    def batches(self, x, index: list[torch.Tensor]):
        """This process's rows of every step, in order, on the device.

        In-memory data: an index slice per step (no per-sample Python). Streamed data: rows read
        from a memory-mapped file, or decoded by DataLoader workers ahead of the loop, reaching a
        GPU through pinned memory.
        """
        cuda = self.device.type == "cuda"
        if isinstance(x, torch.Tensor):
            return (x[idx] for idx in index)
        rows = x.iter_batches(index, pin=cuda) if hasattr(x, "iter_batches") else (x[i] for i in index)
        return ((b.pin_memory() if cuda and not b.is_pinned() else b).to(self.device, non_blocking=True)
                for b in rows)

    def guarded_step(self, loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """Adam step unless the loss or a gradient is non-finite; returns 1.0 if skipped.

        The check stays on the device: fused Adam skips the update itself when ``found_inf``
        is set (the mechanism of torch.amp.GradScaler), so there is no host sync per step.
        """
        grads = [p.grad for p in params if p.grad is not None]
        clip = self.config.clip_grad
        norm = (torch.nn.utils.clip_grad_norm_(params, clip, foreach=True) if clip > 0
                else torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        bad = (~torch.isfinite(norm) | ~torch.isfinite(loss)).float()
        if self.fused:
            self.optimizer.found_inf = bad
            self.optimizer.step()
        elif not bad.item():
            self.optimizer.step()
        return bad

    def check_divergence(self, epoch: int) -> None:
        run = int(self.consecutive_bad)
        if run >= self.config.max_skips:
            where = f"the checkpoint of epoch {epoch - 1} in {self.run_dir.path} is intact; " if (
                self.run_dir and epoch > 1) else ""
            raise TrainingDiverged(
                f"training stopped in epoch {epoch}: {run} steps in a row had a non-finite loss or "
                f"gradient and were skipped; {where}try a lower --lr, --clip-grad 10, or "
                "--precision fp32, and check the data")

    def bar(self, n: int, epoch: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=n, desc=f"epoch {epoch}/{self.config.epochs}", unit="ex",
                    leave=False, dynamic_ncols=True)

    def eval_generator(self) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(self.config.seed + EVAL_SEED_OFFSET)

    def log_epoch(self, row: dict[str, Any]) -> None:
        line = f"epoch {row['epoch']:>3}/{self.config.epochs}  train {row['train_loss']:.4f}"
        if "test_loss" in row:
            line += (f"  test {row['test_loss']:.4f} (rec {row['test_rec']:.2f}, "
                     f"kl {row['test_kl']:.2f})")
        self.log(line + f"  {row['seconds']:.1f}s")

    # -- run directory -----------------------------------------------------------------------
    def write_epoch(self, epoch: int, x_show: torch.Tensor, y_show: torch.Tensor | None,
                    data: Dataset) -> None:
        """Images and latent map, weights, then the checkpoint (atomic), then metrics."""
        rd = self.run_dir
        if data.is_image:
            self.write_images(epoch, x_show, y_show)
        n = min(len(x_show), LATENT_MAP_POINTS)
        y_in = y_show[:n] if self.model.cond_dim else None
        rd.write_latent(epoch, posterior_means(self.model, x_show[:n], y=y_in),
                        None if y_show is None else y_show[:n])
        rd.write_model(self.model)
        self.save_checkpoint(epoch)
        rd.write_metrics(self.history)

    @torch.no_grad()
    def write_images(self, epoch: int, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Inputs above their reconstructions; 64 samples (row r with label r when conditional)."""
        model, rd = self.model, self.run_dir
        model.eval()
        scale = display_scale(x.shape[-2])
        xs = x[:8].to(self.device)
        ys = y[:8].to(self.device) if model.cond_dim else None
        recon = model.decode(model.encode(xs, ys).mean, ys).mean  # decoder mean at the posterior mean
        save_grid(torch.cat([xs, recon]), rd.images / f"reconstruction_{epoch}.png", len(xs), scale)
        g = torch.Generator(self.device).manual_seed(self.config.seed + SAMPLE_SEED_OFFSET)
        labels = (torch.arange(64, device=self.device) // 8) % model.cond_dim if model.cond_dim else None
        save_grid(model.generate(64, g, labels), rd.images / f"samples_{epoch}.png", 8, scale)
        model.train()

    def generators(self) -> dict[str, torch.Generator]:
        return {"shuffle": self.shuffle_gen, "noise": self.noise_gen}

    def save_checkpoint(self, epoch: int) -> None:
        self.run_dir.write_checkpoint(epoch, self.model, self.optimizer, self.generators(),
                                      {"precision": self.precision, "history": self.history})

    def load_checkpoint(self) -> int:
        """Restore everything :meth:`save_checkpoint` wrote; returns the last finished epoch."""
        meta = self.run_dir.read_checkpoint(self.model, self.optimizer, self.generators())
        epoch = meta["epoch"]
        self.history = meta["history"][:epoch]
        if epoch >= self.config.epochs:
            self.log(f"run already finished {epoch} epochs; raise --epochs to train further")
        return epoch
