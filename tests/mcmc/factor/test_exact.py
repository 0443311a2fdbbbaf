"""Exact enumeration against a brute-force sum written here (itertools + the plain-Python reference)."""
import itertools
import math

import numpy as np
import pytest

from relaxtorch.mcmc.factor import (FactorFunction as F, exact_distribution, exact_marginals, factor_value_reference,
                                    from_factors, ising_grid, potts_all_pairs, random_graph)


def _brute_force(g):
    """{full assignment: probability} from the definitions, evidence clamped."""
    weights = {}
    for x in itertools.product(*[range(int(c)) for c in g.cardinality]):
        if any(e >= 0 and x[v] != e for v, e in enumerate(g.evidence)):
            continue
        total = 0.0
        for f in range(g.num_factors):
            lo, hi = g.factor_ptr[f], g.factor_ptr[f + 1]
            variables = g.edge_var[lo:hi]
            table = g.table[g.table_ptr[f]:g.table_ptr[f + 1]]
            phi = factor_value_reference(g.function[f], [x[v] for v in variables], g.edge_value[lo:hi],
                                         table=table, cardinalities=g.cardinality[variables])
            total += g.weight[g.weight_id[f]] * g.feature[f] * phi
        weights[x] = math.exp(total)
    z = sum(weights.values())
    return {x: w / z for x, w in weights.items()}


GRAPHS = {
    "mixed12": lambda: random_graph(12, 30, seed=5, evidence_fraction=0.25, max_arity=3),
    "categorical": lambda: random_graph(6, 12, seed=2, cardinality=[3, 2, 4, 3, 2, 3], evidence_fraction=0.2),
    "table": lambda: from_factors([3, 2, 3], [0.7, -0.4],
                                  [(F.TABLE, 0, [0, 1], None, 1.0, np.arange(6.0) / 3),
                                   (F.TABLE, 1, [2, 1, 0], None, 2.0, np.sin(np.arange(18.0))),
                                   (F.POTTS, 0, [0, 2])]),
    "ising": lambda: ising_grid(3, 3, beta=0.4, h=0.2, periodic=True),
    "potts_all_pairs": lambda: potts_all_pairs(2, 3, beta=1.5, gamma=0.5),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_exact_matches_brute_force(name):
    g = GRAPHS[name]()
    states, probs = exact_distribution(g)
    want = _brute_force(g)
    free = np.flatnonzero(g.evidence < 0)
    assert states.dtype == np.int32 and states.shape == (len(want), free.size)
    assert len({tuple(s) for s in states.tolist()}) == len(want)
    full = g.initial.copy()
    for s, p in zip(states, probs):
        full[free] = s
        assert p == pytest.approx(want[tuple(full.tolist())], rel=1e-10)
    marg = exact_marginals(g)
    assert marg.shape == (g.num_variables, g.max_cardinality)
    for v in range(g.num_variables):
        for k in range(g.max_cardinality):
            expected = sum(p for x, p in want.items() if x[v] == k)
            assert marg[v, k] == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_evidence_rows_are_one_hot_and_order_is_row_major():
    g = random_graph(5, 6, seed=1, evidence_fraction=0.4)
    marg = exact_marginals(g)
    for v in np.flatnonzero(g.evidence >= 0):
        assert marg[v].tolist() == [1.0 if k == g.evidence[v] else 0.0 for k in range(2)]
    states, _ = exact_distribution(g)
    assert states[:3].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_potts_all_pairs_marginals_are_uniform():
    marg = exact_marginals(potts_all_pairs(2, 3, beta=2.0, gamma=0.3))
    assert np.allclose(marg, 1 / 3, atol=1e-12)


def test_too_many_states_is_refused():
    with pytest.raises(ValueError, match="exact enumeration stops"):
        exact_distribution(ising_grid(5, 5, beta=0.1))
