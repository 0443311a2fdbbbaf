"""Low-precision SGLD: SGLDLP-F, naive SGLDLP-L and variance-corrected SGLDLP-L.

Zhang, Wilson & De Sa, "Low-Precision Stochastic Gradient Langevin Dynamics", ICML 2022.
SGLD (Welling & Teh, ICML 2011) with step size ε and temperature T,
``θ ← θ + (ε/2) ∇log p̂(θ) + N(0, ε T)`` (``step_size`` is ε, as in
:class:`~relaxtorch.mcmc.SGLDKernel`; the paper's α is ε/2), with the weights on the grid
of a number format ``fmt``:

* ``accumulator="full"`` (SGLDLP-F): the accumulator θ stays in float32; the gradient is
  evaluated at the low-precision weights ``w = Q(θ)`` (stochastic rounding, drawn after
  each update), which are what a low-precision model computes with.
* ``accumulator="low"``, ``variance_correction=False`` (naive SGLDLP-L): the weights are the
  accumulator, ``θ ← Q(θ + (ε/2) ∇log p̂ + N(0, εT))`` with stochastic rounding.  Rounding
  adds its own variance (up to gap²/4) on top of εT, so at the small step sizes sampling
  needs the chain is far too wide (the paper's Figure 1 and Theorem 3).
* ``accumulator="low"``, ``variance_correction=True`` (VC SGLDLP-L, the paper's
  Algorithm 2): ``θ ← vc_quantize(θ + (ε/2) ∇log p̂, εT)``, a grid value whose variance is
  exactly εT where εT >= gap²/4 (:func:`~relaxtorch.mcmc.vc_quantize`).

``grad_fmt`` optionally rounds ∇log p̂ stochastically too (the paper's Q_G).  It rounds the
log-posterior gradient, whose scale is N times the per-datum one: use a block or float
format there, or a fixed point whose range covers it.  The kernel follows the package's
contract (``init``/``step(generator, state, minibatch, step_size)``); :class:`SGLDLP` is the
``torch.optim`` shell, and both call :func:`lp_update`, so they agree bit for bit.

On a FixedPoint grid with float32/float64 CPU leaves and a CPU ``torch.Generator``, :func:`lp_update`
runs the fused one-pass numba kernels of ``_lowprec_kernels`` (one seed from the generator per
call; same distribution as the torch path, other bits); BlockFloat and FloatFormat grids, other
devices and dtypes run the torch path (:func:`_lp_update_torch`, the reference the tests compare with).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional

import numpy as np
import torch

from ..numbers import BlockFloat, FixedPoint, FloatFormat, quantize
from ._tree import Tree
from ._tree import all_finite as _all_finite
from ._tree import batch_size as _batch_size
from ._tree import leaves as _leaves
from ._tree import unflatten as _unflatten
from ._lowprec_kernels import naive_fixed, vc_fixed
from ._noise import Stream
from ._noise import fast_path as _cpu_float
from ._vc import vc_quantize
from .sgld import check_positive as _check_positive
from .sgld import check_temperature as _check_temperature
from .sgld import ensure_finite as _ensure_finite

__all__ = ["SGLDLP", "SGLDLPInfo", "SGLDLPKernel", "SGLDLPState", "lp_update"]

ACCUMULATORS = ("low", "full")
_FORMATS = (FixedPoint, BlockFloat, FloatFormat)


def _check_config(fmt, accumulator, variance_correction, grad_fmt) -> None:
    if not isinstance(fmt, _FORMATS):
        raise ValueError(f"Invalid fmt: {fmt!r} (a FixedPoint, BlockFloat or FloatFormat)")
    if accumulator not in ACCUMULATORS:
        raise ValueError(f"Invalid accumulator: {accumulator!r} (one of {ACCUMULATORS}: 'full' is SGLDLP-F, "
                         "'low' is SGLDLP-L)")
    if not isinstance(variance_correction, bool):
        raise ValueError(f"Invalid variance_correction: {variance_correction!r} (a bool)")
    if grad_fmt is not None and not isinstance(grad_fmt, _FORMATS):
        raise ValueError(f"Invalid grad_fmt: {grad_fmt!r} (None, or a FixedPoint, BlockFloat or FloatFormat)")


def sampler_name(accumulator: str, variance_correction: bool) -> str:
    """The paper's name of a configuration: "SGLDLP-F", "SGLDLP-L" (naive) or "VC SGLDLP-L"."""
    if accumulator == "full":
        return "SGLDLP-F"
    return "VC SGLDLP-L" if variance_correction else "SGLDLP-L"


# --- the update, shared by kernel and shell ------------------------------------------------------

