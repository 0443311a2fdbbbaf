"""Bayesian sampling, relaxed: SG-MCMC kernels and optimizer shells (SGLD, SGHMC, AMAGOLD), low-precision
SGLD, exact minibatch Metropolis-Hastings (TunaMH, TFMH, FlyMC, full MH) on the Poisson minibatch,
diagnostics (ESS, R-hat, MCSE), metrics and the embedded problems."""
from . import factor, metrics, mh, problems
from .amagold import AMAGOLDInfo, AMAGOLDKernel, AMAGOLDState
from .collect import SampleCollector, posterior_predictive, stack_chains
from .diagnostics import autocorrelation, ess, mcse, rhat
from .factor import FactorFunction, FactorGraph
from .gradients import GradEstimator, full_gradient, grad_estimator
from .lowprec import SGLDLP, SGLDLPInfo, SGLDLPKernel, SGLDLPState, lp_update
from .metrics import accuracy, average_probs, cov_error, ece, mean_error, nll, predictive_nll
from .mh import TFMH, FlyMC, FullMH, TunaMH
from .optim import AMAGOLD, SGHMC, SGLD, cyclical_lr
from .poisson import AliasTable, alias_table, poisson_counts, poisson_minibatch, thin
from .problems import PROBLEMS, Problem, Reference, load_problem, reference_posterior
from .sghmc import SGHMCInfo, SGHMCKernel, SGHMCState
from .sgld import SGLDInfo, SGLDKernel, SGLDState
from ._vc import grid_gap, vc_quantize

__all__ = ["AMAGOLD", "AMAGOLDInfo", "AMAGOLDKernel", "AMAGOLDState", "AliasTable", "FlyMC", "FullMH",
           "GradEstimator", "PROBLEMS", "Problem", "Reference", "SGHMC", "SGHMCInfo", "SGHMCKernel", "SGHMCState",
           "SGLD", "SGLDInfo", "SGLDKernel", "SGLDLP", "SGLDLPInfo", "SGLDLPKernel", "SGLDLPState", "SGLDState",
           "SampleCollector", "TFMH", "TunaMH", "accuracy", "average_probs", "alias_table", "autocorrelation", "cov_error",
           "cyclical_lr", "ece", "ess", "full_gradient", "grad_estimator", "grid_gap", "load_problem", "lp_update",
           "mcse", "mean_error", "metrics", "mh", "nll", "poisson_counts", "poisson_minibatch",
           "posterior_predictive", "predictive_nll", "problems", "reference_posterior", "rhat", "stack_chains",
           "thin", "vc_quantize"]
__all__ += ["FactorFunction", "FactorGraph", "factor"]  # mcmc/factor (issue 12)
