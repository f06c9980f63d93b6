"""Triton kernels of trackformers, installed and imported as ``trackformers.kernels``."""
