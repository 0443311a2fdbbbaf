"""Factor functions of DeepDive (DimmWitted's and Numbskull's numbering) and pairwise tables.

A factor f over variables x_1..x_k with per-edge values e_1..e_k contributes
``w[weight_id] * feature * phi_f(x)`` to the log-potential (DeepDive's log-linear model,
Zhang & Ré, "DimmWitted", VLDB 2014; Niu et al., "DeepDive", 2012).

The logical functions look at *literals* ``l_i = (x_i == e_i)``, as DimmWitted does
(``FactorToVariable::satisfiedUsing``): for a boolean variable ``e_i = 1`` is the atom and
``e_i = 0`` its negation; for a categorical variable ``e_i`` is the category tested.  The
last variable of an implication-like factor is its *head*, the others its *body*.

=====================  ===  ==========================================================
function               id   phi (B = body literals, H = head literal, L = all literals)
=====================  ===  ==========================================================
IMPLY_NATURAL           0   0 if not all(B); else 1 if H else -1
OR                      1   1 if any(L) else -1
AND                     2   1 if all(L) else -1
EQUAL                   3   1 if all literals equal the first else -1
ISTRUE                  4   same as AND (DeepDive uses it with one variable)
LINEAR                  7   arity 1: H; else sum over B of (not b or H)
RATIO                   8   arity 1: log2(1 + H); else log2(1 + sum over B of (not b or H))
LOGICAL                 9   arity 1: H; else 1 if any(not b or H for b in B) else 0
AND_CAT                12   1 if all(L) else 0
IMPLY_MLN              13   1 if not all(B); else 1 if H else 0
OR_CAT                 14   1 if any(L) else -1
EQUAL_CAT_CONST        15   same as AND_CAT
IMPLY_NATURAL_CAT      16   same as IMPLY_NATURAL
IMPLY_MLN_CAT          17   same as IMPLY_MLN
TABLE                 100   table[x_1, ..., x_k] (row-major; relaxtorch's own id: any pairwise table)
POTTS                 101   1 if all variables take the same value else 0 (relaxtorch's own id;
                            ignores e_i: the Potts interaction without a D×D table per factor)
=====================  ===  ==========================================================

LINEAR, RATIO and LOGICAL follow DimmWitted (``src/factor.h``), which is DeepDive's
default sampler; Numbskull instead counts body variables equal to the head.  Numbskull's
categorical IMPLY variants and IMPLY_MLN read the head through the edge index (a bug), and
its potential ignores the feature value (a bug): neither is copied here.  Numbskull's
data-programming functions (18-26) and UFO (30) are not DeepDive's and are not supported.
"""
from __future__ import annotations

import math
from enum import IntEnum

__all__ = ["FactorFunction", "factor_value_reference", "is_categorical_function"]


class FactorFunction(IntEnum):
    """Factor function ids (DeepDive/DimmWitted/Numbskull numbering; TABLE is relaxtorch's)."""
    IMPLY_NATURAL = 0
    OR = 1
    AND = 2
    EQUAL = 3
    ISTRUE = 4
    LINEAR = 7
    RATIO = 8
    LOGICAL = 9
    AND_CAT = 12
    IMPLY_MLN = 13
    OR_CAT = 14
    EQUAL_CAT_CONST = 15
    IMPLY_NATURAL_CAT = 16
    IMPLY_MLN_CAT = 17
    TABLE = 100
    POTTS = 101


_CATEGORICAL = {FactorFunction.AND_CAT, FactorFunction.OR_CAT, FactorFunction.EQUAL_CAT_CONST,
                FactorFunction.IMPLY_NATURAL_CAT, FactorFunction.IMPLY_MLN_CAT}


def is_categorical_function(function: int) -> bool:
    """Whether ``function`` is one of DeepDive's categorical variants (``*_CAT``).

    >>> is_categorical_function(FactorFunction.AND_CAT), is_categorical_function(FactorFunction.AND)
    (True, False)
    """
    return int(function) in {int(f) for f in _CATEGORICAL}


def factor_value_reference(function: int, values, equal_to=None, table=None, cardinalities=None) -> float:
    """phi_f of one factor (without weight and feature), in plain Python, from the table above.

    ``values``: the factor's variables' values in edge order; ``equal_to``: the per-edge values
    (default 1 each: the boolean atom); ``table``/``cardinalities``: for TABLE factors.

    >>> factor_value_reference(FactorFunction.IMPLY_NATURAL, [1, 0])
    -1.0
    >>> factor_value_reference(FactorFunction.TABLE, [1, 0], table=[0., 1., 2., 3.], cardinalities=[2, 2])
    2.0
    """
    function = FactorFunction(int(function))
    values = [int(v) for v in values]
    if function == FactorFunction.TABLE:
        index = 0
        for value, card in zip(values, cardinalities):
            index = index * int(card) + value
        return float(table[index])
    if function == FactorFunction.POTTS:
        return 1.0 if all(v == values[0] for v in values) else 0.0
    if equal_to is None:
        equal_to = [1] * len(values)
    lits = [v == int(e) for v, e in zip(values, equal_to)]
    body, head = lits[:-1], lits[-1]
    if function in (FactorFunction.IMPLY_NATURAL, FactorFunction.IMPLY_NATURAL_CAT):
        if not all(body):
            return 0.0
        return 1.0 if head else -1.0
    if function in (FactorFunction.IMPLY_MLN, FactorFunction.IMPLY_MLN_CAT):
        if not all(body):
            return 1.0
        return 1.0 if head else 0.0
    if function in (FactorFunction.OR, FactorFunction.OR_CAT):
        return 1.0 if any(lits) else -1.0
    if function in (FactorFunction.AND, FactorFunction.ISTRUE):
        return 1.0 if all(lits) else -1.0
    if function in (FactorFunction.AND_CAT, FactorFunction.EQUAL_CAT_CONST):
        return 1.0 if all(lits) else 0.0
    if function == FactorFunction.EQUAL:
        return 1.0 if all(lit == lits[0] for lit in lits) else -1.0
    satisfied_implications = sum(1 for b in body if (not b) or head)
    if function == FactorFunction.LINEAR:
        return float(head) if not body else float(satisfied_implications)
    if function == FactorFunction.RATIO:
        return math.log2(1 + head) if not body else math.log2(1 + satisfied_implications)
    if function == FactorFunction.LOGICAL:
        return float(head) if not body else (1.0 if satisfied_implications > 0 else 0.0)
    raise ValueError(f"Invalid function: {function!r} (no reference)")
