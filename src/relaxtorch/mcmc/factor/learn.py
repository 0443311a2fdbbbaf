"""Weight learning by contrastive SGD in the DeepDive style (Zhang & Ré, "DimmWitted", VLDB 2014;
Numbskull's ``learn``): persistent contrastive divergence.

Two persistent chains run on the current weights: the *data* chain with the evidence clamped and the
*model* chain with every variable free.  After one sweep of each, the gradient of the log-likelihood
of the evidence for weight w is estimated by
    g_w = (Σ_{f: weight_id(f) = w} feature_f φ_f(x_data) - Σ_f feature_f φ_f(x_model)) / n_w
(n_w: the factors sharing w, so the step does not scale with the graph), and w ← w + lr_t g_w, then
L2: w ← w - lr_t l2 w, or L1: w ← sign(w) max(|w| - lr_t l1, 0); lr_t = lr · decay^t.  Fixed weights
never change.  Unlike Numbskull, the feature value enters both the model and the gradient.
"""
from __future__ import annotations

import math

import numpy as np

from ..._numba import njit
from ._kernels import factor_phi
from .gibbs import Gibbs

__all__ = ["learn_weights"]


@njit(nogil=True, cache=True)
def feature_sums(g, x, out):
    """out[w] = Σ_{f: weight_id(f) = w} feature_f φ_f(x)."""
    out[:] = 0.0
    for f in range(g.function.shape[0]):
        out[g.weight_id[f]] += g.feature[f] * factor_phi(g, f, x, -1, 0)


def _check(name, value, ok, why):
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} ({why})")


def learn_weights(graph, *, epochs: int, lr: float, l2: float = 0.0, l1: float = 0.0, seed: int = 0,
                  sampler=None, decay: float = 1.0, sweeps_per_epoch: int = 1):
    """The graph with its learnable weights fitted to its evidence (a new FactorGraph).

    >>> import relaxtorch.mcmc.factor as fg
    >>> from relaxtorch.mcmc.factor.functions import FactorFunction as F
    >>> g = fg.from_factors([2] * 4, [0.0], [(F.ISTRUE, 0, [v]) for v in range(4)],
    ...                     evidence=[1, 1, 1, 0], weight_fixed=[False])
    >>> w = learn_weights(g, epochs=400, lr=0.3, decay=0.99, seed=0).weight[0]
    >>> bool(0.4 < w < 0.7)  # the maximum-likelihood weight is atanh(0.5) = 0.55
    True
    """
    _check("epochs", epochs, isinstance(epochs, (int, np.integer)) and epochs >= 0, "must be an integer >= 0")
    _check("lr", lr, math.isfinite(lr) and lr > 0, "must be finite and > 0")
    _check("l2", l2, math.isfinite(l2) and l2 >= 0, "must be finite and >= 0")
    _check("l1", l1, math.isfinite(l1) and l1 >= 0, "must be finite and >= 0")
    _check("l1", l1, not (l1 > 0 and l2 > 0), "use L1 or L2, not both")
    _check("decay", decay, math.isfinite(decay) and 0 < decay <= 1, "must be in (0, 1]")
    _check("sweeps_per_epoch", sweeps_per_epoch, int(sweeps_per_epoch) >= 1, "must be >= 1")
    sampler = Gibbs() if sampler is None else sampler
    free_graph = graph.with_evidence(np.full(graph.num_variables, -1, np.int64))
    data = sampler.init(graph, seed=int(seed) * 2 + 0)
    model = sampler.init(free_graph, seed=int(seed) * 2 + 1)
    w = np.array(graph.weight, dtype=np.float64)
    learn = ~np.asarray(graph.weight_fixed, bool)
    n_w = np.maximum(np.bincount(graph.weight_id, minlength=w.size), 1).astype(np.float64)
    s_data, s_model = np.zeros(w.size), np.zeros(w.size)
    for t in range(int(epochs)):
        g_data, g_model = graph.with_weights(w), free_graph.with_weights(w)
        sampler.run(g_data, data, int(sweeps_per_epoch), record=False)
        sampler.run(g_model, model, int(sweeps_per_epoch), record=False)
        feature_sums(g_data.arrays, data.x, s_data)
        feature_sums(g_model.arrays, model.x, s_model)
        step = lr * decay ** t
        new = w + step * (s_data - s_model) / n_w
        if l2 > 0:
            new = new - step * l2 * new
        if l1 > 0:
            new = np.sign(new) * np.maximum(np.abs(new) - step * l1, 0.0)
        w = np.where(learn, new, w)
    return graph.with_weights(w)
