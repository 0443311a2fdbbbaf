"""Bayesian sampling: SG-MCMC kernels, minibatch Metropolis-Hastings, diagnostics, problems."""
from .diagnostics import autocorrelation, ess, mcse, rhat

__all__ = ["autocorrelation", "ess", "mcse", "rhat"]
