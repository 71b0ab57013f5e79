"""Floor 8: where generated codes come from (prior, ex-post mixture, two-stage VAE, a VQ-VAE's PixelCNN prior, a table's draws on its data's marginals) and latent paths (interpolations, morphs)."""

from . import pixelcnn  # noqa: F401,E402  (registers the pixelcnn sampler in SAMPLERS)
from . import marginals  # noqa: F401,E402  (registers the marginals sampler in SAMPLERS)