def lp_update(xs: List[torch.Tensor], gs: List[torch.Tensor], generator: Optional[torch.Generator],
              step_size: float, temperature: float, fmt, accumulator: str = "low",
              variance_correction: bool = True, grad_fmt=None):
    """One low-precision SGLD step, leaf by leaf: returns ``(positions, weights, means)``.

    ``xs`` are the accumulators (on ``fmt``'s grid when ``accumulator="low"``), ``gs`` the
    ∇log p̂ at the weights.  ``positions`` are the new accumulators; ``weights`` the new
    low-precision weights (the positions themselves for "low", ``Q(position)`` for "full");
    ``means`` the drifted values ``θ + (ε/2) g`` before noise and rounding (the kernels check
    them for NaN/inf: saturation would hide a divergence).  Torch path: draws per leaf, in order,
    the gradient rounding (if ``grad_fmt``), then Gaussian noise and rounding; fused path (FixedPoint
    on CPU, module docstring): every gradient rounding, then one seed for the whole call.

    >>> from relaxtorch.numbers import FixedPoint
    >>> g = torch.Generator().manual_seed(0)
    >>> pos, w, _ = lp_update([torch.zeros(4)], [torch.ones(4)], g, 0.01, 1.0, FixedPoint(8, 4))
    >>> bool(torch.equal(pos[0], w[0])) and bool(torch.all(pos[0] * 16 == torch.round(pos[0] * 16)))
    True
    """
    return _lp_step(xs, gs, generator, step_size, temperature, fmt, accumulator, variance_correction, grad_fmt)[:3]


def _lp_step(xs, gs, generator, step_size, temperature, fmt, accumulator, variance_correction, grad_fmt,
             gscale: float = 1.0):
    """:func:`lp_update` with the gradients ``gscale * gs`` (the shell passes -N and its raw ``.grad``),
    returning ``(positions, weights, means, finite)``: ``finite`` says whether every mean and position
    is finite (computed inside the fused kernels; one reduction pass on the torch path)."""
    half, var = 0.5 * step_size, step_size * temperature
    if _fused_applies(xs, gs, fmt, generator):
        if grad_fmt is not None:  # Q_G rounds the scaled gradient
            gs = [quantize(g.mul(gscale) if gscale != 1.0 else g, grad_fmt, "stochastic", generator=generator)
                  for g in gs]
            gscale = 1.0
        return _lp_update_fused(xs, gs, generator, half, var, fmt, accumulator, variance_correction, gscale)
    if gscale != 1.0:
        gs = [g.mul(gscale) for g in gs]
    pos, w, means = _lp_update_torch(xs, gs, generator, half, var, fmt, accumulator, variance_correction, grad_fmt)
    return pos, w, means, _all_finite(means + pos)


def _fused_applies(xs, gs, fmt, generator) -> bool:
    """The fused numba kernels take FixedPoint grids, float32/float64 CPU leaves, gradients of the
    same dtype and shape, and a CPU torch.Generator; everything else runs the torch path."""
    return (isinstance(fmt, FixedPoint) and isinstance(generator, torch.Generator) and generator.device.type == "cpu"
            and _cpu_float(list(xs)) and len(gs) == len(xs)
            and all(g.device.type == "cpu" and g.dtype == x.dtype and g.shape == x.shape for x, g in zip(xs, gs)))


def _lp_update_fused(xs, gs, generator, half, var, fmt, accumulator, variance_correction, gscale: float = 1.0):
    """:func:`lp_update` on a FixedPoint grid by the one-pass kernels of ``_lowprec_kernels`` (the same
    distribution as :func:`_lp_update_torch`, other bits): one seed from ``generator`` per call; returns
    ``(positions, weights, means, finite)`` with the gradients ``gscale * gs``."""
    stream, sd = Stream(generator), math.sqrt(var)
    gap, lo, hi = float(fmt.eps), float(fmt.min), float(fmt.max)
    positions, weights, means, ok = [], [], [], True
    for x, g in zip(xs, gs):
        dt = np.float32 if x.dtype == torch.float32 else np.float64
        xf, gf = _flat(x.detach().contiguous()), _flat(g.detach().contiguous())
        new, mean = torch.empty(x.shape, dtype=x.dtype), torch.empty(x.shape, dtype=x.dtype)
        if accumulator == "low" and variance_correction:
            fin = vc_fixed(xf, gf, dt(gscale), dt(half), var, gap, lo, hi, _flat(new), _flat(mean),
                           stream.seed, stream.offset)
            pos = new
        else:
            pos = new if accumulator == "low" else torch.empty(x.shape, dtype=x.dtype)
            fin = naive_fixed(xf, gf, dt(gscale), dt(half), dt(sd), gap, lo, hi, _flat(new), _flat(pos),
                              _flat(mean), stream.seed, stream.offset)
        stream.offset, ok = stream.offset + x.numel(), ok and fin
        positions.append(pos)
        weights.append(new)
        means.append(mean)
    return positions, weights, means, ok


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).numpy()


