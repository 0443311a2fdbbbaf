"""Every factor function: the numba kernels against the plain-Python reference over every
assignment of small factors (boolean and categorical, negated literals, every arity 1..3)."""
import itertools
import math

import numpy as np
import pytest

from relaxtorch.mcmc.factor import (FactorFunction, conditional_logits, factor_bounds, factor_value,
                                    factor_value_reference, from_factors, log_potential)

F = FactorFunction
LOGICAL_FUNCTIONS = [f for f in F if f != F.TABLE]


def _cases():
    """(function, cardinalities, equal_to) for every logical function, arity 1..3."""
    for fn in LOGICAL_FUNCTIONS:
        for arity in (1, 2, 3):
            yield fn, [2] * arity, [1] * arity                    # plain boolean atoms
            yield fn, [2] * arity, [(i + 1) % 2 for i in range(arity)]  # some negated
            yield fn, [3, 1, 4][:arity], [2, 0, 1][:arity]        # categorical (one of cardinality 1)


CASES = list(_cases())


def _graph(fn, cards, equal_to, weight=0.7, feature=-1.3, extra=None):
    table = None
    if fn == F.TABLE:
        table = np.random.default_rng(len(cards)).normal(size=int(np.prod(cards)))
        equal_to = None
    # put the factor's variables at shuffled positions among a few spare ones, so that the kernel
    # must follow edge_var (not the edge index) to read each variable
    nv = len(cards) + 2
    perm = np.random.default_rng(7).permutation(nv)[:len(cards)]
    card = np.full(nv, 2)
    card[perm] = cards
    return from_factors(card, [weight, 0.1], [(fn, 0, perm.tolist(), equal_to, feature, table)]), perm, table


def _reference(fn, values, equal_to, table, cards):
    return factor_value_reference(fn, values, equal_to, table=table, cardinalities=cards)


def _hand_values():
    # hand-written truth tables (DimmWitted factor.h / DeepDive docs), boolean atoms, arity 2 (body, head)
    return {
        F.IMPLY_NATURAL: {(0, 0): 0, (0, 1): 0, (1, 0): -1, (1, 1): 1},
        F.IMPLY_MLN: {(0, 0): 1, (0, 1): 1, (1, 0): 0, (1, 1): 1},
        F.OR: {(0, 0): -1, (0, 1): 1, (1, 0): 1, (1, 1): 1},
        F.AND: {(0, 0): -1, (0, 1): -1, (1, 0): -1, (1, 1): 1},
        F.EQUAL: {(0, 0): 1, (0, 1): -1, (1, 0): -1, (1, 1): 1},
        F.AND_CAT: {(0, 0): 0, (0, 1): 0, (1, 0): 0, (1, 1): 1},
        F.LINEAR: {(0, 0): 1, (0, 1): 1, (1, 0): 0, (1, 1): 1},
        F.RATIO: {(0, 0): 1, (0, 1): 1, (1, 0): 0, (1, 1): 1},
        F.LOGICAL: {(0, 0): 1, (0, 1): 1, (1, 0): 0, (1, 1): 1},
    }


@pytest.mark.parametrize("fn", sorted(_hand_values()))
def test_reference_matches_hand_truth_tables(fn):
    for values, expected in _hand_values()[fn].items():
        assert factor_value_reference(fn, values) == expected, (fn.name, values)


def test_reference_on_longer_bodies():
    # LINEAR counts satisfied implications; RATIO is log2(1 + that count)
    assert factor_value_reference(F.LINEAR, [0, 1, 1, 0]) == 1.0
    assert factor_value_reference(F.LINEAR, [0, 1, 1, 1]) == 3.0
    assert factor_value_reference(F.RATIO, [1, 1, 0, 1]) == 2.0
    assert factor_value_reference(F.RATIO, [1, 1, 1, 0]) == 0.0
    assert factor_value_reference(F.LOGICAL, [1, 1, 1, 0]) == 0.0
    assert factor_value_reference(F.IMPLY_NATURAL_CAT, [2, 1], [2, 0]) == -1.0
    assert factor_value_reference(F.OR_CAT, [0, 0], [2, 1]) == -1.0


