"""Topologies: doubly stochastic mixing matrices, structure, and spectral gaps against closed forms."""
import dataclasses
import math

import pytest
import torch

from relaxtorch.comm import Topology, complete, exponential, one_peer_exponential, ring, topology, torus

ALL = ([ring(n) for n in range(1, 10)] + [torus(r, c) for r, c in [(1, 1), (1, 4), (2, 2), (2, 3), (3, 3), (3, 4)]]
       + [exponential(n) for n in (1, 2, 3, 4, 5, 6, 8, 16)] + [one_peer_exponential(n) for n in (1, 2, 3, 4, 6, 8)]
       + [complete(n) for n in (1, 2, 5)])


@pytest.mark.parametrize("top", ALL, ids=repr)
def test_mixing_matrices_are_doubly_stochastic_and_match_the_row_views(top):
    assert top.period >= 1 and top.time_varying == (top.period > 1)
    for step in range(2 * top.period + 1):
        w = top.matrix(step)
        assert w.shape == (top.n, top.n) and w.dtype == torch.float64
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(dim=1), torch.ones(top.n, dtype=torch.float64), rtol=0, atol=1e-15)
        torch.testing.assert_close(w.sum(dim=0), torch.ones(top.n, dtype=torch.float64), rtol=0, atol=1e-15)
        assert torch.equal(w, top.matrix(step + top.period))
        undirected = top.kind in ("ring", "torus", "complete") or top.n <= 2
        if undirected:
            assert torch.equal(w, w.T)
        for i in range(top.n):
            weights = top.weights(i, step)
            assert weights == {j: float(w[i, j]) for j in range(top.n) if w[i, j] > 0}
            assert weights[i] > 0  # everybody keeps part of its own model
            assert top.neighbors(i, step) == [j for j in sorted(weights) if j != i]
            for j in top.neighbors(i, step):
                assert i in top.out_neighbors(j, step)
            assert sorted(top.out_neighbors(i, step)) == [j for j in range(top.n) if j != i and w[j, i] > 0]
    w = top.matrix()
    w[0, 0] = 7.0  # matrix() hands out a copy
    assert top.matrix()[0, 0] != 7.0


def _ring_gap(n):
    if n <= 2:
        return 1.0
    eig = [1 / 3 + 2 / 3 * math.cos(2 * math.pi * k / n) for k in range(1, n)]
    return 1 - max(abs(e) for e in eig)


@pytest.mark.parametrize("n", range(1, 12))
def test_ring_weights_and_spectral_gap_closed_form(n):
    top = ring(n)
    assert top.spectral_gap == pytest.approx(_ring_gap(n), abs=1e-12)
    if n >= 3:
        assert all(v == pytest.approx(1 / 3, abs=1e-15) for v in top.weights(0).values())
        assert top.neighbors(0) == [1, n - 1] and top.degree() == 2
    if n >= 5:  # the second largest eigenvalue is 1/3 + 2/3 cos(2 pi / n)
        assert top.second_eigenvalue == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / n), abs=1e-12)


def test_small_rings_and_complete_graphs():
    assert ring(2).weights(0) == {0: 0.5, 1: 0.5} and ring(2).neighbors(1) == [0]
    assert ring(1).weights(0) == {0: 1.0} and ring(1).neighbors(0) == [] and ring(1).spectral_gap == 1.0
    for n in (2, 3, 5, 8):
        top = complete(n)
        torch.testing.assert_close(top.matrix(), torch.full((n, n), 1 / n, dtype=torch.float64), rtol=0, atol=1e-15)
        assert top.spectral_gap == pytest.approx(1.0, abs=1e-12)
    assert ring(3).spectral_gap == pytest.approx(1.0, abs=1e-12)  # a 3-ring with weights 1/3 is complete


