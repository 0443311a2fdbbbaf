"""The factor values of ``_kernels`` with the graph's arrays as separate arguments.

numba increments and decrements the reference count of every array of a tuple each time the tuple
is passed to a function (inlined or not): with GraphArrays' 15 arrays that made each
``factor_value(g, ...)`` call cost about a microsecond on a loaded machine, 20x the factor's own
work.  The samplers' inner loops therefore unpack the arrays once (:func:`unpack`) and evaluate
factors with :func:`value`, an inlined copy of ``_kernels.factor_phi`` (same branches, same
arithmetic: the tests check it against ``factor_value`` on every factor of their graphs).
"""
from __future__ import annotations

import math

from ..._numba import njit
from ._kernels import (AND, AND_CAT, EQUAL, EQUAL_CAT_CONST, IMPLY_MLN, IMPLY_MLN_CAT, IMPLY_NATURAL,
                       IMPLY_NATURAL_CAT, ISTRUE, LINEAR, OR, OR_CAT, RATIO, TABLE)


@njit(nogil=True, cache=True, inline="always")
def unpack(g):
    """The arrays :func:`value` takes, as a tuple of arrays to unpack once outside a hot loop."""
    return (g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality, g.table_ptr, g.table,
            g.weight, g.weight_id, g.feature)


@njit(nogil=True, cache=True, inline="always")
def phi(function, factor_ptr, edge_var, edge_value, cardinality, table_ptr, table, f, x, v, k):
    """``_kernels.factor_phi`` on the arrays themselves (see the module docstring)."""
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
def value(function, factor_ptr, edge_var, edge_value, cardinality, table_ptr, table, weight, weight_id, feature,
          f, x, v, k):
    """w · feature · phi_f(x with x[v] := k), as ``_kernels.factor_value``."""
    return weight[weight_id[f]] * feature[f] * phi(function, factor_ptr, edge_var, edge_value, cardinality,
                                                     table_ptr, table, f, x, v, k)
