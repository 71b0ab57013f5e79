"""The trainer: the loop only. A step, the guarded update, the schedules, the slicing of a
global batch across processes, and a small callback interface for everything else (the run
directory, TensorBoard, the per-epoch line, see :mod:`vaekit.training.callbacks`).

Speed comes from keeping data in tensors (a batch is an index slice, no per-sample Python),
fused Adam, never syncing with the host inside an epoch (no ``.item()`` per step) and bf16
autocast where the hardware has it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Sequence

import torch

from vaekit.config.settings import TrainConfig
from vaekit.data import Dataset
from vaekit.compute.distributed import World
from vaekit.errors import VaekitError
from vaekit.evaluation.measures import elbo_terms
from vaekit.models.build import own_update
from vaekit.models.vae import VAEModel
from vaekit.parts.objectives import kl_weight, reported_loss, summed_loss
from vaekit.compute.precision import LowPrecisionCopy
from vaekit.compute.load import busy_cores
from vaekit.compute.threads import (SMALL_STEP, choose_threads, intra_op_threads,
                                    step_work)
from vaekit.compute.runtime import (AdamStep, autocast_for, denormals_flushed, make_adam,
                                    resolve_device, resolve_precision, scheduled_lr)

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise never touches the training generators
CHECK_EVERY = 20  # steps between host checks for a run of non-finite steps


def slice_bounds(n: int, world: World) -> tuple[int, int]:
    """This process's ``[lo, hi)`` of a global batch of ``n``: contiguous, sizes differ by <= 1."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (world.rank < extra)


class TrainingDiverged(VaekitError):
    """Non-finite steps or losses: training stops, the last checkpoint stays."""


class Callback:
    """Hooks around the loop; the trainer calls them on every process (check ``world.is_main``).

    A callback may set ``trainer.stop_reason`` to end training after the current epoch.
    """

    def on_fit_start(self, trainer: "Trainer", data: Dataset) -> None:
        """Before the first epoch (after a resumed state is restored, ``trainer.epoch`` > 0)."""

    def on_epoch_end(self, trainer: "Trainer", data: Dataset, row: dict[str, Any]) -> None:
        """After each epoch; ``row`` is its metrics, already in ``trainer.history``."""

    def on_loop_end(self, trainer: "Trainer", data: Dataset) -> None:
        """Once the loop over epochs ended, before any ``on_fit_end`` (the model still holds
        the last epoch's weights; not when training raised)."""

    def on_fit_end(self, trainer: "Trainer", data: Dataset) -> None:
        """After the last epoch (not when training raised)."""


