r"""TFMH: truncation-free factorised Metropolis-Hastings with a Poisson minibatch.

The exact minibatch baseline of Zhang, Cooper & De Sa (NeurIPS 2020), after the factorised MH
of Ceperley (1995) and Cornish et al. (ICML 2019): accept with probability
``min(1, e^{U_0(θ)-U_0(θ')}) Π_i min(1, e^{U_i(θ)-U_i(θ')})`` (reversible factor by factor),
realised without touching all data: a Poisson minibatch of expected size ``C M(θ, θ')`` with
``P(i) ∝ c_i``, and each draw rejects with probability ``(U_i(θ') - U_i(θ))⁺ / (c_i M)``, so
``P(no rejection) = exp(-Σ_i (U_i(θ') - U_i(θ))⁺)``.  No tuning knob (TunaMH with χ → 0 and
factorised acceptance); its acceptance rate decays with N at a fixed step size, so it needs
smaller steps than TunaMH.  All draws are evaluated together (vectorised); the paper's
sequential loop stops at the first rejection and evaluates fewer on rejected steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..poisson import AliasTable, alias_table, poisson_minibatch
from ._common import MHInfo, MHState, accept, check_finite_position, check_step_size, device_of, nonfinite, propose_bounded
from .full import check_minibatch
from .tunamh import _TOL, bound_violation, check_bounds

__all__ = ["TFMH"]


@dataclass(frozen=True, eq=False)
class TFMH:
    """Truncation-free factorised MH on ``model`` (the same interface as :class:`TunaMH`).

    >>> from relaxtorch.mcmc.mh.models import LogisticRegression
    >>> m = LogisticRegression(torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([1, 0, 0]))
    >>> k = TFMH(m); state, info = k.step(torch.Generator().manual_seed(0), k.init(torch.zeros(1)), None, 0.1)
    >>> info.grad_evals, state.step
    (0, 1)
    """

    model: object
    table: AliasTable = field(init=False, repr=False)
    name = "TFMH"

    def __post_init__(self):
        object.__setattr__(self, "table", alias_table(check_bounds(self.model.c)))

    def init(self, position) -> MHState:
        check_finite_position(self.name, 0, position)
        return MHState(position, 0)

    def step(self, generator: torch.Generator, state: MHState, minibatch=None, step_size: float = None):
        check_minibatch(self.name, minibatch)
        step_size = check_step_size(step_size)
        model = self.model
        k, theta, theta_new, M = propose_bounded(self.name, generator, state, model, step_size)
        idx = poisson_minibatch(generator, self.table, self.table.total * M)
        diff = model.energy_diff(theta, theta_new, idx)
        Mi = self.table.weights[idx].to(diff.dtype) * M
        u_rej = torch.rand(idx.shape, generator=generator, device=idx.device, dtype=diff.dtype)
        rejected = (u_rej * Mi < diff).any()  # u < diff⁺ / (c_i M)
        violated = (diff.abs() > Mi * (1 + _TOL) + 256 * torch.finfo(diff.dtype).eps).any()
        log_prior = model.base_energy(theta) - model.base_energy(theta_new)
        finite = torch.isfinite(diff).all()
        log_prior, rej, bad, fin = torch.stack([log_prior, rejected.to(diff.dtype), violated.to(diff.dtype),
                                                finite.to(diff.dtype)]).tolist()
        if not fin:
            raise nonfinite(self.name, k, "energy difference")
        if bad:
            raise bound_violation(self.name, k)
        if log_prior != log_prior or log_prior == float("inf"):
            raise nonfinite(self.name, k, "log acceptance ratio")
        ok = accept(generator, log_prior, device_of(theta)) and not rej
        b = int(idx.shape[0])
        return MHState(theta_new if ok else theta, k), MHInfo(ok, b, 2 * b, 0, log_prior if not rej else float("-inf"))
