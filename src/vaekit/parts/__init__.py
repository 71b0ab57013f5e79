"""Floor 3: the parts a model is composed of, each family a registry of classes: distributions, network bodies, posteriors, priors, likelihoods, preprocessing and objectives."""

from . import tables  # noqa: E402,F401  registers the "table" likelihood beside those of likelihoods.py
