"""Figures and the HTML report: results first, numbers equal to the run's files, the folded
configuration, the per-feature view of tabular data, embedded images, escaping; interpolate and
traverse. (tests/test_report_browser.py checks how the page renders.)"""

import base64
import io
import json
import math
import re
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.cli.main import main
from vaekit.evaluation.collapse import collapse_note
from vaekit.report.figures import manifold, pick_features
from vaekit.sampling.paths import interpolation_codes, slerp, traversal_codes


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits2d"
    assert main(["train", "digits", "--out", str(run), "--epochs", "3", "--hidden", "64",
                 "--latent-dim", "2", "--seed", "1"]) == 0
    assert (run / "report.html").exists()  # written by train
    assert main(["evaluate", str(run), "-k", "10"]) == 0
    assert main(["report", str(run)]) == 0  # now with the evaluation
    return run


def tabular_csv(path: Path, d: int, n: int = 300) -> Path:
    """``(n, d)`` rows of a two-factor linear model plus noise, seeded: every feature has
    standard deviation about 1, except that those from column 8 on are 3 times as wide."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((n, 2))
    w = rng.standard_normal((2, d))
    w /= np.linalg.norm(w, axis=0) * np.sqrt(1.09)  # unit variance with the noise below
    x = (z @ w + 0.3 * rng.standard_normal((n, d))) * np.where(np.arange(d) < 8, 1.0, 3.0)
    path.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    return path


@pytest.fixture(scope="module")
def tab_run(tmp_path_factory):
    """A run on a CSV of 20 features: vectors, not images, with a validation split."""
    d = tmp_path_factory.mktemp("tab")
    run = d / "run"
    assert main(["train", str(tabular_csv(d / "data.csv", 20)), "--out", str(run), "--epochs", "3",
                 "--likelihood", "gaussian", "--learn-obs-std", "--latent-dim", "3", "--hidden", "32",
                 "--val-fraction", "0.2", "--seed", "0"]) == 0
    return run


def between(html: str, start: str, end: str) -> str:
    """The text from the first ``start`` to the next ``end``."""
    i = html.index(start)
    return html[i: html.index(end, i)]


def stat_value(html: str, key: str) -> tuple[str, str | None]:
    """The shown text and the data-value of the headline card ``key``."""
    card = between(html, f'id="stat-{key}"', "</div></div>")
    m = re.search(r'<div class="value"(?: data-value="([^"]*)")?>(.*?)</div>', card)
    return unescape(re.sub("<[^>]+>", "", m.group(2))), m.group(1)


def shown(v: float, digits: int = 3) -> str:
    """How the report writes a number: fixed decimals and a true minus sign (U+2212)."""
    return f"{v:,.{digits}f}".replace("-", "\u2212")


def embedded_images(html):
    return [Image.open(io.BytesIO(base64.b64decode(b)))
            for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_train_writes_a_self_contained_report(run2d):
    html = (run2d / "report.html").read_text()
    for key, section in (("training", "Training"), ("evaluation", "Evaluation"),
                         ("latent", "Latent space"), ("images", "Reconstructions and samples"),
                     ("traversals", "Latent traversals")):
        assert f'<h2 id="{key}">{section}</h2>' in html
    assert '<h2 id="features">' not in html  # images get pictures, not the per-feature view
    images = embedded_images(html)
    # 3 loss panels, a latent map per written epoch (up to 4; RunDirWriter skips tiny epochs)
    # and their key, manifold, KL per dim, 2 reconstructions, 2 sample grids, the 3 -> 8 morph,
    # the traversals
    maps = len(list((run2d / "latent").glob("epoch_*.npy")))
    assert 1 <= maps <= 3 and (run2d / "latent" / "epoch_3.npy").exists()  # the last is written
    assert len(images) == 12 + min(maps, 4)
    for img in images:
        img.verify()  # every embedded PNG decodes
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network
    assert "<script" not in html


def test_headline_first_with_the_numbers_of_the_run_files(run2d):
    html = (run2d / "report.html").read_text()
    metrics = [json.loads(line) for line in (run2d / "metrics.jsonl").read_text().splitlines()]
    ev = json.loads((run2d / "evaluation.json").read_text())
    order = [html.index(s) for s in ('id="summary"', 'id="configuration"', 'id="training"',
                                     'id="evaluation"', 'id="latent"')]
    assert order == sorted(order)  # results first, the configuration folded below them

    text, raw = stat_value(html, "loss")  # no early stopping: the last epoch's test loss
    assert float(raw) == metrics[-1]["test_loss"] and text == shown(metrics[-1]["test_loss"])
    assert "epoch 3 of 3" in between(html, 'id="stat-loss"', "</div></div>")
    text, raw = stat_value(html, "log-px")
    assert float(raw) == ev["log_likelihood"]
    assert text == f"{shown(ev['log_likelihood'])} ± {shown(ev['log_likelihood_stderr'])}"
    card = between(html, 'id="stat-log-px"', "</div></div>")
    assert f"K = {ev['importance_samples']} importance samples" in card
    assert stat_value(html, "active") == (f"{ev['active_units']} of 2", str(ev["active_units"]))
    assert ev["bits_per_dim"] is None and 'id="stat-bits"' not in html


def test_evaluation_is_a_table_with_readable_names(run2d):
    ev = json.loads((run2d / "evaluation.json").read_text())
    section = between((run2d / "report.html").read_text(), 'id="evaluation"', "</table>")
    rows = [[unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)]
            for r in re.findall(r"<tr[^>]*>(.*?)</tr>", section)]
    by_name = {r[0]: r[1:] for r in rows if r}
    # log p(x) and its error on one row; no raw keys, no Python None
    assert by_name["log p(x), importance-sampled"][0] == (f"{shown(ev['log_likelihood'])} ± "
                                                          f"{shown(ev['log_likelihood_stderr'])}")
    assert by_name["ELBO"][0] == shown(ev["elbo"])
    assert by_name["reconstruction −E[log p(x|z)]"][0] == shown(ev["rec"])
    assert by_name["KL(q(z|x) ‖ p(z))"][0] == shown(ev["kl"])
    assert by_name["gap log p(x) − ELBO"][0] == shown(ev["log_likelihood"] - ev["elbo"])
    assert by_name["importance samples K"][0] == "10"
    for raw in ("log_likelihood", "bits_per_dim", "kl_per_dim", "None", "n_examples"):
        assert raw not in section


def test_configuration_folded_with_the_changed_options_first(run2d):
    html = (run2d / "report.html").read_text()
    details = between(html, '<details id="configuration">', "</details>")  # closed: no "open"
    rows = re.findall(r'<tr class="(changed|)"><td class="key">(.*?)</td><td class="key">(.*?)</td>'
                      r'<td class="key">(.*?)</td></tr>', details)
    kinds = [k for k, *_ in rows]
    assert kinds == sorted(kinds, reverse=True)  # every changed row before every other
    changed = {flag: (value, default) for kind, flag, value, default in rows if kind}
    # what the fixture passed on the command line, with its defaults
    assert {"--epochs": ("3", "10"), "--hidden": ("64", "none"), "--latent-dim": ("2", "20"),
            "--seed": ("1", "0")}.items() <= changed.items()
    assert all(value != default for value, default in changed.values())
    assert all(value == default for kind, _, value, default in rows if not kind and "(set by" not in _)
    summary = between(details, "<summary>", "</summary>")
    assert f"{len(changed)} options differ from the defaults" in summary and "--latent-dim 2" in summary


def rewrite(run: Path, metrics: list[dict] | None = None, **config) -> None:
    """Edit a copied run's files as a later vaekit might have written them."""
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    cfg = json.loads((run / "config.json").read_text())
    for key, value in config.items():
        section, name = key.split("__")
        cfg[section][name] = value
    (run / "config.json").write_text(json.dumps(cfg))


