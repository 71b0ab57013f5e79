"""Evaluating a trained run on rows, as one library call: the numbers ``vaekit evaluate``
prints and keeps (ELBO, importance-sampled log p(x), reconstruction error, diagnostics; a
semi-supervised model's classification error; MIG and DCI for rows with known factors; the
sample-quality metric of chosen samplers), returned as :class:`RunEvaluation`, and saved into
the run by :func:`save_run_evaluation`. The CLI, the estimator and the benchmarks call these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from vaekit.config.settings import RunConfig
from vaekit.errors import DataError, RunDirError
from vaekit.evaluation import quality
from vaekit.evaluation.disentangle import disentanglement_scores
from vaekit.evaluation.measures import (classification_error, evaluate,
                                        evaluate_without_likelihood, posterior_means)
from vaekit.io.stops import held_stops
from vaekit.models.kinds import learned_prior
from vaekit.models.vae import VAEModel
from vaekit.parts.objectives import trains_likelihood
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import SAMPLE_QUALITY

from .training import Log, save_evaluation, stderr
from .using import Rows, metric_classifier, run_sampler, samplers_for


@dataclass
class RunEvaluation:
    """What an evaluation measured.

    ``numbers`` is what ``evaluation.json`` holds (``data``, ``split``, ``n_examples``,
    ``log_likelihood`` and its ``log_likelihood_stderr``, ``elbo``, ``rec``, ``kl``,
    ``reconstruction_mse``, ``active_units``, ...; see :func:`vaekit.evaluation.measures.evaluate`);
    ``density`` whether the objective fits the decoder as a likelihood (so that log p(x) and
    the ELBO measure the model: not for a VAE-GAN); ``sample_quality`` the measured samplers as
    ``(settings, results)`` for :func:`vaekit.evaluation.quality.merge`, or None.
    """

    numbers: dict[str, Any]
    density: bool
    sample_quality: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None = None


def density_labels(model: VAEModel, y: torch.Tensor | None) -> torch.Tensor | None:
    """The labels a density needs: a conditional model's (log p(x|y)); a semi-supervised
    model's densities are of x alone, its labels only say which class a row is."""
    return y if model.cond_dim else None


def classification(model: VAEModel, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
    """A semi-supervised model's test error on the labelled rows (``y >= 0``) of ``x``."""
    error = None if y is None else classification_error(model, x, y)
    if error is None:
        return {}  # unlabelled data: the bounds only
    return {"classification_error": error, "n_labelled": int((y >= 0).sum())}


def evaluate_run(run: str | Path, model: VAEModel, cfg: RunConfig, rows: Rows, *, data: str,
                 split: str, k: int = 1000, seed: int = 0, samples: int | None = None,
                 samplers: Sequence[str] = ("prior",), draws: int = 5,
                 progress: Callable[[int], None] | None = None, log: Log = stderr) -> RunEvaluation:
    """Evaluate the model of ``run`` on ``rows`` (:func:`vaekit.pipeline.data_rows`).

    Parameters
    ----------
    run, model, cfg : the run directory, its model and configuration (:func:`load_run`).
    rows : the checked rows, on the model's device.
    data, split : what the rows are, as recorded in the result.
    k, seed : importance samples per row, and the seed of their noise.
    samples, samplers, draws : with ``samples``, the sample-quality metric of each sampler in
        ``samplers`` (``("all",)``: those that apply to the model's kind) with ``draws`` draws of ``samples`` examples (fits a missing sampler first).
    progress : called with the number of rows done, during log p(x).
    """
    x, y = rows.x, rows.y
    if len(x) == 0:
        raise DataError("no examples to evaluate")
    density = trains_likelihood(cfg.train.objective)
    prior_name = learned_prior(cfg)
    if prior_name:  # a point-mass posterior (VQ-VAE): every importance sample is the same code
        k = 1
    if density:  # a semi-supervised model's bound is of x alone (U(x)); its labels give the error
        res = evaluate(model, x, k, seed=seed, progress=progress, y=density_labels(model, y))
    else:  # a VAE-GAN: no density to estimate (see evaluate_without_likelihood)
        res = evaluate_without_likelihood(model, x, seed=seed, y=y)
    res = {"data": data, "split": split, **res}
    if prior_name:
        res |= learned_prior_bound(run, model, cfg, prior_name, x, log)
    if getattr(model, "semi_supervised", False):
        res |= classification(model, x, y)
    measured = None
    if samples:
        if model.cond_dim and y is None:
            raise DataError("a conditional model's samples need labels: evaluate on labelled rows")
        clf = metric_classifier(cfg, model.device, log)
        fitted = {name: run_sampler(run, model, cfg, name, log=log)
                  for name in samplers_for(cfg, samplers)}
        log(f"sample quality: {draws} draws of {samples} samples from {', '.join(fitted)} "
            f"against {len(x)} rows")
        results = quality.measure_samplers(model, clf, x, fitted, samples, draws, seed, y, log=log)
        measured = (quality.settings(clf, data, split, len(x), samples, draws, seed), results)
    if rows.factors is not None:  # data with known factors (shapes, an .npz with f_*): MIG and DCI
        res |= disentanglement_scores(posterior_means(model, x, y=y).numpy(), rows.factors,
                                      random_state=seed)  # flat keys: mig, dci_*, n_rows
    return RunEvaluation(res, density, measured)


def learned_prior_bound(run: str | Path, model: VAEModel, cfg: RunConfig, name: str,
                        x: torch.Tensor, log: Log) -> dict[str, Any]:
    """The bound on log p(x) of a kind with a learned prior (a VQ-VAE's ``pixelcnn`` sampler),
    which replaces ``log_likelihood`` (and ``bits_per_dim``); without a fitted prior, the
    numbers stay those of the uniform prior the model trained with, and a line says so."""
    try:
        sampler = run_sampler(run, model, cfg, name, fit="never", log=log)
    except RunDirError as e:
        log(f"log p(x) is bounded with the uniform prior over codes: {e}")
        return {"code_prior": "uniform"}
    return sampler.evaluate(x)


def save_run_evaluation(run_dir: RunDir, ev: RunEvaluation) -> tuple[list[str], dict | None]:
    """Keep ``ev`` in the run (the caller holds its lock): ``evaluation_k<K>.json`` and, unless
    it holds a larger K of the same data, ``evaluation.json``; the sample-quality file merged.
    Returns what was written and the merged sample-quality document (or None). One unit: a
    stop request that comes meanwhile waits until every file of it is written."""
    with held_stops():
        written = save_evaluation(run_dir, ev.numbers)
        doc = None
        if ev.sample_quality is not None:
            doc = quality.merge(run_dir.path, *ev.sample_quality)
            written.append(SAMPLE_QUALITY)
    return written, doc

