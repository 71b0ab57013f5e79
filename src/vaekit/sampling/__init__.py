"""Floor 8: where generated codes come from (prior, ex-post mixture, two-stage VAE, a VQ-VAE's PixelCNN prior) and latent paths (interpolations, morphs)."""

from . import pixelcnn  # noqa: F401,E402  (registers the pixelcnn sampler in SAMPLERS)
