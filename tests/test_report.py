"""Figures and the HTML report: content, embedded images, escaping; interpolate and traverse."""

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.cli import main
from vaekit.report import collapse_note
from vaekit.viz import interpolation_codes, manifold, slerp, traversal_codes


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits2d"
    assert main(["train", "digits", "--out", str(run), "--epochs", "3", "--hidden", "64",
                 "--latent-dim", "2", "--seed", "1"]) == 0
    assert (run / "report.html").exists()  # written by train
    assert main(["evaluate", str(run), "-k", "10"]) == 0
    assert main(["report", str(run)]) == 0  # now with the evaluation
    return run


def embedded_images(html):
    return [Image.open(io.BytesIO(base64.b64decode(b)))
            for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_train_writes_a_self_contained_report(run2d):
    html = (run2d / "report.html").read_text()
    for section in ("Configuration", "Training", "Evaluation", "Latent space",
                    "Reconstructions and samples"):
        assert f"<h2>{section}</h2>" in html
    images = embedded_images(html)
    # loss curves, latent maps, manifold, KL per dim, 2 reconstructions, 2 sample grids, interpolation
    assert len(images) >= 9
    for img in images:
        img.verify()  # every embedded PNG decodes
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network
    assert "model.latent_dim" in html and "log_likelihood" in html


def test_report_escapes_text_from_files(run2d, tmp_path):
    import json
    import shutil

    run = tmp_path / "evil"
    shutil.copytree(run2d, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["data"] = "digits<script>alert(1)</script>"
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_latent_snapshots_every_epoch(run2d):
    snaps = sorted(p.name for p in (run2d / "latent").glob("epoch_*.npy"))
    assert snaps == ["epoch_1.npy", "epoch_2.npy", "epoch_3.npy"]
    z = np.load(run2d / "latent" / "epoch_3.npy")
    labels = np.load(run2d / "latent" / "labels.npy")
    assert z.shape == (179, 2) and labels.shape == (179,)
    from vaekit.data import load_data
    from vaekit.estimator import VAE

    np.testing.assert_allclose(z, VAE.load(run2d).transform(load_data("digits").x_test.numpy()), atol=1e-6)


def test_manifold_grid_is_at_gaussian_quantiles(run2d):
    from scipy.stats import norm

    from vaekit.run import RunDir

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


@pytest.mark.parametrize("active,dim,expect", [(0, 20, "Posterior collapse"), (3, 20, "Only 3 of 20"),
                                               (15, 20, None)])
def test_collapse_note_in_plain_words(active, dim, expect):
    note = collapse_note(active, dim)
    assert (note is None) if expect is None else (expect in note)
