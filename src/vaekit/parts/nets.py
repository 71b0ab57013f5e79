"""Network bodies: tensors in, tensors out, no probability.

An encoder maps ``(batch, *data_shape)`` (and, for a conditional model, a ``(batch, cond_dim)``
label code) to ``(batch, out_dim)`` raw posterior parameters; a decoder maps
``(batch, latent_dim)`` to ``(batch, k * C, H, W)`` (or ``(batch, k * d)``) raw likelihood
parameters, ``k`` channels per data channel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from vaekit.errors import ConfigError
from vaekit.registry import Registry

BODIES: Registry[type] = Registry("architecture")


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with an activation between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """``head(cat(features(x), cond))``: an encoder that can be conditioned on a label.

    Parameters
    ----------
    features : nn.Module
        Maps ``(batch, *data_shape)`` to flat features ``(batch, n)``.
    head : nn.Module
        Maps ``(batch, n + cond_dim)`` to ``(batch, out_dim)``; its first layer is dense.
    cond_dim : int
        Width of the condition (a one-hot label for a CVAE); 0 for an unconditional encoder.
    """

    def __init__(self, features: nn.Module, head: nn.Module, cond_dim: int = 0) -> None:
        super().__init__()
        self.features, self.head, self.cond_dim = features, head, cond_dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Raw posterior parameters ``(batch, out_dim)``.

        Parameters
        ----------
        x : torch.Tensor
            A batch ``(batch, *data_shape)``.
        cond : torch.Tensor, optional
            ``(batch, cond_dim)`` condition; required exactly when ``cond_dim > 0``.
        """
        h = self.features(x)
        if (cond is None) != (self.cond_dim == 0):
            raise ValueError(f"this encoder takes a condition of width {self.cond_dim}; "
                             f"got {'none' if cond is None else tuple(cond.shape)}")
        if cond is not None:
            # the label joins at the first dense layer (Sohn et al. 2015, CVAE)
            h = torch.cat([h, cond.to(h.dtype)], dim=-1)
        return self.head(h)


def conv_encoder(layers: list[nn.Module], flat: int, width: int, out_dim: int,
                 cond_dim: int) -> Encoder:
    """Conv ``layers`` flattened to ``flat`` features, then dense ``width`` -> ``out_dim``; the
    label (``cond_dim``) joins at the dense layer."""
    return Encoder(nn.Sequential(*layers, nn.Flatten()),
                   nn.Sequential(nn.Linear(flat + cond_dim, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, out_dim)),
                   cond_dim)


class Body:
    """An encoder/decoder pair builder; subclasses define ``encoder`` and ``decoder``.

    Parameters
    ----------
    data_shape : tuple of int
        Shape of one example: ``(d,)`` or ``(C, H, W)``.
    hidden : sequence of int, optional
        Hidden widths; None or empty for the body's default.
    """

    default_hidden: tuple[int, ...] = ()

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int] | None) -> None:
        self.data_shape = tuple(data_shape)
        self.hidden = tuple(hidden) if hidden else self.default_hidden
        # what the encoder reads: the data, unless the likelihood gives it features of its own
        # (Likelihood.features; a table's one-hot levels and missing-cell indicators)
        self.in_shape = self.data_shape

    def encoder(self, out_dim: int, cond_dim: int = 0) -> Encoder:
        """An :class:`Encoder` from ``(batch, *data_shape)`` [+ ``(batch, cond_dim)``] to ``(batch, out_dim)``."""
        raise NotImplementedError

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        """A module from ``(batch, latent_dim)`` to ``(batch, params_per_dim * C, ...)``."""
        raise NotImplementedError

    def out_shape(self, params_per_dim: int) -> tuple[int, ...]:
        """The decoder's output shape for one example: ``params_per_dim`` channels per data channel."""
        c, *rest = self.data_shape
        return (params_per_dim * c, *rest)


@BODIES.register("mlp")
class MLPBody(Body):
    """The reference's fully connected pair (the MNIST VAE of the PyTorch examples, after Kingma & Welling 2013): 784-400-(20,20) / 20-400-784.

    The two posterior heads (mean, log-variance) are one ``Linear`` with twice the outputs:
    the same function, one matrix multiply instead of two.
    """

    default_hidden = (400,)

    def encoder(self, out_dim: int, cond_dim: int = 0) -> Encoder:
        return Encoder(nn.Flatten(), mlp([math.prod(self.in_shape) + cond_dim, *self.hidden, out_dim]),
                       cond_dim)

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        out_shape = self.out_shape(params_per_dim)
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

    def encoder(self, out_dim: int, cond_dim: int = 0) -> Encoder:
        return Encoder(nn.Flatten(), nn.Linear(math.prod(self.in_shape) + cond_dim, out_dim), cond_dim)

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        out_shape = self.out_shape(params_per_dim)
        return nn.Sequential(nn.Linear(latent_dim, math.prod(out_shape)), nn.Unflatten(1, out_shape))


def check_image_body(body: Body, arch: str) -> None:
    """Raise ConfigError unless ``body`` has image data and one ``hidden`` width (its dense layer)."""
    if len(body.data_shape) != 3:
        raise ConfigError(f"--arch {arch} needs image data (channels, height, width); this data "
                          f"has examples of shape {body.data_shape}: use --arch mlp")
    if len(body.hidden) != 1:
        raise ConfigError(f"--arch {arch} takes one --hidden width (its dense layer), "
                          f"got {','.join(map(str, body.hidden))}")


