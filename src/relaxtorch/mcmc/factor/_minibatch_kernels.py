"""Numba kernels of the minibatch Gibbs samplers: Poisson-Gibbs, MIN-Gibbs, MGPMH, DoubleMIN-Gibbs.

All four see the factors shifted to be non-negative: φ'_f = w·feature·φ_f - lo_f ∈ [0, M_f] with
(lo, hi) = ``factor_bounds`` and M_f = hi_f - lo_f (a constant shift per factor leaves p unchanged).
L_v = Σ_{f ∋ v} M_f, L = max_v L_v, Ψ = Σ_f M_f.  Factors are drawn ∝ M_f from alias tables
(Walker/Vose, :func:`relaxtorch.mcmc.poisson._vose`): one per variable over its factors (local),
one over all factors (global).  See the samplers' modules for the derivations.

Factors are evaluated through the compact views of ``_gibbs_kernels`` where they apply (pairwise
POTTS and boolean EQUAL, one-variable ISTRUE and "x == value": ``compact_factors`` per factor for
the global draws, ``pack``'s rows, read in order, for a variable's own factors) and through
``_kernels.phi`` otherwise; both give ``factor_value``'s bits.  A global draw then touches a few
words of the drawn factor, not the CSR arrays behind it, so its cost stays near one memory access
as the graph outgrows the caches; the exact Δ of MGPMH streams over v's rows.  The kernels take
arrays, never the graph tuple (numba reference-counts every array of a tuple on each call).
"""
from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from ..._numba import njit
from ...parallel._intrinsics import prefetch
from ..poisson import _vose
from ._gibbs_kernels import (GENERIC, IS1, PERMUTATION, POTTS2, RANDOM, SYSTEMATIC, compact_phi, draw_value, row_phi,
                             shuffle)
from ._kernels import factor_value
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


def generic_value(g, f, x, v, k):
    """factor_value of factor f at x with x_v := k for a factor without a compact view.  ``g``: the
    graph's arrays, or None when every factor is compact (the kernels are then compiled without the
    generic code: numba reference-counts a tuple's arrays at every call that receives it, which
    made each compact draw 7x slower)."""
    raise NotImplementedError("compiled through the overload below")


@overload(generic_value, jit_options={"nogil": True})
def _generic_value(g, f, x, v, k):
    if isinstance(g, types.NoneType):
        return lambda g, f, x, v, k: np.nan  # never reached: no factor lacks a compact view
    return lambda g, f, x, v, k: factor_value(g, f, x, v, k)


@njit(nogil=True, cache=True, inline="always")
def row_value(g, var_factor, rcoef, rother, rlit, rlit_other, rkind, j, x, v, k):
    """factor_value of v's j-th factor (a ``var_factor`` row) at x_v = k, from pack's rows where it can."""
    if rkind[j] != GENERIC:
        return rcoef[j] * row_phi(rkind[j], rother[j], rlit[j], rlit_other[j], x, k)
    return generic_value(g, var_factor[j], x, v, k)


# The global draws' table: one 64-byte row per alias slot i, as two views of one buffer, F
# (float64[m, 8]) and I (int32[m, 16]; the kernels take both flattened): F[i, 0] the slot's keep probability; for candidate c (0: the
# slot's own factor, 1: its alias) F[i, 1 + c] its span M_f and I[i, 8 + 4c : 12 + 4c] = (a, b, code,
# f), code = kind | lit_a << 3 | lit_b << 4 | high_is_max << 5 (a, b, lits: compact_factors';
# high_is_max: φ's higher value gives the factor's maximum, i.e. w·feature > 0).  A compact factor's
# φ' = value - lo is then exactly M_f or 0 (checked when the table is built; a factor where it is
# not is marked GENERIC), so a draw reads one cache line and never the CSR arrays.
REC_COLS = 8


