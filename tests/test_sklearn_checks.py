"""scikit-learn's own conformance suite on the estimator (every check must pass)."""

import warnings

import pytest
from sklearn.utils.estimator_checks import check_estimator

from vaekit.estimator import VAE


@pytest.mark.slow
def test_check_estimator_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(VAE(likelihood="gaussian", epochs=1, latent_dim=2, random_state=0),
                                  on_fail=None)
    failed = {r["check_name"]: str(r["exception"]).splitlines()[:1] for r in results
              if r["status"] == "failed"}
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 45
