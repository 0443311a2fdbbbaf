"""Asynchronous Gibbs sampling on k threads sharing one assignment without locks (De Sa, Olukotun &
Ré, "Ensuring Rapid Mixing and Low Bias for Asynchronous Gibbs Sampling", ICML 2016: HOGWILD!-Gibbs).

Each of k Python threads runs a nogil numba kernel over its own contiguous block of the free
variables (its own splitmix64 stream, its own rows of the marginal counts), reading neighbours that
other threads may be writing at that moment: the reads can be stale.  Staleness is measured, not
assumed: every ``probe_every``-th update a thread reads the others' update counters (one cache line
per thread, so counting causes no false sharing) before it reads its neighbours and after it writes,
and records how many updates of other threads overlapped (``state.staleness``: mean, max, probes).
Each probe pulls the other threads' counter lines into this core and so costs them a coherence miss
on their next count: probing every 64th update cost 5% of the 2-thread rate on a 500x500 grid, every
1024th (the default: some 240 probes a sweep there) costs nothing measurable.

The threads meet every ``sync_every`` sweeps (0: 256 sweeps, within 2^16 to 2^24 updates per thread,
about half a second at most: between stretches Ctrl-C gets through), and start each stretch together
(a spin barrier in the kernel).  A meeting costs the faster thread its lead, so they are rare: with
16-sweep stretches the 2-thread rate on the 500x500 grid was 4% lower.  Within a stretch a thread that is
more than ``max_lag`` sweeps (default 1) ahead of the slowest waits for it: the bounded delay the
analysis assumes.  Without it a thread that runs while another is descheduled, or whose block is
the smaller, samples its block against a frozen rest: still a valid blocked sampler, but one that
mixes between the blocks only at meetings (on a 3x3 grid the marginals' spread over seeds
doubled).  The per-sweep energy trace adds the threads' own Δ log-potential (from possibly stale conditionals)
and is resynchronised to the exact log-potential at the end of each ``run`` when
``exact_energy`` (one pass over the factors).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ._gibbs_kernels import async_sweeps
from ._kernels import log_potential
from .gibbs import SCANS, check_scan, packed
from .state import _PAD, GibbsState, append, check_sweeps, start_state

__all__ = ["AsyncGibbs"]


@dataclass(frozen=True)
class AsyncGibbs:
    """HOGWILD!-Gibbs on ``threads`` threads (scan within each thread's block).

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(16, 16, beta=0.3, h=0.1)
    >>> s = fg.AsyncGibbs(threads=2)
    >>> st = s.run(g, s.init(g, seed=0), 10)
    >>> st.updates, sorted(st.staleness)
    (2560, ['max', 'mean', 'probes'])
    """

    threads: int = 2
    scan: str = "systematic"
    probe_every: int = 1024
    exact_energy: bool = True
    sync_every: int = 0
    max_lag: int = 1

    def __post_init__(self):
        if not (isinstance(self.threads, (int, np.integer)) and self.threads >= 1):
            raise ValueError(f"Invalid threads: {self.threads!r} (must be an integer >= 1)")
        if not (isinstance(self.probe_every, (int, np.integer)) and self.probe_every >= 0):
            raise ValueError(f"Invalid probe_every: {self.probe_every!r} (must be an integer >= 0; 0: no probes)")
        if not (isinstance(self.sync_every, (int, np.integer)) and self.sync_every >= 0):
            raise ValueError(f"Invalid sync_every: {self.sync_every!r} (must be an integer >= 0; 0: automatic)")
        if not (isinstance(self.max_lag, (int, np.integer)) and self.max_lag >= 0):
            raise ValueError(f"Invalid max_lag: {self.max_lag!r} (must be an integer >= 0 sweeps; 0: unbounded)")
        check_scan(self.scan)

    def init(self, graph, seed: int, x0=None) -> GibbsState:
        st = start_state(graph, seed, x0, name="async-gibbs", threads=int(self.threads))
        st.staleness = {"mean": 0.0, "max": 0, "probes": 0}
        st.order = np.zeros(0, np.int64)
        return st

    def blocks(self, state: GibbsState):
        return np.array_split(state.free, int(self.threads))

    def run(self, graph, state: GibbsState, sweeps: int, *, record: bool = True, thin: int = 0) -> GibbsState:
        """``sweeps`` sweeps of every thread over its block (no barrier between sweeps); ``thin``
        must be 0 (the threads do not stop together, so there is no common state to keep)."""
        sweeps, thin = check_sweeps(sweeps, thin)
        if thin:
            raise ValueError(f"Invalid thin: {thin!r} (AsyncGibbs keeps no samples; use 0)")
        g, p = graph.arrays, packed(graph)
        k = int(self.threads)
        blocks = self.blocks(state)
        orders = [b.copy() for b in blocks]
        e_out = np.zeros((k, sweeps))
        m_out = np.zeros((k, sweeps))
        progress = np.zeros(k * _PAD, np.int64)
        stale = np.zeros((k, _PAD), np.int64)
        ready = np.zeros(k * _PAD, np.int64)
        streams = [state.stream(t) for t in range(k)]

        size = max(1, max(b.size for b in blocks))
        every = int(self.sync_every) or max(1, min(max(256 * size, 1 << 16), 1 << 24) // size)

        def work(t, a, b):
            r = async_sweeps(g, p, state.x, blocks[t], orders[t], SCANS[self.scan], b - a, streams[t],
                                      state.counts, record, e_out[t, a:b], m_out[t, a:b], progress, t, _PAD,
                                      int(self.probe_every), stale[t], ready, a // every + 1, int(self.max_lag))
            streams[t] = np.uint64(int(r) & 0xFFFFFFFFFFFFFFFF)
            if a > 0:  # running sums continue from the previous chunk
                e_out[t, a:b] += e_out[t, a - 1]
                m_out[t, a:b] += m_out[t, a - 1]

        for a in range(0, sweeps, every):
            b = min(sweeps, a + every)
            if k == 1:
                work(0, a, b)
                continue
            pool = [threading.Thread(target=work, args=(t, a, b)) for t in range(k)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()
        for t in range(k):
            state.set_stream(t, streams[t])
        energy = state.log_potential + e_out.sum(axis=0)
        mag = (state.sumx + m_out.sum(axis=0)) / max(state.num_free, 1)
        state.sumx = float(state.sumx + m_out[:, -1].sum()) if sweeps else state.sumx
        state.log_potential = float(energy[-1]) if sweeps else state.log_potential
        if self.exact_energy and sweeps:
            state.log_potential = float(log_potential(g, state.x))
            energy[-1] = state.log_potential
        self._stale(state, stale)
        return append(state, sweeps, energy, mag, np.zeros((0, state.x.shape[0]), np.int32), record,
                      sweeps * state.num_free)

    @staticmethod
    def _stale(state: GibbsState, stale: np.ndarray) -> None:
        old = state.staleness
        probes = int(old["probes"]) + int(stale[:, 1].sum())
        total = old["mean"] * old["probes"] + float(stale[:, 0].sum())
        state.staleness = {"mean": total / probes if probes else 0.0, "probes": probes,
                           "max": max(int(old["max"]), int(stale[:, 2].max()) if stale.size else 0)}
