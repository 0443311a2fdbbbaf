"""Bayesian sampling: SG-MCMC kernels (SGLD, SGHMC, AMAGOLD), their torch.optim shells, and a sample collector."""
from .amagold import AMAGOLDInfo, AMAGOLDKernel, AMAGOLDState
from .collect import SampleCollector, posterior_predictive, stack_chains
from .gradients import GradEstimator, full_gradient, grad_estimator
from .optim import AMAGOLD, SGHMC, SGLD, cyclical_lr
from .sghmc import SGHMCInfo, SGHMCKernel, SGHMCState
from .sgld import SGLDInfo, SGLDKernel, SGLDState

__all__ = ["AMAGOLD", "AMAGOLDInfo", "AMAGOLDKernel", "AMAGOLDState", "GradEstimator", "SGHMC", "SGHMCInfo",
           "SGHMCKernel", "SGHMCState", "SGLD", "SGLDInfo", "SGLDKernel", "SGLDState", "SampleCollector",
           "cyclical_lr", "full_gradient", "grad_estimator", "posterior_predictive", "stack_chains"]