class Trainer:
    """Trains a :class:`VAEModel` on a :class:`Dataset`.

    Parameters
    ----------
    model : VAEModel
    config : TrainConfig
    log : callable
        Receives the trainer's own notices (a budget stop); epoch lines come from callbacks.
    progress : bool, optional
        Show a progress bar; default: when stderr is a terminal.
    world : World
        This process's place among the training processes (one process by default).
    order : callable, optional
        ``order(global_batch, generator)``: an epoch's row indices (a semi-supervised model's
        batches that always hold labelled rows, :mod:`vaekit.data.labelled`); by default a
        random permutation of the rows.
    """

    def __init__(self, model: VAEModel, config: TrainConfig, log: Callable[[str], None] = print,
                 progress: bool | None = None, world: World = World(),
                 order: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> None:
        config.validate()
        self.config = config
        self.world = world
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and world.size > 1:
            self.device = torch.device("cuda", world.local_rank)
        self.precision = resolve_precision(self.device, config.precision)  # what actually runs
        self.autocast = autocast_for(self.device, self.precision)
        self.model = model.to(self.device)
        self.threads = torch.get_num_threads()
        self.threads_note: str | None = None
        if self.device.type == "cpu":  # decided once: a resumed run steps with the same count
            work = step_work(self.model, self.model.data_shape, config.batch_size)
            # the machine's load is measured (0.2 s) only where it can change the choice
            measure = not config.threads and work >= SMALL_STEP and torch.get_num_threads() > 1
            busy = busy_cores() if measure else 0.0
            self.threads, why = choose_threads(work, config.threads, busy)
            if self.threads != torch.get_num_threads():  # said by the caller once training starts
                self.threads_note = f"threads: {why}; --threads N overrides"
        # An objective with its own update (the VAE-GAN, vaekit.models.vaegan) steps the parameters it
        # keeps with its own optimizer and replaces the plain step; None for the ELBO and IWAE.
        self.hybrid = own_update(model, self)
        # Under torchrun, DDP averages gradients across processes; evaluation and writing use
        # the plain module.
        self.train_model = model if world.size == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_adam(self.model if self.hybrid is None
                                   else self.hybrid.trainer_parameters(), config.lr)
        self.fused = bool(self.optimizer.defaults.get("fused"))
        self.adam_step = AdamStep(self.optimizer) if self.fused else None
        # bf16 in one process: kept bf16 copies of the matmul weights instead of autocast's
        # per-step casts (the same numbers, fewer kernels; DDP all-reduces fp32 gradients of
        # the autocast path instead)
        self.low = (LowPrecisionCopy(model, torch.bfloat16)
                    if self.precision == "bf16" and world.size == 1 and self.fused
                    and self.hybrid is None else None)
        if self.low is not None:
            self.train_model = self.low.module
        self.consecutive_bad = 0  # non-finite steps in a row, carried across epochs
        self.unit_scale = torch.ones((), device=self.device)  # the gradients are not scaled
        self.skipped_steps = 0
        self.log = log if world.is_main else (lambda s: None)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and world.is_main
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # the last finished epoch
        self.stop_reason: str | None = None
        # order(global batch, generator) -> an epoch's row indices (labelled rows in every batch
        # of a semi-supervised model: vaekit.data.labelled); None: a random permutation
        self.order = order

    def generators(self) -> dict[str, torch.Generator]:
        """The random streams a checkpoint must hold for a bit-identical resume."""
        return {"shuffle": self.shuffle_gen, "noise": self.noise_gen}

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers besides ``self.optimizer`` whose state a checkpoint must hold, by name."""
        return {} if self.hybrid is None else self.hybrid.optimizers()

    def restore(self, epoch: int, history: list[dict[str, Any]]) -> None:
        """Continue after ``epoch`` (weights, optimizer and generators already loaded)."""
        self.epoch, self.history = epoch, list(history[:epoch])

    # -- the loop --------------------------------------------------------------------------
    def fit(self, data: Dataset, callbacks: Sequence[Callback] = (),
            val: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> list[dict[str, Any]]:
        """Train from ``self.epoch`` to ``config.epochs`` epochs; returns the per-epoch metrics.

        Each row holds ``epoch``, ``train_loss``/``train_rec``/``train_kl``, ``skipped_steps``,
        ``val_*`` for a validation split ``val = (x, y)`` (carved from the training data),
        ``test_*`` where the data has a test part, and ``seconds``.
        """
        x_train = data.x_train.to(self.device)
        x_test = data.x_test.to(self.device)
        labels = self.model.cond_dim > 0  # a conditional model reads labels with its data
        # a semi-supervised model learns from the training labels it has (-1: unlabelled)
        learns = labels or getattr(self.model, "semi_supervised", False)
        y_train = data.y_train.to(self.device) if learns else None
        y_test = data.y_test.to(self.device) if labels and len(x_test) else None
        parts = [("test", x_test, y_test)]
        if val is not None and len(val[0]):
            parts.insert(0, ("val", val[0].to(self.device),
                             val[1].to(self.device) if labels and val[1] is not None else None))
        with intra_op_threads(self.threads):
            return self._fit(data, callbacks, parts, x_train, y_train)

    def _fit(self, data, callbacks, parts, x_train, y_train) -> list[dict[str, Any]]:
        for cb in callbacks:
            cb.on_fit_start(self, data)
        began = time.perf_counter()
        for epoch in range(self.epoch + 1, self.config.epochs + 1):
            t0 = time.perf_counter()
            if self.out_of_time(t0 - began):
                self.stop_reason = "time budget"
                self.log(f"stopping before epoch {epoch}: another epoch would pass --max-minutes "
                         f"{self.config.max_minutes:g}")
                break
            with denormals_flushed(self.device):
                train = self.train_epoch(x_train, data.binarize and (
                    self.hybrid is None or self.hybrid.binarize), epoch, y_train)
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train[0], "train_rec": train[1],
                                   "train_kl": train[2], "skipped_steps": self.skipped_steps}
            if math.isfinite(train[3]):  # the objective estimates a total correlation (tcvae)
                row["train_tc"] = train[3]
            if self.hybrid is not None:
                row |= self.hybrid.end_epoch()
            own = getattr(self.model, "epoch_metrics", None)  # (StackedVAE is no VAEModel)
            row |= own() if own is not None else {}  # a kind's own numbers (VQ-VAE: codebook usage)
            for part, xe, ye in parts:
                if not len(xe):
                    continue
                # Evaluated in fp32 whatever the training precision: reported numbers stay exact.
                ev = elbo_terms(self.model, xe, self.config.eval_batch_size, self.config.beta,
                                self.eval_generator(), y=ye, objective=self.config.objective,
                                k=self.config.k)
                row |= {f"{part}_loss": ev["loss"], f"{part}_rec": ev["rec"], f"{part}_kl": ev["kl"]}
                row |= {f"{part}_tc": ev["tc"]} if "tc" in ev else {}
            row["seconds"] = round(time.perf_counter() - t0, 4)
            self.check_finite(row)
            self.history.append(row)
            self.epoch = epoch
            for cb in callbacks:
                cb.on_epoch_end(self, data, row)
            if self.stop_reason:
                break
        for cb in callbacks:
            cb.on_loop_end(self, data)
        for cb in callbacks:
            cb.on_fit_end(self, data)
        return self.history

    def check_finite(self, row: dict[str, Any]) -> None:
        """Stop before a non-finite epoch is kept: its losses, or any weight."""
        bad = [k for k in ("train_loss", "val_loss", "test_loss") if k in row
               and not math.isfinite(row[k])]
        if not bad and all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return
        what = f"the {' and '.join(k.replace('_', ' ') for k in bad)} " if bad else "the weights "
        raise TrainingDiverged(
            f"training stopped in epoch {row['epoch']}: {what}became NaN or infinite, so the "
            "epoch was not kept; try a lower --lr, --clip-grad 10 or --precision fp32, and check "
            "the data's scale (a gaussian likelihood needs standardized values)")

    def train_epoch(self, x: torch.Tensor, binarize: bool, epoch: int,
                    y: torch.Tensor | None = None) -> list[float]:
        """One pass over ``x``; returns the epoch's mean [loss, rec, kl, tc] over all processes
        (tc NaN unless the objective estimates a total correlation).

        Each step takes the next global batch of the epoch's permutation (``batch_size`` per
        process times the number of processes) and draws its binarization and reparameterization
        noise for the whole global batch from the shared generator; each process keeps its
        slice. So the data order and every example's noise are the same whatever the process
        count, and the loss, scaled by ``world size / global batch``, averages to the global
        batch mean under DDP.
        """
        model, world, beta, k = self.train_model, self.world, self.config.beta, self.config.k
        model.train()
        if self.low is not None:
            self.low.refresh()  # the master weights may have been loaded since the last step
        if self.adam_step is not None:
            self.adam_step.invalidate()  # ... and the optimizer state
        gbs = self.config.batch_size * world.size
        perm = (torch.randperm(len(x), generator=self.shuffle_gen) if self.order is None
                else self.order(gbs, self.shuffle_gen)).to(self.device)
        n = len(perm)  # rows this epoch (a semi-supervised epoch repeats its labelled rows)
        parts: list[tuple] = []  # this process's (rec, kl, tc or None) of each step, in order
        params = [p for p in self.model.parameters() if p.requires_grad]
        starts = range(0, n, gbs)
        bads: list[torch.Tensor] = []  # 1.0 where a step was skipped
        bar = self.bar(n, epoch)
        slices = [slice_bounds(min(gbs, n - i), world) for i in starts]
        index = [perm[i + lo: i + hi] for i, (lo, hi) in zip(starts, slices)]
        batches = self.batches(x, index)
        for step, (i, (lo, hi), xb, idx) in enumerate(zip(starts, slices, batches, index)):
            g = min(gbs, n - i)  # this step's global batch
            u = (torch.rand(g, *x.shape[1:], generator=self.noise_gen, device=self.device)
                 if binarize else None)
            eps = torch.randn(k, g, self.model.noise_dim, generator=self.noise_gen, device=self.device)
            if world.size > 1:
                eps = eps[:, lo:hi]
            if binarize:
                xb = (u[lo:hi] < xb).to(xb.dtype)  # dynamic binarization: Bernoulli(pixel)
            weight = kl_weight(beta, self.config.kl_warmup, epoch, step, len(starts))
            self.set_lr(epoch, step, len(starts))
            if self.hybrid is not None:  # the objective's own update
                terms, loss, bad = self.hybrid.step(xb, eps, weight, g)
            else:
                with self.autocast:
                    terms = model(xb, weight, noise=eps, y=None if y is None else y.index_select(0, idx),
                                  name=self.config.objective, k=k)
                loss = summed_loss(terms, weight, self.config.free_bits) * (world.size / g)
                if self.low is not None:
                    self.low.zero_grad()
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                bad = self.guarded_step(loss, params)
            bads.append(bad)
            if step % CHECK_EVERY == CHECK_EVERY - 1 or i + gbs >= n:  # a rare host sync
                self.check_divergence(epoch, bads, done=i + gbs >= n)
            parts.append((terms.rec.detach(), terms.kl.detach(),
                          None if terms.tc is None else terms.tc.detach()))
            if bar is not None:
                bar.update(g)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{loss.item() / world.size:.2f}")
        if bar is not None:
            bar.close()
        self.skipped_steps = int(torch.stack(bads).sum()) if bads else 0
        rec_kl = self.epoch_terms(parts)
        finite = torch.isfinite(rec_kl)  # rows of a skipped non-finite step do not count
        sums = torch.stack([rec_kl.nan_to_num(0.0, 0.0, 0.0).double().sum(1),
                            finite.double().sum(1)])
        world.all_reduce(sums)
        rec, kl, tc = (sums[0] / sums[1]).tolist()  # tc: 0/0, NaN, without a TC
        return [reported_loss(rec, kl, beta, None if math.isnan(tc) else tc), rec, kl, tc]

    def epoch_terms(self, parts: list[tuple]) -> torch.Tensor:
        """This process's per-example rec, kl and tc in epoch order, ``(3, rows)``, summed once
        at the end of the epoch so the host never waits inside the loop (tc NaN without one)."""
        if not parts:
            return torch.zeros(3, 0, device=self.device)
        rec, kl = (torch.cat([p[j] for p in parts]) for j in (0, 1))
        tcs = [p[2] for p in parts]
        tc = torch.cat(tcs) if all(t is not None for t in tcs) else torch.full_like(rec, float("nan"))
        return torch.stack([rec, kl, tc])

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
        """The learning rate of this step (constant, or cosine over ``epochs``, per step)."""
        if self.config.lr_schedule == "constant":
            return
        done = ((epoch - 1) * steps + step) / (self.config.epochs * steps)
        lr = scheduled_lr(self.config.lr_schedule, self.config.lr, done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def batches(self, x, index: list[torch.Tensor]):
        """This process's rows of every step, in order, on the device.

        In-memory data: an index slice per step (no per-sample Python). Streamed data: rows read
        from a memory-mapped file, or decoded by DataLoader workers ahead of the loop, reaching a
        GPU through pinned memory.
        """
        cuda = self.device.type == "cuda"
        if isinstance(x, torch.Tensor):
            return (x.index_select(0, idx) for idx in index)  # twice as fast as x[idx] here
        rows = x.iter_batches(index, pin=cuda) if hasattr(x, "iter_batches") else (x[i] for i in index)
        return ((b.pin_memory() if cuda and not b.is_pinned() else b).to(self.device, non_blocking=True)
                for b in rows)

    @torch.no_grad()
    def guarded_step(self, loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """Adam step unless the loss or a gradient is non-finite; returns 1.0 if skipped.

        The check stays on the device and fused Adam skips the update itself when
        ``found_inf`` is set, so there is no host sync per step. With kept bf16 copies the
        master gradients share one buffer, and the check is one sum over it (a NaN or an
        infinity anywhere makes the sum non-finite); otherwise one fused pass over the
        gradients (the kernel of torch.amp.GradScaler, with a scale of 1).
        """
        if self.low is not None:
            flat = self.low.collect_grads()
        if self.config.clip_grad > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad, foreach=True)
            bad = torch.isfinite(norm + loss).logical_not_().float()
        elif self.low is not None:
            bad = torch.isfinite(flat.sum() + loss).logical_not_().float()
        else:
            found = torch.zeros((), device=loss.device)
            grads = [p.grad for p in params if p.grad is not None]
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self.unit_scale)
            bad = torch.maximum(found, (~torch.isfinite(loss)).float())
        if self.adam_step is not None:
            self.adam_step(bad)
        elif not bad.item():
            self.optimizer.step()
        if self.low is not None:
            self.low.refresh()
        return bad

    def check_divergence(self, epoch: int, bads: list[torch.Tensor], done: bool = False) -> None:
        """Stop when ``max_skips`` steps in a row were skipped (``bads``: this epoch's steps so
        far, 1.0 where skipped; the run carries over from the previous epoch)."""
        flags = torch.stack(bads[-self.config.max_skips:]).tolist()
        tail = next((j for j, b in enumerate(reversed(flags)) if not b), len(flags))
        run = tail + (self.consecutive_bad if tail == len(flags) else 0)
        if done:
            self.consecutive_bad = run
        if run >= self.config.max_skips:
            where = f"the checkpoint of epoch {epoch - 1} is intact; " if epoch > 1 else ""
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
