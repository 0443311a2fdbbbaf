"""Factor graphs from a description: lists of factors, pairwise tables, and the standard models
(Ising and Potts grids, the all-pairs Potts model of Poisson-Gibbs, random graphs)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .functions import FactorFunction
from .graph import FactorGraph

__all__ = ["from_factors", "ising_grid", "ising_energy_per_site", "magnetisation"]


def _check(name, value, ok, why):
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} ({why})")


def from_factors(cardinality, weights, factors: Iterable[Sequence], *, evidence=None, initial=None,
                 weight_fixed=None) -> FactorGraph:
    """A graph from a list of factors ``(function, weight_id, variables[, equal_to[, feature[, table]]])``.

    >>> g = from_factors([2, 2], [1.0], [(FactorFunction.IMPLY_NATURAL, 0, [0, 1])])
    >>> g.function.tolist(), g.edge_value.tolist()
    ([0], [1, 1])
    """
    function, weight_id, feature, ptr, edge_var, edge_value, table_ptr, table = [], [], [], [0], [], [], [0], []
    for i, spec in enumerate(factors):
        spec = tuple(spec)
        _check(f"factors[{i}]", spec, 3 <= len(spec) <= 6,
               "expected (function, weight_id, variables[, equal_to[, feature[, table]]])")
        fn, wid, variables = spec[:3]
        equal_to = spec[3] if len(spec) > 3 and spec[3] is not None else [1] * len(variables)
        _check(f"factors[{i}]", spec, len(equal_to) == len(variables), "one equal_to value per variable")
        function.append(int(fn))
        weight_id.append(int(wid))
        feature.append(float(spec[4]) if len(spec) > 4 and spec[4] is not None else 1.0)
        edge_var.extend(int(v) for v in variables)
        edge_value.extend(0 if int(fn) == FactorFunction.TABLE else int(e) for e in equal_to)
        ptr.append(len(edge_var))
        if len(spec) > 5 and spec[5] is not None:
            table.extend(float(t) for t in np.ravel(spec[5]))
        table_ptr.append(len(table))
    return FactorGraph(cardinality=cardinality, weight=weights, function=np.array(function, np.int64),
                       weight_id=np.array(weight_id, np.int64), factor_ptr=ptr,
                       edge_var=np.array(edge_var, np.int64), edge_value=np.array(edge_value, np.int64),
                       feature=np.array(feature), evidence=evidence, initial=initial, weight_fixed=weight_fixed,
                       table_ptr=table_ptr, table=np.array(table))


def _grid_edges(n: int, m: int, periodic: bool) -> np.ndarray:
    """int64[E, 2] nearest-neighbour pairs of an n×m grid (site i*m + j): horizontal edges, then vertical."""
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    pairs = []
    for ni, nj in ((i, j + 1), (i + 1, j)):
        if periodic:
            ok = np.ones(i.shape, bool)
            ni, nj = ni % n, nj % m
        else:
            ok = (ni < n) & (nj < m)
        pairs.append(np.stack([(i * m + j)[ok], (ni * m + nj)[ok]], axis=1))
    return np.concatenate(pairs).astype(np.int64)


def _check_grid(n, m, periodic):
    _check("n", n, isinstance(n, (int, np.integer)) and n >= 1, "rows must be a positive integer")
    _check("m", m, isinstance(m, (int, np.integer)) and m >= 1, "columns must be a positive integer")
    if periodic:
        _check("n", n, n >= 2, "a periodic grid needs at least 2 rows (1 would couple a site to itself)")
        _check("m", m, m >= 2, "a periodic grid needs at least 2 columns (1 would couple a site to itself)")


def ising_grid(n: int, m: int, beta: float, h: float = 0.0, periodic: bool = True) -> FactorGraph:
    """The 2-D Ising model p(s) ∝ exp(β Σ_<ij> s_i s_j + h Σ_i s_i), s = 2x - 1, on an n×m grid.

    One EQUAL factor (φ = s_i s_j) per grid edge with weight 0 (= beta) and, when h != 0, one
    ISTRUE factor (φ = s_i) per site with weight 1 (= h): the DeepDive encoding.  Site (i, j) is
    variable i*m + j; periodic=True wraps both directions (a torus: 2nm edges).

    >>> g = ising_grid(3, 4, beta=0.4, h=0.1)
    >>> g.num_variables, g.num_factors, g.weight.tolist()
    (12, 36, [0.4, 0.1])
    """
    _check_grid(n, m, periodic)
    _check("beta", beta, np.isfinite(beta), "must be finite")
    _check("h", h, np.isfinite(h), "must be finite")
    edges = _grid_edges(int(n), int(m), periodic)
    nv = int(n) * int(m)
    function = [np.full(len(edges), FactorFunction.EQUAL, np.int64)]
    weight_id = [np.zeros(len(edges), np.int64)]
    edge_var = [edges.ravel()]
    arity = [np.full(len(edges), 2, np.int64)]
    weights = [float(beta)]
    if h != 0:
        function.append(np.full(nv, FactorFunction.ISTRUE, np.int64))
        weight_id.append(np.ones(nv, np.int64))
        edge_var.append(np.arange(nv, dtype=np.int64))
        arity.append(np.ones(nv, np.int64))
        weights.append(float(h))
    arity = np.concatenate(arity)
    return FactorGraph(cardinality=np.full(nv, 2, np.int64), weight=weights, function=np.concatenate(function),
                       weight_id=np.concatenate(weight_id), factor_ptr=np.concatenate([[0], np.cumsum(arity)]),
                       edge_var=np.concatenate(edge_var))


def magnetisation(x) -> np.ndarray:
    """Mean spin (2x - 1) of an assignment (last axis: the sites); boolean variables.

    >>> float(magnetisation(np.array([1, 1, 0, 1])))
    0.5
    """
    x = np.asarray(x)
    return (2.0 * x - 1.0).mean(axis=-1)


def ising_energy_per_site(x, n: int, m: int, periodic: bool = True) -> np.ndarray:
    """The physical Ising energy per site, -Σ_<ij> s_i s_j / (n m), of assignments x (last axis:
    the n*m sites in ``ising_grid``'s order; s = 2x - 1).  Onsager's closed form is its mean on
    the infinite torus.

    >>> float(ising_energy_per_site(np.ones(16, np.int32), 4, 4))
    -2.0
    """
    _check_grid(n, m, periodic)
    x = np.asarray(x)
    _check("x", x.shape, x.shape[-1] == n * m, f"last axis must hold the {n * m} sites")
    s = 2.0 * x - 1.0
    e = _grid_edges(int(n), int(m), periodic)
    return -(s[..., e[:, 0]] * s[..., e[:, 1]]).sum(axis=-1) / (n * m)
