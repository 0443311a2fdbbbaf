"""DeepDive's binary graph folder: a folder written here with numpy's big-endian structured arrays
(independently of write_deepdive) is read exactly and written back byte for byte; malformed
folders are refused naming file, record and field."""
import os

import numpy as np
import pytest

from relaxtorch.mcmc.factor import (DeepDiveFormatError, FactorFunction as F, exact_marginals, from_pairwise,
                                    ising_grid, potts_grid, random_graph, read_deepdive, write_deepdive)

WEIGHT = np.dtype([("id", ">u8"), ("fixed", "u1"), ("value", ">f8")])
VARIABLE = np.dtype([("id", ">i8"), ("role", "i1"), ("init", ">i8"), ("dtype", ">i2"), ("card", ">i8")])

# the graph: 4 variables (two boolean, one categorical with 3 values, one boolean evidence), 3 weights,
# factors of several functions with negated literals and categorical values
WEIGHTS = [(0, 1, 1.5), (1, 0, -0.25), (2, 1, 3.0)]
VARIABLES = [(0, 0, 0, 0, 2), (1, 0, 1, 0, 2), (2, 0, 2, 1, 3), (3, 1, 1, 0, 2)]
FACTORS = [  # (function, [(vid, equal_to)], weight_id, feature)
    (F.IMPLY_NATURAL, [(0, 1), (1, 0)], 0, 1.0),
    (F.AND_CAT, [(2, 2), (3, 1)], 1, 2.5),
    (F.EQUAL, [(0, 1), (1, 1), (3, 1)], 2, 1.0),
    (F.ISTRUE, [(1, 1)], 1, -1.0),
    (F.IMPLY_MLN_CAT, [(0, 1), (2, 0)], 0, 0.5),
]


def _factor_bytes(factors, order=">"):
    out = b""
    for fn, edges, wid, feat in factors:
        out += np.array([(fn, len(edges))], [("f", order + "u2"), ("a", order + "u8")]).tobytes()
        out += np.array(edges, [("v", order + "u8"), ("e", order + "u8")]).tobytes()
        out += np.array([(wid, feat)], [("w", order + "u8"), ("x", order + "f8")]).tobytes()
    return out


def _write(folder, weights=WEIGHTS, variables=VARIABLES, factors=FACTORS, meta=None, order=">"):
    folder.mkdir(parents=True, exist_ok=True)
    ne = sum(len(f[1]) for f in factors)
    (folder / "graph.meta").write_text(meta or f"{len(weights)},{len(variables)},{len(factors)},{ne}\n")
    wd = WEIGHT.newbyteorder(order) if order == "<" else WEIGHT
    vd = VARIABLE.newbyteorder(order) if order == "<" else VARIABLE
    np.array(weights, wd).tofile(folder / "graph.weights")
    np.array(variables, vd).tofile(folder / "graph.variables")
    (folder / "graph.factors").write_bytes(_factor_bytes(factors, order))
    return folder


def test_an_independently_written_folder_is_read_exactly(tmp_path):
    g = read_deepdive(_write(tmp_path / "g"))
    assert g.weight.tolist() == [1.5, -0.25, 3.0] and g.weight_fixed.tolist() == [True, False, True]
    assert g.cardinality.tolist() == [2, 2, 3, 2]
    assert g.evidence.tolist() == [-1, -1, -1, 1] and g.initial.tolist() == [0, 1, 2, 1]
    assert g.function.tolist() == [int(f[0]) for f in FACTORS]
    assert g.factor_ptr.tolist() == [0, 2, 4, 7, 8, 10]
    assert g.edge_var.tolist() == [v for f in FACTORS for v, _ in f[1]]
    assert g.edge_value.tolist() == [e for f in FACTORS for _, e in f[1]]
    assert g.weight_id.tolist() == [f[2] for f in FACTORS] and g.feature.tolist() == [f[3] for f in FACTORS]