def _lp_update_torch(xs, gs, generator, half, var, fmt, accumulator, variance_correction, grad_fmt):
    """The reference torch path of :func:`lp_update` (any device, dtype and format)."""
    sd = math.sqrt(var)
    positions, weights, means = [], [], []
    for x, g in zip(xs, gs):
        if grad_fmt is not None:
            g = quantize(g, grad_fmt, "stochastic", generator=generator)
        mean = torch.add(x, g, alpha=half)
        means.append(mean)
        if accumulator == "low" and variance_correction:
            new = vc_quantize(mean, var, fmt, generator=generator)
            positions.append(new)
            weights.append(new)
            continue
        if var > 0:
            noisy = mean.add(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device), alpha=sd)
        else:
            noisy = mean
        rounded = quantize(noisy, fmt, "stochastic", generator=generator)
        positions.append(rounded if accumulator == "low" else noisy)
        weights.append(rounded)
    return positions, weights, means


class SGLDLPState(NamedTuple):
    position: Tree  # the accumulator: float32 (SGLDLP-F) or on the grid (SGLDLP-L)
    weights: Tree  # the low-precision weights the next gradient is taken at (the position for "low")
    step: int = 0


class SGLDLPInfo(NamedTuple):
    grad_evals: int
    data_touched: int
    accepted: None = None


@dataclass(frozen=True)
class SGLDLPKernel:
    """Low-precision SGLD (Zhang, Wilson & De Sa, ICML 2022) as an ``init``/``step`` kernel.

    ``grad_fn(weights, minibatch)`` returns ∇log p̂ (e.g. ``grad_estimator``); ``step_size``
    is ε (module docstring).  ``accumulator``: "low" (SGLDLP-L, naive or variance-corrected
    by ``variance_correction``) or "full" (SGLDLP-F; ``variance_correction`` does not apply:
    the noise is added in float32).  ``init`` rounds the position to ``fmt`` (nearest; it
    has no generator): the accumulator for "low", the first weights for "full".

    >>> from relaxtorch.numbers import FixedPoint
    >>> k = SGLDLPKernel(lambda w, batch: -w, FixedPoint(8, 4))   # a standard normal target
    >>> s, info = k.step(torch.Generator().manual_seed(0), k.init(torch.tensor([1.03])), torch.zeros(1), 0.1)
    >>> k.name, info.grad_evals, bool(s.position * 16 == torch.round(s.position * 16))
    ('VC SGLDLP-L', 1, True)
    """

    grad_fn: Callable[[Tree, object], Tree]
    fmt: object
    accumulator: str = "low"
    variance_correction: bool = True
    temperature: float = 1.0
    grad_fmt: object = None

    def __post_init__(self):
        _check_config(self.fmt, self.accumulator, self.variance_correction, self.grad_fmt)
        object.__setattr__(self, "temperature", _check_temperature(self.temperature))

    @property
    def name(self) -> str:
        return sampler_name(self.accumulator, self.variance_correction)

    def init(self, position: Tree) -> SGLDLPState:
        xs = _leaves(position)
        rounded = [quantize(x, self.fmt, "nearest") for x in xs]
        if self.accumulator == "low":
            pos = _unflatten(position, rounded)
            return SGLDLPState(pos, pos, 0)
        return SGLDLPState(_unflatten(position, [x.detach().clone() for x in xs]), _unflatten(position, rounded), 0)

    def step(self, generator: torch.Generator, state: SGLDLPState, minibatch, step_size: float):
        eps = _check_positive("step_size", step_size)
        xs = _leaves(state.position)
        gs = _leaves(self.grad_fn(state.weights, minibatch))
        pos, w, _, finite = _lp_step(xs, gs, generator, eps, self.temperature, self.fmt, self.accumulator,
                                     self.variance_correction, self.grad_fmt)
        _ensure_finite(self.name, state.step + 1, finite)
        b = _batch_size(minibatch)
        evals = b * getattr(self.grad_fn, "evals_per_datum", 1)
        new_pos = _unflatten(state.position, pos)
        new_w = new_pos if self.accumulator == "low" else _unflatten(state.position, w)
        return SGLDLPState(new_pos, new_w, state.step + 1), SGLDLPInfo(evals, b)


