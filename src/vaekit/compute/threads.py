"""How many CPU threads a training step gets, from the model and the machine: one when other
processes already keep the cores busy (torch's threads then wait on each other: on two shared
cores a step took 2x to 50x longer on two threads than on one, bench/threads.py), one for a
model whose step is too small to gain from more on a quiet machine, torch's default for the
rest. The work of a step is measured (multiply-adds of the dense and convolution layers on one
example), not read from a list of model kinds; the machine's load by :mod:`vaekit.compute.load`."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

# multiply-adds per training step (forward and backward, whole batch) below which one thread
# is as fast as two on a quiet CPU: the crossover measured by bench/threads.py (docs/benchmarks.md)
SMALL_STEP = 6e6
BUSY_CORES = 0.5  # cores kept busy by other processes from which the machine counts as shared


def _madds(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-adds of one call of a dense or convolution layer (the matrix products, which
    are what torch's FLOP counter counts; element-wise work is left out there too)."""
    if isinstance(module, torch.nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        if module.transposed:  # each input element meets out_channels x kernel weights
            return inputs[0].numel() * module.out_channels // module.groups \
                * math.prod(module.kernel_size)
        return output.numel() * per_output
    return 0


@torch.no_grad()
def step_work(model: torch.nn.Module, example_shape: tuple[int, ...], batch: int) -> float:
    """Multiply-adds of one training step: 3 x the forward pass of one example x ``batch``
    (the backward pass costs about twice the forward). Counted by hooks on the dense and
    convolution layers: torch's ``FlopCounterMode`` gives the same count but imports
    ``torch._dynamo``, 1.5 s of start-up."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, *example_shape, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device) if getattr(model, "cond_dim", 0) else None
    total = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + _madds(m, i, o)))
             for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    try:
        model.reconstruct(x, y)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return 3 * batch * total[0]


def choose_threads(work: float, given: int, busy: float = 0.0) -> tuple[int, str]:
    """Threads for a step of ``work`` multiply-adds (``given`` > 0: the user's choice) with
    ``busy`` cores kept busy by other processes, and why, in words."""
    if given:
        return given, f"{given} (as given)"
    if busy >= BUSY_CORES and torch.get_num_threads() > 1:
        return 1, (f"1 (other processes keep {busy:.1f} cores busy: more threads would wait on "
                   "each other)")
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
