"""numba kernels on ``GraphArrays``: one factor's value, a variable's conditional logits, the
log-potential of an assignment, and per-factor bounds.  Semantics: ``functions.py`` (its
``factor_value_reference`` is the slow reference the tests compare with).  Assignments are
int32 (half the memory traffic of int64).

The per-factor and per-variable kernels are ``inline="always"``: called as separate functions
(too large for LLVM to inline) they cost ~1 µs a call here (measured, most likely reference counting
of the ``GraphArrays`` members), so the 749k-factor Ising log-potential took ~0.9 s; inlined, ~25 ms.
Samplers calling these kernels get the same inlining (at some compile time, cached on disk).
"""
from __future__ import annotations

import math

import numpy as np

from ..._numba import njit

IMPLY_NATURAL, OR, AND, EQUAL, ISTRUE = 0, 1, 2, 3, 4
LINEAR, RATIO, LOGICAL, AND_CAT, IMPLY_MLN = 7, 8, 9, 12, 13
OR_CAT, EQUAL_CAT_CONST, IMPLY_NATURAL_CAT, IMPLY_MLN_CAT, TABLE, POTTS = 14, 15, 16, 17, 100, 101


@njit(nogil=True, cache=True, inline="always")
def phi(function, factor_ptr, edge_var, edge_value, cardinality, table_ptr, table, f, x, v, k):
    """phi_f(x with x[v] := k) (v = -1: no replacement), without weight and feature, on the graph's
    arrays themselves: the one definition of the factor functions every kernel evaluates with (the
    samplers once had a copy, which missed POTTS)."""
    start = factor_ptr[f]
    end = factor_ptr[f + 1]
    fn = function[f]
    if fn == TABLE:
        index = 0
        for e in range(start, end):
            var = edge_var[e]
            val = k if var == v else x[var]
            index = index * cardinality[var] + val
        return table[table_ptr[f] + index]
    if fn == POTTS:
        var = edge_var[start]
        first = k if var == v else x[var]
        for e in range(start + 1, end):
            var = edge_var[e]
            val = k if var == v else x[var]
            if val != first:
                return 0.0
        return 1.0
    if fn == AND or fn == ISTRUE or fn == AND_CAT or fn == EQUAL_CAT_CONST:
        for e in range(start, end):
            var = edge_var[e]
            val = k if var == v else x[var]
            if val != edge_value[e]:
                return 0.0 if (fn == AND_CAT or fn == EQUAL_CAT_CONST) else -1.0
        return 1.0
    if fn == OR or fn == OR_CAT:
        for e in range(start, end):
            var = edge_var[e]
            val = k if var == v else x[var]
            if val == edge_value[e]:
                return 1.0
        return -1.0
    if fn == EQUAL:
        var = edge_var[start]
        val = k if var == v else x[var]
        first = val == edge_value[start]
        for e in range(start + 1, end):
            var = edge_var[e]
            val = k if var == v else x[var]
            if (val == edge_value[e]) != first:
                return -1.0
        return 1.0
    # implication-like functions: body = edges start..end-2, head = edge end-1
    hvar = edge_var[end - 1]
    hval = k if hvar == v else x[hvar]
    head = hval == edge_value[end - 1]
    if fn == IMPLY_NATURAL or fn == IMPLY_NATURAL_CAT or fn == IMPLY_MLN or fn == IMPLY_MLN_CAT:
        natural = fn == IMPLY_NATURAL or fn == IMPLY_NATURAL_CAT
        for e in range(start, end - 1):
            var = edge_var[e]
            val = k if var == v else x[var]
            if val != edge_value[e]:
                return 0.0 if natural else 1.0
        if head:
            return 1.0
        return -1.0 if natural else 0.0
    # LINEAR, RATIO, LOGICAL: count of satisfied implications (not b) or head over the body
    count = 0
    for e in range(start, end - 1):
        var = edge_var[e]
        val = k if var == v else x[var]
        if head or val != edge_value[e]:
            count += 1
    if fn == LINEAR:
        if end - start == 1:
            return 1.0 if head else 0.0
        return float(count)
    if fn == RATIO:
        if end - start == 1:
            return 1.0 if head else 0.0   # log2(1 + head)
        return math.log2(1.0 + count)
    # LOGICAL
    if end - start == 1:
        return 1.0 if head else 0.0
    return 1.0 if count > 0 else 0.0


@njit(nogil=True, cache=True, inline="always")
def factor_phi(g, f, x, v, k):
    """phi_f(x with x[v] := k) (v = -1: no replacement), without weight and feature."""
    return phi(g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality, g.table_ptr, g.table, f, x, v, k)


