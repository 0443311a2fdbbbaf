"""The state every factor-graph sampler carries between calls, and what is read off it: marginals,
energy and magnetisation traces, kept samples.

A sampler (a frozen configuration: :class:`~.gibbs.Gibbs`, :class:`~.async_gibbs.AsyncGibbs`, ...)
makes a :class:`GibbsState` with ``init(graph, seed, x0=None)`` and advances it with
``run(graph, state, sweeps)``, which updates the state's arrays in place and returns it.

"energy" is the log-potential Σ_f w·feature·φ_f(x) of the whole graph (evidence factors included;
higher is more probable), the DeepDive convention; physical energies (Ising's -Σ s_i s_j) are affine
in it.  "magnetisation" is the mean value of the free variables (for booleans the fraction true; the
Ising spin mean is 2·m - 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..._seeding import derive
from ._kernels import log_potential

__all__ = ["GibbsState", "marginals"]

_PAD = 8  # uint64 words per stream: one cache line, so threads' streams never share one


@dataclass(eq=False)
class GibbsState:
    """What a factor-graph sampler changes as it runs (arrays updated in place by ``run``).

    x: int32[n] the assignment (evidence variables hold their values); counts: int64[n, K] the
    value counts of the recorded sweeps; recorded: how many sweeps the counts hold; sweeps /
    updates: totals run; energy / magnetisation: one value per sweep; samples: int32[S, n] the
    kept states; log_potential: the current value (kept up to date by the kernels);
    accepted: MH acceptances (MGPMH, DoubleMIN-Gibbs); estimate: the cached energy estimate of
    MIN-Gibbs / DoubleMIN-Gibbs; staleness: AsyncGibbs's measured staleness (see there).
    """

    x: np.ndarray
    counts: np.ndarray
    free: np.ndarray
    evidence: np.ndarray
    cardinality: np.ndarray
    streams: np.ndarray
    order: np.ndarray
    log_potential: float
    sumx: float
    recorded: int = 0
    sweeps: int = 0
    updates: int = 0
    accepted: int = 0
    estimate: float = float("nan")
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    magnetisation: np.ndarray = field(default_factory=lambda: np.zeros(0))
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    staleness: dict = field(default_factory=dict)

    @property
    def num_free(self) -> int:
        return int(self.free.shape[0])

    def stream(self, t: int = 0) -> np.uint64:
        return self.streams[t * _PAD]

    def set_stream(self, t: int, value) -> None:
        self.streams[t * _PAD] = np.uint64(value)


def marginals(state: GibbsState) -> np.ndarray:
    """float64[n, max_cardinality]: the fraction of recorded sweeps each variable held each value
    (evidence rows one-hot at the clamped value; values beyond a variable's cardinality 0).

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(3, 3, 0.2, 0.0)
    >>> st = fg.Gibbs().run(g, fg.Gibbs().init(g, seed=0), 10)
    >>> bool(np.allclose(fg.marginals(st).sum(axis=1), 1.0))
    True
    """
    n, k = state.counts.shape
    if state.recorded == 0:
        out = np.full((n, k), np.nan)
    else:
        out = state.counts / float(state.recorded)
    ev = np.flatnonzero(state.evidence >= 0)
    out[ev] = 0.0
    out[ev, state.evidence[ev]] = 1.0
    return out


def start_state(graph, seed: int, x0, *, name: str, threads: int = 1) -> GibbsState:
    """A fresh state: x0 (default graph's ``initial``) with evidence clamped, zero counts, one
    splitmix64 stream per thread derived from (seed, name, thread)."""
    g = graph.arrays
    n = g.cardinality.shape[0]
    if x0 is None:
        x = np.array(g.initial, dtype=np.int32)
    else:
        x = np.array(x0, dtype=np.int64).reshape(-1)
        if x.shape[0] != n:
            raise ValueError(f"Invalid x0: length {x.shape[0]} (the graph has {n} variables)")
        bad = np.flatnonzero((x < 0) | (x >= g.cardinality))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"Invalid x0: x0[{i}] = {int(x[i])} (variable {i} has cardinality "
                             f"{int(g.cardinality[i])})")
        x = x.astype(np.int32)
    ev = np.flatnonzero(g.evidence >= 0)
    x[ev] = g.evidence[ev]
    free = np.flatnonzero(g.evidence < 0).astype(np.int64)
    streams = np.zeros(threads * _PAD, np.uint64)
    for t in range(threads):
        streams[t * _PAD] = np.uint64(derive(int(seed), name, t))
    kmax = int(g.cardinality.max()) if n else 1
    return GibbsState(x=x, counts=np.zeros((n, kmax), np.int64), free=free,
                      evidence=np.array(g.evidence, np.int64), cardinality=np.array(g.cardinality, np.int64),
                      streams=streams, order=free.copy(), log_potential=float(log_potential(g, x)),
                      sumx=float(x[free].sum(dtype=np.int64)))


def samples_buffer(state: GibbsState, sweeps: int, thin: int) -> np.ndarray:
    rows = sweeps // thin if thin > 0 else 0
    return np.empty((rows, state.x.shape[0]), np.int32)


def append(state: GibbsState, sweeps: int, energy, mag, kept: np.ndarray, record: bool, updates: int) -> GibbsState:
    """Record a finished ``run`` of ``sweeps`` sweeps on the state's totals and traces."""
    state.sweeps += sweeps
    state.updates += updates
    if record:
        state.recorded += sweeps
    state.energy = np.concatenate([state.energy, energy])
    state.magnetisation = np.concatenate([state.magnetisation, mag])
    if kept.shape[0]:
        state.samples = kept if state.samples.shape[0] == 0 else np.concatenate([state.samples, kept])
    return state


def check_sweeps(sweeps, thin) -> tuple[int, int]:
    sweeps, thin = int(sweeps), int(thin)
    if sweeps < 0:
        raise ValueError(f"Invalid sweeps: {sweeps!r} (must be >= 0)")
    if thin < 0:
        raise ValueError(f"Invalid thin: {thin!r} (must be >= 0; 0 keeps no samples)")
    return sweeps, thin
