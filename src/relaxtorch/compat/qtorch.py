"""QPyTorch's public API (Zhang et al., QPyTorch 2019) on relaxtorch's kernels.

Change ``from qtorch.quant import ...`` / ``from qtorch import ...`` / ``from qtorch.optim
import ...`` to ``from relaxtorch.compat.qtorch import ...`` (``quant`` and ``optim`` are
aliases of this module, so ``qtorch.quant.quantizer`` also works).  QPyTorch's intended
semantics are kept: float formats have no inf/NaN codes (every exponent is finite, E4M3's
max is 480) and saturate at +-max; "nearest" breaks ties away from zero; fixed point
clamps unless ``clamp=False``; a BlockFloatingPoint with ``dim=-1`` is one block per tensor.

Where QPyTorch itself is wrong this layer gives the exact result instead:

* float subnormals: QPyTorch adds 2**emin in float32 first and so rounds twice
  (``float_quantize(-8.940439e-08, 5, 10)`` gives -1.19e-07; exact is -5.96e-08);
* NaN stays NaN (QPyTorch: +-max) and a zero keeps the input's sign (QPyTorch: floats
  below 2**emin give +0; its fixed-point zero's sign depends on the input's magnitude);
* fixed-point ties on CPU: QPyTorch's CPU kernel rounds ties to even (``nearbyint``), its
  GPU kernel away from zero; here always away (its documented "nearest");
* block floating point keeps the most negative code -2**(wl-1) steps (QPyTorch clips it)
  and rounds once (QPyTorch adds 6 * 2**e in float32 first);
* ``clamp=False`` fixed point never overflows (QPyTorch: inf once ``|x| * 2**fl`` does);
* ``clamping_grad_zero`` masks the gradient even with ``backward_number=None``, and
  ``backward_hooks`` run in every quantizer (QPyTorch: only with ``clamping_grad_zero``).

Stochastic rounding draws from a ``torch.Generator`` (``generator=``, keyword only) or
torch's default generator, so ``torch.manual_seed`` makes it repeat (QPyTorch's CPU
kernels seed from ``random_device``).
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from .. import numbers as _numbers
from .._wrapped import WrappedOptimizer
from ..numbers import _grid, rounding as _rounding
from ..numbers.formats import BlockFloat as _BlockFloat
from ..numbers.formats import FixedPoint as _FixedPoint
from ..numbers.formats import FloatFormat as _FloatFormat

__all__ = ["Number", "FloatingPoint", "FixedPoint", "BlockFloatingPoint", "float_quantize",
           "fixed_point_quantize", "block_quantize", "quantizer", "Quantizer", "OptimLP"]

_ROUNDINGS = {"nearest": "nearest_away", "stochastic": "stochastic"}
_F32_MAX = float.fromhex("0x1.fffffep127")


def _rounding_mode(rounding) -> str:
    if rounding not in _ROUNDINGS:
        raise ValueError(f"Invalid rounding: {rounding!r} (QPyTorch's modes are 'stochastic' and 'nearest')")
    return _ROUNDINGS[rounding]


class Number:
    """A QPyTorch number format; ``.format`` is the relaxtorch format it stands for."""

    format = None


class FloatingPoint(Number):
    """``exp`` exponent and ``man`` mantissa bits, bias 2**(exp-1)-1, subnormals, no inf/NaN codes.

    ``format``: ``FloatFormat(exp, man, specials="none")`` (saturating); for ``exp=8`` the
    top exponent is float32's inf/NaN, so ``FloatFormat(8, man)`` (QPyTorch overflows to inf there).
    """

    def __init__(self, exp: int, man: int):
        if isinstance(exp, bool) or not isinstance(exp, int) or not 1 <= exp <= 8:
            raise ValueError(f"Invalid exp: {exp!r} (must be an int in 1..8)")
        if isinstance(man, bool) or not isinstance(man, int) or not 1 <= man <= 23:
            raise ValueError(f"Invalid man: {man!r} (must be an int in 1..23)")
        self.exp, self.man = exp, man
        self.format = _FloatFormat(exp, man) if exp == 8 else _FloatFormat(exp, man, specials="none")

    def __repr__(self) -> str:
        return f"FloatingPoint (exponent={self.exp:d}, mantissa={self.man:d})"

    __str__ = __repr__


class FixedPoint(Number):
    """``wl``-bit two's complement with ``fl`` fraction bits; ``clamp`` saturates, ``symmetric``
    drops the most negative code.  ``format`` is relaxtorch's ``FixedPoint`` (None unclamped)."""

    def __init__(self, wl: int, fl: int, clamp: bool = True, symmetric: bool = False):
        if not isinstance(clamp, bool):
            raise ValueError(f"Invalid clamp: {clamp!r} (must be a bool)")
        self.wl, self.fl, self.clamp, self.symmetric = wl, fl, clamp, symmetric
        fmt = _FixedPoint(wl, fl, symmetric=symmetric)  # validates wl, fl, symmetric
        self.format = fmt if clamp else None

    def __repr__(self) -> str:
        return f"FixedPoint (wl={self.wl:d}, fl={self.fl:d})"

    __str__ = __repr__


