"""DeepDive's binary factor-graph folder (graph.meta, graph.weights, graph.variables, graph.factors),
read and written exactly as DimmWitted (``src/binary_format.cc``) and Numbskull (``dataloading.py``)
read it, so that graphs grounded by DeepDive run unchanged.  Every number is big-endian:

* ``graph.meta``: one text line ``num_weights,num_variables,num_factors,num_edges`` (older DeepDive
  appends file paths; fields after the fourth are ignored);
* ``graph.weights``: per weight ``id u64, is_fixed u8, initial_value f64`` (17 bytes), any order;
* ``graph.variables``: per variable ``id u64, role u8, initial_value u64, data_type u16,
  cardinality u64`` (27 bytes), any order; role 0 = query, 1 = evidence, 2 = observation (both
  clamped here, as DimmWitted's ``is_evidence = role >= 1``); data type 0 = boolean (cardinality 2),
  1 = categorical;
* ``graph.factors``: per factor ``function u16, arity u64, arity × (variable_id u64, equal_to u64),
  weight_id u64, feature_value f64``, in factor order (``equal_to``: the ``edge_value`` of
  ``functions.py``).

A malformed folder is refused with a ``DeepDiveFormatError`` (a ``ValueError``) naming the file, the
record and the field and saying why; values that are implausible big-endian but plausible once
byte-swapped are reported as a wrong byte order.  Categorical domain files (``graph.domains``:
sparse category values) are not supported and are refused rather than read wrongly.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..._numba import njit
from .functions import FactorFunction
from .graph import FactorGraph

__all__ = ["DeepDiveFormatError", "read_deepdive", "write_deepdive", "DEEPDIVE_FUNCTIONS"]

WEIGHT_RECORD = np.dtype([("id", ">u8"), ("is_fixed", "u1"), ("initial_value", ">f8")])
VARIABLE_RECORD = np.dtype([("id", ">u8"), ("role", "u1"), ("initial_value", ">u8"), ("data_type", ">u2"),
                            ("cardinality", ">u8")])
DEEPDIVE_FUNCTIONS = frozenset(int(f) for f in FactorFunction if f not in (FactorFunction.TABLE,
                                                                             FactorFunction.POTTS))
_FILES = ("graph.meta", "graph.weights", "graph.variables", "graph.factors")
_MAX_CARDINALITY = 2 ** 31


class DeepDiveFormatError(ValueError):
    """A DeepDive graph folder that cannot be read as it stands (file, record, field and why)."""


def _swap(value: int, nbytes: int) -> int:
    return int.from_bytes(int(value).to_bytes(nbytes, "big"), "little")


def _fail(where: str, value, why: str, *, nbytes: int = 0, plausible=None):
    """A DeepDiveFormatError; when the byte-swapped value would pass ``plausible``, say so."""
    if nbytes and plausible is not None and plausible(_swap(value, nbytes)):
        why += (f"; byte-swapped it would be {_swap(value, nbytes)}: the file looks little-endian, "
                f"DeepDive files are big-endian")
    return DeepDiveFormatError(f"Invalid {where}: {value!r} ({why})")


def _read_meta(path: Path) -> tuple[int, int, int, int]:
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise DeepDiveFormatError(f"Invalid {path.name}: not text (expected one line "
                                  f"'num_weights,num_variables,num_factors,num_edges')") from None
    fields = text.strip().split(",")
    if len(fields) < 4:
        raise DeepDiveFormatError(f"Invalid {path.name}: {text.strip()!r} (expected "
                                  f"'num_weights,num_variables,num_factors,num_edges')")
    counts = []
    for name, field in zip(("num_weights", "num_variables", "num_factors", "num_edges"), fields[:4]):
        try:
            value = int(field.strip())
        except ValueError:
            raise DeepDiveFormatError(f"Invalid {path.name}.{name}: {field!r} (not an integer)") from None
        if value < 0:
            raise DeepDiveFormatError(f"Invalid {path.name}.{name}: {value} (must be >= 0)")
        counts.append(value)
    return tuple(counts)


def _records(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    size = path.stat().st_size
    if size != count * dtype.itemsize:
        kind = "truncated" if size < count * dtype.itemsize else "longer than announced"
        raise DeepDiveFormatError(
            f"Invalid {path.name}: {size} bytes ({kind}: graph.meta announces {count} records of "
            f"{dtype.itemsize} bytes = {count * dtype.itemsize} bytes)")
    return np.fromfile(path, dtype=dtype, count=count)


def _by_id(name: str, ids: np.ndarray, count: int) -> np.ndarray:
    """The permutation putting records in id order; errors for ids out of range or repeated."""
    bad = ids >= count
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(f"{name}[{i}].id", int(ids[i]), f"ids run from 0 to {count - 1}, as graph.meta announces {count}",
                    nbytes=8, plausible=lambda v: v < count)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(np.diff(ids[order]) == 0)
    if dup.size:
        a, b = int(order[dup[0]]), int(order[dup[0] + 1])
        raise _fail(f"{name}[{b}].id", int(ids[b]), f"the same id as record {a}")
    return order


@njit(cache=True)
def _u64(buf, pos):
    value = np.uint64(0)
    for b in range(8):
        value = (value << np.uint64(8)) | np.uint64(buf[pos + b])
    return value


@njit(cache=True)
def _scan_factors(buf, m, max_edges, function, factor_ptr, edge_var, edge_value, weight_id, feature_bits):
    """Parse graph.factors; returns (status, factor, byte position, value): 0 ok, 1 truncated,
    2 arity larger than the bytes left, 3 more edges than announced."""
    n = buf.size
    pos = 0
    e = 0
    factor_ptr[0] = 0
    for f in range(m):
        if pos + 10 > n:
            return 1, f, pos, np.uint64(0)
        function[f] = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        arity = _u64(buf, pos + 2)
        pos += 10
        if arity > np.uint64((n - pos) // 16):
            return 2, f, pos, arity
        a = np.int64(arity)
        if e + a > max_edges:
            return 3, f, pos, arity
        for k in range(a):
            edge_var[e] = _u64(buf, pos)
            edge_value[e] = _u64(buf, pos + 8)
            pos += 16
            e += 1
        factor_ptr[f + 1] = e
        if pos + 16 > n:
            return 1, f, pos, np.uint64(0)
        weight_id[f] = _u64(buf, pos)
        feature_bits[f] = _u64(buf, pos + 8)
        pos += 16
    return 0, m, pos, np.uint64(0)


def _read_factors(path: Path, m: int, num_edges: int):
    buf = np.fromfile(path, dtype=np.uint8)
    function = np.zeros(m, np.int64)
    ptr = np.zeros(m + 1, np.int64)
    edge_var = np.zeros(num_edges, np.uint64)
    edge_value = np.zeros(num_edges, np.uint64)
    weight_id = np.zeros(m, np.uint64)
    feature_bits = np.zeros(m, np.uint64)
    status, f, pos, value = _scan_factors(buf, m, num_edges, function, ptr, edge_var, edge_value, weight_id,
                                          feature_bits)
    name = path.name
    if status == 1:
        raise DeepDiveFormatError(f"Invalid {name}[{f}]: truncated at byte {pos} of {buf.size} "
                                  f"(graph.meta announces {m} factors)")
    if status == 2:
        left = buf.size - pos
        raise _fail(f"{name}[{f}].arity", int(value), f"only {left} bytes are left, room for {left // 16} "
                    f"variables: truncated or corrupt", nbytes=8, plausible=lambda v: 0 < v <= left // 16)
    if status == 3:
        raise _fail(f"{name}[{f}].arity", int(value), f"more edges than the {num_edges} graph.meta announces",
                    nbytes=8, plausible=lambda v: 0 < v <= num_edges)
    if pos != buf.size:
        raise DeepDiveFormatError(f"Invalid {name}: {buf.size - pos} bytes after the last of the {m} factors "
                                  f"graph.meta announces")
    if ptr[m] != num_edges:
        raise DeepDiveFormatError(f"Invalid {name}: {int(ptr[m])} edges (graph.meta announces {num_edges})")
    return function, ptr, edge_var, edge_value, weight_id, feature_bits.view(np.float64)


def read_deepdive(folder) -> FactorGraph:
    """The factor graph in DeepDive's binary folder ``folder`` (see the module docstring).

    >>> import tempfile
    >>> from relaxtorch.mcmc.factor import ising_grid
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = write_deepdive(ising_grid(3, 3, beta=0.2, h=0.1), d)
    ...     read_deepdive(d).num_factors
    27
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DeepDiveFormatError(f"Invalid folder: {str(folder)!r} (not a folder)")
    for name in _FILES:
        if not (folder / name).is_file():
            raise DeepDiveFormatError(f"Invalid folder: {str(folder)!r} ({name} is missing)")
    domains = folder / "graph.domains"
    if domains.is_file() and domains.stat().st_size > 0:
        raise DeepDiveFormatError(f"Invalid graph.domains: {str(domains)!r} (categorical domain files are not "
                                  f"supported; categories must be 0..cardinality-1)")
    nw, nv, nf, ne = _read_meta(folder / "graph.meta")

    w = _records(folder / "graph.weights", WEIGHT_RECORD, nw)
    order = _by_id("graph.weights", w["id"], nw)
    bad = w["is_fixed"] > 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(f"graph.weights[{i}].is_fixed", int(w["is_fixed"][i]), "must be 0 (learnable) or 1 (fixed)")
    bad = ~np.isfinite(w["initial_value"])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(f"graph.weights[{i}].initial_value", float(w["initial_value"][i]),
                    "not finite; a little-endian file reads as garbage floats")
    weight = w["initial_value"][order].astype(np.float64)
    fixed = w["is_fixed"][order].astype(bool)

    v = _records(folder / "graph.variables", VARIABLE_RECORD, nv)
    order = _by_id("graph.variables", v["id"], nv)
    checks = (
        ("role", v["role"] > 2, "must be 0 (query), 1 (evidence) or 2 (observation)", 0, None),
        ("data_type", v["data_type"] > 1, "must be 0 (boolean) or 1 (categorical)", 2, lambda x: x <= 1),
        ("cardinality", v["cardinality"] == 0, "cardinality 0: a variable needs at least one value", 0, None),
        ("cardinality", v["cardinality"] >= _MAX_CARDINALITY, "implausible (>= 2**31)", 8,
         lambda x: 0 < x < _MAX_CARDINALITY),
        ("cardinality", (v["data_type"] == 0) & (v["cardinality"] != 2), "a boolean variable has cardinality 2",
         8, lambda x: x == 2),
        ("initial_value", v["initial_value"] >= v["cardinality"],
         "out of range for the variable's cardinality", 8, None),
    )
    for field, bad, why, nbytes, plausible in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = int(v[field][i])
            if field == "initial_value":
                card = int(v["cardinality"][i])
                kind = "evidence value" if v["role"][i] >= 1 else "initial value"
                why = f"{kind} out of range for cardinality {card}"
                plausible = lambda x, card=card: x < card  # noqa: E731
            raise _fail(f"graph.variables[{i}].{field}", value, why, nbytes=nbytes, plausible=plausible)
    cardinality = v["cardinality"][order].astype(np.int64)
    initial = v["initial_value"][order].astype(np.int64)
    evidence = np.where(v["role"][order] >= 1, initial, -1)

    function, ptr, edge_var, edge_value, weight_id, feature = _read_factors(folder / "graph.factors", nf, ne)
    unknown = ~np.isin(function, sorted(DEEPDIVE_FUNCTIONS))
    if unknown.any():
        f = int(np.flatnonzero(unknown)[0])
        raise _fail(f"graph.factors[{f}].function", int(function[f]),
                    f"not a DeepDive factor function; known: {sorted(DEEPDIVE_FUNCTIONS)}", nbytes=2,
                    plausible=lambda x: x in DEEPDIVE_FUNCTIONS)
    factor_of_edge = np.repeat(np.arange(nf), np.diff(ptr))
    bad = edge_var >= nv
    if bad.any():
        e = int(np.flatnonzero(bad)[0])
        f = int(factor_of_edge[e])
        raise _fail(f"graph.factors[{f}].variable[{e - int(ptr[f])}]", int(edge_var[e]),
                    f"factor {f} points at a missing variable; graph.variables holds {nv}",
                    nbytes=8, plausible=lambda x: x < nv)
    edge_var = edge_var.astype(np.int64)
    bad = edge_value >= cardinality[edge_var].astype(np.uint64)
    if bad.any():
        e = int(np.flatnonzero(bad)[0])
        f = int(factor_of_edge[e])
        card = int(cardinality[edge_var[e]])
        raise _fail(f"graph.factors[{f}].equal_to[{e - int(ptr[f])}]", int(edge_value[e]),
                    f"variable {int(edge_var[e])} has cardinality {card}", nbytes=8, plausible=lambda x: x < card)
    bad = weight_id >= nw
    if bad.any():
        f = int(np.flatnonzero(bad)[0])
        raise _fail(f"graph.factors[{f}].weight_id", int(weight_id[f]),
                    f"factor {f} points at a missing weight; graph.weights holds {nw}",
                    nbytes=8, plausible=lambda x: x < nw)
    bad = ~np.isfinite(feature)
    if bad.any():
        f = int(np.flatnonzero(bad)[0])
        raise _fail(f"graph.factors[{f}].feature_value", float(feature[f]),
                    "not finite; a little-endian file reads as garbage floats")
    try:
        return FactorGraph(cardinality=cardinality, weight=weight, weight_fixed=fixed, function=function,
                           weight_id=weight_id.astype(np.int64), feature=feature, factor_ptr=ptr,
                           edge_var=edge_var, edge_value=edge_value.astype(np.int64), evidence=evidence,
                           initial=initial)
    except ValueError as exc:  # e.g. a variable twice in one factor
        raise DeepDiveFormatError(f"{folder / 'graph.factors'}: {exc}") from None


