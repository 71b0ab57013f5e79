"""Floor 10: the scikit-learn style estimator :class:`VAE` over the pipeline (fit, transform,
score_samples, inverse_transform; sample, fit_sampler and interpolate in :mod:`.draw`)."""

from .model import ESTIMATOR_DEFAULTS, PARAM_OF_FIELD, VAE

__all__ = ["VAE", "ESTIMATOR_DEFAULTS", "PARAM_OF_FIELD"]