@njit(nogil=True, cache=True)
def global_records(F, I, gprob, galias, ck, ca, cb, cla, clb, ccoef, lo, span):
    """Fill the global draws' table (layout above) from the alias table and compact_factors."""
    for i in range(gprob.shape[0]):
        F[i, 0] = gprob[i]
        for c in range(2):
            f = i if c == 0 else galias[i]
            if f >= span.shape[0]:  # the one-slot table of a graph without factors
                continue
            kind = ck[f]
            high_is_max = ccoef[f] > 0.0
            if kind != GENERIC:
                low = 0.0 if (kind == POTTS2 or kind == IS1) else -1.0
                top = ccoef[f] * (1.0 if high_is_max else low) - lo[f]
                bottom = ccoef[f] * (low if high_is_max else 1.0) - lo[f]
                if not (top == span[f] and bottom == 0.0):
                    kind = GENERIC
            F[i, 1 + c] = span[f]
            I[i, 8 + 4 * c] = ca[f]
            I[i, 9 + 4 * c] = cb[f]
            I[i, 10 + 4 * c] = kind | (cla[f] << 3) | (clb[f] << 4) | (np.int32(high_is_max) << 5)
            I[i, 11 + 4 * c] = f


@njit(nogil=True, cache=True, inline="always")
def exact_delta(g, var_ptr, var_factor, rcoef, rother, rlit, rlit_other,
                rkind, x, v, old, new):
    """Σ_{f ∋ v} factor_value(new) - factor_value(old): the exact change of the log-potential."""
    d = 0.0
    for j in range(var_ptr[v], var_ptr[v + 1]):
        d += (row_value(g, var_factor, rcoef, rother, rlit, rlit_other, rkind,
                        j, x, v, new)
              - row_value(g, var_factor, rcoef, rother, rlit, rlit_other, rkind,
                          j, x, v, old))
    return d


@njit(nogil=True, cache=True, inline="always")
def global_draws(s, lam, F, picks, fracs, start):
    """B ~ Poisson(λ) draws ∝ M_f (``alias_draw``'s draw, on the flat records F) appended at
    ``start`` of picks (slot) / fracs (the uniform's fraction), each row prefetched; the buffers
    grow when full.  Returns (stream, B, picks, fracs)."""
    s, b = poisson(s, lam)
    if start + b > picks.shape[0]:
        size = 2 * (start + b)
        grown_picks, grown_fracs = np.empty(size, np.int64), np.empty(size)
        grown_picks[:start] = picks[:start]
        grown_fracs[:start] = fracs[:start]
        picks, fracs = grown_picks, grown_fracs
    m = F.shape[0] // REC_COLS
    for i in range(start, start + b):
        s, u = uniform(s)
        t = u * m
        col = np.int64(t)
        if col >= m:
            col = m - 1
        picks[i] = col
        fracs[i] = t - col
        prefetch(F, col * REC_COLS, False)
    return s, b, picks, fracs


@njit(nogil=True, cache=True, inline="always")
def global_terms(g, F, I, x, v, k, lo, span, lam, psi, picks, fracs, start, stop):
    """ε = Σ log(1 + Ψ φ'_f(y) / (λ M_f)) over the draws picks/fracs[start:stop], y = x with
    x_v = k (v = -1: x), summed in draw order."""
    eps = 0.0
    for i in range(start, stop):
        row = picks[i] * REC_COLS
        c = 0 if fracs[i] < F[row] else 1
        at = 2 * row + 8 + 4 * c  # candidate c's (a, b, code, f) in I
        code = I[at + 2]
        kind = code & 7
        if kind == GENERIC:
            f = I[at + 3]
            eps += math.log1p(psi * (generic_value(g, f, x, v, k) - lo[f]) / (lam * span[f]))
            continue
        high = compact_phi(kind, I[at], I[at + 1], (code >> 3) & 1, (code >> 4) & 1, x, v, k) == 1.0
        if high == (((code >> 5) & 1) == 1):  # φ' = M_f (else 0: a zero term)
            m_f = F[row + 1 + c]
            eps += math.log1p(psi * m_f / (lam * m_f))
    return eps


