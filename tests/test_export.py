"""``vaekit export --format onnx``: onnxruntime against PyTorch for every body and a conditional
model, at two batch sizes other than the traced one; no random op in any graph; the export
folder's rules; one error line for bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vaekit.cli.main import main  # noqa: E402
from vaekit.data import load_data  # noqa: E402
from vaekit.export import RANDOM_OPS, export_graphs, random_ops, to_onnx  # noqa: E402
from vaekit.pipeline import load_run  # noqa: E402

pytestmark = pytest.mark.slow  # one torch.export + ONNX conversion per graph: seconds each

TOL = 1e-5  # absolute and relative, float32
BATCHES = (2, 9)  # the graphs were traced at 3: other sizes prove the batch dimension is free
# Independent of export.RANDOM_OPS: every ONNX operator whose name says it draws random numbers.
RANDOM_NAMES = ("Random", "Multinomial", "Bernoulli", "Dropout")
BODIES = {"mlp": ["digits", "--hidden", "16"], "conv": ["digits", "--arch", "conv", "--hidden", "16"],
          "resnet": ["digits", "--arch", "resnet", "--hidden", "16"],
          "linear": ["TABLE", "--arch", "linear", "--likelihood", "gaussian"],
          "conditional": ["digits", "--hidden", "16", "--conditional"],
          "ladder": ["digits", "--hidden", "16", "--top-latent-dims", "3"]}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "table.npy"
    np.save(path, np.random.default_rng(0).random((64, 6)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, table):
    """body -> run directory, each trained for one epoch and exported to RUN/onnx by the CLI."""
    runs = {}
    for name, args in BODIES.items():
        run = tmp_path_factory.mktemp("runs") / name
        data = [str(table) if a == "TABLE" else a for a in args]
        assert main(["train", *data[:1], "--out", str(run), "--epochs", "1", "--latent-dim", "2",
                     "--no-report", *data[1:]]) == 0
        assert main(["export", str(run), "--format", "onnx"]) == 0
        runs[name] = run
    return runs


def inputs(model, table, n):
    """Real rows of the run's data (labels for a conditional model) and codes around them."""
    if model.data_shape == (6,):
        x = torch.from_numpy(np.load(table)[:n])
    else:
        x = load_data("digits", log=lambda s: None).x_test[:n]
    y = (torch.arange(n) * 7 % model.cond_dim).long() if model.cond_dim else None
    with torch.no_grad():
        z = model.encode(x, y).mean + torch.linspace(-2, 2, n)[:, None]  # also far from the data
    return x, y, z


