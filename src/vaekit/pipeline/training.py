"""Configuration + data -> a trained run (fresh or resumed, one process or many), and the
checks every entry point shares (shapes, labels, the likelihood's support, the run directory's
rules)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import torch

from vaekit.config.settings import RunConfig, option_fields
from vaekit.config.options import MAX_SIZE, OptionError
from vaekit.data import DATASETS, Dataset, load_data
from vaekit.data.labelled import check_partial_labels, partly_labelled
from vaekit.compute.distributed import World
from vaekit.errors import DataError, RunDirError
from vaekit.evaluation.collapse import collapse_note
from vaekit.evaluation.measures import latent_diagnostics
from vaekit.io.files import deferred_sync, write_json
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir
from vaekit.models.build import build_model
from vaekit.config.defaults import normalise, resolve_auto
from vaekit.data import is_table
from vaekit.data.files import split_indices
from .stacking import stack_front
from vaekit.training.callbacks import (ClassificationError, EarlyStopping, EpochLog, RunDirWriter,
                                       TensorBoardLogger)
from vaekit.training.tracking import MLflowLogger, tracking_uri
from vaekit.training.trainer import Trainer

Log = Callable[[str], None]


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    """What :func:`train` made: the model (on its device, in eval mode), the complete
    configuration, the per-epoch metrics, the run directory (None without ``out``), the data,
    and why training stopped (``None``: it ran all epochs)."""

    model: VAEModel
    config: RunConfig
    history: list[dict[str, Any]]
    run_dir: RunDir | None
    data: Dataset
    notes: list[str] = field(default_factory=list)
    stop_reason: str | None = None


# -- configuration ------------------------------------------------------------------------------
def resume_config(run_dir: RunDir, flags: dict[str, Any], data: str | None) -> RunConfig:
    """The saved configuration of a run to continue, with the options that may change
    (``resumable`` fields: epochs, device, max_minutes) taken from ``flags``."""
    if not run_dir.path.is_dir():
        raise RunDirError(f"{run_dir.path} has no checkpoint to resume from (it does not exist); "
                          "start a new run without --resume")
    cfg, _ = run_dir.read_config()
    saved = cfg.flat()
    fields = option_fields()
    changed = sorted(k for k, v in flags.items()
                     if not fields[k][1].metadata["resumable"] and v != saved[k])
    if changed:
        raise OptionError(f"cannot change {', '.join(changed)} when resuming; only epochs, device "
                          "and max_minutes may change", *changed, "epochs", "device", "max_minutes")
    info = run_dir.checkpoint_info() if run_dir.has_checkpoint() else None
    # validated in full when the checkpoint is read; here only a count to compare with
    finished = info.get("epoch") if info and type(info.get("epoch")) is int else 0
    # (a checkpoint past the saved epochs is damage, refused when it is read)
    if finished <= cfg.train.epochs and flags.get("epochs", cfg.train.epochs) < finished:
        raise OptionError(f"epochs {flags.get('epochs', cfg.train.epochs)} is fewer than the "
                          f"{finished} epochs {run_dir.checkpoint} has finished", "epochs")
    cfg.update(flags)
    if data is not None and not same_data(data, cfg.data.data):
        raise DataError(f"this run was trained on '{cfg.data.data}', not '{data}'")
    return cfg


def data_location(spec: str) -> str:
    """A built-in name as it is; an existing path made absolute, so that the run finds it from
    any folder."""
    return str(Path(spec).resolve()) if spec not in DATASETS and Path(spec).exists() else spec


def same_data(spec: str, saved: str) -> bool:
    return data_location(spec) == saved or spec == saved


def fingerprint(data: Dataset) -> str:
    """SHA-256 of the training and test values (as float32), to recognise the same data."""
    h = hashlib.sha256()
    for part in (data.x_train, data.x_test):
        if isinstance(part, torch.Tensor):
            h.update(str(tuple(part.shape)).encode())
            if part.numel():
                h.update(memoryview(part.contiguous().numpy()).cast("B"))  # no copy
    return h.hexdigest()[:32]


def resolve_defaults(cfg: RunConfig, data: Dataset, given: Collection[str]) -> list[str]:
    """Fill the options left to vaekit from what the data is (:mod:`vaekit.config.defaults`); returns
    one line per choice, with the flag that overrides it."""
    return resolve_auto(cfg, data.x_train, given, table=data.schema is not None)


def table_source(cfg: RunConfig, given: Collection[str] | None) -> dict[str, Any]:
    """How :func:`vaekit.data.load_data` reads the run's data: with the run's stored column
    schema; as a table whose schema is inferred (likelihood table, or left to vaekit and the
    file is a .csv with a header row or a .parquet file); or as numbers (``{}``)."""
    m = cfg.model
    if m.schema:
        from vaekit.data.schema import Schema  # here: pandas only for tables

        return {"schema": Schema.from_json(m.schema, "the run's column schema")}
    auto = given is not None and "likelihood" not in normalise(given)
    if m.likelihood == "table" or (auto and is_table(cfg.data.data)):
        return {"table": True, "columns": cfg.data.column}
    if cfg.data.column:
        raise OptionError("column sets the type of a table's column: it needs a .csv file with a "
                          "header row or a .parquet file, and likelihood table", "column",
                          "likelihood")
    return {}


def schema_lines(cfg: RunConfig, data: Dataset) -> list[str]:
    """Store the data's column schema in ``cfg`` (likelihood table) and say it, one line per
    column with its type and why; ``[]`` for data without one."""
    if cfg.model.cell_dropout and cfg.model.likelihood != "table":
        raise OptionError("cell_dropout applies to likelihood table (a .csv with a header row or "
                          "a .parquet file)", "cell_dropout", "likelihood")
    if data.schema is None:
        if cfg.model.likelihood == "table":
            raise OptionError("likelihood table needs a table: a .csv file with a header row or a "
                              ".parquet file (or a pandas DataFrame in Python)", "likelihood")
        return []
    if cfg.model.likelihood != "table":
        raise OptionError(f"a table with a column schema takes likelihood table, not "
                          f"{cfg.model.likelihood}", "likelihood")
    cfg.model.schema = data.schema.to_json()
    s = data.schema
    head = (f"columns: {s.width} modelled" + (f", {len(s.dropped)} left out" if s.dropped else "")
            + "; override with --column NAME=TYPE")
    return [head] + ["  " + line for line in s.table().splitlines()]


def num_classes(data: Dataset) -> int:
    """Classes of a conditional model: one more than the largest training label."""
    if data.y_train is None:
        raise DataError(f"a conditional model needs labels, and {data.name} has none: use a "
                        "labelled built-in dataset, an .npz with y_train/y_test, or class subfolders")
    top = int(data.y_train.max())
    if top >= MAX_SIZE:
        raise DataError(f"{data.name}: labels go up to {top}; a conditional model needs class "
                        f"indices 0, 1, ..., C - 1 with C at most {MAX_SIZE}")
    return max(top + 1, 2)


# -- checks every entry point shares -----------------------------------------------------------
def check_rows(model: VAEModel, x: torch.Tensor, y: torch.Tensor | None, what: str) -> None:
    """DataError unless ``x`` (and ``y``) can go into ``model``: shape, support, labels."""
    if tuple(x.shape[1:]) != model.data_shape:
        raise DataError(f"{what} has examples of shape {tuple(x.shape[1:])}, but the model was "
                        f"trained on shape {model.data_shape}")
    if len(x):
        model.likelihood.check_data(x, what)
    classes = label_classes(model)
    if classes and not model.cond_dim:  # semi-supervised: labels optional, -1 unlabelled
        if y is not None and len(y) and (int(y.min()) < -1 or int(y.max()) >= classes):
            raise DataError(f"{what}: labels must lie in 0..{classes - 1} (the classes the model "
                            "knows) or be -1 (unlabelled)")
        return
    if not model.cond_dim:
        return
    if y is None or len(y) != len(x):
        raise DataError(f"{what}: this model is conditional and needs a label for every row (a "
                        "labelled built-in dataset, an .npz with labels, or class subfolders)")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= model.cond_dim):
        raise DataError(f"{what}: labels must lie in 0..{model.cond_dim - 1}, the classes the "
                        "model was trained on")


def label_classes(model: VAEModel) -> int:
    """Classes whose labels the model reads: a conditional model's (required) or a
    semi-supervised model's (optional); 0 for a model without labels."""
    return model.cond_dim or getattr(model, "classes", 0)


