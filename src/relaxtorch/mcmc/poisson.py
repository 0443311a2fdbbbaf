"""The Poisson minibatch: alias-table draws of i ∝ c_i, Poisson batch sizes and thinning.

One primitive for every sampler that replaces a sum over data (or factors) by a Poisson
minibatch: TunaMH and TFMH (Zhang, Cooper & De Sa, "Asymptotically Optimal Exact Minibatch
Metropolis-Hastings", NeurIPS 2020), Poisson-Gibbs and MIN-Gibbs (Zhang & De Sa,
"Poisson-Minibatching for Gibbs Sampling with Convergence Rate Guarantees", NeurIPS 2019).

For weights ``c_i >= 0`` with total ``C`` and a rate ``λ``, :func:`poisson_minibatch` draws
``B ~ Poisson(λ)`` and then ``B`` indices i.i.d. with ``P(i) = c_i / C`` from an
:class:`AliasTable` (Walker 1977; Vose 1991: O(1) per draw after an O(N) build).  The
resulting counts are independent ``s_i ~ Poisson(λ c_i / C)`` (Poisson splitting);
:func:`poisson_counts` draws those counts densely, for small tables or for checks.
:func:`thin` keeps each drawn index with its own probability, which turns the counts into
``Poisson(λ c_i / C · p_i)`` (Poisson thinning) -- how TunaMH adds the data-dependent part
of its rates without evaluating every datum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._numba import njit

__all__ = ["AliasTable", "alias_table", "poisson_counts", "poisson_minibatch", "thin"]


@njit(cache=True)
def _vose(p):  # p: float64 probabilities summing to 1 (len K); returns (prob, alias)
    k = p.shape[0]
    scaled = p * k
    prob = np.ones(k)
    alias = np.arange(k)
    small = np.empty(k, np.int64)
    large = np.empty(k, np.int64)
    ns = 0
    nl = 0
    for i in range(k):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    # what is left has probability 1 up to rounding (prob and alias already say so)
    return prob, alias


@dataclass(frozen=True, eq=False)
class AliasTable:
    """Walker's alias table for draws of ``i`` with ``P(i) = weights[i] / total``.

    Build it with :func:`alias_table`.  ``prob[j]`` is the chance that column ``j`` keeps
    its own index, else it gives ``alias[j]``; both live on the weights' device.

    >>> t = alias_table(torch.tensor([1.0, 0.0, 3.0]))
    >>> t.probabilities().tolist(), t.total
    ([0.25, 0.0, 0.75], 4.0)
    >>> sorted(set(t.sample(torch.Generator().manual_seed(0), 100).tolist()))  # never index 1
    [0, 2]
    """

    weights: torch.Tensor  # the c_i as given (not copied)
    prob: torch.Tensor  # float64 [K]
    alias: torch.Tensor  # int64 [K]
    total: float  # C = sum of the weights

    @property
    def size(self) -> int:
        return int(self.prob.shape[0])

    @property
    def device(self) -> torch.device:
        return self.prob.device

    def sample(self, generator: torch.Generator, n: int) -> torch.Tensor:
        """``n`` i.i.d. indices (int64, on the table's device) with ``P(i) = c_i / C``."""
        col = torch.randint(0, self.size, (n,), generator=generator, device=self.device)
        u = torch.rand(n, generator=generator, device=self.device, dtype=torch.float64)
        return torch.where(u < self.prob[col], col, self.alias[col])

    def probabilities(self) -> torch.Tensor:
        """The exact distribution the table samples from (float64), rebuilt from its columns."""
        out = self.prob.clone()
        out.index_add_(0, self.alias, 1.0 - self.prob)
        return out / self.size


def _check_weights(weights) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"Invalid weights: shape {tuple(weights.shape)} (must be a non-empty 1-D tensor)")
    if weights.dtype.is_complex or weights.dtype == torch.bool:
        raise ValueError(f"Invalid weights: dtype {weights.dtype} (must be real)")
    w = weights.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"Invalid weights: {_first(w, ~torch.isfinite(w))} (must be finite)")
    if bool((w < 0).any()):
        raise ValueError(f"Invalid weights: {_first(w, w < 0)} (must be >= 0)")
    if not float(w.sum()) > 0:
        raise ValueError("Invalid weights: all zero (their sum must be positive)")
    return weights


