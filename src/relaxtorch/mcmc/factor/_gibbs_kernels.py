"""Numba kernels of single-site Gibbs sampling on a factor graph (:class:`~.gibbs.Gibbs`, the threads
of :class:`~.async_gibbs.AsyncGibbs`).

One update of a free variable v: the conditional log-potentials l_k = Σ_{f ∋ v} w·feature·φ_f(x with
x_v = k) (``_kernels.factor_value``), then x_v ~ softmax(l).  Boolean variables take a fast path:
only l_0 and l_1, and x_v = [u < 1 / (1 + exp(l_0 - l_1))]; categorical ones draw from the cumulative
sums.  No allocation per update, int32 assignment, one splitmix64 draw per update (two for random
scan).  The kernels keep the log-potential and the sum of the free values up to date from the
update's own l (so the per-sweep energy and magnetisation traces cost nothing extra).

Marginal counts: with the systematic and permutation scans every free variable is updated once per
sweep, so counting its new value at its update counts the end-of-sweep state; random scan counts
the state at the end of each sweep in a separate pass.
"""
from __future__ import annotations

import math

import numpy as np

from ..._numba import njit
from ...parallel._intrinsics import load_relaxed, store_relaxed, yield_cpu
from ._kernels import AND_CAT, EQUAL, EQUAL_CAT_CONST, ISTRUE, POTTS, factor_value
from ._rng import below, categorical, uniform

SYSTEMATIC, RANDOM, PERMUTATION = 0, 1, 2


GENERIC, EQUAL2, ISTRUE1, POTTS2, IS1 = 0, 1, 2, 3, 4
SLOW, FAST_BOOL, FAST_CAT = 0, 1, 2  # pack's fast[v]


@njit(nogil=True, cache=True)
def _boolean_edges(g, start, arity):
    for e in range(start, start + arity):
        if g.cardinality[g.edge_var[e]] != 2 or (g.edge_value[e] != 0 and g.edge_value[e] != 1):
            return False
    return True


@njit(nogil=True, cache=True)
def compact_factors(g):
    """The factors whose value a few words determine, per factor: (kind, a, b, lit_a, lit_b, coef).
    kind: EQUAL2 (boolean EQUAL on two distinct variables a, b, "equal to" values lit_a, lit_b),
    ISTRUE1 (boolean ISTRUE on a, lit_a), POTTS2 (POTTS on two distinct variables a, b), IS1
    (EQUAL_CAT_CONST or AND_CAT on a: 1 if x_a == b), GENERIC (anything else: ``_kernels.phi``);
    coef = weight·feature, as ``factor_value`` forms it (so coef·φ has its bits)."""
    m = g.function.shape[0]
    kind = np.zeros(m, np.int8)
    a = np.zeros(m, np.int32)
    b = np.zeros(m, np.int32)
    lit_a = np.zeros(m, np.int8)
    lit_b = np.zeros(m, np.int8)
    coef = np.zeros(m)
    for f in range(m):
        fn = g.function[f]
        start = g.factor_ptr[f]
        arity = g.factor_ptr[f + 1] - start
        coef[f] = g.weight[g.weight_id[f]] * g.feature[f]
        if arity < 1:
            continue
        a[f] = g.edge_var[start]
        distinct = arity == 2 and g.edge_var[start] != g.edge_var[start + 1]
        if fn == EQUAL and distinct and _boolean_edges(g, start, 2):
            kind[f] = EQUAL2
            b[f] = g.edge_var[start + 1]
            lit_a[f] = g.edge_value[start]
            lit_b[f] = g.edge_value[start + 1]
        elif fn == ISTRUE and arity == 1 and _boolean_edges(g, start, 1):
            kind[f] = ISTRUE1
            lit_a[f] = g.edge_value[start]
        elif fn == POTTS and distinct:
            kind[f] = POTTS2
            b[f] = g.edge_var[start + 1]
        elif (fn == EQUAL_CAT_CONST or fn == AND_CAT) and arity == 1:
            kind[f] = IS1
            b[f] = g.edge_value[start]
    return kind, a, b, lit_a, lit_b, coef


