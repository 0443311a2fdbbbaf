r"""Firefly Monte Carlo: exact MCMC that touches only the "bright" data.

Maclaurin & Adams, "Firefly Monte Carlo: Exact MCMC with Subsets of Data", UAI 2014.  With
lower bounds ``0 < B_i(θ) <= L_i(θ) = e^{-U_i(θ)}`` whose product collapses (a Gaussian in θ,
see :class:`~relaxtorch.mcmc.mh.models.FlyMCBound`), the joint

    p(θ, z) ∝ e^{-U_0(θ)} Π_i B_i(θ)^{1-z_i} (L_i(θ) - B_i(θ))^{z_i}

has the posterior as its θ-marginal.  Each iteration (i) resamples the brightness ``z`` by
implicit MH: every bright datum proposes to turn dark (accepted with probability
``min(1, q B_i / (L_i - B_i))``), every dark datum is proposed to turn bright with probability
``q`` (found by geometric skipping, O(qN) work; accepted with ``min(1, (L_i - B_i) / (q B_i))``);
(ii) makes a random-walk MH step on θ under ``-U_0 - Σ_i log B_i^{-1} + Σ_bright log(L_i/B_i - 1)``.
With MAP-tuned bounds few data are bright.  ``data_touched`` counts the bright data and the dark
data proposed this iteration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._common import MHInfo, MHState, accept, check_finite_position, check_step_size, device_of, nonfinite, propose
from .full import check_minibatch

__all__ = ["FlyMC", "bernoulli_subset"]


def bernoulli_subset(generator: torch.Generator, n: int, q: float, device=None) -> torch.Tensor:
    """The sorted indices of ``{0..n-1}`` each kept independently with probability ``q``, in
    O(qn) work (geometric gaps between kept indices).

    >>> bernoulli_subset(torch.Generator().manual_seed(0), 10, 1.0).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if q >= 1:
        return torch.arange(n, device=device)
    log1mq = math.log1p(-q)
    parts, start = [], 0  # start: the first index not yet decided
    while start < n:
        m = int(q * (n - start) + 4 * math.sqrt(q * (n - start) + 1) + 8)
        u = torch.rand(m, generator=generator, device=device, dtype=torch.float64)
        gaps = torch.floor(torch.log1p(-u) / log1mq).to(torch.int64)  # failures before a success
        pos = start + torch.cumsum(gaps + 1, 0) - 1
        parts.append(pos[pos < n])
        start = int(pos[-1]) + 1
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=device)


@dataclass(frozen=True, eq=False)
class FlyMC:
    """FlyMC with a collapsible lower bound ``bound`` (``model.flymc_bound()``); ``q`` is the
    chance that a dark datum is proposed to turn bright each iteration.

    >>> from relaxtorch.mcmc.mh.models import LogisticRegression
    >>> m = LogisticRegression(torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([1, 0, 0]))
    >>> k = FlyMC(m.flymc_bound(), q=0.5); g = torch.Generator().manual_seed(0)
    >>> state, info = k.step(g, k.init(torch.zeros(1)), None, 0.5)
    >>> state.bright.dtype, info.grad_evals   # the indices of the bright data
    (torch.int64, 0)
    """

    bound: object
    q: float = 0.01
    name = "FlyMC"

    def __post_init__(self):
        q = self.q
        if not (isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q <= 1):
            raise ValueError(f"Invalid q: {q!r} (the dark-to-bright proposal probability must be in (0, 1])")

    def _log_bd(self, theta, idx):
        """``log(L_i/B_i - 1)`` for ``idx``: -inf where the bound is tight."""
        gap = (self.bound.bound_energy(theta, idx) - self.bound.model.energy(theta, idx)).clamp_min(0)
        return gap + torch.log(-torch.expm1(-gap))

    def init(self, position, generator: torch.Generator | None = None) -> MHState:
        """All data dark; or, with a generator, ``z`` drawn from its exact conditional given θ
        (``P(z_i = 1) = 1 - B_i/L_i``; one pass over the data), so a chain started from the
        posterior is stationary from step 0."""
        check_finite_position(self.name, 0, position)
        n = self.bound.model.data_size
        if generator is None:
            bright = torch.zeros(0, dtype=torch.int64, device=device_of(position))
        else:
            gap = (self.bound.bound_energy(position) - self.bound.model.energy(position)).clamp_min(0)
            u = torch.rand(n, generator=generator, device=gap.device, dtype=gap.dtype)
            bright = (u < -torch.expm1(-gap)).nonzero().squeeze(1)
        return MHState(position, 0, None, bright)

    def step(self, generator: torch.Generator, state: MHState, minibatch=None, step_size: float = None):
        check_minibatch(self.name, minibatch)
        step_size = check_step_size(step_size)
        k, theta, bnd = state.step + 1, state.position, self.bound
        dev, logq = device_of(theta), math.log(self.q)
        b_idx = state.bright  # int64 indices of the bright data
        # (i) brightness: bright -> dark
        lbd = self._log_bd(theta, b_idx)
        u = torch.rand(b_idx.shape, generator=generator, device=dev, dtype=lbd.dtype)
        stay = b_idx[torch.log(u) >= logq - lbd]
        # dark -> bright, for the data dark at the start of the iteration
        cand = bernoulli_subset(generator, bnd.model.data_size, self.q, dev)
        cand = cand[~torch.isin(cand, b_idx)]
        lbd_c = self._log_bd(theta, cand)
        u = torch.rand(cand.shape, generator=generator, device=dev, dtype=lbd_c.dtype)
        nb = torch.cat([stay, cand[torch.log(u) < lbd_c - logq]])
        # (ii) θ given the bright set
        theta_new = propose(generator, theta, step_size)
        m = bnd.model
        log_new = -m.base_energy(theta_new) - bnd.bound_energy_sum(theta_new) + self._log_bd(theta_new, nb).sum()
        log_old = -m.base_energy(theta) - bnd.bound_energy_sum(theta) + self._log_bd(theta, nb).sum()
        log_ratio = float(log_new - log_old)
        if log_ratio != log_ratio or log_ratio == float("inf"):
            raise nonfinite(self.name, k, "log acceptance ratio")
        ok = accept(generator, log_ratio, dev)
        touched = int(b_idx.shape[0]) + int(cand.shape[0])
        evals = touched + 2 * int(nb.shape[0])
        return MHState(theta_new if ok else theta, k, None, nb), MHInfo(ok, touched, evals, 0, log_ratio)
