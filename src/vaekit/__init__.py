"""vaekit: variational autoencoders on PyTorch, from one command or one Python call."""

from vaekit.version import __version__

__all__ = ["VAE", "VAEImputer", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import vaekit` (and the CLI's --help) does not pay for scikit-learn.
    if name in ("VAE", "VAEImputer"):
        from vaekit import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
