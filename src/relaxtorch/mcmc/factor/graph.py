"""``FactorGraph``: a frozen, validated factor graph of CSR arrays, with both adjacency directions.

p(x) ∝ exp(Σ_f w[weight_id[f]] · feature[f] · φ_f(x_f)) with evidence variables clamped
(DeepDive's log-linear model).  Factor f's edges are ``factor_ptr[f]:factor_ptr[f+1]`` of
``edge_var``/``edge_value``; TABLE factors read ``table[table_ptr[f]:table_ptr[f+1]]``
(row-major over their variables' values).  The reverse direction, ``var_ptr``/``var_factor``,
lists the factors touching each variable (in increasing factor order).  ``GraphArrays`` is
the same data as one NamedTuple that numba kernels take as a single argument.
"""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import NamedTuple

import numpy as np

from .functions import FactorFunction

__all__ = ["FactorGraph", "GraphArrays"]


class GraphArrays(NamedTuple):
    """The arrays of a ``FactorGraph`` (contiguous, read-only), the argument of every kernel."""
    cardinality: np.ndarray   # int64[n]
    evidence: np.ndarray      # int64[n], -1 = free
    initial: np.ndarray       # int64[n]
    weight: np.ndarray        # float64[W]
    weight_fixed: np.ndarray  # bool[W]
    function: np.ndarray      # int64[m]
    weight_id: np.ndarray     # int64[m]
    feature: np.ndarray       # float64[m]
    factor_ptr: np.ndarray    # int64[m+1]
    edge_var: np.ndarray      # int64[E]
    edge_value: np.ndarray    # int64[E]
    table_ptr: np.ndarray     # int64[m+1]
    table: np.ndarray         # float64[T]
    var_ptr: np.ndarray       # int64[n+1]
    var_factor: np.ndarray    # int64[E]


_KNOWN = np.array(sorted(int(f) for f in FactorFunction), dtype=np.int64)


def _bad(name, index, value, why):
    return ValueError(f"Invalid {name}[{index}]: {value!r} ({why})")


def _array(name, value, dtype, ndim=1):
    try:
        raw = np.asarray(value)
    except Exception as exc:  # ragged lists
        raise ValueError(f"Invalid {name}: {type(value).__name__} ({exc})") from None
    if raw.ndim != ndim:
        raise ValueError(f"Invalid {name}: shape {raw.shape} (expected a 1-D array)")
    if np.dtype(dtype).kind in "iu" and raw.size and raw.dtype.kind not in "iub":
        if raw.dtype.kind == "f" and np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
        else:
            raise ValueError(f"Invalid {name}: dtype {raw.dtype} (expected integers)")
    arr = np.ascontiguousarray(raw, dtype=dtype).copy()
    arr.setflags(write=False)
    return arr


