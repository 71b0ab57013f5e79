"""bench/disentanglement.py: its validation protocol uses no test row, and its scores are the
library's on the rows it says (MIG and DCI of the posterior means, the one-sample ELBO terms)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config.settings import ModelConfig
from vaekit.data import load_data
from vaekit.evaluation.disentangle import dci, mig
from vaekit.models.build import build_model

BENCH = Path(__file__).resolve().parents[1] / "bench" / "disentanglement.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("disentanglement_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shapes():
    return load_data("shapes", log=lambda s: None)


def test_validation_split_is_carved_from_the_training_split(bench, shapes):
    val = bench.split_data(shapes, "val")
    assert bench.split_data(shapes, "test") is shapes
    assert len(val.x_train) + len(val.x_test) == len(shapes.x_train)
    assert len(val.x_test) == round(0.1 * len(shapes.x_train))
    # every scored row is a training row with its own factors: the factors identify a row
    key = lambda f: {tuple(r) for r in f.numpy()}  # noqa: E731
    assert key(val.f_test) <= key(shapes.f_train) and not key(val.f_test) & key(shapes.f_test)
    assert not key(val.f_test) & key(val.f_train)
    np.testing.assert_array_equal(val.y_test.numpy(), val.f_test[:, 0].numpy())  # labels follow


def test_scores_are_the_library_metrics_of_the_scored_rows(bench, shapes):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=3), (1, 64, 64))
    model.preprocess.fit(shapes.x_train[:10])
    rows = torch.arange(0, len(shapes.x_test), 24)  # a small, spread part (DCI's boosting is slow)
    small = type(shapes)("shapes", shapes.x_train[:10], shapes.x_test[rows], f_train=shapes.f_train[:10],
                         f_test=shapes.f_test[rows])
    got = bench.score(model.eval(), small, seed=0)
    with torch.no_grad():
        codes = model.encode(small.x_test).mean.numpy()
    assert got["mig"] == pytest.approx(mig(codes, small.f_test.numpy()).mig)
    assert got["D"] == pytest.approx(dci(codes, small.f_test.numpy(), random_state=0).disentanglement)
    assert got["rec"] > 0 and got["kl"] >= 0 and np.isfinite(got["tc"]) and 0 <= got["active"] <= 3
    assert len(got["gaps"]) == 5
