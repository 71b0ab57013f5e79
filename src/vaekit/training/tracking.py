"""MLflow logging (``--mlflow [URI]``, the optional ``vaekit[mlflow]`` extra).

A run's parameters and per-epoch metrics are logged while it trains; its config, weights,
metrics, report and model card as artifacts at the end; a later ``vaekit evaluate`` adds the
evaluation to the same MLflow run, found through ``RUN/mlflow.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vaekit.data import Dataset
from vaekit.extras import require
from vaekit.errors import RunDirError
from vaekit.io.files import write_json
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import MLFLOW_LINK
from .trainer import Callback, Trainer

LOCAL = "local"  # --mlflow without a URI: a SQLite store (and artifacts) in ./mlruns
LINK = MLFLOW_LINK  # in the run directory: which MLflow run holds this run


def tracking_uri(value: str) -> str:
    """``local`` -> ``sqlite:///<cwd>/mlruns/mlflow.db`` (absolute, so later commands find it)."""
    if value != LOCAL:
        return value
    root = Path("mlruns").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def mlflow_module():
    return require("mlflow", "mlflow", "--mlflow")


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics row or an evaluation (MLflow takes floats)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class MLflowLogger(Callback):
    """Logs a training run to MLflow; a resumed run continues its MLflow run."""

    def __init__(self, run_dir: RunDir, config, uri: str) -> None:
        self.rd, self.config, self.uri = run_dir, config, uri
        self.mlflow = mlflow_module()

    def on_fit_start(self, trainer: Trainer, data: Dataset) -> None:
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        link = read_link(self.rd)
        if link is not None and link["tracking_uri"] == self.uri:
            mlflow.start_run(run_id=link["run_id"])
        else:
            run = mlflow.start_run(run_name=self.rd.path.name)
            write_json(self.rd.path / LINK, {"tracking_uri": self.uri, "run_id": run.info.run_id})
            mlflow.log_params({k: str(v) for k, v in self.config.flat().items()})

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics({k: v for k, v in numbers(row).items() if k != "epoch"},
                                step=row["epoch"])

    def on_fit_end(self, trainer: Trainer, data: Dataset) -> None:
        self.mlflow.end_run()


def read_link(rd: RunDir) -> dict[str, str] | None:
    """``RUN/mlflow.json`` if the run was logged to MLflow, else None."""
    path = rd.path / LINK
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        if isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("tracking_uri", "run_id")):
            return d
    except (OSError, ValueError):
        pass
    raise RunDirError(f"{path} is damaged; delete it to stop logging this run to MLflow")


def log_files(run_dir: str | Path, names: list[str], metrics: dict[str, Any] | None = None) -> bool:
    """Add the run's files ``names`` (those that exist) and ``metrics`` to its MLflow run;
    False when the run is not logged to MLflow."""
    rd = RunDir(run_dir)
    link = read_link(rd)
    if link is None:
        return False
    mlflow = mlflow_module()
    mlflow.set_tracking_uri(link["tracking_uri"])
    with mlflow.start_run(run_id=link["run_id"]):
        if metrics:
            mlflow.log_metrics(numbers(metrics))
        for name in names:
            if (rd.path / name).is_file():
                mlflow.log_artifact(str(rd.path / name))
    return True