def check_data(model: VAEModel, data: Dataset) -> None:
    """:func:`check_rows` for both parts of a dataset (before anything is written)."""
    labels = label_classes(model) > 0
    check_rows(model, data.x_train, data.y_train if labels else None, f"{data.name} (training part)")
    if len(data.x_test):
        check_rows(model, data.x_test, data.y_test if labels else None, f"{data.name} (test part)")


# -- training ----------------------------------------------------------------------------------
def train(cfg: RunConfig, data: Dataset | None = None, out: str | Path | None = None, *,
          resume: bool = False, overwrite: bool = False, given: Collection[str] | None = None,
          world: World = World(), log: Log = stderr, progress: bool | None = None,
          epoch_log: bool = True) -> TrainResult:
    """Train the run ``cfg`` describes: fresh, or resumed from ``out``; in one process or in
    each process of ``world``.

    Parameters
    ----------
    cfg : RunConfig
        The configuration; options not in ``given`` may be filled from the data.
    data : Dataset, optional
        The data; default: loaded from ``cfg.data.data``.
    out : path, optional
        The run directory; None trains in memory only.
    resume, overwrite : bool
        Continue the run in ``out``; replace the run in ``out``.
    given : collection of str, optional
        Option names the user set explicitly: the others may be chosen from the data
        (:mod:`vaekit.config.defaults`), as the CLI and the estimator do. None (the default) takes
        ``cfg`` exactly as it is.
    log : callable
        Receives the plain-text lines (choices, epochs, notices).

    Every check passes before a run directory is created or changed; the global torch random
    state is left as it was found.
    """
    say = log if world.is_main else (lambda s: None)
    cfg.validate()
    if data is None:
        if not world.is_main:
            world.barrier()  # the main process fetches and caches a built-in dataset first
        data = load_data(cfg.data.data, cfg.data.test_fraction, log=say, stream=cfg.data.stream,
                         **table_source(cfg, given))
        if world.is_main:
            world.barrier()
    # Built-in datasets are checksum-verified whenever they load; a user's files get a fingerprint.
    fingerprinted = isinstance(data.x_train, torch.Tensor) and cfg.data.data not in DATASETS
    choices: list[str] = []  # said once every check has passed, so an error stays one line
    front = None
    if cfg.model.stack_on and not resume:  # M1 under M2: copied in, frozen
        front, stacked = stack_front(cfg, data, given)
        choices += stacked
        given = None if given is None else {*given, "likelihood", "preprocess"}  # fixed for the top
    if not resume:
        choices += resolve_defaults(cfg, data, given) if given is not None else []
        choices = schema_lines(cfg, data) + choices
        if cfg.model.conditional and not cfg.model.num_classes:
            cfg.model.num_classes = num_classes(data)
        if cfg.model.semi_supervised and not cfg.model.num_classes:
            cfg.model.num_classes = check_partial_labels(data.y_train, f"{data.name} (training part)")
        if fingerprinted:
            cfg.data.fingerprint = fingerprint(data)
    elif cfg.data.fingerprint and fingerprinted and fingerprint(data) != cfg.data.fingerprint:
        raise DataError(f"{data.name} is not the data this run was trained on (its contents "
                        "changed); resume with the original data, or start a new run")
    cfg.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # weight initialisation, the same in every process
        model = build_model(cfg.model, data.shape, cfg.train.objective)
    if front is not None:
        model.front.load_state_dict(front.state_dict())
    check_data(model, data)
    data, val = validation_split(data, cfg.data.val_fraction)
    order = None
    if cfg.model.semi_supervised:  # --labelled N; batches that always hold labelled rows
        data, order = partly_labelled(data, cfg.data.labelled, cfg.train.labelled_share,
                                      cfg.train.seed)
    cfg.data.n_train, cfg.data.n_test = len(data.x_train), len(data.x_test)
    cfg.data.n_val = 0 if val is None else len(val[0])
    model.preprocess.fit(data.x_train)  # the training part only; deterministic, so resume agrees
    trainer = Trainer(model, cfg.train, log=say, progress=progress, world=world, order=order)
    if trainer.device.type == "cpu":
        cfg.train.threads = trainer.threads  # kept in config.json: a resume steps with the same count
    rd = None if out is None else RunDir(out)
    if rd is not None:  # refuse before anything is written, even the lock file
        rd.prepare(resume=resume, overwrite=overwrite, dry_run=True)
    with rd.lock() if rd is not None and world.is_main else contextlib.nullcontext():
        callbacks: list = [EarlyStopping(cfg.train.patience, rd)] if val is not None else []
        if cfg.model.semi_supervised:  # first: the error joins the row before anything writes it
            callbacks.insert(0, ClassificationError(val))
        if rd is not None:
            rd.prepare(resume=resume, overwrite=overwrite, dry_run=True)  # every process checks
            world.barrier()
            if world.is_main:
                rd.prepare(resume=resume, overwrite=overwrite)
            world.barrier()
            callbacks.append(RunDirWriter(rd, cfg, resume=resume))
            if cfg.train.tensorboard and world.is_main:
                callbacks.append(TensorBoardLogger(rd))
            if cfg.train.mlflow and world.is_main:
                cfg.train.mlflow = tracking_uri(cfg.train.mlflow)
                callbacks.append(MLflowLogger(rd, cfg, cfg.train.mlflow))
        if epoch_log:
            callbacks.append(EpochLog(say))
        held = f" ({len(val[0])} more held out for validation)" if val is not None else ""
        for line in [*choices, *([trainer.threads_note] if trainer.threads_note else [])]:
            say(line)
        procs = f", {world.size} processes x batch {cfg.train.batch_size}" if world.size > 1 else ""
        where = f"; writing {rd.path}" if rd else ""
        say(f"training on {data.name}: {len(data.x_train)} train{held} / {len(data.x_test)} test examples "
            f"of shape {data.shape}, {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{trainer.device} {trainer.precision}{procs}{where}")
        try:
            with deferred_sync():  # fsync and rename in a background thread, in order
                history = trainer.fit(data, callbacks, val)
        except BaseException:
            if rd is not None and world.is_main and rd.rollback():
                say(f"the run that --overwrite was replacing in {rd.path} is restored")
            raise
    model = trainer.model.eval()
    notes = [n for n in [collapse_warning(model, data)] if n] if world.is_main and history else []
    if history and "best_epoch" in history[-1]:
        why = trainer.stop_reason or f"all {cfg.train.epochs} epochs ran"
        notes.insert(0, f"kept the weights of epoch {history[-1]['best_epoch']}, the lowest "
                        f"validation loss ({why})")
    return TrainResult(model, cfg, history, rd, data, notes, trainer.stop_reason)


