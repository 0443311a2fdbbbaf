"""What the Metropolis-Hastings kernels share: state, info, the Gaussian random-walk proposal."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


class MHState(NamedTuple):
    """A chain's state: ``position`` (tensor or dict of tensors), the number of steps taken, and
    what a kernel keeps between steps (the full MH energy, FlyMC's bright set), else None."""

    position: object
    step: int = 0
    energy: torch.Tensor | None = None  # FullMH: U(θ) at ``position``
    bright: torch.Tensor | None = None  # FlyMC: int64 indices of the bright data


class MHInfo(NamedTuple):
    """One step's report.  ``data_touched`` is this iteration's batch size (distinct draws of
    data evaluated); ``energy_evals`` counts per-datum energy evaluations (a datum at θ and θ'
    counts twice); MH kernels take no gradients (``grad_evals`` = 0)."""

    accepted: bool
    data_touched: int
    energy_evals: int
    grad_evals: int = 0
    log_ratio: float = 0.0  # the log acceptance ratio used (its estimate, for minibatch kernels)


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number {'>=' if allow_zero else '>'} 0)")
    return float(value)


def check_step_size(step_size) -> float:
    if isinstance(step_size, torch.Tensor) and step_size.numel() == 1:
        step_size = float(step_size)
    return check_positive("step_size", step_size)


def propose(generator: torch.Generator, position, step_size: float):
    """θ' = θ + step_size · ε, ε ~ N(0, I), leaf by leaf (dict leaves in sorted key order)."""
    if isinstance(position, dict):
        return {k: propose(generator, position[k], step_size) for k in sorted(position)}
    noise = torch.randn(position.shape, generator=generator, device=position.device, dtype=position.dtype)
    return position + step_size * noise


def propose_bounded(name: str, generator: torch.Generator, state, model, step_size: float):
    """The bounded-energy kernels' first move (TunaMH, TFMH): (step number, θ, θ', M(θ, θ')),
    with M checked finite and >= 0."""
    k = state.step + 1
    theta = state.position
    theta_new = propose(generator, theta, step_size)
    M = float(model.bound(theta, theta_new))
    if not M >= 0 or M == float("inf"):
        raise nonfinite(name, k, f"bound M(θ, θ') = {M!r}")
    return k, theta, theta_new, M


def accept(generator: torch.Generator, log_ratio: float, device) -> bool:
    """True with probability min(1, exp(log_ratio))."""
    if log_ratio >= 0:
        return True
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    return math.log(float(u)) < log_ratio


def device_of(position) -> torch.device:
    if isinstance(position, dict):
        return next(iter(position.values())).device
    return position.device


def nonfinite(sampler: str, step: int, what: str):
    return FloatingPointError(f"{sampler}: non-finite {what} at step {step} (the chain stops; no sample kept)")


def check_finite_position(sampler: str, step: int, position) -> None:
    leaves = position.values() if isinstance(position, dict) else (position,)
    for x in leaves:
        if not bool(torch.isfinite(x).all()):
            raise nonfinite(sampler, step, "position")