def test_headline_shows_the_kept_epoch_and_warns_in_plain_words(run2d, tmp_path):
    run = tmp_path / "stopped"
    shutil.copytree(run2d, run)
    rows = [json.loads(line) for line in (run2d / "metrics.jsonl").read_text().splitlines()]
    for r, val in zip(rows, (30.0, 29.0, 29.5)):  # epoch 2 is the best on validation
        r |= {"val_loss": val, "val_rec": val - 1, "val_kl": 1.0, "best_epoch": 2 if r["epoch"] > 1 else 1}
    rows[1]["skipped_steps"] = 4
    rewrite(run, rows, train__patience=1, train__epochs=8, data__val_fraction=0.1)
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    text, raw = stat_value(html, "loss")
    assert float(raw) == rows[1]["test_loss"] != rows[-1]["test_loss"]  # the kept epoch, not the last
    summary = unescape(between(html, 'id="summary"', "</section>"))
    assert "kept epoch 2 of 3 trained" in summary
    assert "4 training steps were skipped" in summary and "(epoch 2)" in summary
    assert ("Early stopping kept the weights of epoch 2, the lowest validation loss (29.000 nats); "
            "training stopped after epoch 3 of 8 because the validation loss had not improved for "
            "1 epoch (--patience 1)") in summary
    assert '<tr class="kept"><td class="key">2</td>' in html  # marked in the per-epoch table


