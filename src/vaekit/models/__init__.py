"""Floor 5: the models built from the parts: the VAE, the ladder VAE, M2 and its stacking, the VAE-GAN; build_model picks one from a configuration."""
