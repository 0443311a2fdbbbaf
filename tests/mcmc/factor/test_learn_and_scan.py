"""Weight learning recovers known weights; the scan order matters on a model of He et al. (2016)."""
from __future__ import annotations

import numpy as np

import relaxtorch.mcmc.factor as fg
from relaxtorch.mcmc.factor.functions import FactorFunction as F


def test_learn_weights_recovers_known_weights():
    true = np.array([0.8, -0.5, 0.6])
    copies = 400
    factors = []
    for c in range(copies):
        a, b = 2 * c, 2 * c + 1
        factors += [(F.ISTRUE, 0, [a]), (F.ISTRUE, 1, [b]), (F.EQUAL, 2, [a, b])]
    g = fg.from_factors([2] * (2 * copies), true, factors)
    # evidence: independent exact samples of each pair
    states, probs = fg.exact_distribution(fg.from_factors([2, 2], true, factors[:3]))
    rng = np.random.default_rng(0)
    draws = states[rng.choice(len(probs), size=copies, p=probs)]
    observed = g.with_evidence(draws.reshape(-1)).with_weights(np.zeros(3))
    observed = fg.graph.FactorGraph(**{**{f: getattr(observed, f) for f in (
        "cardinality", "weight", "function", "weight_id", "factor_ptr", "edge_var", "edge_value", "feature",
        "evidence", "initial", "table_ptr", "table")}, "weight_fixed": np.zeros(3, bool)})
    learned = fg.learn_weights(observed, epochs=300, lr=0.2, decay=0.99, seed=0).weight
    assert np.abs(learned - true).max() < 0.15, learned


def test_learn_weights_l1_shrinks_to_zero():
    g = fg.from_factors([2] * 6, [0.0], [(F.ISTRUE, 0, [v]) for v in range(6)], evidence=[1, 0, 1, 0, 1, 0],
                        weight_fixed=[False])
    assert fg.learn_weights(g, epochs=100, lr=0.2, l1=0.5, seed=1).weight[0] == 0.0


def sequence_of_dependencies(n: int, strength: float = 6.0):
    """After He, De Sa, Mitliagkas & Ré (NeurIPS 2016), 'sequence of dependencies': x_i can turn on
    only once x_{i-1} is on (IMPLY x_i → x_{i-1}, strong), and each variable prefers on."""
    factors = [(F.ISTRUE, 0, [0])] + [(F.IMPLY_NATURAL, 1, [i, i - 1]) for i in range(1, n)]
    factors += [(F.ISTRUE, 0, [i]) for i in range(1, n)]
    return fg.from_factors([2] * n, [1.5, strength], factors)


def test_scan_order_matters_on_sequence_of_dependencies():
    n = 30
    g = sequence_of_dependencies(n)
    last_on = {}
    for scan in ("systematic", "random"):
        hits = 0
        for seed in range(40):
            s = fg.Gibbs(scan=scan)
            st = s.run(g, s.init(g, seed=seed), 2)   # from all off
            hits += int(st.x[-1])
        last_on[scan] = hits / 40
    # the forward systematic scan carries the chain of dependencies in one sweep; random scan cannot
    assert last_on["systematic"] > 0.8 and last_on["random"] < 0.2, last_on
    # ... and both leave the same stationary law
    ex = fg.exact_marginals(sequence_of_dependencies(10))[:, 1]
    for scan in ("systematic", "random"):
        g10 = sequence_of_dependencies(10)
        s = fg.Gibbs(scan=scan)
        st = s.run(g10, s.run(g10, s.init(g10, seed=0), 100, record=False), 20000)
        assert np.abs(fg.marginals(st)[:, 1] - ex).max() < 0.02
