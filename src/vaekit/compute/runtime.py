"""Where and how tensors compute: the device, the precision (bf16 autocast), the optimizer and
the learning-rate schedule."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
from typing import Iterable

import torch

from vaekit.errors import ConfigError


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


def flushes_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero (FTZ/DAZ): a denormal input reads as 0."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@functools.cache
def _gomp_parallel():
    """``GOMP_parallel`` of the OpenMP runtime torch loaded (libgomp), or None (another runtime).

    Other packages bring their own copy (scikit-learn's wheel does), each with its own thread
    pool, so the copy is the one in torch's own folders, or the only one loaded.
    """
    import ctypes
    from pathlib import Path

    try:
        with open("/proc/self/maps") as maps:
            loaded = {line.split()[-1] for line in maps if "libgomp" in line}
        root = Path(torch.__file__).resolve().parent
        own = [p for p in loaded if Path(p).parent in (root / "lib", root.parent / "torch.libs")]
        path = own[0] if len(own) == 1 else next(iter(loaded)) if len(loaded) == 1 else None
        if path is None:
            return None
        func = ctypes.CDLL(path).GOMP_parallel
    except (OSError, AttributeError):
        return None
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    func.argtypes = [callback, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    func.restype = None
    return func, callback


def set_flush_denormal(on: bool) -> None:
    """``torch.set_flush_denormal(on)`` on this thread and on every thread of torch's OpenMP pool
    (torch's own call sets only the calling thread's floating-point control register, and the
    pool's threads, created earlier, keep theirs)."""
    torch.set_flush_denormal(on)
    found = _gomp_parallel()
    if found is None:
        return
    func, callback = found
    keep = callback(lambda _: torch.set_flush_denormal(on))  # runs once on each pool thread
    func(keep, None, torch.get_num_threads(), 0)


@contextlib.contextmanager
def denormals_flushed(device: torch.device):
    """Flush denormal numbers to zero while training on the CPU, then restore.

    Adam's first moment of a weight that rarely gets a gradient (an input pixel that is almost
    always 0, a dead ReLU unit) decays geometrically into the denormal range (below 1.2e-38)
    within a few hundred steps, and arithmetic on denormals is many times slower on x86: on
    MNIST a quarter of the first layer's moments were denormal after three epochs, and each
    epoch from the second on was up to 25% slower. Flushed, they become 0, far below every
    number vaekit reports; evaluation runs outside this block, unchanged.
    """
    if device.type != "cpu" or flushes_denormals():
        yield
        return
    set_flush_denormal(True)
    try:
        yield
    finally:
        set_flush_denormal(False)


# Optimizer methods that torch wraps so that torch.compile skips them; the wrapper imports
# torch._dynamo on its first call, compiled or not: 1.1 s of a 4-second training here.
DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def eager_until_compiled() -> None:
    """Let :data:`DYNAMO_WRAPPED` run without importing torch._dynamo while nothing has loaded it.

    torch's wrapper calls ``fn.__dynamo_disable`` when a function has one (it caches its
    dynamo-disabled ``fn`` there). This puts ``fn`` itself there behind a check: while
    ``torch._dynamo`` is not imported nothing can be compiling, so ``fn`` runs as it is; once
    something imports it, the check removes itself and torch's own wrapping takes over. Where
    a future torch wraps differently, nothing is installed and torch behaves as it always did.
    """
    from torch.optim import optimizer as base

    for name in DYNAMO_WRAPPED:
        wrapper = getattr(base.Optimizer, name, None)
        fn = getattr(wrapper, "__wrapped__", None)
        if fn is None or "__dynamo_disable" in vars(fn) or "torch._dynamo" in sys.modules:
            continue
        setattr(fn, "__dynamo_disable", _eager(fn, wrapper))


def _eager(fn, wrapper):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if "torch._dynamo" in sys.modules:
            if vars(fn).get("__dynamo_disable") is call:
                delattr(fn, "__dynamo_disable")
            return wrapper(*args, **kwargs)
        return fn(*args, **kwargs)
    return call


def eager_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, without the dynamo graph breaks around it (whose module import
    costs 1.1 s) while torch._dynamo is not loaded; the same update bit for bit. Only for an
    optimizer without step hooks (:meth:`AdamStep.hooked`)."""
    if "torch._dynamo" in sys.modules or optimizer.defaults.get("differentiable"):
        optimizer.step()
        return
    with torch.no_grad():  # as torch's wrapper sets for a non-differentiable optimizer
        inspect.unwrap(type(optimizer).step)(optimizer)


def make_adam(params: torch.nn.Module | Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam over a module's parameters (or the ones given), fused into one kernel per step
    where PyTorch supports it (CPU and CUDA)."""
    eager_until_compiled()
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class AdamStep:
    """``optimizer.step()`` of a fused :class:`torch.optim.Adam`, with its per-step Python done
    once: the same three kernel calls (step counts, ``torch._fused_adam_``, the skipped-step
    correction) on parameter and state lists gathered when the state changes.

    torch.optim regroups the tensors by device and dtype and rebuilds the lists on every step,
    about as long as the fused kernel itself for a model of a few hundred thousand weights.
    Anything this does not cover (several parameter groups or devices, amsgrad, a state not yet
    made, step hooks to call, a replaced ``step``) takes ``optimizer.step()`` itself; both give
    the same numbers bit for bit (tested).

    Parameters
    ----------
    optimizer : torch.optim.Adam
        Built with ``fused=True``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.lists: tuple | None = None

    def invalidate(self) -> None:
        """Gather the lists again at the next step (after ``load_state_dict``)."""
        self.lists = None

    def gather(self) -> tuple | None:
        opt = self.optimizer
        if len(opt.param_groups) != 1:
            return None
        group = opt.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        states = [opt.state.get(p, {}) for p in params]
        simple = (group.get("fused") and not group["amsgrad"] and not group["maximize"]
                  and not group.get("capturable") and not group.get("differentiable")
                  and not group.get("decoupled_weight_decay") and not isinstance(group["lr"], torch.Tensor))
        if not params or not simple or not all("step" in s for s in states) \
                or len({(p.device, p.dtype) for p in params}) != 1:
            return None
        return (params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states])

    def hooked(self) -> bool:
        """Whether step hooks watch this optimizer, or its ``step`` was replaced on the instance
        (a profiler's or a test's wrapper): then ``step()`` itself runs, so they see every step."""
        from torch.optim import optimizer as base

        return bool("step" in vars(self.optimizer)
                    or getattr(self.optimizer, "_optimizer_step_pre_hooks", None)
                    or getattr(self.optimizer, "_optimizer_step_post_hooks", None)
                    or getattr(base, "_global_optimizer_pre_hooks", None)
                    or getattr(base, "_global_optimizer_post_hooks", None))

    def __call__(self, found_inf: torch.Tensor) -> None:
        """One Adam step, skipped where ``found_inf`` (a 0-d float tensor) is 1."""
        if self.lists is None:
            self.lists = self.gather()
        opt = self.optimizer
        hooked = self.hooked()
        grads = None if self.lists is None or hooked else [p.grad for p in self.lists[0]]
        if grads is None or any(g is None for g in grads):
            opt.found_inf = found_inf
            if hooked:
                opt.step()
            else:
                eager_step(opt)
            self.lists = self.gather()
            return
        params, exp_avgs, exp_avg_sqs, steps = self.lists
        group = opt.param_groups[0]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                           eps=group["eps"], maximize=False, grad_scale=None, found_inf=found_inf)
        torch._foreach_sub_(steps, [found_inf] * len(steps))


def scheduled_lr(schedule: str, lr: float, done: float) -> float:
    """The learning rate after a fraction ``done`` of training: constant, or cosine-annealed
    from ``lr`` to 0 (Loshchilov & Hutter 2017). A function of the step alone, so a resumed
    run continues the same schedule."""
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * min(done, 1.0)))
