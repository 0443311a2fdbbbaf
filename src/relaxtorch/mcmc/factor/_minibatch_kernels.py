"""Numba kernels of the minibatch Gibbs samplers: Poisson-Gibbs, MIN-Gibbs, MGPMH, DoubleMIN-Gibbs.

All four see the factors shifted to be non-negative: φ'_f = w·feature·φ_f - lo_f ∈ [0, M_f] with
(lo, hi) = ``factor_bounds`` and M_f = hi_f - lo_f (a constant shift per factor leaves p unchanged).
L_v = Σ_{f ∋ v} M_f, L = max_v L_v, Ψ = Σ_f M_f.  Factors are drawn ∝ M_f from alias tables
(Walker/Vose, :func:`relaxtorch.mcmc.poisson._vose`): one per variable over its factors (local),
one over all factors (global).  See the samplers' modules for the derivations.
"""
from __future__ import annotations

import math

import numpy as np

from ..._numba import njit
from ..poisson import _vose
from ._gibbs_kernels import PERMUTATION, RANDOM, SYSTEMATIC, draw_value, shuffle
from ._values import value
from ._rng import alias_draw, below, poisson, uniform

POISSON_GIBBS, MIN_GIBBS, MGPMH, DOUBLE_MIN = 0, 1, 2, 3


@njit(nogil=True, cache=True)
def local_tables(g, span):
    """Per-variable alias tables over each variable's factors ∝ span (= M), aligned with
    ``var_factor`` (alias entries relative to the variable's first row), and L_v."""
    e = g.var_factor.shape[0]
    n = g.cardinality.shape[0]
    prob = np.ones(e)
    alias = np.zeros(e, np.int64)
    total = np.zeros(n)
    for v in range(n):
        a = g.var_ptr[v]
        b = g.var_ptr[v + 1]
        t = 0.0
        for j in range(a, b):
            t += span[g.var_factor[j]]
        total[v] = t
        if t > 0.0:
            p = np.empty(b - a)
            for j in range(a, b):
                p[j - a] = span[g.var_factor[j]] / t
            pr, al = _vose(p)
            prob[a:b] = pr
            alias[a:b] = al
    return prob, alias, total


def global_table(span):
    """The alias table over all factors ∝ span (a zero span gives an all-keep table, never used)."""
    t = float(span.sum())
    if t <= 0:
        return np.ones(max(span.size, 1)), np.zeros(max(span.size, 1), np.int64)
    return _vose(span / t)


@njit(nogil=True, cache=True)
def exact_delta(g, x, v, old, new):
    """Σ_{f ∋ v} factor_value(new) - factor_value(old): the exact change of the log-potential."""
    fn, fp, ev, evv, cd, tp, tb, wt, wi, ft = (g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality,
                                               g.table_ptr, g.table, g.weight, g.weight_id, g.feature)
    d = 0.0
    for j in range(g.var_ptr[v], g.var_ptr[v + 1]):
        f = g.var_factor[j]
        d += value(fn, fp, ev, evv, cd, tp, tb, wt, wi, ft, f, x, v, new) - value(fn, fp, ev, evv, cd, tp, tb, wt, wi, ft, f, x, v, old)
    return d


@njit(nogil=True, cache=True)
def global_estimate(g, x, v, k, lo, span, gprob, galias, lam, psi, s):
    """(stream, ε): MIN-Gibbs's estimate of Σ_f φ'_f(y), y = x with x_v = k (v = -1: x):
    B ~ Poisson(λ) factors drawn ∝ M_f, ε = Σ_b log(1 + Ψ φ'_f(y) / (λ M_f)); E[exp ε] = exp Σ φ'."""
    fn, fp, ev, evv, cd, tp, tb, wt, wi, ft = (g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality,
                                               g.table_ptr, g.table, g.weight, g.weight_id, g.feature)
    s, b = poisson(s, lam)
    m = span.shape[0]
    eps = 0.0
    for _ in range(b):
        s, f = alias_draw(s, gprob, galias, 0, m)
        eps += math.log1p(psi * (value(fn, fp, ev, evv, cd, tp, tb, wt, wi, ft, f, x, v, k) - lo[f]) / (lam * span[f]))
    return s, eps


@njit(nogil=True, cache=True)
def local_proposal(g, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u):
    """MGPMH's minibatch energies u[k] = Σ_b (L / (λ M_f)) φ'_f(x with x_v = k), B ~ Poisson(λ L_v / L)
    factors of v drawn ∝ M_f (an unbiased estimate of v's local energy); returns the stream."""
    fn, fp, ev, evv, cd, tp, tb, wt, wi, ft = (g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality,
                                               g.table_ptr, g.table, g.weight, g.weight_id, g.feature)
    card = g.cardinality[v]
    for k in range(card):
        u[k] = 0.0
    if vtotal[v] <= 0.0:
        return s
    s, b = poisson(s, lam * vtotal[v] / big_l)
    a = g.var_ptr[v]
    deg = g.var_ptr[v + 1] - a
    for _ in range(b):
        s, j = alias_draw(s, vprob, valias, a, deg)
        f = g.var_factor[j]
        scale = big_l / (lam * span[f])
        for k in range(card):
            u[k] += scale * (value(fn, fp, ev, evv, cd, tp, tb, wt, wi, ft, f, x, v, k) - lo[f])
    return s


