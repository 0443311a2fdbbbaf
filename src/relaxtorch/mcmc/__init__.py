"""Sampling, relaxed: SG-MCMC kernels and optimizer shells, low-precision SGLD, minibatch MH, diagnostics."""
from .vc_quantize import grid_gap, vc_quantize

__all__ = ["grid_gap", "vc_quantize"]
