"""FactorGraph: validation errors name the array, the index and why; the reverse adjacency; values
are immutable; with_weights / with_evidence."""
import numpy as np
import pytest

from relaxtorch.mcmc.factor import FactorFunction as F, FactorGraph, from_factors, random_graph


def _kwargs(**changes):
    base = dict(cardinality=[2, 3, 2], weight=[0.5, -1.0], function=[F.AND, F.AND_CAT, F.TABLE],
                weight_id=[0, 1, 1], factor_ptr=[0, 2, 4, 6], edge_var=[0, 1, 1, 2, 0, 2],
                edge_value=[1, 2, 0, 1, 0, 0], table_ptr=[0, 0, 0, 4], table=[0., 1., 2., 3.])
    base.update(changes)
    return base


def test_a_valid_graph_and_its_reverse_adjacency():
    g = FactorGraph(**_kwargs())
    assert (g.num_variables, g.num_factors, g.num_weights, g.num_edges, g.max_cardinality) == (3, 3, 2, 6, 3)
    # brute force: factors touching each variable
    for v in range(3):
        want = [f for f in range(3) if v in g.edge_var[g.factor_ptr[f]:g.factor_ptr[f + 1]]]
        assert g.var_factor[g.var_ptr[v]:g.var_ptr[v + 1]].tolist() == want
    a = g.arrays
    assert a._fields[:3] == ("cardinality", "evidence", "initial")
    assert all(arr.flags.c_contiguous and not arr.flags.writeable for arr in a)
    assert a.cardinality.dtype == np.int64 and a.weight.dtype == np.float64 and a.weight_fixed.dtype == bool


def test_arrays_are_copies_and_read_only():
    card = np.array([2, 3, 2])
    g = FactorGraph(**_kwargs(cardinality=card))
    card[0] = 9
    assert g.cardinality[0] == 2
    with pytest.raises(ValueError):
        g.cardinality[0] = 5
    with pytest.raises(AttributeError):
        g.weight = np.zeros(2)


BAD = [
    # (change, array named in the message, words in the why)
    (dict(edge_var=[0, 1, 1, 7, 0, 2]), "edge_var[3]", "factor 1 points at a missing variable"),
    (dict(edge_var=[0, 1, 1, -1, 0, 2]), "edge_var[3]", "missing variable"),
    (dict(cardinality=[2, 0, 2]), "cardinality[1]", "at least one value"),
    (dict(evidence=[-1, 3, 0]), "evidence[1]", "out of range for cardinality 3"),
    (dict(evidence=[-2, 0, 0]), "evidence[0]", "out of range"),
    (dict(initial=[2, 0, 0]), "initial[0]", "out of range for cardinality 2"),
    (dict(weight_id=[0, 2, 1]), "weight_id[1]", "missing weight"),
    (dict(function=[F.AND, 5, F.TABLE]), "function[1]", "unknown factor function"),
    (dict(edge_value=[1, 3, 0, 1, 0, 0]), "edge_value[1]", "variable 1 has cardinality 3"),
    (dict(edge_var=[0, 0, 1, 2, 0, 2], edge_value=[1, 1, 0, 1, 0, 0]), "edge_var[1]", "appears twice in factor 0"),
    (dict(factor_ptr=[0, 2, 2, 6], edge_var=[0, 1, 1, 2, 0, 2]), "factor_ptr[2]", "arity 0"),
    (dict(factor_ptr=[0, 2, 4, 5]), "factor_ptr[3]", "number of edges, 6"),
    (dict(table_ptr=[0, 0, 0, 3], table=[0., 1., 2.]), "table_ptr[3]", "needs 4 entries"),
    (dict(table_ptr=[0, 1, 1, 5], table=[9., 0., 1., 2., 3.]), "table_ptr[1]", "not a TABLE factor"),
    (dict(weight=[0.5, np.nan]), "weight[1]", "finite"),
    (dict(feature=[1.0, np.inf, 1.0]), "feature[1]", "finite"),
    (dict(weight_fixed=[True]), "weight_fixed", "one per weight"),
    (dict(cardinality=[2.5, 3, 2]), "cardinality", "integers"),
]


@pytest.mark.parametrize("change,name,why", BAD, ids=[b[1] for b in BAD])
def test_malformed_graphs_are_refused_naming_array_index_and_why(change, name, why):
    with pytest.raises(ValueError) as info:
        FactorGraph(**_kwargs(**change))
    message = str(info.value)
    assert message.startswith(f"Invalid {name}"), message
    assert why in message, message


def test_evidence_variables_start_at_their_value():
    g = FactorGraph(**_kwargs(evidence=[-1, 2, -1], initial=[1, 0, 1]))
    assert g.initial.tolist() == [1, 2, 1]


def test_with_weights_and_with_evidence_return_new_graphs():
    g = random_graph(8, 10, seed=3)
    h = g.with_weights(np.arange(10.0))
    assert h.weight.tolist() == list(range(10)) and g.weight.tolist() != h.weight.tolist()
    assert np.array_equal(h.edge_var, g.edge_var) and np.array_equal(h.var_factor, g.var_factor)
    e = g.with_evidence({2: 1, 5: 0})
    assert e.evidence[[2, 5]].tolist() == [1, 0] and (g.evidence == -1).all()
    assert e.with_evidence(np.full(8, -1)).evidence.tolist() == [-1] * 8
    with pytest.raises(ValueError, match=r"Invalid evidence\[2\]"):
        g.with_evidence({2: 2})
    with pytest.raises(ValueError, match="Invalid values"):
        g.with_weights([1.0])


def test_from_factors_rejects_malformed_specs():
    with pytest.raises(ValueError, match=r"Invalid factors\[0\]"):
        from_factors([2, 2], [1.0], [(F.AND, 0)])
    with pytest.raises(ValueError, match=r"Invalid factors\[0\]"):
        from_factors([2, 2], [1.0], [(F.AND, 0, [0, 1], [1])])
