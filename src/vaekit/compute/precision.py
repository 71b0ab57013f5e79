"""Kept low-precision weight copies for bf16 training (mixed precision with fp32 master weights).

Under bf16 autocast every step casts each Linear and Conv weight from fp32 to bf16 in the
forward pass and casts its bf16 gradient back in the backward pass: two casts and an autograd
node per weight and bias, every step. :class:`LowPrecisionCopy` keeps the bf16 copies between
steps instead (Micikevicius et al. 2018, "Mixed Precision Training": fp32 master weights, a
low-precision working copy). The training forward runs a twin of the model whose matmul weights
are the bf16 copies (autocast finds them already cast, so it casts only activations); after the
backward pass their gradients land, in one foreach copy, in an fp32 buffer that holds every
master gradient, and after the optimizer step one foreach copy refreshes the copies.

The numbers are those of plain autocast: the copies are the same round-to-nearest casts that
autocast makes, the matmuls see the same operands, and a bf16 gradient converts to fp32
exactly. Parameters that autocast does not cast (a learned observation scale, a mixture
prior's means, VampPrior pseudo-inputs) and all buffers are shared with the master model, so
their gradients land on the master parameters directly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# Modules whose weights autocast casts to the low-precision type (its matmul and conv ops).
MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                  nn.ConvTranspose2d, nn.ConvTranspose3d)


class LowPrecisionCopy:
    """A twin of ``model`` for training steps, with kept ``dtype`` copies of its matmul weights.

    Parameters
    ----------
    model : nn.Module
        The master model (fp32 parameters, the optimizer's).
    dtype : torch.dtype
        The low-precision type (``torch.bfloat16``).

    Attributes
    ----------
    module : nn.Module
        The twin to run the training forward pass with (under autocast).
    grad_buffer : torch.Tensor
        One fp32 buffer of every master gradient (each ``p.grad`` is a view of it), so a single
        reduction checks them all for non-finite values.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        twin = copy.deepcopy(model)
        masters = dict(model.named_modules())
        self.masters: list[nn.Parameter] = []
        self.copies: list[nn.Parameter] = []
        for name, mod in twin.named_modules():
            src = masters[name]
            for pname, master in src._parameters.items():
                if master is None:
                    continue
                if isinstance(src, MATMUL_MODULES) and master.requires_grad:
                    low = nn.Parameter(master.detach().to(dtype))
                    mod._parameters[pname] = low
                    self.masters.append(master)
                    self.copies.append(low)
                else:  # shared: autocast would not cast it, its gradient goes to the master
                    mod._parameters[pname] = master
            for bname, buf in src._buffers.items():
                mod._buffers[bname] = buf
        self.module = twin
        params = [p for p in model.parameters() if p.requires_grad]
        self.grad_buffer = torch.zeros(sum(p.numel() for p in params), device=_device(model),
                                       dtype=params[0].dtype if params else torch.float32)
        self.shared = [p for p in params if not any(p is m for m in self.masters)]
        offset = 0
        for p in params:
            p.grad = self.grad_buffer[offset: offset + p.numel()].view_as(p)
            offset += p.numel()
        self.master_grads = [p.grad for p in self.masters]
        self.shared_grads = [p.grad for p in self.shared]

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the master weights into the low-precision copies (after each optimizer step,
        and whenever the master weights were loaded from elsewhere)."""
        if self.copies:
            torch._foreach_copy_(self.copies, self.masters)

    def zero_grad(self) -> None:
        """Before a backward pass: the copies' gradients to None, the shared ones to zero."""
        for low in self.copies:
            low.grad = None
        for p, g in zip(self.shared, self.shared_grads):
            if p.grad is None or p.grad.data_ptr() != g.data_ptr():
                p.grad = g  # autograd accumulates into it in place
            g.zero_()

    @torch.no_grad()
    def collect_grads(self) -> torch.Tensor:
        """Copy the copies' gradients into the master gradients; returns the fp32 buffer that
        holds them all (a copy that got no gradient contributes zeros)."""
        grads = [low.grad for low in self.copies]
        if all(g is not None for g in grads):
            if grads:
                torch._foreach_copy_(self.master_grads, grads)
        else:
            for g, lg in zip(self.master_grads, grads):
                g.copy_(lg) if lg is not None else g.zero_()
        return self.grad_buffer


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
