"""Stochastic gradient Langevin dynamics (Welling & Teh, "Bayesian learning via stochastic
gradient Langevin dynamics", ICML 2011).

One step with step size ε and temperature T (target ∝ p(θ | data)^(1/T)):

    θ ← θ + (ε/2) ∇log p̂(θ) + N(0, ε T I)

``step_size`` is ε, the variance of the injected noise (at T = 1), and the drift takes ε/2:
the Euler–Maruyama step of dθ = ½∇log p dt + dW over a time ε.  (Noise of variance 2ε
with drift ε/2, or variance ε with drift ε, targets the wrong distribution: the bug of
ruqizhang/csgmcmc #1.)  Temperature 0 is plain gradient ascent on the log posterior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional

import torch

from . import _noise
from ._tree import Tree, all_finite, batch_size, leaves, randn_leaves, unflatten

GradFn = Callable[[Tree, object], Tree]


# --- validation shared by the SG-MCMC kernels and shells ---------------------------------------

def check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
    return float(value)


def check_temperature(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid temperature: {value!r} (must be a finite number >= 0; 1 is the posterior)")
    return float(value)


def check_friction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 1):
        raise ValueError(f"Invalid friction: {value!r} (the per-step momentum decay, in (0, 1])")
    return float(value)


def check_data_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid data_size: {value!r} (a positive int: the number of data points N)")
    return value


def ensure_finite(sampler: str, step: int, xs) -> None:
    """Raise FloatingPointError unless every entry of ``xs`` is finite (no NaN sample escapes);
    ``xs`` is a list of tensors or an already computed bool."""
    if not (xs if isinstance(xs, bool) else all_finite(xs)):
        raise FloatingPointError(f"{sampler}: the position became NaN or infinite at step {step} (step size too "
                                 f"large for the curvature, or a non-finite gradient); the state is not updated")


def cost(grad_fn, minibatch) -> tuple:
    """(grad_evals, data_touched) of one call of ``grad_fn`` on ``minibatch``."""
    b = batch_size(minibatch)
    return b * getattr(grad_fn, "evals_per_datum", 1), b


# --- SGLD ---------------------------------------------------------------------------------------

def sgld_update(xs: List[torch.Tensor], gs: List[torch.Tensor], generator: Optional[torch.Generator],
                step_size: float, temperature: float) -> tuple:
    """(new tensors θ + (ε/2) g + sqrt(ε T) ξ, all finite), leaf by leaf; ``generator`` None or T = 0:
    no noise.  CPU float32/float64 leaves take the fused numba kernel (:mod:`._noise`: one seed from
    ``generator``, its counter-based normals); other devices draw ``torch.randn``.  The optimizer shell
    (:func:`sgld_step_`) evaluates the same expression, so the two agree bit for bit."""
    half = 0.5 * step_size
    if generator is None or temperature == 0:
        new = [torch.add(x, g, alpha=half) for x, g in zip(xs, gs)]
        return new, all_finite(new)
    sd = math.sqrt(step_size * temperature)
    if _noise.fast_path(xs) and _noise.fast_path(gs):
        return _noise.sgld_new_leaves(xs, gs, generator, half, sd)
    new = [torch.add(x, g, alpha=half).add_(z, alpha=sd) for x, g, z in zip(xs, gs, randn_leaves(xs, generator))]
    return new, all_finite(new)


def sgld_plan(xs: List[torch.Tensor], gs: List[torch.Tensor], generator: Optional[torch.Generator],
              step_size: float, temperature: float, scratch: "_noise.Scratch", gscale: float = 1.0):
    """The in-place form of :func:`sgld_update` for the shell, with the gradient ``gscale·gs`` (rounded
    to its dtype, as ``torch.mul`` does): a plan (call :func:`sgld_apply_` to write it) or None when
    some new entry would not be finite; nothing is written here."""
    half = 0.5 * step_size
    if generator is not None and temperature > 0 and _noise.fast_path(xs) and _noise.fast_path(gs):
        items = _noise.sgld_plan(xs, gs, generator, half, math.sqrt(step_size * temperature), scratch, gscale)
        return None if items is None else ("fused", items)
    if gscale != 1.0:
        gs = [g.mul(gscale) for g in gs]
    new, ok = sgld_update(xs, gs, generator, step_size, temperature)
    return ("copy", list(zip(xs, new))) if ok else None


def sgld_apply_(plan) -> None:
    kind, items = plan
    if kind == "fused":
        _noise.sgld_apply_(items)
    else:
        for x, new in items:
            x.copy_(new)


class SGLDState(NamedTuple):
    position: Tree
    step: int = 0


class SGLDInfo(NamedTuple):
    grad_evals: int
    data_touched: int
    accepted: None = None


@dataclass(frozen=True)
class SGLDKernel:
    """SGLD (Welling & Teh, ICML 2011) as an ``init``/``step`` kernel; ``step_size`` is ε (module docstring).

    ``grad_fn(position, minibatch)`` returns ∇log p̂ (e.g. :func:`~relaxtorch.mcmc.grad_estimator`).

    >>> k = SGLDKernel(lambda x, batch: -x, temperature=0.0)   # a standard normal, no noise
    >>> s, info = k.step(torch.Generator(), k.init(torch.tensor([2.0])), torch.zeros(1), 0.5)
    >>> s.position.tolist(), info.grad_evals
    ([1.5], 1)
    """

    grad_fn: GradFn
    temperature: float = 1.0
    name = "SGLD"

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_temperature(self.temperature))

    def init(self, position: Tree) -> SGLDState:
        leaves(position)  # type check
        return SGLDState(position, 0)

    def step(self, generator: torch.Generator, state: SGLDState, minibatch, step_size: float):
        eps = check_positive("step_size", step_size)
        xs = leaves(state.position)
        gs = leaves(self.grad_fn(state.position, minibatch))
        new, ok = sgld_update(xs, gs, generator, eps, self.temperature)
        ensure_finite(self.name, state.step + 1, ok)
        evals, touched = cost(self.grad_fn, minibatch)
        return SGLDState(unflatten(state.position, new), state.step + 1), SGLDInfo(evals, touched)
