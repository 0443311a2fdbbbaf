"""AMAGOLD: amortized Metropolis adjustment for efficient stochastic gradient MCMC (Zhang,
Cooper & De Sa, "AMAGOLD: Amortized Metropolis Adjustment for Efficient Stochastic
Gradient MCMC", AISTATS 2020, Algorithm 2).

SGHMC-like steps that are *reversible*, with a Metropolis–Hastings test every
``correction_every`` = T steps that makes the chain exact (it targets p(θ | data)^(1/temp))
at any fixed step size, however noisy the minibatch gradients.  With ε = sqrt(η) (η the
SGHMC learning rate ``step_size``), friction α (as in SGHMC; the paper's εβ = α/2) and
momentum p in physical units (stationary law N(0, temp·I)), one round is

    θ₀, p₀ ← θ, p;  ρ ← 0;  θ ← θ + (ε/2) p                             (half drift)
    repeat T times, each with a fresh minibatch gradient g = ∇log p̂(θ):
        p' ← ((1 - α/2) p + ε g + sqrt(2 α temp) ξ) / (1 + α/2)          ξ ~ N(0, I)
        ρ  ← ρ - (ε/2) gᵀ(p + p');  p ← p'
        θ  ← θ + ε p   (the last drift of the round is ε/2)
    accept (θ, p) with probability min(1, exp((U(θ₀) - U(θ) + ρ) / temp)),
    else θ ← θ₀ and p ← -p₀ (the momentum flips),

U being the full-data energy -log p(θ | data) + const.  The friction step's forward and
reverse densities differ by exactly the ρ term and the kinetic energies, which telescope,
so the test needs the full-data energy only at the two ends of each round: one full pass
per T minibatch steps (the amortisation).  ρ is accumulated in float64.

Kernel view (contract of :mod:`relaxtorch.mcmc`): ``state.position`` is the chain's current
sample θ₀ (the last accepted point), which changes only at correction steps;
``state.trajectory`` is the point in flight, where the next gradient is evaluated.  A round's
step size is the ``step_size`` passed to the step that closes the previous round (or to the
first step): it is held through the round, since a step size that changes mid-trajectory
would break reversibility, so a schedule takes effect once per round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional

import torch

from ._tree import Tree, leaves, randn_leaves, unflatten, vdot
from .sgld import GradFn, check_data_size, check_friction, check_positive, check_temperature, cost, ensure_finite

Energy = Callable[[Tree], torch.Tensor]


def check_correction_every(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid correction_every: {value!r} (a positive int: the steps per MH round)")
    return value


def leapfrog_kick(ps: List[torch.Tensor], gs: List[torch.Tensor], noise: Optional[List[torch.Tensor]],
                  step_size: float, friction: float, temperature: float) -> tuple:
    """(new momenta, ρ increment as a float64 0-d tensor) of one reversible friction-kick step."""
    eps, a = math.sqrt(step_size), 0.5 * friction
    new_p = [torch.mul(p, 1.0 - a).add_(g, alpha=eps) for p, g in zip(ps, gs)]
    if noise is not None:
        sd = math.sqrt(2.0 * friction * temperature)
        for p, z in zip(new_p, noise):
            p.add_(z, alpha=sd)
    for p in new_p:
        p.div_(1.0 + a)
    d_rho = vdot(gs, [torch.add(p, q) for p, q in zip(ps, new_p)]).mul(-0.5 * eps)
    return new_p, d_rho


def drift(xs: List[torch.Tensor], ps: List[torch.Tensor], step_size: float, fraction: float) -> List[torch.Tensor]:
    """New positions θ + fraction·ε·p."""
    c = fraction * math.sqrt(step_size)
    return [torch.add(x, p, alpha=c) for x, p in zip(xs, ps)]


def mh_accept(generator: torch.Generator, log_ratio: float, temperature: float, device) -> bool:
    """The Metropolis–Hastings decision for log π-ratio ``log_ratio`` at ``temperature`` (0: accept iff >= 0)."""
    if temperature == 0:
        return log_ratio >= 0
    u = torch.rand((), generator=generator, dtype=torch.float64, device=device).item()
    return math.log(u) < log_ratio / temperature if u > 0 else True


def energy_value(sampler: str, step: int, u) -> float:
    """The energy as a float; NaN raises FloatingPointError (+inf is a legal zero-density point)."""
    value = float(u)
    if math.isnan(value):
        raise FloatingPointError(f"{sampler}: the full-data energy is NaN at step {step}")
    return value


class AMAGOLDState(NamedTuple):
    position: Tree               # θ₀: the chain's current sample
    momentum: Tree               # p: the momentum in flight (physical units)
    trajectory: Tree             # θ in flight: where the next gradient is evaluated
    start_momentum: Tree         # p₀ of the round
    rho: torch.Tensor            # the round's accumulated energy change, float64
    start_energy: Optional[float]  # U(θ₀), None until the first step evaluates it
    step_size: Optional[float]   # the round's held η, None until the first step
    round_step: int = 0
    step: int = 0
    accepted: int = 0
    rounds: int = 0


class AMAGOLDInfo(NamedTuple):
    grad_evals: int
    data_touched: int
    accepted: Optional[bool]     # None except at correction steps
    acceptance_rate: float       # accepted rounds / rounds so far (NaN before the first test)
    log_accept_ratio: Optional[float]
    step_size: float             # the η this step used


@dataclass(frozen=True)
class AMAGOLDKernel:
    """AMAGOLD (Zhang, Cooper & De Sa, AISTATS 2020): ``step_size`` η and ``friction`` α as in SGHMC,
    an MH correction with ``energy(position)`` (the full-data U(θ), best in float64) every
    ``correction_every`` steps; ``data_size`` N counts the energy's data touched.

    >>> import math
    >>> k = AMAGOLDKernel(lambda x, b: -x, lambda x: 0.5 * (x ** 2).sum(), friction=0.5, correction_every=2,
    ...                   data_size=1)
    >>> g, s = torch.Generator().manual_seed(0), k.init(torch.tensor([1.0]))
    >>> for _ in range(4):
    ...     s, info = k.step(g, s, torch.zeros(1), 0.1)
    >>> info.accepted is not None, s.rounds, 0 <= info.acceptance_rate <= 1
    (True, 2, True)
    """

    grad_fn: GradFn
    energy: Energy
    friction: float
    correction_every: int
    data_size: int
    temperature: float = 1.0
    resample_momentum: bool = False
    name = "AMAGOLD"

    def __post_init__(self):
        object.__setattr__(self, "friction", check_friction(self.friction))
        object.__setattr__(self, "correction_every", check_correction_every(self.correction_every))
        object.__setattr__(self, "data_size", check_data_size(self.data_size))
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        if not isinstance(self.resample_momentum, bool):
            raise ValueError(f"Invalid resample_momentum: {self.resample_momentum!r} (a bool)")

    def init(self, position: Tree) -> AMAGOLDState:
        zeros = unflatten(position, [torch.zeros_like(x) for x in leaves(position)])
        rho = torch.zeros((), dtype=torch.float64, device=leaves(position)[0].device)
        return AMAGOLDState(position, zeros, position, zeros, rho, None, None)

    def _energy(self, step: int, position: Tree) -> float:
        with torch.no_grad():
            return energy_value(self.name, step, self.energy(position))

    def step(self, generator: torch.Generator, state: AMAGOLDState, minibatch, step_size: float):
        eta = check_positive("step_size", step_size) if state.step_size is None else state.step_size
        n = state.step + 1
        evals, touched = cost(self.grad_fn, minibatch)
        u0 = state.start_energy
        if u0 is None:
            u0 = self._energy(n, state.position)
            touched += self.data_size
        xs, ps = leaves(state.trajectory), leaves(state.momentum)
        gs = leaves(self.grad_fn(state.trajectory, minibatch))
        noise = randn_leaves(xs, generator) if self.temperature > 0 else None
        new_p, d_rho = leapfrog_kick(ps, gs, noise, eta, self.friction, self.temperature)
        rho = state.rho + d_rho
        t = state.round_step + 1
        like = state.position
        if t < self.correction_every:
            new_x = drift(xs, new_p, eta, 1.0)
            ensure_finite(self.name, n, new_x)
            rate = state.accepted / state.rounds if state.rounds else math.nan
            new = state._replace(momentum=unflatten(like, new_p), trajectory=unflatten(like, new_x), rho=rho,
                                 start_energy=u0, step_size=eta, round_step=t, step=n)
            return new, AMAGOLDInfo(evals, touched, None, rate, None, eta)
        # the round's last step: half drift, then the MH test with the full-data energy
        new_x = drift(xs, new_p, eta, 0.5)
        ensure_finite(self.name, n, new_x)
        proposal = unflatten(like, new_x)
        u1 = self._energy(n, proposal)
        touched += self.data_size
        rho_value = float(rho)
        if math.isnan(rho_value):
            raise FloatingPointError(f"{self.name}: the trajectory's energy change is NaN at step {n}")
        log_ratio = u0 - u1 + rho_value
        if math.isnan(log_ratio):  # u0 = u1 = +inf: neither end has mass; stay
            log_ratio = -math.inf
        accept = mh_accept(generator, log_ratio, self.temperature, xs[0].device)
        if accept:
            theta, ps_next, u_next = proposal, new_p, u1
        else:
            theta, ps_next, u_next = state.position, [p.neg() for p in leaves(state.start_momentum)], u0
        if self.resample_momentum:
            ps_next = ([z.mul_(math.sqrt(self.temperature)) for z in randn_leaves(ps_next, generator)]
                       if self.temperature > 0 else [torch.zeros_like(p) for p in ps_next])
        next_eta = check_positive("step_size", step_size)
        start = drift(leaves(theta), ps_next, next_eta, 0.5)
        accepted, rounds = state.accepted + int(accept), state.rounds + 1
        new = AMAGOLDState(theta, unflatten(like, ps_next), unflatten(like, start), unflatten(like, ps_next),
                           torch.zeros_like(rho), u_next, next_eta, 0, n, accepted, rounds)
        return new, AMAGOLDInfo(evals, touched, bool(accept), accepted / rounds, log_ratio, eta)
