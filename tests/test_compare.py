"""``vaekit compare``: only the options that differ, numbers equal to the runs' files, a
self-contained HTML page, one error line naming a missing or damaged run."""

from __future__ import annotations

import base64
import json
import re

import pytest

from vaekit.cli.main import main
from helpers import metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 3-epoch digits runs that differ in --latent-dim only (one name needs escaping)."""
    root = tmp_path_factory.mktemp("compare")
    paths = []
    for d, name in ((2, "z2"), (3, "z3"), (4, "z4 <b>&")):
        paths.append(root / name)
        assert main(["train", "digits", "--out", str(paths[-1]), "--epochs", "3", "--hidden", "16",
                     "--latent-dim", str(d), "--no-report"]) == 0
    assert main(["evaluate", str(paths[0]), "-k", "5"]) == 0
    return paths


def test_table_shows_only_differing_options(runs, capsys):
    capsys.readouterr()
    assert main(["compare", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("  ")[0] == "run"
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header == ["run", "latent_dim", "epochs run", "final test loss", "best test loss (epoch)",
                      "log p(x) +- stderr (K)"]
    for shared in ("hidden", "lr", "batch_size", "arch", "seed"):
        assert shared not in lines[0]
    rows = lines[2:]
    assert len(rows) == 3
    for run, row, d in zip(runs, rows, (2, 3, 4)):
        cells = re.split(r"\s{2,}", row.strip())
        assert cells[0] == str(run) and cells[1] == str(d) and cells[2] == "3"
        assert cells[3] == f"{metrics(run)[-1]['test_loss']:.4f}"
    ev = json.loads((runs[0] / "evaluation.json").read_text())
    assert rows[0].endswith(f"{ev['log_likelihood']:.3f} +- {ev['log_likelihood_stderr']:.3f} (K=5)")
    assert rows[1].endswith("n/a")


def test_json_numbers_equal_the_metrics_files(runs, capsys):
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["differing_options"] == ["latent_dim"] and out["loss"] == "test_loss"
    for run, r in zip(runs, out["runs"]):
        rows = metrics(run)
        best = min(rows, key=lambda row: row["test_loss"])
        assert r["run"] == str(run) and r["epochs"] == len(rows) == 3
        assert r["final_loss"] == rows[-1]["test_loss"]
        assert (r["best_loss"], r["best_epoch"]) == (best["test_loss"], best["epoch"])
        assert list(r["options"]) == ["latent_dim"]
    ev = json.loads((runs[0] / "evaluation.json").read_text())
    got = out["runs"][0]["evaluation"]
    assert (got["log_likelihood"], got["log_likelihood_stderr"], got["importance_samples"]) == (
        ev["log_likelihood"], ev["log_likelihood_stderr"], 5)
    assert out["runs"][1]["evaluation"] is None


def test_html_is_self_contained_and_escaped(runs, tmp_path, capsys):
    page = tmp_path / "compare.html"
    assert main(["compare", *map(str, runs), "--html", str(page)]) == 0
    text = page.read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 1 and base64.b64decode(images[0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"https?:", text) and "<b>&" not in text and "z4 &lt;b&gt;&amp;" in text
    assert "<th>latent_dim</th>" in text and "<th>hidden</th>" not in text
    assert f"{metrics(runs[1])[-1]['test_loss']:.4f}" in text


@pytest.mark.parametrize("damage", ["missing", "metrics", "config"])
def test_a_missing_or_damaged_run_is_one_error_line(runs, tmp_path, capsys, damage):
    bad = tmp_path / "bad"
    if damage != "missing":
        assert main(["train", "digits", "--out", str(bad), "--epochs", "1", "--hidden", "8",
                     "--latent-dim", "2", "--no-report"]) == 0
        (bad / ("metrics.jsonl" if damage == "metrics" else "config.json")).write_text("{not json\n")
    capsys.readouterr()
    assert main(["compare", str(runs[0]), str(bad), "--html", str(tmp_path / "c.html")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(bad) in err[0], err
    assert captured.out == "" and not (tmp_path / "c.html").exists()
