"""The shell shared by the minibatch samplers: bounds and alias tables (built once per graph), rate
checks, and the call of ``minibatch_sweeps``."""
from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import numpy as np

from ._kernels import factor_bounds
from ._gibbs_kernels import GENERIC, compact_factors
from ._minibatch_kernels import REC_COLS, global_records, global_table, initial_estimate, local_tables, minibatch_sweeps
from .gibbs import SCANS, packed, scratch
from .state import GibbsState, append, check_sweeps, samples_buffer, start_state


class Tables(NamedTuple):
    lo: np.ndarray       # float64[m] the factors' minimum values
    span: np.ndarray     # float64[m] M_f = max - min
    vprob: np.ndarray    # local alias tables (aligned with var_factor)
    valias: np.ndarray
    vtotal: np.ndarray   # L_v
    gprob: np.ndarray    # the global alias table
    galias: np.ndarray
    big_l: float         # L = max_v L_v
    psi: float           # Ψ = Σ_f M_f
    compact: tuple       # _gibbs_kernels.compact_factors
    records: np.ndarray  # float64[m, 8]: the global draws' table (_minibatch_kernels.global_records)
    generic: bool        # some factor (or pack row) needs the generic evaluation


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def tables(graph) -> Tables:
    """Bounds and alias tables of ``graph`` (cached per graph; FactorGraph is immutable)."""
    t = _TABLES.get(graph)
    if t is None:
        g = graph.arrays
        lo, hi = factor_bounds(g)
        span = np.maximum(hi - lo, 0.0)
        vprob, valias, vtotal = local_tables(g, span)
        gprob, galias = global_table(span)
        big_l = float(vtotal.max()) if vtotal.size else 0.0
        compact = compact_factors(g)
        records = np.zeros((gprob.shape[0], REC_COLS))
        global_records(records, records.view(np.int32), gprob, galias, *compact, lo, span)
        t = _TABLES[graph] = Tables(lo, span, vprob, valias, vtotal, gprob, galias, max(big_l, 1e-300),
                                    max(float(span.sum()), 1e-300), compact, records,
                                    bool(((records.view(np.int32)[:, 10::4] & 7) == GENERIC).any()
                                         or (packed(graph)[5] == GENERIC).any()))
    return t


def generic_arrays(graph):
    """The graph's arrays when some factor needs the generic evaluation, else None (the kernels
    are then compiled without it: ``_minibatch_kernels.drawn_value``)."""
    return graph.arrays if tables(graph).generic else None


def flat_records(t: Tables):
    """The global draws' table as the kernels take it: (float64[8m], int32[16m]) views of one buffer."""
    flat = t.records.reshape(-1)
    return flat, flat.view(np.int32)


def local_max_energy(graph) -> float:
    """L = max_v Σ_{f ∋ v} M_f (M_f: the range of factor f's values), the scale of the rates λ."""
    return float(tables(graph).vtotal.max()) if graph.num_variables else 0.0


def total_max_energy(graph) -> float:
    """Ψ = Σ_f M_f, the scale of MIN-Gibbs's global minibatch."""
    return float(tables(graph).span.sum())


def check_rate(name: str, value) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"Invalid {name}: {value!r} (must be finite and > 0)")
    return value


def init_estimate(graph, state: GibbsState, lam: float) -> GibbsState:
    """Give ``state`` MIN-Gibbs's cached estimate ε of the current energy (its own stream draws)."""
    t = tables(graph)
    s, eps = initial_estimate(generic_arrays(graph), *flat_records(t), state.x, t.lo, t.span, lam,
                              t.psi, state.stream(0))
    state.set_stream(0, s)
    state.estimate = float(eps)
    return state


def run_minibatch(method: int, graph, state: GibbsState, sweeps: int, record: bool, thin: int, *, scan: str,
                  lam: float, lam2: float, track_energy: bool) -> GibbsState:
    sweeps, thin = check_sweeps(sweeps, thin)
    t = tables(graph)
    energy, mag = np.empty(sweeps), np.empty(sweeps)
    kept = samples_buffer(state, sweeps, thin)
    u, work = scratch(graph)
    s, e, sumx, nk, eps, acc = minibatch_sweeps(
        method, graph.arrays, generic_arrays(graph), packed(graph), *flat_records(t), state.x,
        state.free, state.order, SCANS[scan], sweeps, state.stream(0), state.counts, record, state.log_potential,
        state.sumx, energy, mag, kept, thin, t.lo, t.span, t.vprob, t.valias, t.vtotal, lam, lam2, t.big_l, t.psi,
        state.estimate, track_energy, u, work)
    state.set_stream(0, s)
    state.log_potential, state.sumx, state.estimate = float(e), float(sumx), float(eps)
    state.accepted += int(acc)
    return append(state, sweeps, energy, mag, kept[:nk], record, sweeps * state.num_free)


def start(graph, seed, x0, name) -> GibbsState:
    return start_state(graph, seed, x0, name=name)
