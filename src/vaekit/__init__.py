"""vaekit: variational autoencoders on PyTorch, from one command or one Python call."""

__version__ = "0.1.0"
__all__ = ["VAE", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import vaekit` (and the CLI's --help) does not pay for scikit-learn.
    if name == "VAE":
        from .estimator import VAE

        return VAE
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
