"""Bayesian sampling: SG-MCMC kernels, minibatch Metropolis-Hastings, diagnostics, problems."""
from . import metrics, problems
from .diagnostics import autocorrelation, ess, mcse, rhat
from .metrics import accuracy, cov_error, ece, mean_error, nll, posterior_predictive, predictive_nll
from .problems import PROBLEMS, Problem, Reference, load_problem, reference_posterior

__all__ = ["PROBLEMS", "Problem", "Reference", "accuracy", "autocorrelation", "cov_error", "ece", "ess",
           "load_problem", "mcse", "mean_error", "metrics", "nll", "posterior_predictive", "predictive_nll",
           "problems", "reference_posterior", "rhat"]