def test_headline_without_evaluation_says_how_to_get_one(run2d, tmp_path):
    run = tmp_path / "fresh"
    shutil.copytree(run2d, run)
    for p in run.glob("evaluation*.json"):
        p.unlink()
    rows = [json.loads(line) for line in (run2d / "metrics.jsonl").read_text().splitlines()]
    rewrite(run, rows, train__epochs=6)  # stopped after 3 of 6 epochs
    assert main(["report", str(run)]) == 0
    html = unescape((run / "report.html").read_text())
    assert stat_value(html, "log-px")[0] == "not evaluated" and f"vaekit evaluate {run}" in html
    assert 'id="evaluation"' not in html
    assert f"Training stopped after epoch 3 of 6 (it was interrupted, or is still running); " \
           f"vaekit train digits --resume --out {run} continues it." in html


def test_tabular_run_gets_the_per_feature_view(tab_run):
    from vaekit.data import load_data
    from vaekit.estimator import VAE

    html = (tab_run / "report.html").read_text()
    assert 'id="images"' not in html and '<h2 id="features">' in html
    section = between(html, '<h2 id="features">', "</table>")
    x = load_data(str(tab_run.parent / "data.csv")).x_test.numpy().astype(np.float64)
    pick = pick_features(x)
    assert list(pick) == list(range(8, 20))  # the 12 of 20 with the largest sd: the wide ones
    panels = re.findall(r'<img alt="(feature \d+)"', section)
    assert panels == [f"feature {j}" for j in pick]
    recon = VAE.load(tab_run).reconstruct(x.astype(np.float32)).astype(np.float64)
    rows = re.findall(r"<tr[^>]*><td class=\"key\">(feature \d+)</td>(.*?)</tr>", section)
    assert [name for name, _ in rows] == panels
    for j, (_, cells) in zip(pick, rows):
        values = [float(c.replace("\u2212", "-")) for c in re.findall(r'<td class="n">(.*?)</td>', cells)]
        expect = [x[:, j].mean(), x[:, j].std(), math.sqrt(np.mean((recon[:, j] - x[:, j]) ** 2))]
        np.testing.assert_allclose(values[:3], expect, rtol=2e-3, atol=1e-4)  # 4 significant digits
    assert f"data ({len(x)} rows)" in section and "1000 samples from the prior" in section
    for img in embedded_images(html):
        img.verify()


def test_few_features_are_all_shown_and_many_are_the_most_variable():
    x = np.outer([-1.0, 0.0, 1.0], np.r_[np.ones(8), 2 * np.ones(12)])
    assert list(pick_features(x[:, :16])) == list(range(16))  # up to 16: all of them
    assert list(pick_features(x)) == list(range(8, 20))  # else the 12 widest, in column order
    assert list(pick_features(x[:, ::-1])) == list(range(12))
    assert list(pick_features(np.outer([-1.0, 1.0], np.ones(20)))) == list(range(12))  # ties: first columns


