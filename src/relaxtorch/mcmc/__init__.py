"""Markov chain Monte Carlo: exact minibatch Metropolis-Hastings and the Poisson minibatch."""
from . import mh
from .poisson import AliasTable, alias_table, poisson_counts, poisson_minibatch, thin
from .mh import TFMH, FlyMC, FullMH, TunaMH

__all__ = ["mh", "AliasTable", "alias_table", "poisson_counts", "poisson_minibatch", "thin",
           "FlyMC", "FullMH", "TFMH", "TunaMH"]