def _factor_bytes(graph: FactorGraph) -> bytes:
    m = graph.num_factors
    arity = graph.arity
    # one record per factor: header (u16 + u64), arity edge pairs, trailer (u64 + f64)
    sizes = 10 + 16 * arity + 16
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    out = np.zeros(int(starts[-1]), np.uint8)
    head = np.zeros(m, np.dtype([("function", ">u2"), ("arity", ">u8")]))
    head["function"], head["arity"] = graph.function, arity
    tail = np.zeros(m, np.dtype([("weight_id", ">u8"), ("feature_value", ">f8")]))
    tail["weight_id"], tail["feature_value"] = graph.weight_id, graph.feature
    edges = np.zeros(graph.num_edges, np.dtype([("variable_id", ">u8"), ("equal_to", ">u8")]))
    edges["variable_id"], edges["equal_to"] = graph.edge_var, graph.edge_value
    head_b = head.view(np.uint8).reshape(m, 10)
    tail_b = tail.view(np.uint8).reshape(m, 16)
    edge_b = edges.view(np.uint8).reshape(-1, 16)
    out[(starts[:-1, None] + np.arange(10)).ravel()] = head_b.ravel()
    out[(starts[1:, None] - 16 + np.arange(16)).ravel()] = tail_b.ravel()
    if graph.num_edges:
        edge_start = np.repeat(starts[:-1] + 10, arity) + 16 * (np.arange(graph.num_edges)
                                                                 - np.repeat(graph.factor_ptr[:-1], arity))
        out[(edge_start[:, None] + np.arange(16)).ravel()] = edge_b.ravel()
    return out.tobytes()