@njit(nogil=True, cache=True)
def poisson_gibbs_energies(g, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u):
    """Poisson-Gibbs's auxiliary energies: s_f ~ Poisson(λ M_f / L + φ'_f(x)) for f ∋ v (drawn as
    Poisson((λ/L + 1) L_v) candidates ∝ M_f, each kept with prob (λ M_f / L + φ'_f(x)) / ((λ/L + 1) M_f)),
    u[k] = Σ_f s_f log(1 + L φ'_f(x with x_v = k) / (λ M_f)); returns the stream."""
    fn, fp, ev, evv, cd, tp, tb, wt, wi, ft = (g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality,
                                               g.table_ptr, g.table, g.weight, g.weight_id, g.feature)
    card = g.cardinality[v]
    for k in range(card):
        u[k] = 0.0
    if vtotal[v] <= 0.0:
        return s
    c = lam / big_l
    s, b = poisson(s, (c + 1.0) * vtotal[v])
    a = g.var_ptr[v]
    deg = g.var_ptr[v + 1] - a
    for _ in range(b):
        s, j = alias_draw(s, vprob, valias, a, deg)
        f = g.var_factor[j]
        mf = span[f]
        s, w = uniform(s)
        if w * ((c + 1.0) * mf) < c * mf + (value(fn, fp, ev, evv, cd, tp, tb, wt, wi, ft, f, x, -1, 0) - lo[f]):
            for k in range(card):
                u[k] += math.log1p(big_l * (value(fn, fp, ev, evv, cd, tp, tb, wt, wi, ft, f, x, v, k) - lo[f]) / (lam * mf))
    return s


@njit(nogil=True, cache=True)
def minibatch_update(method, g, x, v, s, lo, span, vprob, valias, vtotal, gprob, galias, lam, lam2,
                     big_l, psi, eps, u, scratch):
    """One update of free variable v by ``method``: (stream, new value, accepted, ε, Δ log-potential
    or NaN when not computed here)."""
    old = np.int64(x[v])
    card = g.cardinality[v]
    if method == POISSON_GIBBS:
        s = poisson_gibbs_energies(g, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u)
        s, new = draw_value(card, u, s, scratch)
        return s, new, True, eps, np.nan
    if method == MIN_GIBBS:
        for k in range(card):
            if k == old:
                u[k] = eps
            else:
                s, u[k] = global_estimate(g, x, v, k, lo, span, gprob, galias, lam, psi, s)
        s, new = draw_value(card, u, s, scratch)
        return s, new, True, u[new], np.nan
    s = local_proposal(g, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u)
    s, prop = draw_value(card, u, s, scratch)
    if method == MGPMH:
        if prop == old:
            return s, old, True, eps, 0.0
        d = exact_delta(g, x, v, old, prop)
        log_a = d + u[old] - u[prop]
        s, w = uniform(s)
        if log_a >= 0.0 or w < math.exp(log_a):
            return s, prop, True, eps, d
        return s, old, False, eps, 0.0
    # DOUBLE_MIN: the exact energy difference replaced by MIN-Gibbs's estimate at the proposal
    s, e2 = global_estimate(g, x, v, prop, lo, span, gprob, galias, lam2, psi, s)
    log_a = e2 - eps + u[old] - u[prop]
    s, w = uniform(s)
    if log_a >= 0.0 or w < math.exp(log_a):
        return s, prop, True, e2, np.nan
    return s, old, False, eps, 0.0


@njit(nogil=True, cache=True)
def minibatch_sweeps(method, g, x, free, order, scan, sweeps, s, counts, record, energy, sumx,
                     energy_out, mag_out, samples, thin, lo, span, vprob, valias, vtotal, gprob, galias,
                     lam, lam2, big_l, psi, eps, track, u, scratch):
    """``sweeps`` sweeps of ``method`` (same bookkeeping as ``gibbs_sweeps``; ``track``: keep the
    log-potential exact, at O(degree) per changed value when the method does not compute it).
    Returns (stream, energy, sumx, samples written, ε, acceptances)."""
    nf = free.shape[0]
    kept = 0
    accepted = 0
    for sw in range(sweeps):
        if scan == PERMUTATION:
            s = shuffle(s, order)
        for i in range(nf):
            if scan == SYSTEMATIC:
                v = free[i]
            elif scan == PERMUTATION:
                v = order[i]
            else:
                s, jj = below(s, nf)
                v = free[jj]
            old = np.int64(x[v])
            s, new, acc, eps, d = minibatch_update(method, g, x, v, s, lo, span, vprob, valias, vtotal,
                                                   gprob, galias, lam, lam2, big_l, psi, eps, u, scratch)
            accepted += acc
            if new != old:
                if track:
                    if d != d:
                        d = exact_delta(g, x, v, old, new)
                    energy += d
                x[v] = new
                sumx += new - old
            if record and scan != RANDOM:
                counts[v, new] += 1
        if record and scan == RANDOM:
            for i in range(nf):
                v = free[i]
                counts[v, x[v]] += 1
        energy_out[sw] = energy if track else np.nan
        mag_out[sw] = sumx / max(nf, 1)
        if thin > 0 and (sw + 1) % thin == 0 and kept < samples.shape[0]:
            samples[kept, :] = x
            kept += 1
    return s, energy, sumx, kept, eps, accepted