@pytest.mark.parametrize("rows, cols", [(3, 3), (3, 4), (4, 5), (5, 5)])
def test_torus_spectral_gap_closed_form(rows, cols):
    # W = (I + shifts in 4 directions) / 5: eigenvalues (1 + 2 cos(2 pi a / rows) + 2 cos(2 pi b / cols)) / 5
    eig = [(1 + 2 * math.cos(2 * math.pi * a / rows) + 2 * math.cos(2 * math.pi * b / cols)) / 5
           for a in range(rows) for b in range(cols) if (a, b) != (0, 0)]
    top = torus(rows, cols)
    assert top.n == rows * cols and top.degree() == 4
    assert top.spectral_gap == pytest.approx(1 - max(abs(e) for e in eig), abs=1e-12)
    r, c = 1, 2  # rank r * cols + c sits at (r, c): neighbours up, down, left, right
    i = r * cols + c
    assert top.neighbors(i) == sorted({((r + 1) % rows) * cols + c, ((r - 1) % rows) * cols + c,
                                       r * cols + (c + 1) % cols, r * cols + (c - 1) % cols})


@pytest.mark.parametrize("tau", [1, 2, 3, 4, 5])
def test_exponential_graph_matches_ying_et_al(tau):
    n = 2 ** tau
    top = exponential(n)
    assert top.neighbors(0) == [2 ** k for k in range(tau)]
    assert top.out_neighbors(0) == sorted((n - 2 ** k) % n for k in range(tau))
    assert set(top.weights(n - 1).values()) == {1 / (tau + 1)}
    # Ying et al. 2021, Proposition 1: |lambda_2| = 1 - 2 / (1 + log2 n) for n a power of two
    assert top.spectral_gap == pytest.approx(2 / (1 + tau), abs=1e-12)


def test_one_peer_exponential_is_time_varying_and_exact_over_a_period():
    for tau in (1, 2, 3, 4):
        n = 2 ** tau
        top = one_peer_exponential(n)
        assert top.period == tau and top.time_varying == (tau > 1)
        prod = torch.eye(n, dtype=torch.float64)
        for t in range(tau):
            assert top.neighbors(5 % n, t) == [(5 % n + 2 ** t) % n]
            assert top.weights(0, t) == {0: 0.5, 2 ** t % n: 0.5} if n > 1 else True
            prod = top.matrix(t) @ prod
        # one peer per step, yet exact averaging after log2(n) steps (Ying et al. 2021)
        torch.testing.assert_close(prod, torch.full((n, n), 1 / n, dtype=torch.float64), rtol=0, atol=1e-15)
        assert top.spectral_gap == pytest.approx(1.0, abs=1e-12)
    top = one_peer_exponential(6)  # not a power of two: the product over a period is not exact
    assert 0 < top.spectral_gap < 1 and top.period == 3


def test_topology_by_name():
    assert topology("ring", 4) == ring(4)
    assert topology(" Exp ", 8) == exponential(8) and topology("exponential", 8) == exponential(8)
    assert topology("one-peer-exp", 8) == one_peer_exponential(8) == topology("one_peer_exp", 8)
    assert topology("complete", 3) == complete(3)
    assert topology("torus", 12) == torus(3, 4) and topology("torus", 7) == torus(1, 7)
    assert topology("torus:2x6", 12) == torus(2, 6)
    for bad, why in [("star", "one of ring"), ("torus:3x3", "does not hold 12"), ("torus:3by4", "ROWSxCOLS"),
                     (None, "a name")]:
        with pytest.raises(ValueError, match=f"Invalid topology: .*{why}"):
            topology(bad, 12)


@pytest.mark.parametrize("make", [ring, exponential, one_peer_exponential, complete,
                                  lambda n: topology("ring", n), lambda n: torus(n, 2), lambda n: torus(2, n)])
@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "4", None])
def test_invalid_sizes(make, bad):
    with pytest.raises(ValueError, match=r"Invalid (n|rows|cols): "):
        make(bad)


def test_values_are_frozen_hashable_and_checked():
    top = ring(4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        top.n = 5
    assert hash(top) == hash(ring(4)) and top != ring(5) and top != exponential(4)
    assert repr(torus(2, 3)) == "torus(2, 3)" and repr(one_peer_exponential(8)) == "one_peer_exponential(8)"
    with pytest.raises(ValueError, match="Invalid kind"):
        Topology("star", 4)
    with pytest.raises(ValueError, match="Invalid shape"):
        Topology("torus", 6, (2, 2))
    with pytest.raises(ValueError, match="Invalid rank"):
        top.neighbors(4)
    with pytest.raises(ValueError, match="Invalid rank"):
        top.weights(-1)
