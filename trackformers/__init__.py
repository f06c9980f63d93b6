"""trackformers: charged-particle track reconstruction with encoder-only Transformers."""

__version__ = "0.1.0"
