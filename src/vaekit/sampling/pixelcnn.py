"""The learned prior of a VQ-VAE (:mod:`vaekit.models.vq`): a gated PixelCNN over its grid of code
indices (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"),
fitted as a second stage on the codes of the training rows, as the VQ-VAE paper does (van den
Oord et al. 2017, Sec. 4).

The network sees the grid in raster order: the distribution of the code at position ``(i, j)``
depends only on the codes above row ``i`` and left of ``j`` in row ``i``. A vertical stack
(kernels over the rows above, the current row masked out in the first layer) and a horizontal
stack (the positions to the left, the current one masked out in the first layer) avoid the
blind spot of a single masked convolution; gated tanh x sigmoid units, residual horizontal
connections. ``log p(c) = sum_i log p(c_i | c_<i)``, a categorical per position, exact.

Sampling draws the ``P`` positions one after the other (``P`` passes of the network). With a
deterministic encoder ``c(x)`` and this prior, ``log p(x) >= log p(x | c(x)) + log p(c(x))``:
``p(x) = sum_c p(x|c) p(c)`` is at least its term at ``c(x)`` (:meth:`PixelCNNSampler.evaluate`).

Sized for a CPU: 5 gated layers of 32 channels, 3x3 kernels; trained with Adam (batch 128,
lr 1e-3) on the code grids of the training rows less the sampler's held-out tenth, whose
negative log-likelihood picks the epoch kept (patience 2, at most 15 epochs).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.errors import RunDirError
from vaekit.models.vae import VAEModel
from vaekit.parts.distributions import full_precision
from vaekit.runs.checkpoint import state_tensors
from vaekit.runs.reading import load_state_tensors
from .samplers import SAMPLERS, Sampler, held_out_split

# 32 channels and 5 layers: 35 s an epoch on MNIST's 54,000 4x4 grids of a shared CPU core
# (64 channels and 6 layers took 100 s, for 39.2 against 40.3 nats per grid on held-out codes
# after 7 and 4 epochs: not worth 3x on a CPU)
SIZES = {"channels": 32, "layers": 5, "kernel": 3}
EPOCHS, PATIENCE, BATCH, LR = 15, 2, 128, 1e-3


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 mask (a buffer)."""

    def __init__(self, a: int, b: int, kernel: tuple[int, int], padding: tuple[int, int],
                 mask: torch.Tensor) -> None:
        super().__init__(a, b, kernel, padding=padding)
        self.register_buffer("mask", mask.expand_as(self.weight).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class GatedLayer(nn.Module):
    """One gated layer of the two stacks. The vertical kernel ``(k//2 + 1, k)`` covers the rows
    up to the current one and the horizontal ``(1, k//2 + 1)`` the columns up to the current
    one (both cropped to the grid); in the first layer (``first``) the current row, and the
    current column, are masked out, so by induction no layer sees position ``(i, j)`` or later."""

    def __init__(self, channels: int, kernel: int, first: bool) -> None:
        super().__init__()
        c, half = channels, kernel // 2
        vmask, hmask = torch.ones(half + 1, kernel), torch.ones(1, half + 1)
        if first:
            vmask[-1] = 0  # not the current row
            hmask[:, -1] = 0  # not the current position
        self.vertical = MaskedConv2d(c, 2 * c, (half + 1, kernel), (half, half), vmask)
        self.horizontal = MaskedConv2d(c, 2 * c, (1, half + 1), (0, half), hmask)
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        self.first = first

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = v.shape[-2:]
        hv = self.vertical(v)[..., :rows, :]  # (n, 2c, H, W): rows <= i (< i in the first layer)
        hh = self.horizontal(h)[..., :cols]  # columns <= j of row i (< j in the first layer)
        out_h = self.h_out(gate(self.v_to_h(hv) + hh))
        return gate(hv), out_h if self.first else out_h + h


def gate(t: torch.Tensor) -> torch.Tensor:
    """``tanh(a) * sigmoid(b)`` of the two halves of the channels."""
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedPixelCNN(nn.Module):
    """Logits ``(n, K, H, W)`` of each position's code given the codes before it (raster order),
    for code grids ``(n, H, W)`` of indices in ``0..K-1``."""

    def __init__(self, codes: int, grid: tuple[int, int], channels: int = 64, layers: int = 6,
                 kernel: int = 3) -> None:
        super().__init__()
        self.codes, self.grid = codes, tuple(grid)
        self.embed = nn.Embedding(codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, i == 0) for i in range(layers))
        self.head = nn.Sequential(nn.Conv2d(channels, 2 * channels, 1), nn.ReLU(),
                                  nn.Conv2d(2 * channels, codes, 1))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        x = self.embed(index).permute(0, 3, 1, 2)  # (n, c, H, W)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def log_prob(self, index: torch.Tensor) -> torch.Tensor:
        """``log p(c)`` ``(n,)`` in nats of grids ``(n, H, W)``."""
        logp = F.log_softmax(full_precision(self.forward(index)), 1)
        return logp.gather(1, index.unsqueeze(1)).squeeze(1).sum((1, 2))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, device) -> torch.Tensor:
        """``n`` grids ``(n, H, W)``, position by position."""
        rows, cols = self.grid
        index = torch.zeros(n, rows, cols, dtype=torch.int64, device=device)
        for i in range(rows):
            for j in range(cols):
                probs = F.softmax(self.forward(index)[:, :, i, j].float(), -1)
                index[:, i, j] = torch.multinomial(probs.to(generator.device), 1,
                                                   generator=generator).squeeze(1).to(device)
        return index


