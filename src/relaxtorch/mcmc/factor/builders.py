"""Factor graphs from a description: lists of factors, pairwise tables, and the standard models
(Ising and Potts grids, the all-pairs Potts model of Poisson-Gibbs, random graphs)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .functions import FactorFunction
from .graph import FactorGraph
from ..._seeding import numpy_rng

__all__ = ["from_factors", "from_pairwise", "ising_energy_per_site", "ising_grid", "magnetisation", "potts_all_pairs",
           "potts_grid", "random_graph", "random_potts"]


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
        edge_value.extend(0 if int(fn) in (FactorFunction.TABLE, FactorFunction.POTTS) else int(e) for e in equal_to)
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


def _pairwise_graph(num_variables, card, pairs, function, weights, weight_id, feature=None, table_ptr=None,
                    table=None, weight_fixed=None) -> FactorGraph:
    m = len(pairs)
    return FactorGraph(cardinality=np.broadcast_to(np.asarray(card, np.int64), (num_variables,)), weight=weights,
                       function=np.full(m, int(function), np.int64), weight_id=weight_id,
                       factor_ptr=np.arange(0, 2 * m + 1, 2, dtype=np.int64),
                       edge_var=np.asarray(pairs, np.int64).reshape(-1), edge_value=np.zeros(2 * m, np.int64),
                       feature=feature, table_ptr=table_ptr, table=table, weight_fixed=weight_fixed)


def _check_states(D):
    _check("D", D, isinstance(D, (int, np.integer)) and D >= 2, "a Potts model needs at least 2 states")


def potts_grid(n: int, m: int, D: int, beta: float, periodic: bool = True) -> FactorGraph:
    """The D-state Potts model p(x) ∝ exp(β Σ_<ij> [x_i = x_j]) on an n×m grid: one POTTS factor per
    grid edge, weight 0 = beta; sites and edges as in ``ising_grid``.

    >>> g = potts_grid(3, 3, D=4, beta=0.5)
    >>> g.num_factors, g.max_cardinality, sorted(set(g.degree.tolist()))
    (18, 4, [4])
    """
    _check_grid(n, m, periodic)
    _check_states(D)
    _check("beta", beta, np.isfinite(beta), "must be finite")
    pairs = _grid_edges(int(n), int(m), periodic)
    return _pairwise_graph(int(n) * int(m), D, pairs, FactorFunction.POTTS, [float(beta)],
                           np.zeros(len(pairs), np.int64))


def potts_all_pairs(n: int, D: int, beta: float, gamma: float) -> FactorGraph:
    """The Potts model of Poisson-Gibbs (Zhang & De Sa, NeurIPS 2019), after MIN-Gibbs (De Sa, Chen
    & Wong, ICML 2018): n² sites on an n×n grid, every pair coupled,

        p(x) ∝ exp( Σ_{i<j} β A_ij [x_i = x_j] ),   A_ij = exp(-γ ‖r_i - r_j‖²),

    with r_i the (row, column) of site i on the grid (not periodic).  This is the authors' notebook
    (github.com/ruqizhang/poisson-gibbs, main.ipynb: ``interaction``), whose conditional for site i
    is β Σ_{j≠i} A_ij [x_j = k].  The paper's setting is n = 20 (400 sites), D = 10, β = 4.6, γ = 1.5;
    every marginal is uniform (1/D) by symmetry.  Encoded as one POTTS factor per pair with the shared
    weight 0 = β and feature A_ij, so L = max_i Σ_j β A_ij is ``max`` of the per-variable sums of
    ``factor_bounds``' upper bounds.

    >>> g = potts_all_pairs(3, D=3, beta=1.0, gamma=1.0)
    >>> g.num_variables, g.num_factors, round(float(g.feature.max()), 6)
    (9, 36, 0.367879)
    """
    _check("n", n, isinstance(n, (int, np.integer)) and n >= 1, "grid width must be a positive integer")
    _check_states(D)
    _check("beta", beta, np.isfinite(beta), "must be finite")
    _check("gamma", gamma, np.isfinite(gamma) and gamma >= 0, "must be finite and >= 0")
    nv = int(n) ** 2
    i, j = np.triu_indices(nv, k=1)
    di = i // n - j // n
    dj = i % n - j % n
    feature = np.exp(-float(gamma) * (di * di + dj * dj))
    return _pairwise_graph(nv, D, np.stack([i, j], axis=1), FactorFunction.POTTS, [float(beta)],
                           np.zeros(i.size, np.int64), feature=feature)


def random_potts(n: int, D: int, degree: int, beta: float, seed: int) -> FactorGraph:
    """A random ``degree``-regular D-state Potts model (MIN-Gibbs's dense graphs, De Sa et al. 2018):
    sites on a random cycle order, each coupled by a POTTS factor (weight 0 = beta) to the degree/2
    sites following it on that cycle; every site has exactly ``degree`` factors.

    >>> g = random_potts(50, D=3, degree=10, beta=0.1, seed=0)
    >>> g.num_factors, set(g.degree.tolist())
    (250, {10})
    """
    _check("n", n, isinstance(n, (int, np.integer)) and n >= 3, "needs at least 3 sites")
    _check_states(D)
    _check("degree", degree, isinstance(degree, (int, np.integer)) and degree >= 2 and degree % 2 == 0
           and degree < n, f"an even number in [2, n) = [2, {n})")
    _check("beta", beta, np.isfinite(beta), "must be finite")
    order = numpy_rng(seed, "random_potts").permutation(int(n))
    k = np.arange(int(n))
    pairs = np.concatenate([np.stack([order[k], order[(k + s) % n]], axis=1) for s in range(1, degree // 2 + 1)])
    return _pairwise_graph(int(n), D, pairs, FactorFunction.POTTS, [float(beta)], np.zeros(len(pairs), np.int64))


_LOGICAL = [f for f in FactorFunction if f not in (FactorFunction.TABLE, FactorFunction.POTTS)]


def random_graph(num_variables: int, num_factors: int, seed: int, *, max_arity: int = 3, cardinality=2,
                 functions: Sequence[int] | None = None, evidence_fraction: float = 0.0,
                 weight_scale: float = 1.0) -> FactorGraph:
    """A random sparse DeepDive-style graph: each factor draws a function (default: every logical
    one), an arity in 1..max_arity, distinct variables, per-edge values (random literals/categories)
    and its own weight ~ N(0, weight_scale²) (learnable); a ``evidence_fraction`` of the variables are
    clamped at random values.  ``cardinality``: an int or a per-variable array.

    >>> g = random_graph(12, 20, seed=0, evidence_fraction=0.25)
    >>> g.num_variables, g.num_factors, int((g.evidence >= 0).sum())
    (12, 20, 3)
    """
    _check("num_variables", num_variables, isinstance(num_variables, (int, np.integer)) and num_variables >= 1,
           "must be a positive integer")
    _check("num_factors", num_factors, isinstance(num_factors, (int, np.integer)) and num_factors >= 0,
           "must be a non-negative integer")
    _check("max_arity", max_arity, isinstance(max_arity, (int, np.integer)) and 1 <= max_arity <= num_variables,
           f"an integer in [1, num_variables = {num_variables}]")
    _check("evidence_fraction", evidence_fraction, 0.0 <= evidence_fraction <= 1.0, "must be in [0, 1]")
    _check("weight_scale", weight_scale, np.isfinite(weight_scale) and weight_scale >= 0, "must be finite and >= 0")
    functions = list(_LOGICAL if functions is None else functions)
    _check("functions", functions, len(functions) > 0, "needs at least one function")
    card = np.broadcast_to(np.asarray(cardinality, np.int64), (int(num_variables),)).copy()
    rng = numpy_rng(seed, "random_graph")
    factors = []
    for f in range(int(num_factors)):
        fn = int(functions[rng.integers(len(functions))])
        arity = int(rng.integers(1, max_arity + 1))
        variables = rng.choice(int(num_variables), size=arity, replace=False)
        equal_to = [int(rng.integers(card[v])) for v in variables]
        table = rng.normal(size=int(np.prod(card[variables]))) if fn == FactorFunction.TABLE else None
        factors.append((fn, f, variables.tolist(), equal_to, 1.0, table))
    weights = rng.normal(scale=weight_scale, size=int(num_factors))
    n_ev = int(round(evidence_fraction * num_variables))
    evidence = np.full(int(num_variables), -1, np.int64)
    clamp = rng.choice(int(num_variables), size=n_ev, replace=False)
    evidence[clamp] = [int(rng.integers(card[v])) for v in clamp]
    return from_factors(card, weights, factors, evidence=evidence, weight_fixed=np.zeros(int(num_factors), bool))


def from_pairwise(edges, tables, cardinality=None, weight: float = 1.0) -> FactorGraph:
    """A pairwise graph: one TABLE factor per edge (i, j) with φ = tables[e][x_i, x_j] (a single
    [D_i, D_j] table is shared by every edge), all under the fixed weight 0 = ``weight``.
    ``cardinality`` defaults to what the tables imply (variables in no edge: 2).

    >>> g = from_pairwise([(0, 1), (1, 2)], np.eye(3))   # a 3-state Potts chain
    >>> g.num_variables, g.max_cardinality, g.table.size
    (3, 3, 18)
    """
    edges = np.asarray(edges, dtype=np.int64)
    _check("edges", edges.shape, edges.ndim == 2 and edges.shape[1] == 2, "expected shape [E, 2]")
    ne = len(edges)
    shared = not isinstance(tables, (list, tuple)) and np.ndim(tables) == 2
    tabs = [np.asarray(tables, np.float64)] * ne if shared else [np.asarray(t, np.float64) for t in tables]
    _check("tables", len(tabs), len(tabs) == ne, f"one [D_i, D_j] table per edge ({ne}), or one shared table")
    for e, t in enumerate(tabs):
        _check(f"tables[{e}]", t.shape, t.ndim == 2, "each table is a 2-D [D_i, D_j] array")
    n = int(edges.max()) + 1 if ne else 0
    if cardinality is None:
        card = np.full(n, 2, np.int64)
        seen = np.zeros(n, bool)
        for e, ((i, j), t) in enumerate(zip(edges, tabs)):
            for v, d in ((i, t.shape[0]), (j, t.shape[1])):
                _check(f"tables[{e}]", t.shape, not seen[v] or card[v] == d,
                       f"variable {int(v)} has {int(card[v])} values in an earlier table")
                card[v], seen[v] = d, True
    else:
        card = np.asarray(cardinality, np.int64)
        for e, ((i, j), t) in enumerate(zip(edges, tabs)):
            ok = 0 <= i < card.size and 0 <= j < card.size and t.shape == (card[i], card[j])
            _check(f"tables[{e}]", t.shape, ok, f"edge {e} = ({int(i)}, {int(j)}) needs a table of shape "
                   f"(cardinality[i], cardinality[j])")
    table_ptr = np.concatenate([[0], np.cumsum([t.size for t in tabs])]).astype(np.int64)
    table = np.concatenate([t.ravel() for t in tabs]) if ne else np.zeros(0)
    return _pairwise_graph(int(card.size), card, edges, FactorFunction.TABLE, [float(weight)],
                           np.zeros(ne, np.int64), table_ptr=table_ptr, table=table)