@pytest.mark.parametrize("body", list(BODIES))
def test_onnxruntime_matches_pytorch(exported, table, body):
    run = exported[body]
    model, _ = load_run(run, "cpu")
    enc = ort.InferenceSession(str(run / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(run / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in enc.get_inputs()] == (["x", "y"] if model.cond_dim else ["x"])
    for n in BATCHES:
        x, y, z = inputs(model, table, n)
        labels = {"y": y.numpy()} if y is not None else {}
        with torch.no_grad():
            want_z = model.encode(x, y).mean.numpy()
            want_x = model.decode(z, y).mean.numpy()
        got_z = enc.run(["z"], {"x": x.numpy(), **labels})[0]
        got_x = dec.run(["x"], {"z": z.numpy(), **labels})[0]
        assert got_z.dtype == np.float32 and got_z.shape == (n, model.latent_dim)
        assert got_x.shape == (n, *model.data_shape)
        np.testing.assert_allclose(got_z, want_z, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(got_x, want_x, rtol=TOL, atol=TOL)


def test_conditional_graph_uses_the_label(exported, table):
    """The decoder's output depends on y: the label is an input, not a traced constant."""
    run = exported["conditional"]
    dec = ort.InferenceSession(str(run / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    z = np.zeros((2, 2), np.float32)
    a = dec.run(["x"], {"z": z, "y": np.array([0, 0])})[0]
    b = dec.run(["x"], {"z": z, "y": np.array([0, 5])})[0]
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[1] - b[1]).max() > 1e-4


@pytest.mark.parametrize("body", list(BODIES))
def test_no_random_op_and_a_dynamic_batch(exported, body):
    meta = json.loads((exported[body] / "onnx" / "export.json").read_text())
    for part in ("encoder", "decoder"):
        proto = onnx.load(str(exported[body] / "onnx" / f"{part}.onnx"))
        nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
        assert nodes and not [n.op_type for n in nodes if n.op_type.startswith(RANDOM_NAMES)]
        assert random_ops(proto) == []
        for v in [*proto.graph.input, *proto.graph.output]:
            dims = v.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch" and all(d.dim_value > 0 for d in dims[1:])
        # export.json describes the graph it sits next to
        assert [i["name"] for i in meta["graphs"][part]["inputs"]] == [i.name for i in proto.graph.input]
        assert meta["opset"] == next(o.version for o in proto.opset_import if o.domain == "")


def test_random_op_check_finds_sampling():
    """The check above can fail: a graph that samples is caught, Dropout too."""
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.randn_like(x)

    proto = to_onnx(Noisy(), (torch.zeros(3, 4),), ["x"], "y", None)
    assert random_ops(proto) == ["RandomNormalLike"] and "RandomNormalLike" in RANDOM_OPS


def test_preprocessing_is_inside_the_graphs():
    """A standardizing model on data far from unit scale: the graphs must apply and invert it."""
    from vaekit.config.settings import ModelConfig
    from vaekit.parts.preprocess import build_preprocess
    from vaekit.models.build import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(likelihood="gaussian", hidden=(16,), latent_dim=2), (5,))
    x = torch.from_numpy(np.random.default_rng(1).normal(300, 40, (32, 5)).astype(np.float32))
    model.preprocess = build_preprocess("standardize", (5,)).fit(x)
    model.eval()
    files, info = export_graphs(model)
    enc = ort.InferenceSession(files["encoder.onnx"], providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(files["decoder.onnx"], providers=["CPUExecutionProvider"])
    with torch.no_grad():
        z = model.encode(x).mean
        x_hat = model.decode(z).mean
    np.testing.assert_allclose(enc.run(None, {"x": x.numpy()})[0], z.numpy(), rtol=TOL, atol=TOL)
    got = dec.run(None, {"z": z.numpy()})[0]
    np.testing.assert_allclose(got, x_hat.numpy(), rtol=TOL, atol=TOL * 300)
    assert abs(got.mean() - 300) < 60  # raw units: without the inverse it would be near 0
    assert max(info["max_abs_error"].values()) < 1e-3


def test_folder_rules(exported, tmp_path):
    """Same model: rewritten; another model: only with --overwrite; other files: never."""
    out = tmp_path / "deploy"
    assert main(["export", str(exported["mlp"]), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["export", str(exported["conv"]), "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["export", str(exported["conv"]), "--out", str(out), "--overwrite"]) == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["model"]["arch"] == "conv" and meta["format"] == "vaekit-onnx"
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(exported["conv"]), "--out", str(out), "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_errors_are_one_line(exported, tmp_path, capsys, monkeypatch):
    capsys.readouterr()
    cases = [(["export", str(tmp_path / "nope")], "does not exist"),
             (["export", str(exported["mlp"]), "--opset", "12"], "--opset"),
             (["export", str(exported["mlp"]), "--format", "tflite"], "--format")]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], (argv, err)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    assert main(["export", str(exported["mlp"]), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: ONNX export needs the onnx extra (onnxscript is not installed): "
                   "pip install 'vaekit[onnx]'"]
    assert not (tmp_path / "x").exists()


def test_a_table_export_names_its_columns_and_reads_missing_cells(tmp_path):
    """A table run's export.json lists the encoded layout (names, types, levels), and the
    encoder graph reads a row with missing cells (NaN) as the model does."""
    import pandas as pd

    rng = np.random.default_rng(0)
    z = rng.normal(size=150)
    df = pd.DataFrame({"city": np.where(z > 0, "lyon", "nice"), "visits": rng.poisson(np.exp(1 + 0.5 * z)),
                       "height": np.round(170 + 8 * z + rng.normal(size=150), 1)})
    df.loc[::9, "height"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "t.csv"), "--out", str(run), "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--no-report"]) == 0
    assert main(["export", str(run), "--format", "onnx"]) == 0
    meta = json.loads((run / "onnx" / "export.json").read_text())
    assert [(c["name"], c["type"]) for c in meta["columns"]] == [
        ("city", "binary"), ("visits", "count"), ("height", "continuous")]
    assert sorted(meta["columns"][0]["levels"]) == ["lyon", "nice"]
    model, _ = load_run(run)
    x = torch.tensor([[0.0, 3.0, float("nan")], [1.0, 0.0, 171.5]])
    session = ort.InferenceSession(str(run / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model.encode(x).mean.numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want, rtol=TOL, atol=TOL)
