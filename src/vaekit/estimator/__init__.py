"""Floor 10: the scikit-learn style estimator :class:`VAE` over the pipeline (fit, transform,
score_samples, inverse_transform, impute; sample, fit_sampler and interpolate in :mod:`.draw`),
and :class:`VAEImputer`, its imputation as a transformer for scikit-learn pipelines."""

from .impute import VAEImputer
from .model import ESTIMATOR_DEFAULTS, PARAM_OF_FIELD, VAE

__all__ = ["VAE", "VAEImputer", "ESTIMATOR_DEFAULTS", "PARAM_OF_FIELD"]
