r"""TunaMH: exact minibatch Metropolis-Hastings with a tunable Poisson minibatch.

Zhang, Cooper & De Sa, "Asymptotically Optimal Exact Minibatch Metropolis-Hastings",
NeurIPS 2020 (Algorithm 1).  Given bounds ``|U_i(θ) - U_i(θ')| <= c_i M(θ, θ')`` (``C = Σ c_i``,
M symmetric) and a hyper-parameter ``χ > 0``, one step:

1. propose θ' (Gaussian random walk), compute ``M = M(θ, θ')``;
2. draw a Poisson minibatch of expected size ``λ = χ C² M² + C M`` with ``P(i) ∝ c_i``;
3. keep each drawn ``i`` with probability ``(χ C M² c_i + φ_i) / (χ C M² c_i + c_i M)``, where
   ``φ_i = (U_i(θ') - U_i(θ) + c_i M) / 2`` (in ``[0, c_i M]`` by the bound); the kept counts
   are ``s_i ~ Poisson(χ C M² c_i + φ_i)`` (Poisson thinning);
4. accept with probability ``min(1, exp(U_0(θ) - U_0(θ')) Π_kept (χ C M² c_i + φ'_i) /
   (χ C M² c_i + φ_i))``, ``φ'_i = (U_i(θ) - U_i(θ') + c_i M) / 2``.

The counts are an auxiliary variable whose law makes the ``exp(-Σ U_i)`` factors cancel, so the
chain is reversible with respect to the exact posterior.  Larger χ gives a better acceptance
rate (the log-ratio noise has variance at most about ``1/χ``) at a larger batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..poisson import AliasTable, alias_table, poisson_minibatch, thin
from ._common import MHInfo, MHState, accept, check_finite_position, check_positive, check_step_size, device_of, nonfinite, propose_bounded
from .full import check_minibatch

__all__ = ["TunaMH", "check_bounds"]

_TOL = 1e-4  # relative slack for rounding when checking the user's bounds


def check_bounds(c) -> torch.Tensor:
    """The bound weights ``c_i`` as a 1-D tensor; ValueError naming ``c`` unless finite and >= 0."""
    if not isinstance(c, torch.Tensor) or c.ndim != 1 or c.numel() == 0 or not c.dtype.is_floating_point:
        raise ValueError(f"Invalid c: {getattr(c, 'shape', c)!r} (the bound weights must be a non-empty 1-D float tensor)")
    bad = ~torch.isfinite(c)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"Invalid c: c[{i}] = {float(c[i])!r} (bound weights must be finite)")
    if bool((c < 0).any()):
        i = int((c < 0).nonzero()[0, 0])
        raise ValueError(f"Invalid c: c[{i}] = {float(c[i])!r} (bound weights must be >= 0)")
    if not float(c.sum()) > 0:
        raise ValueError("Invalid c: all zero (the bound weights must have a positive sum)")
    return c


def bound_violation(name: str, step: int) -> ValueError:
    return ValueError(f"Invalid bounds: |U_i(θ) - U_i(θ')| > c_i M(θ, θ') for a datum at step {step} of {name} "
                      f"(the model's c_i or M are wrong; the chain would not be exact)")


@dataclass(frozen=True, eq=False)
class TunaMH:
    """TunaMH on ``model`` (``c``, ``base_energy``, ``energy_diff``, ``bound``).

    >>> from relaxtorch.mcmc.mh.models import LogisticRegression
    >>> m = LogisticRegression(torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)),
    ...                        torch.randint(0, 2, (1000,), generator=torch.Generator().manual_seed(1)))
    >>> k = TunaMH(m, chi=0.01); g = torch.Generator().manual_seed(0)
    >>> state, info = k.step(g, k.init(torch.zeros(2)), None, 0.01)
    >>> info.data_touched < 1000, info.grad_evals
    (True, 0)
    """

    model: object
    chi: float = 1e-3
    table: AliasTable = field(init=False, repr=False)
    name = "TunaMH"

    def __post_init__(self):
        check_positive("chi", self.chi)
        object.__setattr__(self, "table", alias_table(check_bounds(self.model.c)))

    def init(self, position) -> MHState:
        check_finite_position(self.name, 0, position)
        return MHState(position, 0)

    def step(self, generator: torch.Generator, state: MHState, minibatch=None, step_size: float = None):
        check_minibatch(self.name, minibatch)
        step_size = check_step_size(step_size)
        model = self.model
        k, theta, theta_new, M = propose_bounded(self.name, generator, state, model, step_size)
        L = self.table.total * M
        lam = self.chi * L * L
        idx = poisson_minibatch(generator, self.table, lam + L)
        diff = model.energy_diff(theta, theta_new, idx)
        Mi = self.table.weights[idx].to(diff.dtype) * M
        phi_old = (0.5 * (Mi + diff)).clamp_min(0)  # rounding only; violations are caught below
        phi_new = (0.5 * (Mi - diff)).clamp_min(0)
        a = (self.chi * L) * Mi  # χ C M² c_i: the datum-independent part of each count's rate
        keep = thin(generator, idx, (a + phi_old) / (a + Mi))
        log_terms = torch.log(a + phi_new) - torch.log(a + phi_old)
        log_data = torch.where(keep, log_terms, torch.zeros_like(log_terms)).sum()
        violated = (diff.abs() > Mi * (1 + _TOL) + 256 * torch.finfo(diff.dtype).eps).any()
        log_prior = model.base_energy(theta) - model.base_energy(theta_new)
        finite = torch.isfinite(diff).all()
        log_ratio, bad, fin = torch.stack([log_data + log_prior, violated.to(log_data.dtype),
                                           finite.to(log_data.dtype)]).tolist()
        if not fin:
            raise nonfinite(self.name, k, "energy difference")
        if bad:
            raise bound_violation(self.name, k)
        if log_ratio != log_ratio or log_ratio == float("inf"):
            raise nonfinite(self.name, k, "log acceptance ratio")
        ok = accept(generator, log_ratio, device_of(theta))
        b = int(idx.shape[0])
        return MHState(theta_new if ok else theta, k), MHInfo(ok, b, 2 * b, 0, log_ratio)
