"""Factor graphs (DeepDive's log-linear model) and their kernels, builders, exact oracle and
DeepDive binary format (issue 12)."""
from . import builders, exact, functions, graph
from ._kernels import conditional_logits, factor_bounds, factor_value, log_potential
from .builders import from_factors, ising_energy_per_site, ising_grid, magnetisation
from .exact import exact_distribution, exact_marginals
from .functions import FactorFunction, factor_value_reference
from .graph import FactorGraph, GraphArrays

__all__ = ["FactorFunction", "FactorGraph", "GraphArrays", "builders", "conditional_logits", "exact",
           "exact_distribution", "exact_marginals", "factor_bounds", "factor_value", "factor_value_reference",
           "from_factors", "functions", "graph", "ising_energy_per_site", "ising_grid", "log_potential",
           "magnetisation"]