@njit(nogil=True, cache=True)
def pack(g):
    """The fast paths' view of the var → factor adjacency (:func:`compact_factors` seen from each
    variable), aligned with ``var_factor``: kind[j], coef[j]; other[j] (EQUAL2, POTTS2: the other
    variable; IS1: the "equal to" value); lit[j] / lit_other[j] (EQUAL2, ISTRUE1: the "equal to"
    values on v's edge and on the other's).  fast[v]: FAST_BOOL (a boolean variable whose factors
    are all EQUAL2 or ISTRUE1), FAST_CAT (all POTTS2 or IS1), SLOW.  Read sequentially by
    :func:`bool_logits` / :func:`cat_logits`, so one update touches a few contiguous rows instead of
    the factor arrays."""
    ck, ca, cb, cla, clb, ccoef = compact_factors(g)
    e = g.var_factor.shape[0]
    kind = np.zeros(e, np.int8)
    coef = np.zeros(e)
    other = np.zeros(e, np.int32)
    lit = np.zeros(e, np.int8)
    lit_other = np.zeros(e, np.int8)
    n = g.cardinality.shape[0]
    for v in range(n):
        for j in range(g.var_ptr[v], g.var_ptr[v + 1]):
            f = g.var_factor[j]
            kind[j] = ck[f]
            coef[j] = ccoef[f]
            first = ca[f] == v
            if ck[f] == EQUAL2 or ck[f] == POTTS2:
                other[j] = cb[f] if first else ca[f]
                lit[j] = cla[f] if first else clb[f]
                lit_other[j] = clb[f] if first else cla[f]
            elif ck[f] == ISTRUE1:
                lit[j] = cla[f]
            elif ck[f] == IS1:
                other[j] = cb[f]
    fast = np.zeros(n, np.int8)
    for v in range(n):
        boolean = g.cardinality[v] == 2
        categorical = True
        for j in range(g.var_ptr[v], g.var_ptr[v + 1]):
            boolean = boolean and (kind[j] == EQUAL2 or kind[j] == ISTRUE1)
            categorical = categorical and (kind[j] == POTTS2 or kind[j] == IS1)
        fast[v] = FAST_BOOL if boolean else (FAST_CAT if categorical else SLOW)
    return fast, coef, other, lit, lit_other, kind


@njit(nogil=True, cache=True, inline="always")
def row_phi(kind, other, lit, lit_other, x, k):
    """φ of a compact factor seen from its variable v (one row of :func:`pack`) at x_v = k."""
    if kind == POTTS2:
        return 1.0 if k == x[other] else 0.0
    if kind == IS1:
        return 1.0 if k == other else 0.0
    if kind == EQUAL2:
        return 1.0 if (k == lit) == (x[other] == lit_other) else -1.0
    return 1.0 if k == lit else -1.0  # ISTRUE1


@njit(nogil=True, cache=True, inline="always")
def compact_phi(kind, a, b, lit_a, lit_b, x, v, k):
    """φ of a compact factor (:func:`compact_factors`) at x with x_v := k (v = -1: x itself)."""
    xa = k if a == v else x[a]
    if kind == IS1:
        return 1.0 if xa == b else 0.0
    if kind == ISTRUE1:
        return 1.0 if xa == lit_a else -1.0
    xb = k if b == v else x[b]
    if kind == POTTS2:
        return 1.0 if xa == xb else 0.0
    return 1.0 if (xa == lit_a) == (xb == lit_b) else -1.0  # EQUAL2


@njit(nogil=True, cache=True, inline="always")
def bool_logits(var_ptr, coef, other, lit, lit_other, kind, x, v):
    """(l_0, l_1) of a fast boolean variable v (all its factors EQUAL2 or ISTRUE1), with the arrays
    of :func:`pack` (g).  Each term is the product (w·feature)·φ that ``factor_value`` forms, summed
    in the same order, so the result equals :func:`site_logits`'s bit for bit."""
    l0 = 0.0
    l1 = 0.0
    for j in range(var_ptr[v], var_ptr[v + 1]):
        c = coef[j]
        if kind[j] == EQUAL2:
            # phi(k) = +1 if (k == lit) == (x_other == lit_other) else -1
            if (lit[j] == 1) == (x[other[j]] == lit_other[j]):
                l0 -= c
                l1 += c
            else:
                l0 += c
                l1 -= c
        elif lit[j] == 1:  # ISTRUE1
            l0 -= c
            l1 += c
        else:
            l0 += c
            l1 -= c
    return l0, l1


@njit(nogil=True, cache=True, inline="always")
def fast_update(var_ptr, coef, other, lit, lit_other, kind, x, v, s):
    """Resample a fast boolean variable v in place: (stream state, old, new, Δ log-potential).
    Takes no graph tuple: numba pays reference counting on every array of a tuple passed to an
    inlined function, which alone made an update 10x slower."""
    old = np.int64(x[v])
    l0, l1 = bool_logits(var_ptr, coef, other, lit, lit_other, kind, x, v)
    s, u = uniform(s)
    new = np.int64(1) if u * (1.0 + math.exp(l0 - l1)) < 1.0 else np.int64(0)
    delta = 0.0
    if new != old:
        delta = (l1 - l0) if new == 1 else (l0 - l1)
    x[v] = new
    return s, old, new, delta


