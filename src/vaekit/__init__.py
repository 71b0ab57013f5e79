"""vaekit: variational autoencoders on PyTorch, from one command or one Python call."""

from vaekit.version import __version__

__all__ = ["VAE", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import vaekit` (and the CLI's --help) does not pay for scikit-learn.
    if name == "VAE":
        from vaekit.estimator import VAE

        return VAE
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
