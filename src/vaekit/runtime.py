"""Where and how tensors compute: the device, the precision (bf16 autocast), the optimizer and
the learning-rate schedule."""

from __future__ import annotations

import contextlib
import math

import torch

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU (``mps`` must be asked for); a bare
    ``cuda`` gets its index.

    A device that is asked for but missing is a ConfigError that says what is there.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} was asked for but PyTorch sees no CUDA GPU; use "
                              "--device cpu (or auto)")
        index = name.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device {name} does not exist: PyTorch sees "
                              f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                              f"cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device mps was asked for but this PyTorch has no usable MPS device "
                          "(Apple silicon with macOS 12.3+); use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
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
        raise ConfigError("precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError("precision bf16 needs a CPU with AVX512-BF16 or AMX (this one has "
                          "neither, so bf16 would be slower); use --precision fp32")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision bf16 is for cpu and cuda devices; use --precision fp32 on "
                          f"{device.type}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_adam(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where PyTorch supports it (CPU and CUDA)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def scheduled_lr(schedule: str, lr: float, done: float) -> float:
    """The learning rate after a fraction ``done`` of training: constant, or cosine-annealed
    from ``lr`` to 0 (Loshchilov & Hutter 2017). A function of the step alone, so a resumed
    run continues the same schedule."""
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * min(done, 1.0)))