def code_grid(model: VAEModel) -> tuple[int, int]:
    """The grid of a VQ-VAE's code positions: its conv body's, or one row of ``latent_dim``."""
    grid = getattr(model.body, "grid", None)
    return tuple(grid) if grid is not None else (1, model.positions)


@SAMPLERS.register("pixelcnn")
class PixelCNNSampler(Sampler):
    """A gated PixelCNN over a VQ-VAE's code grid: its learned prior p(c)."""

    name = "pixelcnn"
    needs = "code-prior"

    def __init__(self, model: VAEModel, net: GatedPixelCNN, record: dict[str, Any] | None = None) -> None:
        super().__init__(model, record)
        self.net = net.to(model.device).eval()

    def codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        index = self.net.sample(n, generator, self.model.device)
        return self.model.codes_of_index(index.flatten(1))

    def tensors(self) -> dict[str, torch.Tensor]:
        return state_tensors(self.net)

    def describe(self) -> str:
        rows, cols = self.net.grid
        return (f"a gated PixelCNN ({len(self.net.layers)} layers) over the {rows}x{cols} grid of "
                f"{self.net.codes} codes")

    def log_prior(self, index: torch.Tensor) -> torch.Tensor:
        """``log p(c)`` ``(n,)`` of code indices ``(n, P)``."""
        return self.net.log_prob(index.view(len(index), *self.net.grid))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 500) -> dict[str, Any]:
        """The bound ``log p(x) >= log p(x|c(x)) + log p(c(x))`` per row of ``x``, averaged:
        ``log_likelihood`` (and its standard error, ``bits_per_dim`` for discrete data) with its
        two terms, ``code_rec`` (``-log p(x|c(x))``) and ``code_prior_nll`` (``-log p(c(x))``), in
        nats; and the perplexity of the codes the rows use."""
        model = self.model
        was = model.training
        model.eval()
        rec, prior, usage = [], [], torch.zeros(model.quantizer.size, dtype=torch.float64)
        for i in range(0, len(x), batch_size):
            xb = x[i: i + batch_size].to(model.device)
            index = model.code_index(xb)
            rec.append(-model.decode(model.codes_of_index(index)).log_prob(xb).double().cpu())
            prior.append(-self.log_prior(index).double().cpu())
            usage += torch.bincount(index.flatten().cpu(), minlength=len(usage)).double()
        model.train(was)
        rec_t, prior_t = torch.cat(rec), torch.cat(prior)
        bound = -(rec_t + prior_t)
        n, d = len(bound), math.prod(model.data_shape)
        from vaekit.models.vq import perplexity  # the model's own definition

        return {"log_likelihood": float(bound.mean()),
                "log_likelihood_stderr": float(bound.std() / math.sqrt(n)) if n > 1 else float("nan"),
                "bits_per_dim": (float(-bound.mean() / (d * math.log(2)))
                                 if n and model.discrete(x) else None),
                "importance_samples": 1, "code_prior": self.name,
                "code_rec": float(rec_t.mean()), "code_prior_nll": float(prior_t.mean()),
                "uniform_prior_nll": model.positions * math.log(model.quantizer.size),
                "code_perplexity": float(perplexity(usage))}

    @classmethod
    def fit(cls, model, codes, seed, log, train) -> "PixelCNNSampler":
        grid = code_grid(model)
        index = model.index_of_codes(codes.to(model.device)).view(-1, *grid)
        fit_rows, held_rows = held_out_split(len(index))
        fit_rows, held_rows = torch.as_tensor(fit_rows), torch.as_tensor(held_rows)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = GatedPixelCNN(model.quantizer.size, grid, **SIZES).to(model.device)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        g = torch.Generator().manual_seed(seed)
        held = index[held_rows.to(index.device)] if len(held_rows) else index[fit_rows.to(index.device)]
        best, best_state, best_epoch, history = math.inf, None, 0, []
        for epoch in range(1, EPOCHS + 1):
            t0 = time.perf_counter()
            net.train()
            order = fit_rows[torch.randperm(len(fit_rows), generator=g)].to(index.device)
            for i in range(0, len(order), BATCH):
                loss = -net.log_prob(index[order[i: i + BATCH]]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                nll = float(torch.cat([-net.log_prob(held[j: j + 1000]) for j in
                                       range(0, len(held), 1000)]).double().mean())
            history.append(round(nll, 4))
            log(f"  pixelcnn: epoch {epoch}, held-out -log p(c) {nll:.3f} nats per grid "
                f"({time.perf_counter() - t0:.1f} s)")
            if nll < best:
                best, best_state, best_epoch = nll, copy.deepcopy(net.state_dict()), epoch
            elif epoch - best_epoch >= PATIENCE:
                break
        net.load_state_dict(best_state)
        details = {**SIZES, "grid": list(grid), "codebook_size": model.quantizer.size,
                   "epochs": len(history), "best_epoch": best_epoch, "held_out_nll": history}
        log(f"  pixelcnn: kept epoch {best_epoch}, held-out -log p(c) {best:.3f} nats per grid "
            f"(uniform: {math.prod(grid) * math.log(model.quantizer.size):.3f})")
        return cls(model, net, {"details": details})

    @classmethod
    def rebuild(cls, model, details, tensors, where) -> "PixelCNNSampler":
        grid = code_grid(model)
        expected = {**SIZES, "grid": list(grid), "codebook_size": model.quantizer.size}
        if any(details.get(k) != v for k, v in expected.items()):
            raise RunDirError(f"{where}: the PixelCNN's sizes do not match this vaekit and model; "
                              f"fit it again (vaekit fit-sampler RUN --sampler pixelcnn)")
        net = GatedPixelCNN(model.quantizer.size, grid, **SIZES)
        load_state_tensors(net, tensors, where)
        return cls(model, net)
