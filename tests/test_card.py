"""The model card ``RUN/README.md``: its YAML header parses (a small YAML-subset reader written
here, so the test needs no YAML package), its numbers are those of metrics.jsonl and
evaluation.json, text from files cannot break the YAML or the Markdown, and a README.md that
vaekit did not write is never replaced."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from vaekit.report.card import write_card
from vaekit.cli.main import main
from vaekit.data import load_data
from vaekit.errors import RunDirError


# -- a reader for the YAML subset a card uses: block mappings and sequences, plain and
# double-quoted scalars, numbers --------------------------------------------------------------
def scalar(text: str):
    text = text.strip()
    if text.startswith('"'):
        assert text.endswith('"') and len(text) >= 2, text
        # a YAML double-quoted scalar is JSON once \xNN is written \u00NN
        return json.loads(re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", text))
    assert not re.search(r"(^|\s)#|: |^[&*!|>%@`]", text), f"unsafe plain scalar {text!r}"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*(e[-+]?\d+)?|-?\d+e[-+]?\d+", text):
        return float(text)
    return {"true": True, "false": False, "null": None}.get(text, text)


def parse_block(lines: list[tuple[int, str]], i: int, indent: int):
    """The node whose lines start at ``lines[i]`` with indentation ``indent``: (value, next i)."""
    if lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            rest = lines[i][1][2:]
            if re.match(r"[\w-]+:( |$)", rest):  # a mapping inside the item
                sub = [(indent + 2, rest)] + [l for l in lines[i + 1:]]
                value, j = parse_block(sub, 0, indent + 2)
                items.append(value)
                i = i + j
            else:
                items.append(scalar(rest))
                i += 1
        return items, i
    mapping = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        key, _, rest = lines[i][1].partition(":")
        assert re.fullmatch(r"[\w-]+", key) and key not in mapping, lines[i]
        if rest.strip():
            mapping[key], i = scalar(rest), i + 1
        else:
            mapping[key], i = parse_block(lines, i + 1, lines[i + 1][0])
    return mapping, i


def front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, _, rest = text[4:].partition("\n---\n")
    lines = [(len(l) - len(l.lstrip(" ")), l.strip()) for l in head.splitlines() if l.strip()]
    value, used = parse_block(lines, 0, 0)
    assert used == len(lines), "lines left over: the header is not one mapping"
    return value, rest


def metric_values(meta: dict) -> dict[str, float]:
    return {m["type"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "digits2d"
    assert main(["train", "digits", "--out", str(path), "--epochs", "2", "--hidden", "16",
                 "--latent-dim", "2", "--no-report"]) == 0
    return path


def test_header_parses_and_holds_the_final_metrics(run):
    card = write_card(run)
    assert card == run / "README.md"
    meta, body = front_matter(card.read_text())
    last = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert meta["library_name"] == "vaekit" and meta["license"] == "unknown"
    assert meta["datasets"] == ["digits"] and "vaekit" in meta["tags"]
    assert metric_values(meta) == {"negative_elbo": last["test_loss"]}  # exact, no rounding
    assert f"| `test_loss` | {last['test_loss']:.4f} |" in body
    assert f"| `train_loss` | {last['train_loss']:.4f} |" in body
    assert "Not evaluated yet" in body


def test_sections_data_configuration_versions_limits(run):
    import torch

    from vaekit.version import __version__

    body = front_matter(write_card(run, license="MIT").read_text())[1]
    data = load_data("digits", log=lambda s: None)
    assert f"{len(data.x_train):,} train, 0 validation, {len(data.x_test):,} test examples" in body
    assert "shape of one example: 1 x 8 x 8" in body
    # only the options that differ from the defaults, with the default beside them
    assert "| `latent_dim` | 2 | 20 |" in body and "| `epochs` | 2 | 10 |" in body
    assert "`lr`" not in body and "`batch_size`" not in body
    assert f"vaekit {__version__}" in body and f"torch {torch.__version__}" in body
    for words in ("## Intended use and limits", "not validated for any other data", "relative"):
        assert words in body
    assert front_matter((run / "README.md").read_text())[0]["license"] == "MIT"
    write_card(run)  # the rewrite after train or evaluate keeps the license given
    assert front_matter((run / "README.md").read_text())[0]["license"] == "MIT"
    write_card(run, license="unknown")


def test_evaluation_with_error_bars(run):
    assert main(["evaluate", str(run), "-k", "5"]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    meta, body = front_matter(write_card(run).read_text())
    values = metric_values(meta)
    assert values["log_likelihood"] == ev["log_likelihood"]
    assert values["log_likelihood_stderr"] == ev["log_likelihood_stderr"]
    assert values["elbo"] == ev["elbo"] and "bits_per_dim" not in values  # null in the file
    assert (f"| log p(x) | {ev['log_likelihood']:.3f} ± {ev['log_likelihood_stderr']:.3f} "
            f"(standard error; K = 5 importance samples) |") in body
    assert f"| active units | {ev['active_units']} of 2 |" in body


def test_text_from_files_cannot_break_yaml_or_markdown(tmp_path):
    name = 'rows: "q" #1 <b>|*_[x]\\.npy'
    path = tmp_path / name
    np.save(path, np.random.default_rng(0).random((40, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--epochs", "1", "--latent-dim", "2",
                 "--likelihood", "gaussian", "--no-report"]) == 0
    meta, body = front_matter(write_card(run).read_text())
    assert meta["datasets"] == [name]  # the file's name, exactly, and not its folder
    assert str(tmp_path) not in (run / "README.md").read_text()
    line = next(l for l in body.splitlines() if l.startswith("- data:"))
    assert "<b>" not in line and "&lt;b&gt;" in line and "\\|" in line and "\\*" in line
    cfg = json.loads((run / "config.json").read_text())
    assert f"`{cfg['data']['fingerprint']}`" in body


def test_never_replaces_a_readme_it_did_not_write(run, capsys):
    theirs = "# My notes\n\nkeep me\n"
    (run / "README.md").write_text(theirs)
    with pytest.raises(RunDirError, match="not written by vaekit"):
        write_card(run)
    assert write_card(run, keep_foreign=True) is None  # what train and evaluate call
    capsys.readouterr()
    assert main(["card", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "README.md" in err[0]
    assert (run / "README.md").read_text() == theirs
    (run / "README.md").unlink()
    assert main(["card", str(run)]) == 0 and (run / "README.md").exists()


def test_missing_run_is_one_error_line(tmp_path, capsys):
    assert main(["card", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert not (tmp_path / "nope").exists()
