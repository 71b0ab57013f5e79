"""Floor 7: pure evaluation functions: ELBO and importance-sampled log p(x), diagnostics, disentanglement, sample quality and the classic baselines."""
