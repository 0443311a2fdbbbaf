"""The factor values of ``_kernels`` with the graph's arrays as separate arguments.

numba increments and decrements the reference count of every array of a tuple each time the tuple
is passed to a function (inlined or not): with GraphArrays' 15 arrays that made each
``factor_value(g, ...)`` call cost about a microsecond on a loaded machine, 20x the factor's own
work.  The samplers' inner loops therefore unpack the arrays once (:func:`unpack`) and evaluate
factors with :func:`value` on ``_kernels.phi``, the one definition of the factor functions that
``factor_value`` uses too (a copy here once missed POTTS, so the minibatch samplers evaluated
Potts factors as LOGICAL ones).
"""
from __future__ import annotations

from ..._numba import njit
from ._kernels import phi


@njit(nogil=True, cache=True, inline="always")
def unpack(g):
    """The arrays :func:`value` takes, as a tuple of arrays to unpack once outside a hot loop."""
    return (g.function, g.factor_ptr, g.edge_var, g.edge_value, g.cardinality, g.table_ptr, g.table,
            g.weight, g.weight_id, g.feature)


@njit(nogil=True, cache=True, inline="always")
def value(function, factor_ptr, edge_var, edge_value, cardinality, table_ptr, table, weight, weight_id, feature,
          f, x, v, k):
    """w · feature · phi_f(x with x[v] := k), as ``_kernels.factor_value``."""
    return weight[weight_id[f]] * feature[f] * phi(function, factor_ptr, edge_var, edge_value, cardinality,
                                                     table_ptr, table, f, x, v, k)
