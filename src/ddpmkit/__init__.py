"""ddpmkit: denoising diffusion probabilistic models in PyTorch."""

__version__ = "0.1.0"