class SGLDLP(torch.optim.Optimizer):
    """Low-precision SGLD (Zhang, Wilson & De Sa, ICML 2022) as a ``torch.optim`` optimizer.

    The conventions of :class:`~relaxtorch.mcmc.SGLD`: ``.grad`` holds the gradient of the
    **minibatch mean** negative log-likelihood (plus ``-log p(θ)/N`` if the loss carries the
    prior); ``weight_decay`` λ adds λθ, a N(0, 1/(Nλ)) prior; the shell forms
    ∇log p̂ = -N (grad + λθ) and steps with ε = 2 lr / N, i.e.
    ``θ ← θ - lr (grad + λθ) + N(0, 2 lr T / N)`` on ``fmt``'s grid.  ``lr`` and ``temperature``
    live in the param groups (LR schedulers work).

    The parameters are the low-precision weights the model computes with: the constructor
    rounds them to ``fmt`` (nearest, in place).  With ``accumulator="full"`` (SGLDLP-F) the
    float32 accumulators live in ``state[p]["accumulator"]`` (initialised from the parameters
    before rounding) and the parameters receive ``Q(accumulator)`` after each step; with
    "low" (SGLDLP-L) the parameters are the accumulators.  Given the same generator and
    gradients the shell and :class:`SGLDLPKernel` (``step_size = 2 lr / N``) agree bit for bit.

    >>> from relaxtorch.numbers import FixedPoint
    >>> w = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    >>> opt = SGLDLP([w], lr=1e-3, data_size=100, fmt=FixedPoint(8, 4), generator=torch.Generator().manual_seed(0))
    >>> w.grad = torch.ones(2); opt.step()
    >>> bool(torch.all(w * 16 == torch.round(w * 16)))
    True
    """

    def __init__(self, params, lr: float, *, data_size: int, fmt, accumulator: str = "low",
                 variance_correction: bool = True, temperature: float = 1.0, weight_decay: float = 0.0,
                 grad_fmt=None, generator=None):
        _check_positive("lr", lr)
        _check_temperature(temperature)
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not (
                math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"Invalid weight_decay: {weight_decay!r} (a finite number >= 0)")
        if isinstance(data_size, bool) or not isinstance(data_size, int) or data_size < 1:
            raise ValueError(f"Invalid data_size: {data_size!r} (a positive int: the number of data points N)")
        _check_config(fmt, accumulator, variance_correction, grad_fmt)
        super().__init__(params, dict(lr=lr, temperature=temperature, weight_decay=weight_decay))
        for group in self.param_groups:
            _check_positive("lr", group["lr"])
            _check_temperature(group["temperature"])
        self.data_size, self.fmt, self.accumulator = data_size, fmt, accumulator
        self.variance_correction, self.grad_fmt = variance_correction, grad_fmt
        self.sampler = sampler_name(accumulator, variance_correction)
        ps = [p for g in self.param_groups for p in g["params"]]
        if isinstance(generator, torch.Generator):
            self.generator = generator
        elif generator is None or (isinstance(generator, int) and not isinstance(generator, bool)):
            self.generator = torch.Generator(device=ps[0].device if ps else "cpu").manual_seed(generator or 0)
        else:
            raise ValueError(f"Invalid generator: {generator!r} (a torch.Generator, an int seed, or None for seed 0)")
        self.steps = 0
        with torch.no_grad():
            for p in ps:
                if accumulator == "full":
                    self.state[p]["accumulator"] = p.detach().clone()
                p.copy_(quantize(p, fmt, "nearest"))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        updates = []
        for group in self.param_groups:
            lr, temp, wd = group["lr"], group["temperature"], group["weight_decay"]
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
                raise ValueError(f"Invalid lr: {lr!r} (set by a scheduler? must be finite and >= 0)")
            ps = [p for p in group["params"] if p.grad is not None]
            if lr == 0 or not ps:
                continue
            accs = [self.state[p]["accumulator"] if self.accumulator == "full" else p for p in ps]
            gs = [p.grad.add(p, alpha=wd) if wd else p.grad for p in ps]
            pos, w, _, finite = _lp_step(accs, gs, self.generator, 2.0 * lr / self.data_size, temp, self.fmt,
                                         self.accumulator, self.variance_correction, self.grad_fmt,
                                         gscale=-float(self.data_size))
            updates.append((ps, pos, w, finite))
        _ensure_finite(self.sampler, self.steps, all(u[3] for u in updates))
        for ps, pos, w, _ in updates:
            for p, x, wx in zip(ps, pos, w):
                if self.accumulator == "full":
                    self.state[p]["accumulator"] = x
                p.copy_(wx)
        return loss
