"""Network bodies: tensors in, tensors out, no probability.

An encoder maps ``(batch, *data_shape)`` to ``(batch, out_dim)`` raw posterior parameters;
a decoder maps ``(batch, latent_dim)`` to ``(batch, k * C, H, W)`` (or ``(batch, k * d)``)
raw likelihood parameters, ``k`` channels per data channel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry

BODIES: Registry[type] = Registry("architecture")


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with an activation between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Body:
    """An encoder/decoder pair builder; subclasses define ``encoder`` and ``decoder``."""

    default_hidden: tuple[int, ...] = ()

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int] | None) -> None:
        self.data_shape = tuple(data_shape)
        self.hidden = tuple(hidden) if hidden else self.default_hidden


@BODIES.register("mlp")
class MLPBody(Body):
    """The reference's fully connected pair (000_a95b26887c213f59.txt): 784-400-(20,20) / 20-400-784.

    The two posterior heads (mean, log-variance) are one ``Linear`` with twice the outputs:
    the same function, one matrix multiply instead of two.
    """

    default_hidden = (400,)

    def encoder(self, out_dim: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), mlp([math.prod(self.data_shape), *self.hidden, out_dim]))

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        c, *rest = self.data_shape
        out_shape = (params_per_dim * c, *rest)
        return nn.Sequential(mlp([latent_dim, *reversed(self.hidden), math.prod(out_shape)]),
                             nn.Unflatten(1, out_shape))


@BODIES.register("linear")
class LinearBody(Body):
    """Affine encoder and decoder, no hidden layer.

    With ``--likelihood gaussian --learn-obs-std`` this is probabilistic PCA: at its optimum
    the ELBO equals the exact pPCA log-likelihood (Tipping & Bishop 1999; Lucas et al. 2019).
    """

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int] | None) -> None:
        if hidden:
            raise ConfigError("--arch linear has no hidden layers; leave out --hidden")
        super().__init__(data_shape, hidden)

    def encoder(self, out_dim: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(self.data_shape), out_dim))

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        c, *rest = self.data_shape
        out_shape = (params_per_dim * c, *rest)
        return nn.Sequential(nn.Linear(latent_dim, math.prod(out_shape)), nn.Unflatten(1, out_shape))


@BODIES.register("conv")
class ConvBody(Body):
    """Strided conv encoder and transposed-conv decoder (002_0b1c8e9715ecc3b6.txt).

    Encoder: conv 32/64/128, kernel 3, stride 2, then a dense layer (``hidden``, default 1024).
    Decoder: dense to 512 x ceil(H/8) x ceil(W/8), transposed conv 128/64/C, kernel 5,
    stride 2, then a crop to H x W, so any image size and channel count works.
    Batch norm is left out so that a model's output does not depend on its batch.
    """

    default_hidden = (1024,)
    channels = (32, 64, 128)

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int] | None) -> None:
        super().__init__(data_shape, hidden)
        if len(self.data_shape) != 3:
            raise ConfigError(f"--arch conv needs image data (channels, height, width); this data "
                              f"has examples of shape {self.data_shape}: use --arch mlp")
        if len(self.hidden) != 1:
            raise ConfigError("--arch conv takes one --hidden width (its dense layer), "
                              f"got {','.join(map(str, self.hidden))}")
        _, h, w = self.data_shape
        self.grid = (math.ceil(h / 8), math.ceil(w / 8))  # spatial size after 3 stride-2 convs

    def encoder(self, out_dim: int) -> nn.Module:
        c = self.data_shape[0]
        layers: list[nn.Module] = []
        for a, b in zip((c, *self.channels[:-1]), self.channels):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        flat = self.channels[-1] * self.grid[0] * self.grid[1]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, self.hidden[0]),
                             nn.LeakyReLU(0.2), nn.Linear(self.hidden[0], out_dim))

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        c, h, w = self.data_shape

        def up(a: int, b: int) -> nn.Module:  # doubles height and width
            return nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1)

        return nn.Sequential(
            nn.Linear(latent_dim, 512 * self.grid[0] * self.grid[1]), nn.LeakyReLU(0.2),
            nn.Unflatten(1, (512, *self.grid)),
            up(512, 128), nn.LeakyReLU(0.2), up(128, 64), nn.LeakyReLU(0.2),
            up(64, params_per_dim * c), Crop(h, w))


class Crop(nn.Module):
    """Keep the top-left ``h x w`` of a feature map (undoes the decoder's rounding up)."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.h, : self.w]
