"""Builders: structure (edge counts, degrees, wrap-around) and log-potentials against the models'
formulas evaluated with plain loops."""
import math

import numpy as np
import pytest

from relaxtorch.mcmc.factor import (FactorFunction as F, factor_bounds, from_pairwise, ising_energy_per_site,
                                    ising_grid, log_potential, magnetisation, potts_all_pairs, potts_grid,
                                    random_graph, random_potts)


def _neighbour_pairs(n, m, periodic):
    pairs = set()
    for i in range(n):
        for j in range(m):
            for di, dj in ((0, 1), (1, 0)):
                a, b = i + di, j + dj
                if periodic:
                    a, b = a % n, b % m
                elif a >= n or b >= m:
                    continue
                pairs.add((i * m + j, a * m + b))
    return pairs


@pytest.mark.parametrize("n,m,periodic", [(3, 4, True), (3, 4, False), (1, 5, False), (4, 4, True)])
def test_ising_grid_structure_and_energy(n, m, periodic):
    beta, h = 0.37, -0.21
    g = ising_grid(n, m, beta, h, periodic=periodic)
    pairs = _neighbour_pairs(n, m, periodic)
    equal = np.flatnonzero(g.function == F.EQUAL)
    got = {tuple(g.edge_var[g.factor_ptr[f]:g.factor_ptr[f + 1]]) for f in equal}
    assert got == pairs and len(equal) == len(pairs)
    assert len(pairs) == (2 * n * m if periodic else n * (m - 1) + (n - 1) * m)
    assert (g.function == F.ISTRUE).sum() == n * m
    if periodic:
        assert set((g.degree - 1).tolist()) == {4}   # 4 neighbours + the field factor
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 2, n * m).astype(np.int32)
        s = 2 * x - 1
        want = beta * sum(s[a] * s[b] for a, b in pairs) + h * s.sum()
        assert log_potential(g.arrays, x) == pytest.approx(want, abs=1e-12)
        assert ising_energy_per_site(x, n, m, periodic) == pytest.approx(-sum(s[a] * s[b] for a, b in pairs) / (n * m))
        assert magnetisation(x) == pytest.approx(s.mean())


def test_ising_without_field_has_no_field_factors_and_bad_sizes_are_refused():
    g = ising_grid(4, 4, beta=0.3)
    assert (g.function == F.EQUAL).all() and g.num_factors == 32
    with pytest.raises(ValueError, match="Invalid n"):
        ising_grid(1, 4, beta=0.3, periodic=True)
    with pytest.raises(ValueError, match="Invalid beta"):
        ising_grid(3, 3, beta=float("nan"))
    x = np.ones((2, 16), np.int32)
    assert ising_energy_per_site(x, 4, 4).tolist() == [-2.0, -2.0]


def test_potts_grid_and_from_pairwise_agree():
    n, m, D, beta = 3, 3, 4, 0.8
    g = potts_grid(n, m, D, beta)
    pairs = sorted(_neighbour_pairs(n, m, True))
    t = from_pairwise(pairs, np.eye(D), weight=beta)
    assert t.num_factors == g.num_factors == len(pairs) and set(g.degree.tolist()) == {4}
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.integers(0, D, n * m).astype(np.int32)
        want = beta * sum(x[a] == x[b] for a, b in pairs)
        assert log_potential(g.arrays, x) == pytest.approx(want, abs=1e-12)
        assert log_potential(t.arrays, x) == pytest.approx(want, abs=1e-12)


def test_from_pairwise_with_per_edge_tables():
    tables = [np.arange(6.0).reshape(2, 3), np.arange(9.0).reshape(3, 3) / 2]
    g = from_pairwise([(0, 1), (1, 2)], tables)
    assert g.cardinality.tolist() == [2, 3, 3]
    x = np.array([1, 2, 0], np.int32)
    assert log_potential(g.arrays, x) == pytest.approx(tables[0][1, 2] + tables[1][2, 0])
    with pytest.raises(ValueError, match=r"Invalid tables\[1\]"):
        from_pairwise([(0, 1), (1, 2)], [np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"Invalid tables"):
        from_pairwise([(0, 1)], [np.zeros((2, 2))] * 2)


def test_potts_all_pairs_is_the_papers_model():
    n, D, beta, gamma = 3, 4, 4.6, 1.5
    g = potts_all_pairs(n, D, beta, gamma)
    N = n * n
    assert g.num_factors == N * (N - 1) // 2 and set(g.degree.tolist()) == {N - 1}
    A = np.zeros((N, N))
    for a in range(N):         # the authors' notebook, 0-based: site -> (a % n, a // n)
        for b in range(N):
            di, dj = a % n - b % n, a // n - b // n
            A[a, b] = math.exp(-gamma * (di * di + dj * dj)) * (a != b)
    rng = np.random.default_rng(2)
    for _ in range(4):
        x = rng.integers(0, D, N).astype(np.int32)
        want = sum(beta * A[a, b] * (x[a] == x[b]) for a in range(N) for b in range(a + 1, N))
        assert log_potential(g.arrays, x) == pytest.approx(want, rel=1e-12)
    # L = max_i Σ_j β A_ij from factor_bounds's upper bounds
    lo, hi = factor_bounds(g.arrays)
    per_var = np.zeros(N)
    np.add.at(per_var, g.edge_var, np.repeat(hi, 2))
    assert lo.min() == 0.0 and per_var.max() == pytest.approx(beta * A.sum(axis=1).max(), rel=1e-12)


def test_random_potts_is_regular_and_seeded():
    g = random_potts(40, D=5, degree=8, beta=0.2, seed=4)
    assert set(g.degree.tolist()) == {8} and g.num_factors == 160
    pairs = {frozenset(g.edge_var[2 * f:2 * f + 2].tolist()) for f in range(g.num_factors)}
    assert len(pairs) == 160   # no pair twice
    assert np.array_equal(random_potts(40, 5, 8, 0.2, seed=4).edge_var, g.edge_var)
    assert not np.array_equal(random_potts(40, 5, 8, 0.2, seed=5).edge_var, g.edge_var)
    with pytest.raises(ValueError, match="Invalid degree"):
        random_potts(10, 3, 7, 0.1, seed=0)


def test_random_graph_is_seeded_and_mixed():
    g = random_graph(20, 200, seed=9, evidence_fraction=0.1)
    h = random_graph(20, 200, seed=9, evidence_fraction=0.1)
    for name in ("function", "edge_var", "edge_value", "weight", "evidence"):
        assert np.array_equal(getattr(g, name), getattr(h, name))
    assert set(g.function.tolist()) == {int(f) for f in F if f not in (F.TABLE, F.POTTS)}
    assert set(g.arity.tolist()) == {1, 2, 3} and (g.evidence >= 0).sum() == 2
    assert not np.array_equal(random_graph(20, 200, seed=10).edge_var, g.edge_var)
