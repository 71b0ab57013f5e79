"""--mlflow: parameters, per-epoch metrics, the evaluation and the files, read back through
MLflow's own client from a real local store."""

import json

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

from vaekit.cli.main import main  # noqa: E402
from vaekit.runs.directory import RunDir  # noqa: E402

SMALL = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "16", "--precision", "fp32"]


def test_a_run_and_its_evaluation_are_logged_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.random.default_rng(0).random((60, 5)).astype(np.float32))
    assert main(["train", "x.npy", "--out", "run", "--epochs", "3", "--mlflow", *SMALL]) == 0
    link = json.loads((tmp_path / "run" / "mlflow.json").read_text())
    assert link["tracking_uri"] == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert main(["evaluate", "run", "-k", "5"]) == 0
    client = mlflow.tracking.MlflowClient(link["tracking_uri"])
    run = client.get_run(link["run_id"])
    assert run.data.params["latent_dim"] == "2" and run.data.params["epochs"] == "3"
    history = client.get_metric_history(link["run_id"], "test_loss")
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([r["test_loss"] for r in rows])
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert run.data.metrics["log_likelihood"] == pytest.approx(evaluation["log_likelihood"])
    files = {a.path for a in client.list_artifacts(link["run_id"])}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "report.html", "README.md",
            "evaluation.json"} <= files


def test_resume_continues_the_same_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.random.default_rng(1).random((40, 5)).astype(np.float32))
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["train", "x.npy", "--out", "run", "--epochs", "1", "--mlflow", uri, "--no-report",
                 *SMALL]) == 0
    first = json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"]
    assert main(["train", "x.npy", "--out", "run", "--epochs", "2", "--resume", "--no-report"]) == 0
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == first
    steps = [m.step for m in mlflow.tracking.MlflowClient(uri).get_metric_history(first, "train_loss")]
    assert steps == [1, 2]