@njit(nogil=True, cache=True, inline="always")
def global_estimate(g, F, I, x, v, k, lo, span, lam, psi, s, picks, fracs):
    """(stream, ε, picks, fracs): MIN-Gibbs's estimate of Σ_f φ'_f(y), y = x with x_v = k (v = -1:
    x): B ~ Poisson(λ) factors drawn ∝ M_f, ε = Σ_b log(1 + Ψ φ'_f(y) / (λ M_f)); E[exp ε] = exp Σ φ'."""
    s, b, picks, fracs = global_draws(s, lam, F, picks, fracs, 0)
    return s, global_terms(g, F, I, x, v, k, lo, span, lam, psi, picks, fracs, 0, b), picks, fracs


@njit(nogil=True, cache=True)
def initial_estimate(g, F, I, x, lo, span, lam, psi, s):
    """:func:`global_estimate` of x itself, for a chain's start (g: the arrays or None, see
    :func:`generic_value`)."""
    s, eps, _, _ = global_estimate(g, F, I, x, -1, 0, lo, span, lam, psi, s, np.zeros(64, np.int64), np.zeros(64))
    return s, eps


@njit(nogil=True, cache=True, inline="always")
def local_proposal(g, cd, var_ptr, var_factor, rcoef, rother, rlit, rlit_other,
                   rkind, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u):
    """MGPMH's minibatch energies u[k] = Σ_b (L / (λ M_f)) φ'_f(x with x_v = k), B ~ Poisson(λ L_v / L)
    factors of v drawn ∝ M_f (an unbiased estimate of v's local energy); returns the stream."""
    card = cd[v]
    for k in range(card):
        u[k] = 0.0
    if vtotal[v] <= 0.0:
        return s
    s, b = poisson(s, lam * vtotal[v] / big_l)
    a = var_ptr[v]
    deg = var_ptr[v + 1] - a
    for _ in range(b):
        s, j = alias_draw(s, vprob, valias, a, deg)
        f = var_factor[j]
        scale = big_l / (lam * span[f])
        for k in range(card):
            u[k] += scale * (row_value(g, var_factor, rcoef, rother, rlit,
                                       rlit_other, rkind, j, x, v, k) - lo[f])
    return s


@njit(nogil=True, cache=True, inline="always")
def poisson_gibbs_energies(g, cd, var_ptr, var_factor, rcoef, rother, rlit,
                           rlit_other, rkind, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u):
    """Poisson-Gibbs's auxiliary energies: s_f ~ Poisson(λ M_f / L + φ'_f(x)) for f ∋ v (drawn as
    Poisson((λ/L + 1) L_v) candidates ∝ M_f, each kept with prob (λ M_f / L + φ'_f(x)) / ((λ/L + 1) M_f)),
    u[k] = Σ_f s_f log(1 + L φ'_f(x with x_v = k) / (λ M_f)); returns the stream."""
    card = cd[v]
    for k in range(card):
        u[k] = 0.0
    if vtotal[v] <= 0.0:
        return s
    c = lam / big_l
    s, b = poisson(s, (c + 1.0) * vtotal[v])
    a = var_ptr[v]
    deg = var_ptr[v + 1] - a
    xv = x[v]
    for _ in range(b):
        s, j = alias_draw(s, vprob, valias, a, deg)
        f = var_factor[j]
        mf = span[f]
        s, w = uniform(s)
        here = row_value(g, var_factor, rcoef, rother, rlit, rlit_other, rkind,
                         j, x, v, xv)
        if w * ((c + 1.0) * mf) < c * mf + (here - lo[f]):
            top = math.log1p(big_l * mf / (lam * mf))  # the term where φ' = M_f, compact factors' usual case
            for k in range(card):
                t = row_value(g, var_factor, rcoef, rother, rlit, rlit_other, rkind, j, x, v, k) - lo[f]
                if t == mf:
                    u[k] += top
                elif t != 0.0:  # (a zero φ' adds log1p(0) = 0)
                    u[k] += math.log1p(big_l * t / (lam * mf))
    return s