def halved(data_shape: tuple[int, ...], times: int) -> tuple[int, int]:
    """Spatial size of a ``(C, H, W)`` image after ``times`` stride-2, padding-1 convs (each rounds up)."""
    _, h, w = data_shape
    return math.ceil(h / 2**times), math.ceil(w / 2**times)


@BODIES.register("conv")
class ConvBody(Body):
    """Strided conv encoder and transposed-conv decoder (as in Shu 2018, "Density estimation: VAEs").

    Encoder: conv 32/64/128, kernel 3, stride 2, then a dense layer (``hidden``, default 1024).
    Decoder: dense to 512 x ceil(H/8) x ceil(W/8), transposed conv 128/64/C, kernel 5,
    stride 2, then a crop to H x W, so any image size and channel count works.
    Batch norm is left out so that a model's output does not depend on its batch.
    """

    default_hidden = (1024,)
    channels = (32, 64, 128)

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int] | None) -> None:
        super().__init__(data_shape, hidden)
        check_image_body(self, "conv")
        self.grid = halved(self.data_shape, 3)

    def encoder(self, out_dim: int, cond_dim: int = 0) -> Encoder:
        c = self.data_shape[0]
        layers: list[nn.Module] = []
        for a, b in zip((c, *self.channels[:-1]), self.channels):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        return conv_encoder(layers, self.channels[-1] * math.prod(self.grid), self.hidden[0],
                            out_dim, cond_dim)

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        c, h, w = self.data_shape
        grid = self.grid

        def up(a: int, b: int) -> nn.Module:  # doubles height and width
            return nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1)

        return nn.Sequential(
            nn.Linear(latent_dim, 512 * math.prod(grid)), nn.LeakyReLU(0.2),
            nn.Unflatten(1, (512, *grid)),
            up(512, 128), nn.LeakyReLU(0.2), up(128, 64), nn.LeakyReLU(0.2),
            up(64, params_per_dim * c), Crop(h, w))


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``skip(x) + conv(act(conv(act(x))))``, two 3x3 convs.

    The skip is the identity, or a 1x1 conv where the stride or the width changes
    (He et al. 2016). With no normalisation layer (outputs must not depend on the batch),
    the second conv starts at zero so each block starts as its skip and a stack of them
    trains stably (zero-init residual: Goyal et al. 2017; Fixup, Zhang et al. 2019).
    """

    def __init__(self, a: int, b: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(a, b, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(b, b, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if a == b and stride == 1 else nn.Conv2d(a, b, 1, stride=stride)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv2(self.act(self.conv1(self.act(x))))


@BODIES.register("resnet")
class ResNetBody(Body):
    """Residual conv encoder and decoder, light enough for a CPU.

    Encoder: 3x3 stem conv to 32 channels, then one stage per width in ``channels`` (32, 64),
    each ``blocks`` residual blocks whose first halves the size (stride 2, 1x1 skip), then
    flatten and a dense layer (``hidden``, default 512). Decoder, mirrored: dense (``hidden``)
    then dense to 64 x ceil(H/4) x ceil(W/4), one stage of residual blocks per width (64, 32)
    with a nearest x2 upsampling before each but the first, a last x2 upsampling, a 3x3 conv to
    ``params_per_dim * C`` channels and a crop to H x W, so any image size and channel count
    works. Only the stem and the last conv run at full size, which keeps it CPU-friendly.
    No batch norm (see :class:`ResidualBlock`).
    """

    default_hidden = (512,)
    channels = (32, 64)
    blocks = 2  # residual blocks per stage

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int] | None) -> None:
        super().__init__(data_shape, hidden)
        check_image_body(self, "resnet")
        self.grid = halved(self.data_shape, len(self.channels))

    def encoder(self, out_dim: int, cond_dim: int = 0) -> Encoder:
        c = self.data_shape[0]
        layers: list[nn.Module] = [nn.Conv2d(c, self.channels[0], 3, padding=1)]
        for a, b in zip((self.channels[0], *self.channels[:-1]), self.channels):
            layers += [ResidualBlock(a, b, stride=2)]
            layers += [ResidualBlock(b, b) for _ in range(self.blocks - 1)]
        return conv_encoder([*layers, nn.LeakyReLU(0.2)], self.channels[-1] * math.prod(self.grid),
                            self.hidden[0], out_dim, cond_dim)

    def decoder(self, latent_dim: int, params_per_dim: int) -> nn.Module:
        c, h, w = self.data_shape
        grid = self.grid
        widths = self.channels[::-1]  # (64, 32): widest at the smallest grid
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, self.hidden[0]), nn.LeakyReLU(0.2),
            nn.Linear(self.hidden[0], widths[0] * math.prod(grid)), nn.Unflatten(1, (widths[0], *grid))]
        for i, (a, b) in enumerate(zip((widths[0], *widths[:-1]), widths)):
            if i > 0:  # the first stage works at the dense layer's grid
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += [ResidualBlock(a, b)] + [ResidualBlock(b, b) for _ in range(self.blocks - 1)]
        # full size by one more upsampling: only the last conv works at H x W, as the stem does
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.LeakyReLU(0.2),
                   nn.Conv2d(widths[-1], params_per_dim * c, 3, padding=1), Crop(h, w)]
        return nn.Sequential(*layers)


class Crop(nn.Module):
    """Keep the top-left ``h x w`` of a feature map (undoes the decoder's rounding up)."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.h, : self.w]
