"""Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin, "Stochastic gradient
Hamiltonian Monte Carlo", ICML 2014), in the paper's SGD-with-momentum form (its eq. 15).

With learning rate η (``step_size``), friction α (per-step momentum decay, in (0, 1]) and
temperature T, one step is

    v ← (1 - α) v + η ∇log p̂(θ) + N(0, 2 α η T I)
    θ ← θ + v

(η = ε² M⁻¹, α = ε M⁻¹ C and v = ε M⁻¹ r in the paper's notation; the gradient-noise
estimate β̂ is taken as 0, as is common).  The velocity starts at zero.  At α = 1 the step
is SGLD with ε = 2η.  Like SGLD it is biased at a finite step size (see AMAGOLD).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch

from ._tree import Tree, leaves, randn_leaves, unflatten
from .sgld import GradFn, check_friction, check_positive, check_temperature, cost, ensure_finite


def sghmc_update(xs: List[torch.Tensor], vs: List[torch.Tensor], gs: List[torch.Tensor],
                 noise: Optional[List[torch.Tensor]], step_size: float, friction: float,
                 temperature: float) -> tuple:
    """(new positions, new velocities) as new tensors (``noise`` None: T = 0); shared by the
    kernel and the optimizer shell, so they agree bit for bit."""
    keep = 1.0 - friction
    new_v = [torch.mul(v, keep).add_(g, alpha=step_size) for v, g in zip(vs, gs)]
    if noise is not None:
        sd = math.sqrt(2.0 * friction * step_size * temperature)
        for v, z in zip(new_v, noise):
            v.add_(z, alpha=sd)
    return [torch.add(x, v) for x, v in zip(xs, new_v)], new_v


class SGHMCState(NamedTuple):
    position: Tree
    momentum: Tree
    step: int = 0


class SGHMCInfo(NamedTuple):
    grad_evals: int
    data_touched: int
    accepted: None = None


@dataclass(frozen=True)
class SGHMCKernel:
    """SGHMC (Chen, Fox & Guestrin, ICML 2014): ``step_size`` is the learning rate η, ``friction`` α.

    >>> k = SGHMCKernel(lambda x, batch: -x, friction=0.5, temperature=0.0)
    >>> s, _ = k.step(torch.Generator(), k.init(torch.tensor([2.0])), torch.zeros(1), 0.25)
    >>> s.position.tolist(), s.momentum.tolist()   # v = 0.25 * -2, θ = 2 + v
    ([1.5], [-0.5])
    """

    grad_fn: GradFn
    friction: float
    temperature: float = 1.0
    name = "SGHMC"

    def __post_init__(self):
        object.__setattr__(self, "friction", check_friction(self.friction))
        object.__setattr__(self, "temperature", check_temperature(self.temperature))

    def init(self, position: Tree) -> SGHMCState:
        return SGHMCState(position, unflatten(position, [torch.zeros_like(x) for x in leaves(position)]), 0)

    def step(self, generator: torch.Generator, state: SGHMCState, minibatch, step_size: float):
        eta = check_positive("step_size", step_size)
        xs, vs = leaves(state.position), leaves(state.momentum)
        gs = leaves(self.grad_fn(state.position, minibatch))
        noise = randn_leaves(xs, generator) if self.temperature > 0 else None
        new_x, new_v = sghmc_update(xs, vs, gs, noise, eta, self.friction, self.temperature)
        ensure_finite(self.name, state.step + 1, new_x)
        evals, touched = cost(self.grad_fn, minibatch)
        new = SGHMCState(unflatten(state.position, new_x), unflatten(state.position, new_v), state.step + 1)
        return new, SGHMCInfo(evals, touched)
