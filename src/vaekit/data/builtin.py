"""Built-in datasets, chosen by name: ``vaekit datasets`` lists them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vaekit.registry import Registry
from .base import Dataset
from . import cifar, svhn as svhn_files
from .cifar import load_cifar10
from .mnist import CACHE_NAME, load_mnist
from .shapes import shapes_dataset
from .svhn import load_svhn
from .fetch import cache_dir


@dataclass(frozen=True)
class BuiltinDataset:
    """A named dataset: how to load it, one line about it, and its files in the cache folder."""

    load: Callable[..., Dataset]
    description: str
    cache_files: tuple[str, ...] = ()  # relative to cache_dir(); empty: nothing to fetch

    def cached(self) -> bool:
        """Whether every file it fetches is already in the cache (False if it fetches none)."""
        return bool(self.cache_files) and all((cache_dir() / f).exists() for f in self.cache_files)


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def mnist(log=print) -> Dataset:
    a = load_mnist(log)
    return Dataset.from_arrays("mnist", a["x_train"][:, None], a["x_test"][:, None],
                               a["y_train"], a["y_test"])


def binarized_mnist(log=print) -> Dataset:
    ds = mnist(log)
    # One fixed-seed binarization of the test set; training batches are re-sampled by the trainer.
    g = torch.Generator().manual_seed(0)
    ds.x_test = torch.bernoulli(ds.x_test, generator=g)
    ds.name, ds.binarize = "binarized-mnist", True
    return ds


def digits(log=print) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8), pixels 0..16 -> [0, 1]
    test = np.zeros(len(x), bool)
    test[np.random.default_rng(0).permutation(len(x))[: len(x) // 10]] = True  # fixed split
    return Dataset.from_arrays("digits", x[~test], x[test], d.target[~test], d.target[test])


def svhn(log=print) -> Dataset:
    a = load_svhn(log)
    return Dataset.from_arrays("svhn", a["x_train"], a["x_test"], a["y_train"], a["y_test"])


def cifar10(log=print) -> Dataset:
    a = load_cifar10(log)
    return Dataset.from_arrays("cifar10", a["x_train"], a["x_test"], a["y_train"], a["y_test"])


DATASETS.register("mnist")(BuiltinDataset(
    mnist, "MNIST handwritten digits, 60,000 train / 10,000 test, 1x28x28, pixels/255 in [0, 1]",
    (CACHE_NAME,)))
DATASETS.register("binarized-mnist")(BuiltinDataset(
    binarized_mnist, "MNIST with training images re-binarized every epoch; fixed binarized test set",
    (CACHE_NAME,)))
DATASETS.register("digits")(BuiltinDataset(
    digits, "scikit-learn's 8x8 digits, 1,618 train / 179 test, 1x8x8, offline"))
DATASETS.register("shapes")(BuiltinDataset(
    shapes_dataset, "generated 2-D shapes, 5 known factors (shape, scale, rotation, x, y), "
    "41,472 train / 4,608 test, 1x64x64 binary, offline"))
DATASETS.register("svhn")(BuiltinDataset(
    svhn, "SVHN cropped house-number digits, 73,257 train / 26,032 test, 3x32x32, pixels/255",
    tuple(f"svhn/{name}" for name, _ in svhn_files.FILES.values())))
DATASETS.register("cifar10")(BuiltinDataset(
    cifar10, "CIFAR-10 photos in 10 classes, 50,000 train / 10,000 test, 3x32x32, pixels/255",
    (f"cifar10/{cifar.FILENAME}",)))