def _first(w: torch.Tensor, bad: torch.Tensor) -> str:
    i = int(bad.nonzero()[0, 0])
    return f"weights[{i}] = {float(w[i])!r}"


def alias_table(weights: torch.Tensor) -> AliasTable:
    """The :class:`AliasTable` for ``P(i) ∝ weights[i]`` (1-D, finite, >= 0, positive sum).

    Built on the CPU in float64 (Vose's O(K) algorithm), stored on the weights' device.

    >>> alias_table(torch.tensor([2.0, 2.0])).probabilities().tolist()
    [0.5, 0.5]
    """
    weights = _check_weights(weights)
    w = weights.detach().to("cpu", torch.float64).numpy()
    total = float(w.sum())
    prob, alias = _vose(w / total)
    dev = weights.device
    return AliasTable(weights, torch.from_numpy(prob).to(dev), torch.from_numpy(alias).to(dev), total)


def _check_rate(rate) -> float:
    rate = float(rate)
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"Invalid rate: {rate!r} (must be finite and >= 0)")
    return rate


def poisson_minibatch(generator: torch.Generator, table: AliasTable, rate: float) -> torch.Tensor:
    """A Poisson minibatch: ``B ~ Poisson(rate)`` indices drawn i.i.d. with ``P(i) = c_i / C``.

    Returns the multiset as an int64 tensor of length ``B`` (repeats allowed, unsorted); the
    number of times ``i`` occurs is ``Poisson(rate · c_i / C)``, independently over ``i``.

    >>> t = alias_table(torch.tensor([1.0, 1.0, 2.0]))
    >>> idx = poisson_minibatch(torch.Generator().manual_seed(1), t, 3.0)
    >>> idx.dtype, bool(((idx >= 0) & (idx < 3)).all())
    (torch.int64, True)
    """
    rate = _check_rate(rate)
    lam = torch.tensor(rate, dtype=torch.float64, device=table.device)
    b = int(torch.poisson(lam, generator=generator).item())
    return table.sample(generator, b)


def poisson_counts(generator: torch.Generator, table: AliasTable, rate: float) -> torch.Tensor:
    """Dense counts ``s_i ~ Poisson(rate · c_i / C)`` (int64 [K]), one Poisson draw per entry.

    Same distribution as ``bincount(poisson_minibatch(...), minlength=K)``; O(K) per call.

    >>> s = poisson_counts(torch.Generator().manual_seed(0), alias_table(torch.tensor([0.0, 1.0])), 5.0)
    >>> int(s[0])
    0
    """
    rate = _check_rate(rate)
    w = table.weights.detach().to(table.device, torch.float64)
    return torch.poisson(w * (rate / table.total), generator=generator).to(torch.int64)


def thin(generator: torch.Generator, indices: torch.Tensor, keep_prob: torch.Tensor) -> torch.Tensor:
    """Poisson thinning: a bool mask keeping ``indices[j]`` with probability ``keep_prob[j]``.

    ``keep_prob`` (same length as ``indices``, values in [0, 1]) usually depends on the datum;
    applied to a Poisson minibatch it leaves independent counts ``Poisson(rate c_i p_i / C)``.

    >>> m = thin(torch.Generator().manual_seed(0), torch.arange(3), torch.tensor([1.0, 0.0, 1.0]))
    >>> m.tolist()
    [True, False, True]
    """
    u = torch.rand(indices.shape, generator=generator, device=indices.device, dtype=keep_prob.dtype)
    return u < keep_prob
