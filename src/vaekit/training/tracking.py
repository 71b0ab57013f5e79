"""MLflow logging (``--mlflow [URI]``, the optional ``vaekit[mlflow]`` extra).

A run's parameters and per-epoch metrics are logged while it trains; its config, weights,
metrics, report and model card as artifacts at the end; a later ``vaekit evaluate`` adds the
evaluation to the same MLflow run, found through ``RUN/mlflow.json``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from vaekit.data import Dataset
from vaekit.extras import require
from vaekit.errors import ConfigError, RunDirError, VaekitError
from vaekit.io.files import write_json
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import MLFLOW_LINK
from .trainer import Callback, Trainer

LOCAL = "local"  # --mlflow without a URI: a SQLite store (and artifacts) in ./mlruns
LINK = MLFLOW_LINK  # in the run directory: which MLflow run holds this run


SCHEMES = ("sqlite", "http", "https", "databricks")  # the stores MLflow 3 offers a client
TIMEOUT_S = 10  # seconds for a connection to, and each request of, an MLflow server


def tracking_uri(value: str) -> str:
    """``local`` -> ``sqlite:///<cwd>/mlruns/mlflow.db`` (absolute, so later commands find it);
    any other URI checked by :func:`check_tracking_uri` before training starts."""
    if value != LOCAL:
        return check_tracking_uri(value)
    root = Path("mlruns").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def check_tracking_uri(uri: str) -> str:
    """``uri`` if MLflow can log there: a scheme MLflow serves, and for a server, one that
    accepts a connection within :data:`TIMEOUT_S`; ConfigError otherwise. MLflow's own HTTP
    requests get the same timeout and few retries, so a server that stops answering later ends
    the run with one line instead of hanging it."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(f"--mlflow {uri}: expected local, sqlite:///PATH.db, or the http(s):// "
                          "address of an MLflow server (or databricks)")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT_S))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    if scheme.lower() in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        try:
            port = parts.port or (443 if scheme.lower() == "https" else 80)
            if not parts.hostname:
                raise ValueError("no host")
            socket.create_connection((parts.hostname, port), timeout=TIMEOUT_S).close()
        except (OSError, ValueError) as e:
            raise ConfigError(f"--mlflow {uri}: no MLflow server answers there ({e}); start "
                              "one (mlflow server) or check the address") from None
    return uri


def mlflow_call(uri: str, call, *args, **kwargs):
    """``call(*args, **kwargs)`` of the MLflow client, its failures as one ConfigError line."""
    try:
        return call(*args, **kwargs)
    except Exception as e:  # MLflow's many exception types (REST, SQL, schema) for one user error
        if isinstance(e, VaekitError):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"MLflow at {uri} failed: {first}") from None


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
        mlflow, uri = self.mlflow, self.uri
        mlflow.set_tracking_uri(uri)
        link = read_link(self.rd)
        if link is not None and link["tracking_uri"] == uri:
            mlflow_call(uri, mlflow.start_run, run_id=link["run_id"])
        else:
            run = mlflow_call(uri, mlflow.start_run, run_name=self.rd.path.name)
            write_json(self.rd.path / LINK, {"tracking_uri": uri, "run_id": run.info.run_id})
            mlflow_call(uri, mlflow.log_params, {k: str(v) for k, v in self.config.flat().items()})

    def on_epoch_end(self, trainer: Trainer, data: Dataset, row: dict[str, Any]) -> None:
        mlflow_call(self.uri, self.mlflow.log_metrics,
                    {k: v for k, v in numbers(row).items() if k != "epoch"}, step=row["epoch"])

    def on_fit_end(self, trainer: Trainer, data: Dataset) -> None:
        mlflow_call(self.uri, self.mlflow.end_run)


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
    mlflow, uri = mlflow_module(), check_tracking_uri(link["tracking_uri"])
    mlflow.set_tracking_uri(uri)
    mlflow_call(uri, mlflow.start_run, run_id=link["run_id"])
    try:
        if metrics:
            mlflow_call(uri, mlflow.log_metrics, numbers(metrics))
        for name in names:
            if (rd.path / name).is_file():
                mlflow_call(uri, mlflow.log_artifact, str(rd.path / name))
    finally:
        mlflow_call(uri, mlflow.end_run)
    return True