def write_deepdive(graph: FactorGraph, folder) -> Path:
    """Write ``graph`` as a DeepDive binary folder (created if missing; the four files replaced).

    Each file is written to a temporary file in ``folder`` and renamed over its name, graph.meta
    last, so a reader never sees a torn file.  Evidence variables are written with role 1 and their
    value as initial value; cardinality 2 as boolean (data type 0), others as categorical.  TABLE
    and POTTS factors have no DeepDive encoding and are refused.
    """
    folder = Path(folder)
    other = ~np.isin(graph.function, sorted(DEEPDIVE_FUNCTIONS))
    if other.any():
        f = int(np.flatnonzero(other)[0])
        raise ValueError(f"Invalid graph: factor {f} has function {FactorFunction(int(graph.function[f])).name} "
                         f"(no DeepDive encoding; DeepDive's are {sorted(DEEPDIVE_FUNCTIONS)})")
    w = np.zeros(graph.num_weights, WEIGHT_RECORD)
    w["id"] = np.arange(graph.num_weights)
    w["is_fixed"] = graph.weight_fixed
    w["initial_value"] = graph.weight
    v = np.zeros(graph.num_variables, VARIABLE_RECORD)
    v["id"] = np.arange(graph.num_variables)
    v["role"] = graph.evidence >= 0
    v["initial_value"] = graph.initial
    v["data_type"] = graph.cardinality != 2
    v["cardinality"] = graph.cardinality
    meta = f"{graph.num_weights},{graph.num_variables},{graph.num_factors},{graph.num_edges}\n".encode()
    contents = [("graph.weights", w.tobytes()), ("graph.variables", v.tobytes()),
                ("graph.factors", _factor_bytes(graph)), ("graph.meta", meta)]
    folder.mkdir(parents=True, exist_ok=True)
    temps = []
    try:
        for name, data in contents:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            temps.append((tmp, name))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
        for tmp, name in temps:
            os.replace(tmp, folder / name)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder
