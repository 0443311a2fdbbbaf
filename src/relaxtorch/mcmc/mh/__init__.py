"""Exact Metropolis-Hastings with minibatches: TunaMH, TFMH, FlyMC, and the full-data baseline."""
from .chain import ChainResult, run_chain
from .flymc import FlyMC
from .full import FullMH
from .models import (FlyMCBound, GLMPosterior, LogisticRegression, RobustLinearRegression, synthetic_logistic,
                     synthetic_robust)
from .tfmh import TFMH
from .tunamh import TunaMH
from ._common import MHInfo, MHState

__all__ = ["ChainResult", "FlyMC", "FlyMCBound", "FullMH", "GLMPosterior", "LogisticRegression", "MHInfo", "MHState",
           "RobustLinearRegression", "TFMH", "TunaMH", "run_chain", "synthetic_logistic", "synthetic_robust"]
