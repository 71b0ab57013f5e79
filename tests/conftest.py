"""Shared fixtures: small deterministic data and an isolated data cache."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from battery import battery_runs, run_copy  # noqa: F401  (session runs of the test_battery_* files)

# A suite started in the background without job control (`cmd &` in a script, nohup) inherits
# SIGINT ignored, and vaekit rightly keeps an ignored signal ignored (tests/test_cli_stop.py).
# The stop tests need Ctrl-C as a terminal gives it, here and in the commands they start (exec
# resets a handled signal to its default, so the children get KeyboardInterrupt again).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
