"""Shared fixtures: small deterministic data and an isolated data cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from battery import battery_runs, run_copy  # noqa: F401  (session runs of the test_battery_* files)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    # Tests never touch the user's cache; the MNIST fetch test sets its own empty one.
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def blobs() -> np.ndarray:
    """(120, 6) values in [0, 1] with structure a VAE can learn (two clusters)."""
    rng = np.random.default_rng(7)
    centers = np.array([[0.1, 0.2, 0.8, 0.9, 0.5, 0.3], [0.9, 0.7, 0.2, 0.1, 0.4, 0.6]])
    x = centers[rng.integers(0, 2, 120)] + 0.05 * rng.standard_normal((120, 6))
    return np.clip(x, 0, 1).astype(np.float32)
