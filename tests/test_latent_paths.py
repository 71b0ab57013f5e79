"""The latent maps' shared projection (PCA fitted on the last epoch; t-SNE aligned by Procrustes),
class representatives and the 3 -> 8 morph (CLI, estimator, report), and the report's latent
traversals ordered by KL."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.decomposition import PCA

from vaekit.sampling import morph, paths
from vaekit.report import figures as viz
from vaekit.training.callbacks import LATENT_MAP_POINTS, latent_map_rows
from vaekit.cli.main import main


# -- the shared projection ---------------------------------------------------------------------
def flip_prone_codes():
    """Two epochs of nearly the same codes whose first principal direction moves from (1, -0.9)
    to (0.9, -1) (over 3-D codes): PCA's sign convention (largest loading positive) then turns
    the first axis around between separate fits."""
    rng = np.random.default_rng(0)
    t, s = rng.standard_normal(400), 0.3 * rng.standard_normal((400, 2))
    early = np.c_[t * 1.0 + s[:, 0], -0.9 * t + s[:, 1], 0.1 * s[:, 0]]
    late = np.c_[t * 0.9 + s[:, 0], -1.0 * t + s[:, 1], 0.1 * s[:, 0]]
    return early, late


def test_pca_is_fitted_on_the_last_epoch_and_applied_to_all():
    early, late = flip_prone_codes()
    (a, b), axis = viz.project_epochs([early, late], "pca")
    pca = PCA(2, random_state=0).fit(late)  # the oracle: scikit-learn, fitted on the last epoch
    np.testing.assert_allclose(a, pca.transform(early), atol=1e-10)
    np.testing.assert_allclose(b, pca.transform(late), atol=1e-10)
    assert axis == "PC"
    separate = [viz.project_2d(z)[0][:, 0] for z in (early, late)]
    assert np.corrcoef(*separate)[0, 1] < -0.9  # separate fits: the first axis flips
    assert np.corrcoef(a[:, 0], b[:, 0])[0, 1] > 0.9  # shared: it cannot


def test_the_same_codes_map_to_the_same_points_at_every_epoch():
    _, late = flip_prone_codes()
    for method in ("pca", "tsne"):
        xy, _ = viz.project_epochs([late[:120], late[:120]], method)
        np.testing.assert_allclose(xy[0], xy[1], rtol=1e-5, atol=1e-5)  # t-SNE: float32


def test_tsne_epochs_are_aligned_to_the_last():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(80, 4)) * [3, 2, 1, 0.5]
    (a, b), axis = viz.project_epochs([-z, z], "tsne")  # mirrored codes embed mirrored
    separate = [viz.project_2d(v, "tsne")[0] for v in (-z, z)]
    spread = np.abs(b).max()
    assert axis == "t-SNE" and np.abs(separate[0] - separate[1]).max() > 0.5 * spread
    assert np.abs(a - b).max() < 0.05 * spread


def test_procrustes_alignment_undoes_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 2))
    c, s = np.cos(0.7), np.sin(0.7)
    moved = 3.0 * ref @ np.array([[c, s], [-s, c]]) @ np.diag([1, -1]) + [5.0, -2.0]
    np.testing.assert_allclose(viz.align(moved, ref), ref, atol=1e-10)
    np.testing.assert_allclose(viz.align(np.zeros((50, 2)), ref), np.broadcast_to(ref.mean(0), (50, 2)))


def test_latent_maps_keep_evenly_spaced_rows():
    assert latent_map_rows(179) == slice(0, 179)
    rows = latent_map_rows(4608)
    assert len(rows) == LATENT_MAP_POINTS and rows[0] == 0 and rows[-1] == 4607
    assert (rows.diff() >= 2).all() and (rows.diff() <= 3).all()


def test_shared_limits_hold_every_point():
    (xlo, xhi), (ylo, yhi) = viz.shared_limits([np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[-2.0, 5.0]])])
    assert xlo < -2 < 2 < xhi and ylo < 1 < 5 < yhi


# -- representatives and the morph -------------------------------------------------------------
def test_class_representative_by_hand():
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [2.0, 0.0], [9.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 0, 1])
    assert morph.class_representative(codes, labels, 0) == 1  # class mean (1, 0): row 1 itself
    assert morph.class_representative(codes, labels, 1) == 2  # tie at distance 0.707: the first row
    with pytest.raises(ValueError, match="no row has label 7"):
        morph.class_representative(codes, labels, 7)


@pytest.mark.parametrize("labels,want", [(range(10), (3, 8)), ([0, 1, 2, 2], (0, 2)), ([8, 3, 5], (3, 8)),
                                         ([4, 9, 3], (3, 9))])
def test_morph_classes(labels, want):
    assert morph.morph_classes(labels) == want


def test_dimension_sweep_by_hand():
    z = torch.tensor([0.5, -1.0, 2.0])
    codes = paths.dimension_sweep(z, [2, 0], torch.tensor([[0.0, 1.0], [-3.0, 3.0]]))
    want = torch.tensor([[0.5, -1, 0], [0.5, -1, 1], [-3, -1, 2], [3, -1, 2]])
    torch.testing.assert_close(codes, want)


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits3d"
    assert main(["train", "digits", "--out", str(run), "--epochs", "3", "--hidden", "64",
                 "--latent-dim", "3", "--seed", "1"]) == 0
    return run


def representatives(codes: np.ndarray, labels: np.ndarray, c: int) -> int:
    rows = np.flatnonzero(labels == c)
    return int(rows[np.argmin(((codes[rows] - codes[rows].mean(0)) ** 2).sum(1))])


def test_interpolate_between_classes_picks_typical_examples(run3d, tmp_path, capsys):
    from vaekit.data import load_data

    assert main(["embed", str(run3d), "digits", "--split", "test", "--out", str(tmp_path / "z.npy")]) == 0
    codes, labels = np.load(tmp_path / "z.npy"), load_data("digits").y_test.numpy()
    i, j = representatives(codes, labels, 3), representatives(codes, labels, 8)
    capsys.readouterr()
    assert main(["interpolate", str(run3d), "--from-label", "3", "--to-label", "8", "--steps", "6",
                 "--spherical", "--out", str(tmp_path / "m.png")]) == 0
    out = capsys.readouterr().out
    assert f"class 3 (row {i})" in out and f"class 8 (row {j})" in out and "spherical" in out
    # the same picture as with the rows given explicitly
    assert main(["interpolate", str(run3d), "--from", str(i), "--to", str(j), "--steps", "6",
                 "--spherical", "--out", str(tmp_path / "r.png")]) == 0
    a, b = np.asarray(Image.open(tmp_path / "m.png")), np.asarray(Image.open(tmp_path / "r.png"))
    assert a.shape == b.shape and a.shape[1] > 6 * a.shape[0] and np.array_equal(a, b)


@pytest.mark.parametrize("args,message", [
    (["--from-label", "3"], "give both ends"),
    (["--from-label", "3", "--to-label", "8", "--from", "0"], "not both"),
    (["--from-label", "3", "--to-label", "42"], "--to-label 42: no row has this label (the labels here are 0, 1"),
])
def test_interpolate_bad_labels_are_one_error_line(run3d, tmp_path, capsys, args, message):
    assert main(["interpolate", str(run3d), *args, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "x.png").exists()


def test_interpolate_by_label_needs_labelled_data(run3d, tmp_path, capsys):
    from vaekit.data import load_data

    np.save(tmp_path / "x.npy", load_data("digits").x_test.numpy())
    assert main(["interpolate", str(run3d), str(tmp_path / "x.npy"), "--from-label", "3",
                 "--to-label", "8", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "these rows have no labels, so --from-label and --to-label" in err[0]


def test_estimator_interpolates_between_class_representatives(run3d):
    from vaekit.data import load_data
    from vaekit.estimator import VAE
    from vaekit.errors import ConfigError, DataError

    vae = VAE.load(run3d)
    ds = load_data("digits")
    x, y = ds.x_test.numpy(), ds.y_test.numpy()
    codes = vae.transform(x)
    i, j = representatives(codes, y, 3), representatives(codes, y, 8)
    path = vae.interpolate(x, y, from_label=3, to_label=8, steps=5)
    t = np.linspace(0, 1, 5)[:, None]
    oracle = vae.inverse_transform((1 - t) * codes[i] + t * codes[j])  # decode the straight line
    np.testing.assert_allclose(path, oracle, atol=1e-5)
    np.testing.assert_allclose(vae.interpolate(x, from_index=i, to_index=j, steps=5), path)
    assert path.shape == (5, 1, 8, 8)
    with pytest.raises(ConfigError, match="from_label and to_label"):
        vae.interpolate(x, y, from_label=3)
    with pytest.raises(DataError, match="pass the labels y"):
        vae.interpolate(x, from_label=3, to_label=8)
    with pytest.raises(DataError, match="to_index 999 is out of range"):
        vae.interpolate(x, from_index=0, to_index=999)


# -- the report --------------------------------------------------------------------------------
def test_report_draws_the_3_to_8_morph_and_traversals_ordered_by_kl(run3d, monkeypatch):
    from vaekit.data import load_data
    from vaekit.evaluation.measures import latent_diagnostics, posterior_means
    from vaekit.report.page import build_report
    from vaekit.runs.directory import RunDir

    drawn = {}
    real = viz.traversal_figure

    def spy(images, names, steps):
        drawn.update(images=images, names=list(names), steps=steps)
        return real(images, names, steps)
    monkeypatch.setattr(viz, "traversal_figure", spy)
    html = build_report(run3d)
    assert re.search(r"Morph from a typical test example of class 3 and one of class 8", html)
    model, _ = RunDir(run3d).load_model()
    x = load_data("digits").x_test
    kl = np.array(latent_diagnostics(model, x)["kl_per_dim"])
    order = np.argsort(-kl)
    assert drawn["names"] == [f"z{d}  KL {kl[d]:.2f}" for d in order]
    # row r sweeps dimension order[r] between the 2nd and 98th percentile of its test codes,
    # the other dimensions at the code nearest the mean code (an independent NumPy computation)
    codes = posterior_means(model, x).numpy().astype(np.float64)
    lo, hi = np.quantile(codes, [0.02, 0.98], axis=0)
    base = np.argmin(((codes - codes.mean(0)) ** 2).sum(1))
    for r, d in enumerate(order):
        sweep = np.repeat(codes[base: base + 1], 9, axis=0)
        sweep[:, d] = np.linspace(lo[d], hi[d], 9)
        with torch.no_grad():
            want = model.decode(torch.from_numpy(sweep).float()).mean
        torch.testing.assert_close(drawn["images"][9 * r: 9 * (r + 1)], want, atol=1e-5, rtol=1e-4)
