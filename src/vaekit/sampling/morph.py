"""Morphs: a decoded path between two examples' codes, with its ends chosen as rows or as the
typical examples of two classes (the morph of a 3 into an 8 in the reference texts).

Shared by ``vaekit interpolate``, :meth:`vaekit.VAE.interpolate` and the report.
"""

from __future__ import annotations

from typing import Sequence

import torch

from vaekit.errors import DataError
from .paths import interpolation_codes
from vaekit.evaluation.measures import posterior_means


def typical_row(codes: torch.Tensor) -> int:
    """The row whose code is nearest (Euclidean) the mean code: a typical example, cheaper than
    the medoid. Ties go to the first such row."""
    c = codes.double()
    return int(torch.argmin(((c - c.mean(0)) ** 2).sum(1)))


def class_representative(codes: torch.Tensor, labels: torch.Tensor, label: int) -> int:
    """The row of class ``label`` whose code is nearest the mean code of its class
    (:func:`typical_row` among the class's rows)."""
    rows = torch.nonzero(labels == label).flatten()
    if len(rows) == 0:
        raise ValueError(f"no row has label {label}")
    return int(rows[typical_row(codes[rows])])


def morph_classes(labels: Sequence[int]) -> tuple[int, int]:
    """The two classes of the report's morph: 3 and 8 where both are present (the morph of the
    reference texts), else the lowest and the highest label."""
    present = sorted({int(v) for v in labels})
    if len(present) < 2:
        raise ValueError("a morph between classes needs at least two classes")
    return (3, 8) if {3, 8} <= set(present) else (present[0], present[-1])


def morph(model, ends, y_ends, steps: int, spherical: bool = False):
    """Two inputs ``ends`` with the decoded path between their posterior means between them:
    ``(steps + 2, *data_shape)``; a conditional model decodes the path with the first label."""
    with torch.no_grad():
        z = model.encode(ends, y_ends).mean
        path = model.decode(interpolation_codes(z[0], z[1], steps, spherical),
                            None if y_ends is None else y_ends[:1]).mean
    return torch.cat([ends[:1].to(path.dtype), path, ends[1:].to(path.dtype)]).float().cpu()


def interpolation_ends(model, x: torch.Tensor, y: torch.Tensor | None, labels: torch.Tensor | None,
                       start: int, end: int, by_label: bool, names: tuple[str, str]) -> list[int]:
    """The rows of ``x`` at the two ends of an interpolation.

    ``start`` and ``end`` are rows of ``x``, or with ``by_label`` classes of ``labels`` whose
    typical examples (:func:`class_representative` of the posterior means) are taken; ``y`` is
    what the model reads (a conditional model's labels, else None). Errors name the ends as
    ``names`` (the caller's flags or parameters) in a DataError.
    """
    if not by_label:
        for name, i in zip(names, (start, end)):
            if not 0 <= i < len(x):
                raise DataError(f"{name} {i} is out of range: the data has rows 0 to {len(x) - 1}")
        return [start, end]
    if labels is None:
        raise DataError(f"these rows have no labels, so {names[0]} and {names[1]} cannot pick "
                        "examples of classes")
    present = torch.unique(labels).tolist()
    for name, c in zip(names, (start, end)):
        if c not in present:
            shown = ", ".join(map(str, present[:20])) + (", ..." if len(present) > 20 else "")
            raise DataError(f"{name} {c}: no row has this label (the labels here are {shown})")
    codes = posterior_means(model, x, y=y).to(labels.device)
    return [class_representative(codes, labels, c) for c in (start, end)]