def test_round_trip_is_byte_exact(tmp_path):
    src = _write(tmp_path / "src")
    write_deepdive(read_deepdive(src), tmp_path / "dst")
    for name in ("graph.meta", "graph.weights", "graph.variables", "graph.factors"):
        assert (tmp_path / "dst" / name).read_bytes() == (src / name).read_bytes(), name
    assert sorted(os.listdir(tmp_path / "dst")) == ["graph.factors", "graph.meta", "graph.variables", "graph.weights"]


def test_records_in_any_id_order_and_observation_role(tmp_path):
    # DimmWitted places records by id; role 2 (observation) is evidence too
    variables = [VARIABLES[2], (3, 2, 1, 0, 2), VARIABLES[0], VARIABLES[1]]
    g = read_deepdive(_write(tmp_path / "g", weights=WEIGHTS[::-1], variables=variables))
    assert g.weight.tolist() == [1.5, -0.25, 3.0]
    assert g.cardinality.tolist() == [2, 2, 3, 2] and g.evidence.tolist() == [-1, -1, -1, 1]


@pytest.mark.parametrize("make", [lambda: random_graph(40, 80, seed=3, evidence_fraction=0.2, cardinality=3),
                                  lambda: random_graph(25, 50, seed=4, max_arity=4),
                                  lambda: ising_grid(6, 5, beta=0.4, h=0.1, periodic=False)])
def test_write_then_read_gives_the_same_graph(tmp_path, make):
    g = make()
    h = read_deepdive(write_deepdive(g, tmp_path / "g"))
    for name in ("cardinality", "evidence", "initial", "weight", "weight_fixed", "function", "weight_id",
                 "feature", "factor_ptr", "edge_var", "edge_value", "var_ptr", "var_factor"):
        assert np.array_equal(getattr(g, name), getattr(h, name)), name
    # writing over an existing folder replaces it and leaves no temporary files
    write_deepdive(g.with_weights(np.zeros(g.num_weights)), tmp_path / "g")
    assert read_deepdive(tmp_path / "g").weight.sum() == 0
    assert not [p for p in os.listdir(tmp_path / "g") if p.startswith(".")]


def test_the_read_graph_means_what_deepdive_means(tmp_path):
    g = read_deepdive(_write(tmp_path / "g"))
    marg = exact_marginals(g)
    # brute force with the truth tables written out by hand, x3 = 1 (evidence)
    import itertools
    import math
    weights = {}
    for x0, x1, x2 in itertools.product(range(2), range(2), range(3)):
        x3 = 1
        imply = 0 if x0 != 1 else (1 if x1 == 0 else -1)
        and_cat = 1 if (x2 == 2 and x3 == 1) else 0
        equal = 1 if x0 == x1 == x3 else -1
        istrue = 1 if x1 == 1 else -1
        mln = 1 if x0 != 1 else (1 if x2 == 0 else 0)
        weights[x0, x1, x2] = math.exp(1.5 * imply - 0.25 * 2.5 * and_cat + 3.0 * equal + 0.25 * istrue
                                       + 1.5 * 0.5 * mln)
    z = sum(weights.values())
    for k in range(3):
        assert marg[2, k] == pytest.approx(sum(w for x, w in weights.items() if x[2] == k) / z, rel=1e-12)
    assert marg[0, 1] == pytest.approx(sum(w for x, w in weights.items() if x[0] == 1) / z, rel=1e-12)


def _error(tmp_path, **kwargs):
    folder = _write(tmp_path / "bad", **kwargs)
    with pytest.raises(DeepDiveFormatError) as info:
        read_deepdive(folder)
    return str(info.value)


def test_factor_pointing_at_a_missing_variable(tmp_path):
    factors = FACTORS[:2] + [(F.EQUAL, [(0, 1), (9, 1)], 2, 1.0)]
    msg = _error(tmp_path, factors=factors)
    assert "graph.factors[2].variable[1]: 9" in msg and "missing variable" in msg


def test_cardinality_zero(tmp_path):
    msg = _error(tmp_path, variables=VARIABLES[:2] + [(2, 0, 0, 1, 0)] + VARIABLES[3:])
    assert "graph.variables[2].cardinality: 0" in msg and "cardinality 0" in msg