def test_report_escapes_text_from_files(run2d, tmp_path):
    run = tmp_path / "evil"
    shutil.copytree(run2d, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["data"] = "digits<script>alert(1)</script>"
    cfg["train"]["epochs"] = 9  # stopped early: the resume hint repeats the data name
    (run / "config.json").write_text(json.dumps(cfg))
    ev = json.loads((run / "evaluation.json").read_text())
    ev["note"] = '<img src=x onerror="alert(2)">'  # a string the validated reader lets through
    (run / "evaluation.json").write_text(json.dumps(ev))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "<script" not in html and "<img src=x" not in html
    assert html.count("digits&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # header, warnings, hint
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html
    assert "could not be loaded" in html  # no such dataset: diagnostics skipped, in words


def test_latent_snapshots_of_the_written_epochs(run2d):
    """One per epoch whose results were written: the first and the last at least (tiny epochs
    between are skipped, training.callbacks.WRITE_RATIO)."""
    snaps = sorted(p.name for p in (run2d / "latent").glob("epoch_*.npy"))
    assert {"epoch_1.npy", "epoch_3.npy"} <= set(snaps) <= {"epoch_1.npy", "epoch_2.npy", "epoch_3.npy"}
    z = np.load(run2d / "latent" / "epoch_3.npy")
    labels = np.load(run2d / "latent" / "labels.npy")
    assert z.shape == (179, 2) and labels.shape == (179,)
    from vaekit.data import load_data
    from vaekit.estimator import VAE

    np.testing.assert_allclose(z, VAE.load(run2d).transform(load_data("digits").x_test.numpy()), atol=1e-6)


def test_manifold_grid_is_at_gaussian_quantiles(run2d):
    from scipy.stats import norm

    from vaekit.runs.directory import RunDir

    model, _ = RunDir(run2d).load_model()
    seen = []
    model.decoder.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    images = manifold(model, n=5, span=0.9)
    assert images.shape == (25, 1, 8, 8)
    z = seen[0]
    q = norm.ppf(np.linspace(0.1, 0.9, 5))
    np.testing.assert_allclose(z[:5, 0].numpy(), q, rtol=1e-5)          # first row: z1 increases
    np.testing.assert_allclose(z[::5, 1].numpy(), q[::-1], rtol=1e-5)   # down the rows: z2 decreases


def test_interpolation_and_traversal_codes():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    lin = interpolation_codes(a, b, 5, spherical=False)
    torch.testing.assert_close(lin[0], a)
    torch.testing.assert_close(lin[-1], b)
    torch.testing.assert_close(lin[2], (a + b) / 2)
    sph = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(sph[0], a)
    torch.testing.assert_close(sph[2], b)
    # halfway between orthogonal vectors of norms 1 and 2: angle 45 degrees, sin(pi/4)/sin(pi/2) weights
    torch.testing.assert_close(sph[1], torch.tensor([2**-0.5, 2 * 2**-0.5]))
    z = torch.tensor([0.5, -1.0, 2.0])
    codes = traversal_codes(z, [0, 2], span=1.0, steps=3)
    expected = torch.tensor([[-0.5, -1, 2], [0.5, -1, 2], [1.5, -1, 2],
                             [0.5, -1, 1], [0.5, -1, 2], [0.5, -1, 3]])
    torch.testing.assert_close(codes, expected)


def test_interpolate_and_traverse_commands(run2d, tmp_path, capsys):
    assert main(["interpolate", str(run2d), "--from", "0", "--to", "3", "--steps", "6",
                 "--out", str(tmp_path / "i.png")]) == 0
    img = Image.open(tmp_path / "i.png")
    assert img.size[0] > 6 * img.size[1]  # 8 images in one row
    assert main(["traverse", str(run2d), "--dims", "0,1", "--steps", "5", "--out", str(tmp_path / "t.png")]) == 0
    assert main(["interpolate", str(run2d), "--from", "0", "--to", "999", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["traverse", str(run2d), "--dims", "7", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("error: --to 999 is out of range") and "dimensions 0 to 1" in err[-1]


@pytest.mark.parametrize("active,dim,kl,expect", [
    (0, 20, None, "Posterior collapse: no latent dimension"), (3, 20, None, "Only 3 of 20"),
    (15, 20, None, None), (3, 4, 0.05, "a KL of only 0.050 nats"), (3, 4, 0.5, None),
    (3, 20, 5.0, "Only 3 of 20")])
def test_collapse_note_in_plain_words(active, dim, kl, expect):
    note = collapse_note(active, dim, kl)
    assert (note is None) if expect is None else (expect in note)
