"""Sequential single-site Gibbs sampling on a factor graph (Geman & Geman 1984), with the three scan
orders compared by He, De Sa, Mitliagkas & Ré ("Scan order in Gibbs sampling: models in which it
matters and bounds on how much", NeurIPS 2016): systematic (variables in index order every sweep),
random (each update picks a free variable uniformly, with replacement) and permutation (a fresh
uniformly random order each sweep).  A sweep is one update per free variable on average.
"""
from __future__ import annotations

from dataclasses import dataclass

import weakref

import numpy as np

from ._gibbs_kernels import PERMUTATION, RANDOM, SYSTEMATIC, gibbs_sweeps, pack
from .state import GibbsState, append, check_sweeps, samples_buffer, start_state

__all__ = ["Gibbs", "SCANS"]

SCANS = {"systematic": SYSTEMATIC, "random": RANDOM, "permutation": PERMUTATION}


def check_scan(scan: str) -> str:
    if scan not in SCANS:
        raise ValueError(f"Invalid scan: {scan!r} (one of {sorted(SCANS)})")
    return scan


_PACKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def packed(graph):
    """The boolean fast path's adjacency (``_gibbs_kernels.pack``) of ``graph``, built once per graph."""
    p = _PACKS.get(graph)
    if p is None:
        p = _PACKS[graph] = pack(graph.arrays)
    return p


def scratch(graph):
    k = max(int(graph.max_cardinality), 1)
    return np.zeros(k), np.zeros(k)


@dataclass(frozen=True)
class Gibbs:
    """Single-site Gibbs sampling, one thread (a numba kernel; :mod:`._sampler_reference` has its
    plain-Python twin).

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(8, 8, beta=0.2, h=0.1)
    >>> sampler = fg.Gibbs(scan="systematic")
    >>> st = sampler.run(g, sampler.init(g, seed=0), sweeps=50)
    >>> st.sweeps, st.updates, st.energy.shape
    (50, 3200, (50,))
    """

    scan: str = "systematic"

    def __post_init__(self):
        check_scan(self.scan)

    def init(self, graph, seed: int, x0=None) -> GibbsState:
        """A state at x0 (default: the graph's ``initial``; evidence clamped), streams from ``seed``."""
        return start_state(graph, seed, x0, name="gibbs")

    def run(self, graph, state: GibbsState, sweeps: int, *, record: bool = True, thin: int = 0) -> GibbsState:
        """``sweeps`` sweeps; counts the marginals when ``record`` (False: burn-in), keeps the state
        after every ``thin``-th sweep in ``state.samples`` (0: none).  Updates ``state`` in place."""
        sweeps, thin = check_sweeps(sweeps, thin)
        g = graph.arrays
        energy, mag = np.empty(sweeps), np.empty(sweeps)
        kept = samples_buffer(state, sweeps, thin)
        logits, work = scratch(graph)
        s, e, sumx, nk = gibbs_sweeps(g, packed(graph), state.x, state.free, state.order, SCANS[self.scan], sweeps,
                                      state.stream(0), state.counts, record, state.log_potential, state.sumx,
                                      energy, mag, kept, thin, logits, work)
        state.set_stream(0, s)
        state.log_potential, state.sumx = float(e), float(sumx)
        return append(state, sweeps, energy, mag, kept[:nk], record, sweeps * state.num_free)
