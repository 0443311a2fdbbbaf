"""Factor graphs (DeepDive's log-linear model) and their kernels, builders, exact oracle and
DeepDive binary format (issue 12)."""
from . import builders, deepdive, exact, functions, graph
from ._kernels import conditional_logits, factor_bounds, factor_value, log_potential
from .builders import (from_factors, from_pairwise, ising_energy_per_site, ising_grid, magnetisation,
                       potts_all_pairs, potts_grid, random_graph, random_potts)
from .deepdive import DeepDiveFormatError, read_deepdive, write_deepdive
from .exact import exact_distribution, exact_marginals
from .functions import FactorFunction, factor_value_reference
from .graph import FactorGraph, GraphArrays
from .async_gibbs import AsyncGibbs
from .gibbs import Gibbs
from .learn import learn_weights
from .min_gibbs import MGPMH, DoubleMINGibbs, MINGibbs
from .poisson_gibbs import PoissonGibbs
from .state import GibbsState, marginals

__all__ = ["AsyncGibbs", "DoubleMINGibbs", "Gibbs", "GibbsState", "MGPMH", "MINGibbs", "PoissonGibbs",
           "learn_weights", "marginals",
           "DeepDiveFormatError", "FactorFunction", "FactorGraph", "GraphArrays", "builders", "conditional_logits",
           "deepdive", "exact", "exact_distribution", "exact_marginals", "factor_bounds", "factor_value",
           "factor_value_reference", "from_factors", "from_pairwise", "functions", "graph", "ising_energy_per_site",
           "ising_grid", "log_potential", "magnetisation", "potts_all_pairs", "potts_grid", "random_graph",
           "random_potts", "read_deepdive", "write_deepdive"]
