"""vaekit: variational autoencoders on PyTorch, from one command or one Python call."""

__version__ = "0.1.0"