class BlockFloatingPoint(Number):
    """``wl``-bit integers sharing the exponent of their block's largest magnitude: one block per
    index along ``dim``, or the whole tensor for ``dim=-1`` (QPyTorch's convention)."""

    def __init__(self, wl: int, dim: int = -1):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < -1:
            raise ValueError(f"Invalid dim: {dim!r} (-1 for the whole tensor, else a dimension >= 0)")
        self.wl, self.dim = wl, dim
        self.format = _BlockFloat(wl, dim=None if dim == -1 else dim)

    def __repr__(self) -> str:
        return f"BlockFloatingPoint (wl={self.wl:d}, dim={self.dim:d})"

    __str__ = __repr__


def _unclamped(x: torch.Tensor, fl: int, mode: str, generator) -> torch.Tensor:
    """Multiples of 2**-fl with no range limit (QPyTorch's ``clamp=False``)."""
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        _numbers.quantize(x, _FixedPoint(8, 0), mode)  # raises the usual TypeError
    grid = _grid.Grid(_grid.NEVER + fl, _grid.NEVER, -fl, _F32_MAX, _F32_MAX, 0)
    code = _rounding.ROUNDING_CODES[mode]
    seeds = _rounding._draw_seeds(generator, x.device) if mode == "stochastic" else (0, 0)
    out = _rounding._round_flat(x.detach().float().contiguous(), grid, code, seeds, _rounding._AWAY[mode])
    return out.to(x.dtype)


def _quantize(x: torch.Tensor, number: Number, rounding: str, generator=None) -> torch.Tensor:
    mode = _rounding_mode(rounding)
    if isinstance(number, FixedPoint) and not number.clamp:
        return _unclamped(x, number.fl, mode, generator)
    return _numbers.quantize(x, number.format, mode, generator=generator)


def float_quantize(x, exp, man, rounding="stochastic", *, generator=None):
    """QPyTorch's ``float_quantize``: round to ``FloatingPoint(exp, man)``.

    >>> float_quantize(torch.tensor([1.0625, 500.0]), 4, 3, "nearest").tolist()
    [1.125, 480.0]
    """
    return _quantize(x, FloatingPoint(exp, man), rounding, generator)


def fixed_point_quantize(x, wl, fl, clamp=True, symmetric=False, rounding="stochastic", *, generator=None):
    """QPyTorch's ``fixed_point_quantize``.

    >>> fixed_point_quantize(torch.tensor([0.125, -9.0]), 4, 2, symmetric=True, rounding="nearest").tolist()
    [0.25, -1.75]
    """
    return _quantize(x, FixedPoint(wl, fl, clamp, symmetric), rounding, generator)


def block_quantize(x, wl, dim=-1, rounding="stochastic", *, generator=None):
    """QPyTorch's ``block_quantize`` (``dim=-1``: one block for the whole tensor).

    >>> block_quantize(torch.tensor([3.0, 0.3]), 4, rounding="nearest").tolist()
    [3.0, 0.5]
    """
    return _quantize(x, BlockFloatingPoint(wl, dim), rounding, generator)


def _clamped_mask(x: torch.Tensor, number: FixedPoint, rounding: str, generator):
    """QPyTorch's mask: round on the unbounded grid, then clamp; True where clamping changed it."""
    q = _unclamped(x, number.fl, _rounding_mode(rounding), generator)
    fmt = number.format
    mask = (q > fmt.max) | (q < fmt.min)
    return q.clamp(fmt.min, fmt.max), mask


