"""Partly labelled data: which rows keep a label, and batches that always hold labelled rows.

A label of ``-1`` marks a row as unlabelled (in a user's ``.npz``, or made by ``--labelled N``,
which keeps ``N`` labels per class). With 100 labels among 50,000 rows a shuffled batch of 128
holds one labelled row in four batches, so :func:`labelled_order` composes every batch
instead: a fixed share of labelled rows, cycled in fresh random orders, and unlabelled rows
for the rest. An epoch is one pass over the unlabelled rows (Kingma et al. 2014 likewise
spread their labelled rows evenly over the minibatches).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch

from vaekit.errors import DataError
from .base import Dataset

UNLABELLED = -1


def keep_labels(y: torch.Tensor, per_class: int, seed: int, what: str) -> torch.Tensor:
    """``y`` with the labels of ``per_class`` rows of each class kept, chosen at random by
    ``seed``, and every other row marked :data:`UNLABELLED`."""
    known = y >= 0
    classes = torch.unique(y[known]).tolist()
    g = torch.Generator().manual_seed(seed)
    out = torch.full_like(y, UNLABELLED)
    for c in classes:
        rows = torch.nonzero(y == c).flatten()
        if len(rows) < per_class:
            raise DataError(f"{what}: class {c} has {len(rows)} labelled rows, fewer than the "
                            f"{per_class} per class asked for (labelled {per_class}); ask for fewer")
        keep = rows[torch.randperm(len(rows), generator=g)[:per_class]]
        out[keep] = c
    return out


def check_partial_labels(y: torch.Tensor | None, what: str) -> int:
    """The number of classes of partly labelled ``y`` (``-1`` unlabelled, else 0..C-1), after
    checking that some rows are labelled and every class has a labelled row."""
    if y is None:
        raise DataError(f"{what} has no labels; a semi-supervised model needs some: a labelled "
                        "built-in dataset (with labelled N to keep N per class), or an .npz whose "
                        "y_train holds class indices and -1 for unlabelled rows")
    if len(y) and int(y.min()) < UNLABELLED:
        raise DataError(f"{what}: labels must be class indices 0, 1, ... or -1 (unlabelled); got "
                        f"{int(y.min())}")
    known = y[y >= 0]
    if not len(known):
        raise DataError(f"{what}: every row is unlabelled (-1); a semi-supervised model needs at "
                        "least one labelled row of each class")
    counts = torch.bincount(known)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing or len(counts) < 2:
        why = (f"classes {missing} have no labelled row (classes are 0..{len(counts) - 1})"
               if missing else "only class 0 is labelled")
        raise DataError(f"{what}: {why}; a semi-supervised model needs at least two classes, "
                        "each with a labelled row")
    return len(counts)


def labelled_count(share: float, batch: int, n_labelled: int, n: int) -> int:
    """Labelled rows in a batch of ``batch``: ``share`` of it, but at least their share of the
    data and at least one, and at most ``batch - 1``."""
    m = max(1, round(share * batch), math.ceil(batch * n_labelled / n))
    return min(m, batch - 1)


def labelled_order(y: torch.Tensor, share: float, batch: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Row indices of one epoch, ``batch`` at a time, each batch with labelled rows.

    Each batch of ``batch`` rows holds :func:`labelled_count` labelled rows (the labelled set
    cycled, each cycle in a fresh random order) and unlabelled rows for the rest (each once per
    epoch, in random order), shuffled within the batch so that the slices of distributed
    processes hold a mix. All randomness comes from ``generator``. Data with no unlabelled row
    (or a batch of one) is simply shuffled.
    """
    known = y >= 0
    lab, unl = torch.nonzero(known).flatten(), torch.nonzero(~known).flatten()
    if not len(unl) or not len(lab) or batch < 2:
        return torch.randperm(len(y), generator=generator)
    m = labelled_count(share, batch, len(lab), len(y))
    steps = math.ceil(len(unl) / (batch - m))
    u = unl[torch.randperm(len(unl), generator=generator)]
    cycles = math.ceil(steps * m / len(lab))
    labelled = torch.cat([lab[torch.randperm(len(lab), generator=generator)] for _ in range(cycles)])
    parts = []
    for s in range(steps):
        rows = torch.cat([labelled[s * m: (s + 1) * m], u[s * (batch - m): (s + 1) * (batch - m)]])
        parts.append(rows[torch.randperm(len(rows), generator=generator)])
    return torch.cat(parts)


def partly_labelled(data: Dataset, labelled: int, share: float, seed: int
                    ) -> tuple[Dataset, Callable[[int, torch.Generator], torch.Tensor]]:
    """The training part of a semi-supervised run, with ``labelled`` labels per class kept
    (chosen by ``seed``; 0 keeps the labels as given), and the epoch order whose batches hold
    labelled rows (``order(batch, generator)``, :func:`labelled_order`)."""
    what = f"{data.name} (training part)"
    check_partial_labels(data.y_train, what)
    y = data.y_train
    if labelled:
        y = keep_labels(y, labelled, seed, what)
        check_partial_labels(y, what)
    data = Dataset(data.name, data.x_train, data.x_test, y, data.y_test, data.binarize)
    return data, partial(labelled_order, y, share)