def collapse_warning(model: VAEModel, data: Dataset, rows: int = 2000) -> str | None:
    """The collapse note (:func:`vaekit.evaluation.collapse.collapse_note`) of the trained model on
    up to ``rows`` test rows (training rows without a test split), as a warning line; None when
    the latent code is in use."""
    x, y = (data.x_test, data.y_test) if len(data.x_test) else (data.x_train, data.y_train)
    if not isinstance(x, torch.Tensor) or len(x) < 2:
        return None
    x = x[:rows].to(model.device)
    y = y[:rows].to(model.device) if model.cond_dim and y is not None else None
    diag = latent_diagnostics(model, x, y=y)
    kl = sum(diag["kl_per_dim"]) if diag["kl_per_dim"] is not None else None
    note = collapse_note(diag["active_units"], model.latent_dim, kl, partial=False)
    return None if note is None else "warning: " + note


def save_evaluation(run_dir: RunDir, result: dict[str, Any]) -> list[str]:
    """Keep ``result`` as ``evaluation_k<K>.json``, and as ``evaluation.json`` unless that holds
    a more accurate evaluation (larger K) of the same data; returns what was written."""
    k = result["importance_samples"]
    try:
        current = run_dir.read_evaluation()
    except RunDirError:  # a damaged evaluation.json is replaced
        current = None
    written = [f"evaluation_k{k}.json"]
    write_json(run_dir.path / written[0], result)
    same = current is not None and (current.get("data"), current.get("split")) == (
        result["data"], result["split"])
    if not same or int(current.get("importance_samples", 0)) <= k:
        write_json(run_dir.evaluation, result)
        written.append("evaluation.json")
    return written


def validation_split(data: Dataset, fraction: float
                     ) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor | None] | None]:
    """Carve a fixed validation part out of the training split (never the test split):
    ``(data without it, (x_val, y_val))``; ``(data, None)`` for a fraction of 0."""
    if not fraction:
        return data, None
    train, val = (torch.from_numpy(i) for i in split_indices(len(data.x_train), fraction,
                                                             f"{data.name} (training part)"))
    if len(val) == 0:
        return data, None
    part = (lambda a, i: None if a is None else a[i])
    rest = dataclasses.replace(data, x_train=data.x_train[train], y_train=part(data.y_train, train),
                               f_train=part(data.f_train, train))  # the rest (test part) as it is
    return rest, (data.x_train[val], part(data.y_train, val))


def default_out(data: str) -> Path:
    return Path("runs") / f"{Path(data).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