@njit(nogil=True, cache=True, inline="always")
def cat_logits(var_ptr, coef, other, kind, x, v, card, logits):
    """logits[k] of a FAST_CAT variable v (all its factors POTTS2 or IS1): a factor adds its
    w·feature to the one value k that makes it 1 (x_other for POTTS2, the literal for IS1), so an
    update costs O(degree + card), not O(degree · card).  Adding 0 leaves a float unchanged, so
    this equals :func:`site_logits`'s sums bit for bit."""
    for k in range(card):
        logits[k] = 0.0
    for j in range(var_ptr[v], var_ptr[v + 1]):
        k = x[other[j]] if kind[j] == POTTS2 else other[j]
        if k < card:
            logits[k] += coef[j]


@njit(nogil=True, cache=True)
def cat_update(var_ptr, coef, other, kind, x, v, card, s, logits, scratch):
    """Resample a FAST_CAT variable v in place: (stream state, old, new, Δ log-potential)."""
    old = np.int64(x[v])
    cat_logits(var_ptr, coef, other, kind, x, v, card, logits)
    s, new = draw_value(card, logits, s, scratch)
    x[v] = new
    return s, old, new, logits[new] - logits[old]


@njit(nogil=True, cache=True)
def site_logits(g, x, v, logits):
    """logits[k] = l_k for k < cardinality[v], summed over v's factors in ``var_factor`` order."""
    card = g.cardinality[v]
    for k in range(card):
        logits[k] = 0.0
    for j in range(g.var_ptr[v], g.var_ptr[v + 1]):
        f = g.var_factor[j]
        for k in range(card):
            logits[k] += factor_value(g, f, x, v, k)


@njit(nogil=True, cache=True)
def draw_value(card, logits, s, scratch):
    """(stream state, a value) ~ softmax(logits[:card]); booleans by the fast path's comparison."""
    if card == 2:
        s, u = uniform(s)
        return s, (np.int64(1) if u * (1.0 + math.exp(logits[0] - logits[1])) < 1.0 else np.int64(0))
    return categorical(s, logits, card, scratch)


@njit(nogil=True, cache=True)
def slow_update(g, x, v, s, logits, scratch):
    """Resample any free variable v in place through ``factor_value`` (not inlined: see
    :func:`fast_update`): (stream state, old, new, Δ log-potential)."""
    old = np.int64(x[v])
    site_logits(g, x, v, logits)
    s, new = draw_value(g.cardinality[v], logits, s, scratch)
    x[v] = new
    return s, old, new, logits[new] - logits[old]


@njit(nogil=True, cache=True)
def shuffle(s, order):
    """Fisher–Yates shuffle of ``order`` in place; returns the next stream state."""
    for i in range(order.shape[0] - 1, 0, -1):
        s, j = below(s, i + 1)
        t = order[i]
        order[i] = order[j]
        order[j] = t
    return s


@njit(nogil=True, cache=True)
def gibbs_sweeps(g, p, x, free, order, scan, sweeps, s, counts, record, energy, sumx,
                 energy_out, mag_out, samples, thin, logits, scratch):
    """``sweeps`` sweeps of len(free) updates each over the variables ``free`` (int64).

    order: int64 scratch of len(free) (the permutation scan's order, kept between calls);
    counts int64[n, K] (incremented when ``record``); energy / sumx: the log-potential and the sum of
    the free values on entry; energy_out / mag_out [sweeps]: their values after each sweep (mag =
    sumx / len(free)); samples int32[S, n]: the state after every ``thin``-th sweep (thin = 0: none).
    Returns (stream state, energy, sumx, samples written)."""
    nf = free.shape[0]
    kept = 0
    var_ptr = g.var_ptr
    cardinality = g.cardinality
    fast, coef, other, lit, lit_other, kind = p
    for sw in range(sweeps):
        if scan == PERMUTATION:
            s = shuffle(s, order)
        for i in range(nf):
            if scan == SYSTEMATIC:
                v = free[i]
            elif scan == PERMUTATION:
                v = order[i]
            else:
                s, j = below(s, nf)
                v = free[j]
            if fast[v] == FAST_BOOL:
                s, old, new, delta = fast_update(var_ptr, coef, other, lit, lit_other, kind, x, v, s)
            elif fast[v] == FAST_CAT:
                s, old, new, delta = cat_update(var_ptr, coef, other, kind, x, v, cardinality[v], s, logits, scratch)
            else:
                s, old, new, delta = slow_update(g, x, v, s, logits, scratch)
            energy += delta
            sumx += new - old
            if record and scan != RANDOM:
                counts[v, new] += 1
        if record and scan == RANDOM:
            for i in range(nf):
                v = free[i]
                counts[v, x[v]] += 1
        energy_out[sw] = energy
        mag_out[sw] = sumx / max(nf, 1)
        if thin > 0 and (sw + 1) % thin == 0 and kept < samples.shape[0]:
            samples[kept, :] = x
            kept += 1
    return s, energy, sumx, kept