def _first_bad(mask):
    return int(np.flatnonzero(mask)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class FactorGraph:
    """A factor graph, validated at construction (errors name the array, the index and why).

    >>> g = FactorGraph(cardinality=[2, 2], weight=[0.5], function=[FactorFunction.EQUAL],
    ...                 weight_id=[0], factor_ptr=[0, 2], edge_var=[0, 1])
    >>> g.num_variables, g.num_factors, g.num_edges, g.var_ptr.tolist()
    (2, 1, 2, [0, 1, 2])
    """
    cardinality: np.ndarray
    weight: np.ndarray
    function: np.ndarray
    weight_id: np.ndarray
    factor_ptr: np.ndarray
    edge_var: np.ndarray
    edge_value: np.ndarray | None = None   # default 1 (the boolean atom) on every edge
    feature: np.ndarray | None = None      # default 1.0
    evidence: np.ndarray | None = None     # default all free (-1)
    initial: np.ndarray | None = None      # default 0; evidence variables start at their value
    weight_fixed: np.ndarray | None = None  # default all fixed
    table_ptr: np.ndarray | None = None    # default all empty
    table: np.ndarray | None = None
    var_ptr: np.ndarray = dataclasses.field(init=False, repr=False)
    var_factor: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        card = _array("cardinality", self.cardinality, np.int64)
        n = card.size
        if n and card.min() < 1:
            i = _first_bad(card < 1)
            raise _bad("cardinality", i, int(card[i]), "a variable needs at least one value")
        weight = _array("weight", self.weight, np.float64)
        if not np.all(np.isfinite(weight)):
            i = _first_bad(~np.isfinite(weight))
            raise _bad("weight", i, float(weight[i]), "weights must be finite")
        nw = weight.size
        fixed = (np.ones(nw, bool) if self.weight_fixed is None
                 else _array("weight_fixed", self.weight_fixed, np.bool_))
        if fixed.size != nw:
            raise ValueError(f"Invalid weight_fixed: length {fixed.size} (expected {nw}, one per weight)")
        function = _array("function", self.function, np.int64)
        m = function.size
        unknown = ~np.isin(function, _KNOWN)
        if unknown.any():
            i = _first_bad(unknown)
            raise _bad("function", i, int(function[i]), f"unknown factor function; known: {_KNOWN.tolist()}")
        wid = _array("weight_id", self.weight_id, np.int64)
        if wid.size != m:
            raise ValueError(f"Invalid weight_id: length {wid.size} (expected {m}, one per factor)")
        if m and (wid.min() < 0 or wid.max() >= nw):
            i = _first_bad((wid < 0) | (wid >= nw))
            raise _bad("weight_id", i, int(wid[i]), f"factor {i} points at a missing weight; there are {nw}")
        feature = np.ones(m) if self.feature is None else _array("feature", self.feature, np.float64)
        if feature.size != m:
            raise ValueError(f"Invalid feature: length {feature.size} (expected {m}, one per factor)")
        if not np.all(np.isfinite(feature)):
            i = _first_bad(~np.isfinite(feature))
            raise _bad("feature", i, float(feature[i]), "feature values must be finite")
        ptr = _array("factor_ptr", self.factor_ptr, np.int64)
        if ptr.size != m + 1:
            raise ValueError(f"Invalid factor_ptr: length {ptr.size} (expected num_factors + 1 = {m + 1})")
        if ptr[0] != 0:
            raise _bad("factor_ptr", 0, int(ptr[0]), "must start at 0")
        arity = np.diff(ptr)
        if m and arity.min() < 1:
            i = _first_bad(arity < 1)
            raise _bad("factor_ptr", i + 1, int(ptr[i + 1]), f"factor {i} has arity {int(arity[i])}; needs >= 1")
        ev = _array("edge_var", self.edge_var, np.int64)
        ne = ev.size
        if ptr[-1] != ne:
            raise _bad("factor_ptr", m, int(ptr[-1]), f"must end at the number of edges, {ne}")
        if ne and (ev.min() < 0 or ev.max() >= n):
            e = _first_bad((ev < 0) | (ev >= n))
            f = int(np.searchsorted(ptr, e, side="right") - 1)
            raise _bad("edge_var", e, int(ev[e]), f"factor {f} points at a missing variable; there are {n}")
        val = np.ones(ne, np.int64) if self.edge_value is None else _array("edge_value", self.edge_value, np.int64)
        if val.size != ne:
            raise ValueError(f"Invalid edge_value: length {val.size} (expected {ne}, one per edge)")
        edge_card = card[ev] if ne else np.zeros(0, np.int64)
        tables = function == FactorFunction.TABLE
        valueless = tables | (function == FactorFunction.POTTS)
        check = ~np.repeat(valueless, arity) if ne else np.zeros(0, bool)
        out = check & ((val < 0) | (val >= edge_card))
        if out.any():
            e = _first_bad(out)
            raise _bad("edge_value", e, int(val[e]),
                       f"variable {int(ev[e])} has cardinality {int(edge_card[e])}")
        factor_of_edge = np.repeat(np.arange(m, dtype=np.int64), arity)
        if ne:
            order = np.lexsort((ev, factor_of_edge))
            dup = (np.diff(factor_of_edge[order]) == 0) & (np.diff(ev[order]) == 0)
            if dup.any():
                e = int(order[_first_bad(dup) + 1])
                raise _bad("edge_var", e, int(ev[e]),
                           f"variable appears twice in factor {int(factor_of_edge[e])}")
        tptr = np.zeros(m + 1, np.int64) if self.table_ptr is None else _array("table_ptr", self.table_ptr, np.int64)
        table = np.zeros(0) if self.table is None else _array("table", self.table, np.float64)
        if tptr.size != m + 1:
            raise ValueError(f"Invalid table_ptr: length {tptr.size} (expected num_factors + 1 = {m + 1})")
        if tptr[0] != 0 or tptr[-1] != table.size:
            raise ValueError(f"Invalid table_ptr: starts at {int(tptr[0])}, ends at {int(tptr[-1])} "
                             f"(must run from 0 to len(table) = {table.size})")
        tlen = np.diff(tptr)
        if m and tlen.min() < 0:
            i = _first_bad(tlen < 0)
            raise _bad("table_ptr", i + 1, int(tptr[i + 1]), "must not decrease")
        if m:
            log_states = np.zeros(m)
            np.add.at(log_states, factor_of_edge, np.log(edge_card.astype(np.float64)))
            need = np.zeros(m, np.int64)
            for f in np.flatnonzero(tables):
                if log_states[f] > np.log(2.0 ** 40):
                    raise _bad("function", int(f), int(function[f]), "TABLE factor has over 2**40 entries")
                need[f] = int(np.prod(edge_card[ptr[f]:ptr[f + 1]]))
            wrong = tlen != need
            if wrong.any():
                i = _first_bad(wrong)
                why = (f"TABLE factor {i} needs {int(need[i])} entries (product of its cardinalities)"
                       if tables[i] else f"factor {i} is not a TABLE factor; its table range must be empty")
                raise _bad("table_ptr", i + 1, int(tptr[i + 1]), f"{int(tlen[i])} entries: {why}")
        if not np.all(np.isfinite(table)):
            i = _first_bad(~np.isfinite(table))
            raise _bad("table", i, float(table[i]), "table entries must be finite")
        evidence = np.full(n, -1, np.int64) if self.evidence is None else _array("evidence", self.evidence, np.int64)
        if evidence.size != n:
            raise ValueError(f"Invalid evidence: length {evidence.size} (expected {n}, one per variable)")
        bad = (evidence < -1) | (evidence >= card)
        if bad.any():
            i = _first_bad(bad)
            raise _bad("evidence", i, int(evidence[i]),
                       f"out of range for cardinality {int(card[i])}; -1 means free")
        initial = np.zeros(n, np.int64) if self.initial is None else _array("initial", self.initial, np.int64)
        if initial.size != n:
            raise ValueError(f"Invalid initial: length {initial.size} (expected {n}, one per variable)")
        bad = (initial < 0) | (initial >= card)
        if bad.any():
            i = _first_bad(bad)
            raise _bad("initial", i, int(initial[i]), f"out of range for cardinality {int(card[i])}")
        initial = np.where(evidence >= 0, evidence, initial)
        initial.setflags(write=False)
        # reverse adjacency: the factors touching each variable, increasing factor order
        order = np.argsort(ev, kind="stable")
        var_factor = factor_of_edge[order]
        var_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(ev, minlength=n), out=var_ptr[1:])
        for name, value in (("cardinality", card), ("weight", weight), ("weight_fixed", fixed),
                            ("function", function), ("weight_id", wid), ("feature", feature),
                            ("factor_ptr", ptr), ("edge_var", ev), ("edge_value", val),
                            ("table_ptr", tptr), ("table", table), ("evidence", evidence),
                            ("initial", initial), ("var_ptr", var_ptr), ("var_factor", var_factor)):
            value = np.ascontiguousarray(value)
            value.setflags(write=False)
            put(name, value)

    @property
    def num_variables(self) -> int:
        return int(self.cardinality.size)

    @property
    def num_factors(self) -> int:
        return int(self.function.size)

    @property
    def num_weights(self) -> int:
        return int(self.weight.size)

    @property
    def num_edges(self) -> int:
        return int(self.edge_var.size)

    @property
    def max_cardinality(self) -> int:
        return int(self.cardinality.max()) if self.cardinality.size else 0

    @property
    def arity(self) -> np.ndarray:
        """Number of variables of each factor."""
        return np.diff(self.factor_ptr)

    @property
    def degree(self) -> np.ndarray:
        """Number of factors touching each variable."""
        return np.diff(self.var_ptr)

    @cached_property
    def arrays(self) -> GraphArrays:
        """The arrays as one ``GraphArrays`` (for numba kernels)."""
        return GraphArrays(**{name: getattr(self, name) for name in GraphArrays._fields})

    def _replace(self, **changes) -> "FactorGraph":
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        fields.update(changes)
        return FactorGraph(**fields)

    def with_weights(self, values) -> "FactorGraph":
        """The same graph with weight values ``values`` (one per weight)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.weight.shape:
            raise ValueError(f"Invalid values: shape {values.shape} (expected {self.weight.shape}, one per weight)")
        return self._replace(weight=values)

    def with_evidence(self, evidence) -> "FactorGraph":
        """The same graph with new evidence: an array (-1 = free) or a mapping {variable: value or -1}.

        >>> g = FactorGraph(cardinality=[2, 3], weight=[], function=[], weight_id=[], factor_ptr=[0], edge_var=[])
        >>> g.with_evidence({1: 2}).evidence.tolist()
        [-1, 2]
        """
        if isinstance(evidence, dict):
            new = self.evidence.copy()
            for var, value in evidence.items():
                if not 0 <= int(var) < self.num_variables:
                    raise ValueError(f"Invalid evidence: variable {var!r} (there are {self.num_variables})")
                new[int(var)] = int(value)
            evidence = new
        return self._replace(evidence=evidence)

    def __repr__(self) -> str:
        return (f"FactorGraph(variables={self.num_variables}, factors={self.num_factors}, "
                f"weights={self.num_weights}, edges={self.num_edges}, max_cardinality={self.max_cardinality}, "
                f"evidence={int((self.evidence >= 0).sum())})")