@njit(nogil=True, cache=True, inline="always")
def factor_value(g, f, x, v, k):
    """w · feature · phi_f(x with x[v] := k); v = -1: x as it is."""
    return g.weight[g.weight_id[f]] * g.feature[f] * factor_phi(g, f, x, v, k)


@njit(nogil=True, cache=True, inline="always")
def conditional_logits(g, x, v, out):
    """out[k] = Σ_{f ∋ v} factor_value(g, f, x, v, k) for k < cardinality[v]."""
    card = g.cardinality[v]
    for k in range(card):
        out[k] = 0.0
    for j in range(g.var_ptr[v], g.var_ptr[v + 1]):
        f = g.var_factor[j]
        c = g.weight[g.weight_id[f]] * g.feature[f]
        for k in range(card):
            out[k] += c * factor_phi(g, f, x, v, k)


@njit(nogil=True, cache=True, inline="always")
def log_potential(g, x):
    """Σ_f w · feature · phi_f(x): the log of the unnormalised probability."""
    total = 0.0
    for f in range(g.function.size):
        total += factor_value(g, f, x, -1, 0)
    return total


@njit(nogil=True, cache=True, inline="always")
def _phi_range(g, f):
    """(min, max) of phi_f over all values of its variables (closed forms; TABLE: its entries)."""
    start = g.factor_ptr[f]
    end = g.factor_ptr[f + 1]
    fn = g.function[f]
    if fn == TABLE:
        lo = np.inf
        hi = -np.inf
        for t in range(g.table_ptr[f], g.table_ptr[f + 1]):
            lo = min(lo, g.table[t])
            hi = max(hi, g.table[t])
        return lo, hi
    if fn == POTTS:
        # all equal is possible (value 0 everywhere); a difference needs two variables, one with 2+ values
        differ = False
        for e in range(start, end):
            differ = differ or (g.cardinality[g.edge_var[e]] >= 2 and end - start >= 2)
        return (0.0 if differ else 1.0), 1.0
    # a literal x == e can be false iff its variable has another value (cardinality >= 2)
    any_free = False
    all_free = True
    body_free = False
    for e in range(start, end):
        free = g.cardinality[g.edge_var[e]] >= 2
        any_free = any_free or free
        all_free = all_free and free
        if e < end - 1:
            body_free = body_free or free
    head_free = g.cardinality[g.edge_var[end - 1]] >= 2
    nbody = end - start - 1
    if fn == AND or fn == ISTRUE:
        return (-1.0 if any_free else 1.0), 1.0
    if fn == AND_CAT or fn == EQUAL_CAT_CONST:
        return (0.0 if any_free else 1.0), 1.0
    if fn == OR or fn == OR_CAT:
        return (-1.0 if all_free else 1.0), 1.0
    if fn == EQUAL:
        return (-1.0 if (any_free and end - start >= 2) else 1.0), 1.0
    if fn == IMPLY_NATURAL or fn == IMPLY_NATURAL_CAT:
        lo = -1.0 if head_free else (0.0 if body_free else 1.0)
        return lo, 1.0
    if fn == IMPLY_MLN or fn == IMPLY_MLN_CAT or fn == LOGICAL:
        return (0.0 if head_free else 1.0), 1.0
    if fn == LINEAR:
        if nbody == 0:
            return (0.0 if head_free else 1.0), 1.0
        return (0.0 if head_free else float(nbody)), float(nbody)
    # RATIO
    if nbody == 0:
        return (0.0 if head_free else 1.0), 1.0
    top = math.log2(1.0 + nbody)
    return (0.0 if head_free else top), top


@njit(nogil=True, cache=True)
def factor_bounds(g):
    """(lo, hi): min and max of w · feature · phi_f over its variables' values, per factor."""
    m = g.function.size
    lo = np.empty(m)
    hi = np.empty(m)
    for f in range(m):
        a, b = _phi_range(g, f)
        c = g.weight[g.weight_id[f]] * g.feature[f]
        if c >= 0:
            lo[f] = c * a
            hi[f] = c * b
        else:
            lo[f] = c * b
            hi[f] = c * a
    return lo, hi


@njit(nogil=True, cache=True)
def enumerate_log_potentials(g, free, x, out):
    """out[s] = log_potential of the s-th assignment of the ``free`` variables (row-major: the
    last free variable changes fastest); the other variables keep their values in x (int32)."""
    nf = free.size
    for j in range(nf):
        x[free[j]] = 0
    for s in range(out.size):
        out[s] = log_potential(g, x)
        j = nf - 1
        while j >= 0:
            var = free[j]
            x[var] += 1
            if x[var] < g.cardinality[var]:
                break
            x[var] = 0
            j -= 1
