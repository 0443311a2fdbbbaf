"""Full-data random-walk Metropolis-Hastings: the exact baseline of the minibatch kernels.

Metropolis, Rosenbluth, Rosenbluth, Teller & Teller (1953); Hastings (1970).  Every step
evaluates all N per-datum energies at the proposal (the current energy is kept in the state).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import (MHInfo, MHState, accept, check_finite_position, check_step_size, device_of, nonfinite,
                      propose)

__all__ = ["FullMH"]


def _total_energy(model, theta):
    if hasattr(model, "total_energy"):
        return model.total_energy(theta)
    return model.base_energy(theta) + model.energy(theta).sum()


def check_minibatch(name: str, minibatch) -> None:
    if minibatch is not None:
        raise ValueError(f"Invalid minibatch: {type(minibatch).__name__} ({name} draws its own data; pass None)")


@dataclass(frozen=True, eq=False)
class FullMH:
    """Gaussian random-walk MH on ``π(θ) ∝ exp(-U_0(θ) - Σ_i U_i(θ))`` over all the data.

    ``model`` gives ``total_energy(θ)`` (or ``base_energy`` and per-datum ``energy``), e.g. a
    :class:`~relaxtorch.mcmc.mh.models.LogisticRegression`.

    >>> from relaxtorch.mcmc.mh.models import LogisticRegression
    >>> m = LogisticRegression(torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([1, 0, 0]))
    >>> k = FullMH(m); g = torch.Generator().manual_seed(0)
    >>> state, info = k.step(g, k.init(torch.zeros(1)), None, 0.5)
    >>> info.data_touched, info.grad_evals, state.step
    (3, 0, 1)
    """

    model: object
    name = "FullMH"

    def init(self, position) -> MHState:
        check_finite_position(self.name, 0, position)
        return MHState(position, 0, _total_energy(self.model, position))

    def step(self, generator: torch.Generator, state: MHState, minibatch=None, step_size: float = None):
        check_minibatch(self.name, minibatch)
        step_size = check_step_size(step_size)
        k = state.step + 1
        theta_new = propose(generator, state.position, step_size)
        energy_new = _total_energy(self.model, theta_new)
        log_ratio = float(state.energy - energy_new)
        if log_ratio != log_ratio or log_ratio == float("inf"):
            raise nonfinite(self.name, k, "log acceptance ratio")
        ok = accept(generator, log_ratio, device_of(state.position))
        n = self.model.data_size
        new = MHState(theta_new, k, energy_new) if ok else state._replace(step=k)
        return new, MHInfo(ok, n, n, 0, log_ratio)