def quantizer(forward_number=None, backward_number=None, forward_rounding="stochastic",
              backward_rounding="stochastic", clamping_grad_zero=False, backward_hooks=[], *, generator=None):
    """QPyTorch's ``quantizer``: ``q(x)`` rounds ``x`` to ``forward_number`` and its gradient to
    ``backward_number`` (after ``backward_hooks``); ``clamping_grad_zero`` (fixed point only)
    zeroes the gradient where the forward value was clamped."""
    for name, num in (("forward_number", forward_number), ("backward_number", backward_number)):
        if num is not None and not isinstance(num, Number):
            raise TypeError(f"Invalid {name}: {num!r} (expected a qtorch Number or None)")
    _rounding_mode(forward_rounding)
    _rounding_mode(backward_rounding)
    if clamping_grad_zero and not (forward_number is None or isinstance(forward_number, FixedPoint)):
        raise ValueError("zeroing clamping gradient only support fixed point.")
    if clamping_grad_zero and forward_number is not None and not forward_number.clamp:
        raise ValueError("must use clamping if zeroing out clamped gradient")
    hooks = list(backward_hooks)

    class Rounding(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.mask = None
            if forward_number is None:
                return x.view_as(x)
            if clamping_grad_zero:
                out, ctx.mask = _clamped_mask(x, forward_number, forward_rounding, generator)
                return out
            return _quantize(x, forward_number, forward_rounding, generator)

        @staticmethod
        def backward(ctx, grad):
            for hook in hooks:
                grad = hook(grad)
            if backward_number is not None:
                grad = _quantize(grad, backward_number, backward_rounding, generator)
            if ctx.mask is not None:
                grad = grad.masked_fill(ctx.mask, 0)
            return grad

    return Rounding.apply


class Quantizer(nn.Module):
    """QPyTorch's ``Quantizer`` module: ``quantizer(...)`` between layers."""

    def __init__(self, forward_number=None, backward_number=None, forward_rounding="stochastic",
                 backward_rounding="stochastic", *, generator=None):
        super().__init__()
        self.quantize = quantizer(forward_number, backward_number, forward_rounding, backward_rounding,
                                  generator=generator)

    def forward(self, x):
        return self.quantize(x)


class OptimLP(WrappedOptimizer):
    """QPyTorch's ``OptimLP``: quantization *functions* for gradients (after ``grad_scaling``),
    an accumulator copy of each weight, the weights and the momentum state.

    Any torch optimizer is accepted (QPyTorch: SGD and Adam); the rounded state is SGD's
    ``momentum_buffer`` (skipped with momentum 0), Adam's ``exp_avg``/``exp_avg_sq``, else every
    float state tensor shaped like its parameter.
    """

    def __init__(self, optim, weight_quant=None, grad_scaling=1.0, grad_quant=None, momentum_quant=None,
                 acc_quant=None):
        super().__init__(optim)
        if not grad_scaling > 0:
            raise ValueError(f"Invalid grad_scaling: {grad_scaling!r} (gradient scaling must be positive)")
        self.optim = optim
        self.grad_scaling = grad_scaling
        self.weight_quant, self.grad_quant = weight_quant, grad_quant
        self.momentum_quant, self.acc_quant = momentum_quant, acc_quant
        self.weight_acc = {p: p.detach().clone() for p in self._params()} if acc_quant is not None else None

    def _momentum_keys(self, group, p) -> list[str]:
        state = self.optim.state[p]
        if isinstance(self.optim, torch.optim.SGD):
            return ["momentum_buffer"] if group.get("momentum", 0) != 0 and "momentum_buffer" in state else []
        if isinstance(self.optim, torch.optim.Adam):
            return [k for k in ("exp_avg", "exp_avg_sq") if k in state]
        return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.shape == p.shape]

    @torch.no_grad()
    def step(self, closure=None):
        groups = self.optim.param_groups
        if self.grad_quant is not None:
            for p in (p for g in groups for p in g["params"] if p.grad is not None):
                p.grad.data = self.grad_quant(p.grad.data * self.grad_scaling)
        if self.acc_quant is not None:
            for p in (p for g in groups for p in g["params"]):
                p.data = self.weight_acc[p].data
        loss = self.optim.step(closure)
        for p in (p for g in groups for p in g["params"]):
            if self.acc_quant is not None:
                p.data = self.weight_acc[p].data = self.acc_quant(p.data).data
            if self.weight_quant is not None:
                p.data = self.weight_quant(p.data).data
        if self.momentum_quant is not None:
            for g in groups:
                for p in (p for p in g["params"] if p.grad is not None):
                    state = self.optim.state[p]
                    for key in self._momentum_keys(g, p):
                        state[key] = self.momentum_quant(state[key])
        return loss

    def __repr__(self) -> str:
        return f"LP Optimizer: {self.optim!r}"


quant = optim = sys.modules[__name__]  # qtorch.quant.X and qtorch.optim.X resolve here too
