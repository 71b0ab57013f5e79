"""The sample-quality metric: classifier FD and precision/recall, with an error bar over draws.

``classifier_fd`` is the Fréchet distance (:func:`vaekit.evaluation.sample_metrics.frechet_distance`)
between the features of the reference rows (the evaluated split, all of it) and the features
of ``N`` generated examples, in the feature space of vaekit's own classifier
(:mod:`vaekit.evaluation.featurenet`): the 128 units of its last hidden layer. It is the formula of FID,
but *not* Inception FID: its numbers compare models on the same data only.

``precision`` and ``recall`` are Kynkäänniemi et al. (2019)'s, with ``k = 3``, between the
``N`` generated examples and ``min(N, n_reference)`` reference rows drawn without replacement.

Each of ``draws`` repetitions draws fresh samples (and a fresh reference subset) from its own
seed, ``seed + r``; the result is the mean and the standard deviation over the repetitions.
Generated examples are decoder means (what ``vaekit sample`` writes). The results of one run
are kept in ``sample_quality.json``, one entry per sampler, validated whenever read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vaekit.config.settings import SAMPLER_NAMES
from vaekit.errors import DataError, RunDirError
from vaekit.runs.layout import SAMPLE_QUALITY
from .sample_metrics import frechet_distance, gaussian_stats, precision_recall
from vaekit.io.files import write_json
from vaekit.runs.store import check_schema, read_json

K_NEIGHBOURS = 3  # Kynkäänniemi et al. 2019 use k = 3
DRAWS = 5
FORMAT, VERSION = "vaekit-sample-quality", 1
METRIC = "classifier_fd"
FILE = SAMPLE_QUALITY
Draw = Callable[[int, torch.Generator], torch.Tensor]  # (n, generator) -> (n, *data_shape)


def measure(features: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor, draw: Draw,
            n: int, draws: int = DRAWS, seed: int = 0, k: int = K_NEIGHBOURS,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """The metric of the examples ``draw`` makes, against ``reference``.

    Parameters
    ----------
    features : callable
        Examples ``(m, *shape)`` -> feature vectors ``(m, d)`` (the classifier's).
    reference : torch.Tensor
        The reference rows ``(n_reference, *shape)``.
    draw : callable
        ``draw(n, generator)`` -> ``n`` generated examples; all randomness from ``generator``.
    n, draws : int
        Examples per draw, and independent draws.
    seed : int
        Draw ``r`` uses a generator on ``device`` seeded ``seed + r``.

    Returns
    -------
    dict
        ``classifier_fd``, ``precision``, ``recall``: means over draws; ``*_sd``: their standard
        deviations (ddof 1; 0 for one draw); ``*_draws``: the values of each draw.
    """
    ref = features(reference).double()
    if len(ref) <= k or n <= k:
        raise DataError(f"sample quality needs more than k = {k} reference rows and samples, got "
                        f"{len(ref)} and {n}")
    mu, cov = gaussian_stats(ref)
    fd, prec, rec = [], [], []
    for r in range(draws):
        g = torch.Generator(device).manual_seed(seed + r)
        f = features(draw(n, g)).double()
        fd.append(frechet_distance(mu, cov, *gaussian_stats(f)))
        subset = torch.randperm(len(ref), generator=torch.Generator().manual_seed(seed + r))[:n]
        p, c = precision_recall(ref[subset], f, k)
        prec.append(p)
        rec.append(c)
    out: dict[str, Any] = {}
    for name, values in ((METRIC, fd), ("precision", prec), ("recall", rec)):
        out[name] = float(np.mean(values))
        out[f"{name}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out[f"{name}_draws"] = [float(v) for v in values]
    return out


def model_draw(model, sampler, labels: torch.Tensor | None = None, batch_size: int = 1000) -> Draw:
    """``draw(n, generator)``: decoder means of ``n`` codes from ``sampler`` (a
    :class:`vaekit.sampling.samplers.Sampler`), float32 on the CPU. A conditional model decodes each code
    with a label drawn uniformly from ``labels`` (the reference rows' labels, so the classes
    come in the reference's proportions)."""
    @torch.no_grad()
    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        y = None
        if model.cond_dim:
            pick = torch.randint(len(labels), (n,), generator=g, device=g.device)
            y = labels.to(g.device)[pick].to(model.device)
        out = []
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            out.append(model.decode(sampler.codes(m, g), None if y is None else y[i: i + m])
                       .mean.float().cpu())
        return torch.cat(out)
    return draw


def measure_samplers(model, classifier, reference: torch.Tensor, samplers: dict[str, Any], n: int,
                     draws: int = DRAWS, seed: int = 0, labels: torch.Tensor | None = None,
                     log: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, Any]]:
    """:func:`measure` for each sampler of ``samplers`` (name -> Sampler), as result entries;
    ``log`` gets a line as each sampler is done."""
    import time

    if model.cond_dim and (labels is None or not len(labels)):
        raise DataError("a conditional model's samples need labels: give labelled reference rows")
    dev = classifier.shift.device
    feats = lambda x: classifier.features(x.to(dev))  # noqa: E731
    out = {}
    for name, s in samplers.items():
        t0 = time.perf_counter()
        out[name] = measure(feats, reference, model_draw(model, s, labels), n, draws, seed,
                            device=model.device) | {"sampler": s.describe()}
        log(f"  {name}: classifier FD {out[name][METRIC]:.2f} ± {out[name][METRIC + '_sd']:.2f} "
            f"({time.perf_counter() - t0:.0f} s)")
    return out


def settings(classifier, data: str, split: str, n_reference: int, n: int, draws: int,
             seed: int) -> dict[str, Any]:
    """The settings a result was measured with (:func:`merge` keeps only entries that share them)."""
    r = classifier.record
    return {"data": data, "split": split, "n_reference": n_reference, "samples": n, "draws": draws,
            "k": K_NEIGHBOURS, "seed": seed,
            "classifier": {"id": classifier.id, "test_accuracy": r["test_accuracy"],
                           "feature_layer": r["feature_layer"], "feature_dim": r["feature_dim"],
                           "kind": r["kind"], "train_steps": r["train_steps"], "data": r["data"]}}


# -- sample_quality.json ---------------------------------------------------------------------
SETTINGS = {"data": str, "split": str, "n_reference": int, "samples": int, "draws": int, "k": int,
            "seed": int, "classifier": dict}
CLASSIFIER = {"id": str, "test_accuracy": float, "feature_layer": str, "feature_dim": int,
              "kind": str, "train_steps": int, "data": str}
ENTRY = {METRIC: float, f"{METRIC}_sd": float, "precision": float, "precision_sd": float,
         "recall": float, "recall_sd": float, f"{METRIC}_draws": list, "precision_draws": list,
         "recall_draws": list, "sampler": str}


REDO = "run 'vaekit evaluate RUN --samples N' again to rewrite it"


def _typed(d: Any, schema: dict[str, type], where: str) -> None:
    check_schema(d, schema, where, REDO)


def check(d: Any, where: str) -> dict[str, Any]:
    """A parsed ``sample_quality.json``, validated in full (keys, types, finite numbers)."""
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION:
        raise RunDirError(f"{where} is not a vaekit sample-quality file of version {VERSION}; {REDO}")
    _typed({k: v for k, v in d.items() if k not in ("format", "version", "metric", "results")},
           SETTINGS, where)
    _typed(d["classifier"], CLASSIFIER, f"{where} (classifier)")
    if d.get("metric") != METRIC or not isinstance(d.get("results"), dict):
        raise RunDirError(f"{where}: expected metric '{METRIC}' and a results object")
    for name, entry in d["results"].items():
        if name not in SAMPLER_NAMES:
            raise RunDirError(f"{where}: unknown sampler '{str(name)[:40]}' in its results")
        _typed(entry, ENTRY, f"{where} ({name})")
    return d


def read(run: Path) -> dict[str, Any] | None:
    """The run's ``sample_quality.json`` (validated), or None when there is none."""
    path = Path(run) / FILE
    return check(read_json(path), str(path)) if path.exists() else None


def merge(run: Path, settings: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write ``results`` (sampler -> entry) into the run's file, atomically. Entries of other
    samplers stay when they were measured with the same settings (data, split, sizes, seed and
    classifier), so the table compares like with like; otherwise they are dropped."""
    try:
        current = read(run)
    except RunDirError:  # a damaged file is replaced
        current = None
    keep = {}
    if current is not None and {k: current[k] for k in SETTINGS} == settings:
        keep = current["results"]
    doc = {"format": FORMAT, "version": VERSION, "metric": METRIC, **settings,
           "results": {**keep, **results}}
    check(doc, FILE)
    write_json(Path(run) / FILE, doc)
    return doc


def describe_metric(doc: dict[str, Any]) -> str:
    """One sentence: what the numbers are (for the CLI, the report and the bench)."""
    c = doc["classifier"]
    return (f"classifier FD: the Fréchet distance between {doc['samples']:,} generated examples "
            f"(decoder means) and the {doc['n_reference']:,} rows of {doc['data']} ({doc['split']}), "
            f"in the {c['feature_dim']} features of the {c['feature_layer']} of vaekit's own "
            f"{'LeNet-sized CNN' if c['kind'] == 'image' else 'MLP'} classifier (test accuracy "
            f"{100 * c['test_accuracy']:.2f}%; not Inception FID, so not comparable with published "
            f"FIDs); precision and recall with k = {doc['k']} nearest neighbours "
            f"(Kynkäänniemi et al. 2019); mean ± sd over {doc['draws']} independent draws")


def table_lines(doc: dict[str, Any]) -> list[str]:
    """The results as aligned text lines, one per sampler (lower FD and higher precision and
    recall are better)."""
    lines = [f"{'sampler':<10} {'classifier FD':>19} {'precision':>15} {'recall':>15}"]
    for name, e in doc["results"].items():
        lines.append(f"{name:<10} {e[METRIC]:>10.2f} ± {e[METRIC + '_sd']:<6.2f} "
                     f"{e['precision']:>7.3f} ± {e['precision_sd']:.3f} "
                     f"{e['recall']:>7.3f} ± {e['recall_sd']:.3f}")
    return lines


__all__ = ["measure", "read", "merge", "check", "describe_metric", "METRIC", "FILE"]
