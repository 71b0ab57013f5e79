"""A trained run + data -> rows to score, draws, and fitted samplers of codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.config.settings import RunConfig
from vaekit.data import DATASETS, Dataset, load_data, load_part
from vaekit.errors import DataError
from vaekit.models.kinds import require, supports
from vaekit.models.vae import VAEModel
from vaekit.config.options import OptionError
from vaekit.runs.directory import RunDir
from vaekit.compute.runtime import resolve_device
from .training import (Log, check_rows, fingerprint, label_classes, stderr, table_source, train,
                       validation_split)
from vaekit.evaluation.featurenet import classifier_for
from vaekit.evaluation.imputation import impute
from vaekit.sampling.samplers import SAMPLERS, fit_sampler as fit, obtain


def load_run(path: str | Path, device: str = "auto") -> tuple[VAEModel, RunConfig]:
    """The trained model of a run directory (on ``device``, eval mode) and its configuration."""
    return RunDir(path).load_model(resolve_device(device))


@dataclass
class Rows:
    """Checked rows of a run's data: ``x`` ``(n, *data_shape)``; ``y``, the labels the model
    reads (a conditional or semi-supervised model's, else None); and what the data knows about
    each row: ``labels`` ``(n,)`` int64 and ``factors`` ``(n, F)`` int64 (with ``factor_names``), or None."""

    x: torch.Tensor
    y: torch.Tensor | None
    labels: torch.Tensor | None
    factors: np.ndarray | None
    factor_names: tuple[str, ...] | None


def data_rows(model: VAEModel, cfg: RunConfig, data: str | None, split: str) -> Rows:
    """Rows of ``data`` (a name or path; None: the run's own test split) checked against the
    model, with their labels and known factors where the data has them (:class:`Rows`)."""
    if data is None:
        ds = run_data(cfg, stderr, stream=cfg.data.stream)
        x, y, f, names = ds.x_test, ds.y_test, ds.f_test, ds.factor_names
        x = x[:] if not isinstance(x, torch.Tensor) else x  # the test split, read whole
        if len(x) == 0:
            raise DataError(f"the run's data {cfg.data.data} has no test split (test_fraction 0); "
                            "give DATA, with --split train to use training rows")
        f = None if f is None else f.numpy()
        what = f"{cfg.data.data} (test part)"
    else:
        part = load_part(data, split, log=stderr, **table_source(cfg, None))
        x, y = torch.from_numpy(part.x), None if part.y is None else torch.from_numpy(part.y)
        f, names, what = part.factors, part.factor_names, data
    y = None if y is None else y.long()
    read = label_classes(model) > 0  # conditional (labels required) or semi-supervised (optional)
    check_rows(model, x, y if read else None, what)
    return Rows(x, y if read else None, y, f, names if f is not None else None)


def rows(model: VAEModel, cfg: RunConfig, data: str | None, split: str
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of ``data`` (a name or path; None: the run's own test split), checked against the
    model, with their labels when the model reads labels (conditional or semi-supervised, for
    which they may be None or -1), else None: ``(x, y)``."""
    r = data_rows(model, cfg, data, split)
    return r.x, r.y


def check_label(model: VAEModel, label: int | None) -> None:
    """A conditional model draws a given class; a semi-supervised one a given class or classes
    drawn from p(y); an unconditional one takes no label."""
    classes = label_classes(model)
    if label is not None and not classes:
        raise OptionError("label needs a conditional model (trained with conditional) or a "
                          "semi-supervised one", "label", "conditional")
    if model.cond_dim and label is None:
        raise OptionError(f"this model is conditional: give label L (0..{model.cond_dim - 1}), "
                          "the class to draw", "label")
    if label is not None and not 0 <= label < classes:
        raise OptionError(f"label {label} is out of range: the model knows classes 0 to "
                          f"{classes - 1}", "label")


def sample(model: VAEModel, n: int, seed: int | torch.Generator, label: int | None = None,
           sampler: Any = None, draw: bool = False) -> torch.Tensor:
    """Decoder means of ``n`` draws (of class ``label``), float32 on the CPU: codes from the
    prior, or from ``sampler`` (a :class:`vaekit.sampling.samplers.Sampler`, see :func:`run_sampler`).

    ``draw``: draws from p(x|z) itself instead of its means (a table's likelihood: each
    column's family, with the same generator). A sampler's ``finish`` has the last word (the
    ``marginals`` sampler maps a table's draws onto the data's marginals; it refuses means)."""
    check_label(model, label)
    g = seed if isinstance(seed, torch.Generator) else torch.Generator(model.device).manual_seed(seed)
    y = None if label is None else torch.full((n,), label, device=model.device)
    if draw and table_schema(model) is None:
        raise OptionError("draws from p(x|z) are written for tables; other models write decoder "
                          "means", "mean")
    if sampler is not None and sampler.draws_only and not draw:
        raise OptionError(f"the {sampler.name} sampler maps draws from p(x|z), not decoder means; "
                          "drop mean", "mean")
    if sampler is None and not draw:
        return model.generate(n, g, y).float().cpu()
    with torch.no_grad():
        z = model.sample_prior(n, g) if sampler is None else sampler.codes(n, g)
        px = model.decode(z, y)
        x = px.sample(generator=g) if draw else px.mean
        if sampler is not None:
            x = sampler.finish(x)
    return x.float().cpu()


def table_schema(model: VAEModel):
    """The column schema of a model of a table (:class:`vaekit.data.schema.Schema`), else None."""
    return getattr(model.likelihood, "schema", None)


def table_frame(model: VAEModel, x: torch.Tensor):
    """Encoded rows ``(n, width)`` of a model of a table -> a pandas DataFrame with the table's
    column names, order and dtypes (levels from the seen ones, integers as integers)."""
    schema = table_schema(model)
    if schema is None:
        raise OptionError("this model's data are not a table; write .npy", "out")
    # float32 model outputs as their shortest float32 text (170.4, not 170.39999389648438)
    a = np.asarray(x.detach().cpu().float().numpy()).astype("U24").astype(np.float64)
    return schema.decode(a)


# -- samplers and the sample-quality metric ------------------------------------------------------
def run_data(cfg: RunConfig, log: Log = stderr, stream: bool = False) -> Dataset:
    """The data a run was trained on, loaded again by its name or path."""
    if cfg.data.data == "array":  # the estimator's name for data that never were a file
        raise DataError("this run was saved from Python (VAE.save) and its data are not on disk; "
                        "use the estimator: VAE.fit_sampler(X, sampler=...), then save")
    return load_data(cfg.data.data, cfg.data.test_fraction, log=log, stream=stream,
                     **table_source(cfg, None))


def training_rows(cfg: RunConfig, log: Log = stderr) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows a run was trained on (its training split less its validation part), with their
    labels where the data has them; refused if a user's data changed since training."""
    data = run_data(cfg, log, stream=cfg.data.stream)
    if not isinstance(data.x_train, torch.Tensor):
        raise DataError(f"{cfg.data.data} is streamed; fitting a sampler needs data that fit in memory")
    if cfg.data.fingerprint and cfg.data.data not in DATASETS and fingerprint(data) != cfg.data.fingerprint:
        raise DataError(f"{data.name} is not the data this run was trained on (its contents changed)")
    data, _ = validation_split(data, cfg.data.val_fraction)
    return data.x_train, data.y_train


def fit_sampler(name: str, model: VAEModel, x: torch.Tensor, y: torch.Tensor | None = None,
                seed: int = 0, log: Log = stderr):
    """Fit sampler ``name`` (:mod:`vaekit.sampling.samplers`) to the codes of rows ``x``; a two-stage
    VAE is trained by :func:`train`."""
    return fit(name, model, x, y if model.cond_dim else None, seed, train, log)


def samplers_for(cfg: RunConfig, names) -> tuple[str, ...]:
    """``names``, with ``all`` for every sampler that applies to the kind of ``cfg``."""
    if tuple(names) != ("all",):
        return tuple(names)
    return tuple(n for n, cls in SAMPLERS.items() if not cls.needs or supports(cfg, cls.needs))


def run_sampler(run: str | Path, model: VAEModel, cfg: RunConfig, name: str, fit: str = "missing",
                log: Log = stderr):
    """Sampler ``name`` of a run: the stored one (checked), or fitted to the run's training rows
    and stored (``fit``: ``missing`` fits one that is absent, stale or damaged; ``always``
    refits; ``never`` raises a RunDirError instead); see :func:`vaekit.sampling.samplers.obtain`."""
    if SAMPLERS[name].needs:
        require(cfg, SAMPLERS[name].needs, f"the {name} sampler")

    def fitter():
        return fit_sampler(name, model, *training_rows(cfg, log), cfg.train.seed, log)
    return obtain(RunDir(run), model, name, fit, fitter, log)


def metric_classifier(cfg: RunConfig, device: torch.device | str = "cpu", log: Log = stderr):
    """The feature network of the sample-quality metric for a run's data
    (:func:`vaekit.evaluation.featurenet.classifier_for`: cached, or trained once)."""
    return classifier_for(run_data(cfg, log), device, log)


# -- imputation of a table's missing cells -------------------------------------------------------
@dataclass
class Imputed:
    """A table with its missing cells filled (``table``), ``draws`` multiple imputations of it
    (one DataFrame each), the number of cells filled, and each row's effective sample size."""

    table: Any
    draws: list
    filled: int
    ess: np.ndarray


def impute_table(model: VAEModel, data, k: int = 1000, draws: int = 0, seed: int = 0,
                 what: str = "data") -> Imputed:
    """Fill the missing cells of a table from a model of it (:func:`vaekit.evaluation.imputation.impute`).

    ``data`` is a table file (.csv with a header row, .parquet) or a pandas DataFrame; it is
    checked against the model's column schema (one error naming column and row). Columns the
    schema leaves out come back as they were, and so does every observed cell.
    """
    import pandas as pd

    from vaekit.data.table_files import read_table

    schema = table_schema(model)
    if schema is None:
        raise DataError("imputation fills a table's missing cells: this run was not trained on a "
                        "table (a .csv with a header row or a .parquet file)")
    if not isinstance(data, pd.DataFrame):
        what = str(data)
        data = read_table(data)
    x = torch.from_numpy(schema.encode(data, what).astype(np.float32))
    check_rows(model, x, None, what)
    res = impute(model, x, k=k, draws=draws, seed=seed)
    return Imputed(schema.fill(data, res.filled), [schema.fill(data, d) for d in res.draws],
                   int(torch.isnan(x).sum()), res.ess.numpy())
