"""Exact distribution and marginals of a small factor graph by enumerating every assignment of
its free variables (the test oracle for the samplers)."""
from __future__ import annotations

import numpy as np

from ._kernels import enumerate_log_potentials
from .graph import FactorGraph

__all__ = ["MAX_EXACT_STATES", "exact_distribution", "exact_marginals"]

MAX_EXACT_STATES = 2 ** 22


def exact_distribution(graph: FactorGraph) -> tuple[np.ndarray, np.ndarray]:
    """(assignments int32[K, n_free], probs float64[K]) over the free variables, in increasing
    variable order, row-major (the last free variable changes fastest); evidence clamped.

    >>> from relaxtorch.mcmc.factor import ising_grid
    >>> states, probs = exact_distribution(ising_grid(2, 2, beta=0.3, h=0.0, periodic=False))
    >>> states.shape, round(float(probs.sum()), 12)
    ((16, 4), 1.0)
    """
    free = np.flatnonzero(graph.evidence < 0)
    cards = graph.cardinality[free]
    log_states = float(np.sum(np.log2(cards.astype(np.float64)))) if free.size else 0.0
    if log_states > np.log2(MAX_EXACT_STATES) + 1e-9:
        raise ValueError(f"Invalid graph: {graph!r} (2**{log_states:.1f} assignments of its free variables; "
                         f"exact enumeration stops at {MAX_EXACT_STATES})")
    k = int(np.prod(cards)) if free.size else 1
    x = graph.initial.astype(np.int32)
    logp = np.empty(k)
    enumerate_log_potentials(graph.arrays, free.astype(np.int64), x, logp)
    probs = np.exp(logp - logp.max())
    probs /= probs.sum()
    grids = np.indices(tuple(int(c) for c in cards), dtype=np.int32) if free.size else np.zeros((0, 1), np.int32)
    states = grids.reshape(free.size, k).T.copy() if free.size else np.zeros((1, 0), np.int32)
    return states, probs


def exact_marginals(graph: FactorGraph) -> np.ndarray:
    """float64[n, max_cardinality]: P(x_v = k) (zero beyond a variable's cardinality; evidence
    rows one-hot).

    >>> from relaxtorch.mcmc.factor import ising_grid
    >>> exact_marginals(ising_grid(2, 2, beta=0.3, h=0.0)).round(6)[0].tolist()
    [0.5, 0.5]
    """
    states, probs = exact_distribution(graph)
    free = np.flatnonzero(graph.evidence < 0)
    out = np.zeros((graph.num_variables, max(graph.max_cardinality, 1)))
    clamped = np.flatnonzero(graph.evidence >= 0)
    out[clamped, graph.evidence[clamped]] = 1.0
    for j, var in enumerate(free):
        out[var, :graph.cardinality[var]] = np.bincount(states[:, j], weights=probs,
                                                        minlength=int(graph.cardinality[var]))
    return out