@njit(nogil=True, cache=True)
def async_sweeps(g, p, x, block, order, scan, sweeps, s, counts, record, energy_out, sumx_out, progress,
                 me, stride, every, stale, ready, ticket, max_lag):
    """One thread of HOGWILD!-Gibbs: ``sweeps`` sweeps over its ``block`` of free variables, reading
    and writing the shared x without locks.  progress[t * stride]: updates done by thread t (its own
    cache line); every ``every``-th update reads the other threads' progress before computing and
    after writing, and records the difference in stale[0] (sum), stale[1] (count), stale[2] (max):
    how many updates by other threads overlapped that update.  energy_out / sumx_out[sweeps]: this
    thread's running change of the log-potential (from its own, possibly stale, conditionals) and of
    the free values' sum.  ``ready``/``ticket``: a start barrier (each thread posts ``ticket`` in its
    slot and spins, boundedly, until every thread has), so the threads' sweeps overlap instead of one
    finishing its chunk before another has started.  progress[t * stride + 1]: sweeps done by thread
    t; with ``max_lag`` > 0 a thread that has finished a sweep waits while it is more than
    ``max_lag`` sweeps ahead of the slowest thread (bounded delay, as the analysis assumes), so a
    thread that runs while another is descheduled, or whose block is smaller, never samples against
    a frozen rest for long.  Returns the stream state."""
    nb = block.shape[0]
    var_ptr = g.var_ptr
    cardinality = g.cardinality
    fast, coef, other, lit, lit_other, kind = p
    logits = np.zeros(max(1, g.cardinality.max()))
    scratch = np.zeros(logits.shape[0])
    nt = progress.shape[0] // stride
    done = progress[me * stride]  # cumulative over calls (a run calls once per chunk)
    swept = progress[me * stride + 1]
    patience = 1 << 22  # lag waits' yield budget for the call (seconds): a stopped thread never hangs the rest
    store_relaxed(ready, me * stride, ticket)
    for _ in range(1 << 30):  # bounded: a thread that never starts delays the others, never hangs them
        waiting = False
        for t in range(nt):
            if load_relaxed(ready, t * stride) < ticket:
                waiting = True
        if not waiting:
            break
    energy = 0.0
    sumx = 0.0
    # updates until the next probe (a probe at every update count divisible by ``every``, as a
    # countdown: an integer division per update cost more than the rest of the bookkeeping)
    until = (every - done % every) % every if every > 0 else -1
    for sw in range(sweeps):
        if scan == PERMUTATION:
            s = shuffle(s, order)
        for i in range(nb):
            if scan == SYSTEMATIC:
                v = block[i]
            elif scan == PERMUTATION:
                v = order[i]
            else:
                s, j = below(s, nb)
                v = block[j]
            probe = until == 0
            if probe:
                until = every
            until -= 1
            before = 0
            if probe:
                for t in range(nt):
                    if t != me:
                        before += load_relaxed(progress, t * stride)
            if fast[v] == FAST_BOOL:
                s, old, new, delta = fast_update(var_ptr, coef, other, lit, lit_other, kind, x, v, s)
            elif fast[v] == FAST_CAT:
                s, old, new, delta = cat_update(var_ptr, coef, other, kind, x, v, cardinality[v], s, logits, scratch)
            else:
                s, old, new, delta = slow_update(g, x, v, s, logits, scratch)
            done += 1
            store_relaxed(progress, me * stride, done)  # atomic: the other threads' probes see it
            if probe:
                after = 0
                for t in range(nt):
                    if t != me:
                        after += load_relaxed(progress, t * stride)
                d = after - before
                stale[0] += d
                stale[1] += 1
                if d > stale[2]:
                    stale[2] = d
            energy += delta
            sumx += new - old
            if record and scan != RANDOM:
                counts[v, new] += 1
        if record and scan == RANDOM:
            for i in range(nb):
                v = block[i]
                counts[v, x[v]] += 1
        energy_out[sw] = energy
        sumx_out[sw] = sumx
        swept += 1
        store_relaxed(progress, me * stride + 1, swept)
        if max_lag > 0 and nt > 1:
            spins = 0
            while patience > 0:
                slowest = swept
                for t in range(nt):
                    if t != me:
                        slowest = min(slowest, load_relaxed(progress, t * stride + 1))
                if swept - slowest <= max_lag:
                    break
                spins += 1
                if spins > 256:  # the partner is not running: let it have this core
                    yield_cpu()
                    patience -= 1
    return s
