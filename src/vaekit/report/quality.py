"""The report's sample-quality section: the metric of each sampler (``sample_quality.json``)
and, for images, a grid of samples from each sampler the run has (the prior and each stored,
current fit; the report never fits one)."""

from __future__ import annotations

from typing import Any

from vaekit.io.images import grid_png
from .sections import esc, img, num, table
from vaekit.errors import RunDirError
from vaekit.evaluation.quality import describe_metric, METRIC
from vaekit.pipeline import sample
from vaekit.sampling import samplers

GRID = 64  # samples per grid, 8 x 8


def available_samplers(run, model) -> dict[str, Any]:
    """The prior and every stored sampler that is current and valid (others are left out)."""
    found = {}
    for name in samplers.SAMPLERS.names():
        try:
            s, _ = samplers.load(run, name, model)
        except RunDirError:
            s = None  # a damaged fit is reported when it is used, not here
        if s is not None:
            found[name] = s
    return found


def quality_section(run, model, doc: dict[str, Any] | None, seed: int) -> str:
    """HTML of the section, or "" when there is neither a measurement nor a fitted sampler."""
    is_image = len(model.data_shape) == 3
    fitted = available_samplers(run, model) if is_image and not model.cond_dim else {}
    if doc is None and len(fitted) <= 1:
        return ""
    parts = ['<h2 id="sample-quality">Sample quality</h2>']
    if doc is not None:
        rows = [[name, e["sampler"], f"{num(e[METRIC], 2)} ± {num(e[METRIC + '_sd'], 2)}",
                 f"{num(e['precision'])} ± {num(e['precision_sd'])}",
                 f"{num(e['recall'])} ± {num(e['recall_sd'])}"]
                for name, e in doc["results"].items()]
        parts.append(table(["sampler", "codes from", "classifier FD (lower is better)",
                            "precision", "recall"], rows, text=(0, 1)))
        parts.append(f'<p class="caption">{esc(describe_metric(doc))}. Measured by vaekit '
                     f"evaluate --samples {doc['samples']}.</p>")
    else:
        parts.append('<p class="muted">Not measured yet: vaekit evaluate RUN --samples 10000 '
                     "--sampler all (needs labelled data).</p>")
    tiles = []
    for name, s in fitted.items():
        x = sample(model, GRID, seed, None, None if name == "prior" else s)
        tiles.append(f"<figure>{img(grid_png(x, 8), f'samples, {name} sampler', pixels=True)}"
                     f"<figcaption>{esc(name)}: {GRID} decoded draws from {esc(s.describe())} "
                     f"(seed {seed}).</figcaption></figure>")
    if tiles:
        parts.append(f'<div class="grid samples">{"".join(tiles)}</div>')
    return "".join(parts)


__all__ = ["quality_section", "available_samplers"]