@pytest.mark.parametrize("fn,cards,equal_to", CASES + [(F.TABLE, [2, 3, 2], None), (F.TABLE, [3], None)],
                         ids=lambda c: getattr(c, "name", str(c)))
def test_kernel_matches_reference_on_every_assignment(fn, cards, equal_to):
    g, perm, table = _graph(fn, cards, equal_to)
    a = g.arrays
    c = 0.7 * -1.3
    lo, hi = factor_bounds(a)
    values_seen = []
    for values in itertools.product(*[range(k) for k in cards]):
        x = np.zeros(g.num_variables, np.int32)
        x[perm] = values
        expected = c * _reference(fn, values, equal_to, table, cards)
        values_seen.append(expected)
        assert factor_value(a, 0, x, -1, 0) == pytest.approx(expected, rel=1e-15, abs=0)
        assert log_potential(a, x) == pytest.approx(expected, rel=1e-15, abs=0)
        # replacing x[v] by k: same as the reference on the modified values
        for pos, var in enumerate(perm):
            logits = np.full(g.max_cardinality + 1, np.nan)
            conditional_logits(a, x, int(var), logits)
            for k in range(cards[pos]):
                changed = list(values)
                changed[pos] = k
                want = c * _reference(fn, changed, equal_to, table, cards)
                assert factor_value(a, 0, x, int(var), k) == pytest.approx(want, rel=1e-15, abs=0)
                assert logits[k] == pytest.approx(want, rel=1e-15, abs=0)
        # a variable outside the factor: replacing it changes nothing
        other = int(np.setdiff1d(np.arange(g.num_variables), perm)[0])
        assert factor_value(a, 0, x, other, 1) == factor_value(a, 0, x, -1, 0)
    assert lo[0] == pytest.approx(min(values_seen), abs=1e-15)
    assert hi[0] == pytest.approx(max(values_seen), abs=1e-15)


def test_feature_value_is_used():
    # Numbskull's potential() drops the feature value; ours multiplies by it
    g1 = from_factors([2], [0.5], [(F.ISTRUE, 0, [0], None, 1.0)])
    g3 = from_factors([2], [0.5], [(F.ISTRUE, 0, [0], None, 3.0)])
    x = np.ones(1, np.int32)
    assert log_potential(g3.arrays, x) == 3 * log_potential(g1.arrays, x) == 1.5


def test_imply_head_read_through_the_variable_not_the_edge_index():
    # Numbskull's IMPLY_MLN reads var_value[edge index] for the head; with variable ids far from
    # the edge indices the two differ
    g = from_factors([2] * 6, [1.0], [(F.IMPLY_MLN, 0, [4, 5])])
    x = np.array([1, 1, 1, 1, 1, 0], np.int32)   # body true, head (variable 5) false; x[1] is true
    assert log_potential(g.arrays, x) == 0.0


def test_bounds_with_negative_weight_and_several_factors():
    g = from_factors([2, 2, 3], [-2.0, 1.5],
                     [(F.RATIO, 0, [0, 1, 2], [1, 1, 2]), (F.LINEAR, 1, [0, 1, 2], [0, 1, 1], 2.0),
                      (F.OR, 1, [2], [0])])
    lo, hi = factor_bounds(g.arrays)
    for f in range(3):
        sub = from_factors([2, 2, 3], g.weight,
                           [(int(g.function[f]), int(g.weight_id[f]),
                             g.edge_var[g.factor_ptr[f]:g.factor_ptr[f + 1]].tolist(),
                             g.edge_value[g.factor_ptr[f]:g.factor_ptr[f + 1]].tolist(), float(g.feature[f]))])
        states = itertools.product(range(2), range(2), range(3))
        vals = [log_potential(sub.arrays, np.array(v, np.int32)) for v in states]
        assert (lo[f], hi[f]) == pytest.approx((min(vals), max(vals)), abs=1e-15)
    assert hi[0] == pytest.approx(-2.0 * 0.0) and lo[0] == pytest.approx(-2.0 * math.log2(3))
