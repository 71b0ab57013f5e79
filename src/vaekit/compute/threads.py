"""How many CPU threads a training step gets: one for a model whose step is too small to gain
from more (a table's MLP of 64 units: 0.85 ms a step on one thread, 1.0 ms on two on a quiet
machine, and 160 ms on two when other processes hold the cores, as threads wait on each other),
torch's default for the rest. Decided by the measured work of a step (multiply-adds counted by
torch's FLOP counter on one example), not by a list of model kinds."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

# multiply-adds per training step (forward and backward, whole batch) below which one thread
# is fastest on the CPU; measured by bench/threads.py (docs/benchmarks.md)
SMALL_STEP = 5e7


@torch.no_grad()
def step_work(model: torch.nn.Module, example_shape: tuple[int, ...], batch: int) -> float:
    """Multiply-adds of one training step: 3 x the forward pass of one example x ``batch``
    (the backward pass costs about twice the forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    x = torch.zeros(1, *example_shape, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model.reconstruct(x)
    finally:
        model.train(was)
    return 3 * batch * counter.get_total_flops() / 2  # FLOPs count a multiply-add as 2


def choose_threads(work: float, given: int) -> tuple[int, str]:
    """Threads for a step of ``work`` multiply-adds (``given`` > 0: the user's choice), and
    why, in words."""
    if given:
        return given, f"{given} (as given)"
    if work < SMALL_STEP:
        return 1, (f"1 (a small model: {work / 1e6:.1f} M multiply-adds per step, where more "
                   "threads only wait on each other)")
    n = torch.get_num_threads()
    return n, f"{n} (torch's default: {work / 1e6:.0f} M multiply-adds per step)"


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore torch's setting."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