@njit(nogil=True, cache=True)
def minibatch_sweeps(method, arrays, g, p, F, I, x, free, order, scan, sweeps, s, counts, record, energy, sumx,
                     energy_out, mag_out, samples, thin, lo, span, vprob, valias, vtotal, lam, lam2, big_l, psi, eps,
                     track, u, scratch):
    """``sweeps`` sweeps of ``method`` (same bookkeeping as ``gibbs_sweeps``; ``track``: keep the
    log-potential exact, at O(degree) per changed value when the method does not compute it).
    g: ``arrays`` or None (see :func:`generic_value`); p: ``pack(arrays)``; F, I: the global draws'
    records (:func:`global_records`).  Returns (stream, energy, sumx, samples written, ε, acceptances)."""
    cd = arrays.cardinality
    var_ptr, var_factor = arrays.var_ptr, arrays.var_factor
    _, rcoef, rother, rlit, rlit_other, rkind = p
    nf = free.shape[0]
    kept = 0
    accepted = 0
    picks, fracs = np.zeros(64, np.int64), np.zeros(64)  # the global draws of an update
    drawn = np.zeros(u.shape[0], np.int64)  # how many of them each candidate value has
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
            card = cd[v]
            # one update of v: new value, accepted, Δ log-potential (NaN: not computed here), ε
            acc = True
            d = np.nan
            if method == POISSON_GIBBS:
                s = poisson_gibbs_energies(g, cd, var_ptr, var_factor, rcoef, rother,
                                           rlit, rlit_other, rkind, x, v, lo, span, vprob, valias, vtotal, lam, big_l,
                                           s, u)
                s, new = draw_value(card, u, s, scratch)
            elif method == MIN_GIBBS:
                # every candidate's draws first (in the stream's order), so their rows load together
                total = 0
                for k in range(card):
                    drawn[k] = 0
                    if k != old:
                        s, drawn[k], picks, fracs = global_draws(s, lam, F, picks, fracs, total)
                        total += drawn[k]
                total = 0
                for k in range(card):
                    if k == old:
                        u[k] = eps
                    else:
                        u[k] = global_terms(g, F, I, x, v, k, lo, span, lam, psi, picks, fracs, total,
                                            total + drawn[k])
                        total += drawn[k]
                s, new = draw_value(card, u, s, scratch)
                eps = u[new]
            else:  # MGPMH's proposal, then its exact or DoubleMIN-Gibbs's estimated acceptance
                s = local_proposal(g, cd, var_ptr, var_factor, rcoef, rother, rlit,
                                   rlit_other, rkind, x, v, lo, span, vprob, valias, vtotal, lam, big_l, s, u)
                s, new = draw_value(card, u, s, scratch)
                if method == MGPMH:
                    d = 0.0
                    if new != old:
                        d = exact_delta(g, var_ptr, var_factor, rcoef, rother,
                                        rlit, rlit_other, rkind, x, v, old, new)
                        log_a = d + u[old] - u[new]
                        s, w = uniform(s)
                        if not (log_a >= 0.0 or w < math.exp(log_a)):
                            new, acc, d = old, False, 0.0
                else:  # DOUBLE_MIN: the exact energy difference replaced by MIN-Gibbs's estimate at the proposal
                    s, e2, picks, fracs = global_estimate(g, F, I, x, v, new, lo, span, lam2, psi, s, picks, fracs)
                    log_a = e2 - eps + u[old] - u[new]
                    s, w = uniform(s)
                    if log_a >= 0.0 or w < math.exp(log_a):
                        eps = e2
                    else:
                        new, acc, d = old, False, 0.0
            accepted += acc
            if new != old:
                if track:
                    if d != d:
                        d = exact_delta(g, var_ptr, var_factor, rcoef, rother,
                                        rlit, rlit_other, rkind, x, v, old, new)
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
