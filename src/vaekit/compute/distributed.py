"""torch.distributed glue: vaekit runs unchanged under ``torchrun`` (gloo on CPU, NCCL on CUDA).

One process is the degenerate case: rank 0 of a world of 1, with no process group and every
collective a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes the run directory and prints."""
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over processes, in place (a no-op in one process)."""
        if self.size > 1:
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_world(device: str = "auto") -> World:
    """Join the process group ``torchrun`` set up in the environment; a world of 1 otherwise."""
    if launched_world_size() <= 1:
        return World()
    if not dist.is_initialized():
        use_nccl = device != "cpu" and torch.cuda.is_available()
        if use_nccl:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(world: World) -> None:
    """Destroy the process group while Python is fully alive.

    Gloo's worker threads can hold work that references tensors. If the DDP module and its
    reducer are only freed at interpreter exit, that can abort the process ("terminate called
    without an active exception"), so they are collected first.
    """
    if world.size > 1 and dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()
