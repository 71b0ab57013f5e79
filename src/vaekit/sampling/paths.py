"""Latent paths: codes along a line or great circle between two codes, and sweeps of single
dimensions around a code (the traversals). Pure tensor functions; decoding and drawing them is
the caller's."""

from __future__ import annotations

from typing import Sequence

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between codes ``a`` and ``b`` (White 2016) at fractions ``t``."""
    na, nb = a.norm(), b.norm()
    omega = torch.arccos(torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / so


def interpolation_codes(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool) -> torch.Tensor:
    """``(steps, latent)`` codes from ``a`` to ``b`` inclusive."""
    t = torch.linspace(0, 1, steps, device=a.device)
    return slerp(a, b, t) if spherical else torch.lerp(a, b, t[:, None])


def traversal_codes(z: torch.Tensor, dims: Sequence[int], span: float, steps: int) -> torch.Tensor:
    """``(len(dims) * steps, latent)``: row r moves dimension ``dims[r]`` of ``z`` by ``-span..span``."""
    offsets = torch.linspace(-span, span, steps, device=z.device)
    codes = z.repeat(len(dims) * steps, 1)
    for r, d in enumerate(dims):
        codes[r * steps: (r + 1) * steps, d] += offsets
    return codes


def dimension_sweep(z: torch.Tensor, dims: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    """``(len(dims) * steps, latent)``: row block r sets dimension ``dims[r]`` of ``z`` to each of
    ``values[r]`` (``(len(dims), steps)``) in turn, the other dimensions as in ``z``."""
    steps = values.shape[1]
    codes = z.repeat(len(dims) * steps, 1)
    for r, d in enumerate(dims):
        codes[r * steps: (r + 1) * steps, d] = values[r]
    return codes
