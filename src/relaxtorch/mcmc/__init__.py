"""Sampling, relaxed: SG-MCMC kernels and optimizer shells, low-precision SGLD, minibatch MH, diagnostics."""
from .lowprec import SGLDLP, SGLDLPInfo, SGLDLPKernel, SGLDLPState, lp_update
from .vc_quantize import grid_gap, vc_quantize

__all__ = ["SGLDLP", "SGLDLPInfo", "SGLDLPKernel", "SGLDLPState", "grid_gap", "lp_update", "vc_quantize"]