def test_evidence_out_of_range(tmp_path):
    msg = _error(tmp_path, variables=VARIABLES[:3] + [(3, 1, 2, 0, 2)])
    assert "graph.variables[3].initial_value: 2" in msg and "evidence value out of range for cardinality 2" in msg


def test_categorical_value_out_of_range(tmp_path):
    msg = _error(tmp_path, factors=[(F.AND_CAT, [(2, 3)], 0, 1.0)])
    assert "graph.factors[0].equal_to[0]: 3" in msg and "cardinality 3" in msg


def test_missing_weight_and_unknown_function(tmp_path):
    assert "graph.factors[0].weight_id: 7" in _error(tmp_path, factors=[(F.OR, [(0, 1)], 7, 1.0)])
    msg = _error(tmp_path, factors=[(F.TABLE, [(0, 1)], 0, 1.0)])
    assert "graph.factors[0].function: 100" in msg and "not a DeepDive factor function" in msg


@pytest.mark.parametrize("name,cut", [("graph.weights", 5), ("graph.variables", 1), ("graph.factors", 3),
                                      ("graph.factors", 40)])
def test_truncated_files(tmp_path, name, cut):
    folder = _write(tmp_path / "g")
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:-cut])
    with pytest.raises(DeepDiveFormatError, match=rf"Invalid {name}") as info:
        read_deepdive(folder)
    assert "truncated" in str(info.value)


def test_trailing_bytes_and_edge_count(tmp_path):
    folder = _write(tmp_path / "g")
    (folder / "graph.factors").write_bytes((folder / "graph.factors").read_bytes() + b"\0" * 5)
    with pytest.raises(DeepDiveFormatError, match="5 bytes after the last"):
        read_deepdive(folder)
    msg = _error(tmp_path, meta="3,4,5,9\n")
    assert "graph.factors[4].arity: 2" in msg and "more edges than the 9" in msg


def test_little_endian_files_are_detected(tmp_path):
    msg = _error(tmp_path, order="<")
    assert "Invalid graph.weights[1].id" in msg and "little-endian" in msg
    # variables alone little-endian
    folder = _write(tmp_path / "v")
    np.array(VARIABLES, VARIABLE.newbyteorder("<")).tofile(folder / "graph.variables")
    with pytest.raises(DeepDiveFormatError, match="graph.variables.*little-endian"):
        read_deepdive(folder)
    # factors alone little-endian: the first arity is implausible, byte-swapped it fits
    folder = _write(tmp_path / "f")
    (folder / "graph.factors").write_bytes(_factor_bytes(FACTORS, "<"))
    with pytest.raises(DeepDiveFormatError, match=r"graph.factors\[0\]\.arity.*little-endian"):
        read_deepdive(folder)


def test_meta_and_missing_files(tmp_path):
    assert "num_factors" in _error(tmp_path, meta="3,4,x,10\n")
    assert "expected" in _error(tmp_path, meta="3,4\n")
    folder = _write(tmp_path / "g")
    (folder / "graph.domains").write_bytes(b"\0" * 16)
    with pytest.raises(DeepDiveFormatError, match="graph.domains"):
        read_deepdive(folder)
    (folder / "graph.domains").unlink()
    (folder / "graph.weights").unlink()
    with pytest.raises(DeepDiveFormatError, match="graph.weights is missing"):
        read_deepdive(folder)
    with pytest.raises(DeepDiveFormatError, match="not a folder"):
        read_deepdive(tmp_path / "nothing")


def test_meta_with_older_deepdive_paths_is_read(tmp_path):
    g = read_deepdive(_write(tmp_path / "g", meta="3,4,5,10,/a/graph.weights,/a/graph.variables,/a/f,/a/e\n"))
    assert g.num_factors == 5


def test_writer_refuses_factors_deepdive_cannot_encode(tmp_path):
    with pytest.raises(ValueError, match="no DeepDive encoding"):
        write_deepdive(potts_grid(3, 3, 3, 0.5), tmp_path / "p")
    with pytest.raises(ValueError, match="TABLE"):
        write_deepdive(from_pairwise([(0, 1)], np.eye(2)), tmp_path / "t")
    assert not (tmp_path / "p" / "graph.meta").exists()
