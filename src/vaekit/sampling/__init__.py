"""Floor 8: where generated codes come from (prior, ex-post mixture, two-stage VAE) and latent paths (interpolations, morphs)."""
