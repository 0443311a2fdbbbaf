"""What a ``relaxtorch gibbs`` run is judged by: marginal error against a reference, time to an error.

The marginal error is the mean, over free (non-evidence) variables, of the total-variation
distance between the estimated and the reference marginal, ``0.5 * sum_k |p_hat_k - p_k|``
(for a boolean variable: ``|p_hat(1) - p(1)|``).  Evidence variables are clamped and excluded.

>>> import numpy as np
>>> round(marginal_error(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.6, 0.4], [1.0, 0.0]])), 12)
0.05
"""
from __future__ import annotations

import math

import numpy as np


def marginal_error(estimate, reference, free=None) -> float:
    """Mean TV distance per free variable between two ``[n, K]`` marginal tables (rows sum to 1)."""
    est, ref = np.asarray(estimate, np.float64), np.asarray(reference, np.float64)
    if est.shape != ref.shape:
        raise ValueError(f"Invalid estimate: shape {est.shape} (the reference has {ref.shape})")
    tv = 0.5 * np.abs(est - ref).sum(axis=1)
    if free is not None:
        tv = tv[np.asarray(free, bool)]
    return float(tv.mean()) if tv.size else 0.0


def free_states(cardinality, evidence) -> float:
    """How many assignments of the free variables there are (a float: it may be astronomically large)."""
    card = np.asarray(cardinality)[np.asarray(evidence) < 0]
    return float(math.exp(np.log(card.astype(np.float64)).sum())) if card.size else 1.0


def time_to(curve: list[dict], epsilon: float, key: str = "seconds") -> float | None:
    """The first ``key`` (wall-clock seconds, or sweeps) at which the curve's error is <= epsilon."""
    for point in curve:
        if point["error"] <= epsilon:
            return point[key]
    return None


def uniform_marginals(cardinality, evidence, width: int) -> np.ndarray:
    """Marginals of a model symmetric under permuting each variable's values: uniform rows
    (evidence rows one-hot), e.g. a Potts model without a field."""
    card, ev = np.asarray(cardinality), np.asarray(evidence)
    out = np.zeros((card.size, width))
    for i, (c, e) in enumerate(zip(card, ev)):
        if e >= 0:
            out[i, e] = 1.0
        else:
            out[i, :c] = 1.0 / c
    return out
