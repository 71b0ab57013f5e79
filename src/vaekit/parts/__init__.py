"""Floor 3: the parts a model is composed of, each family a registry of classes: distributions, network bodies, posteriors, priors, likelihoods, preprocessing and objectives."""
