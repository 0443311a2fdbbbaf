"""Autograd quantizers: round activations in the forward pass and errors in the backward pass.

``quantizer(forward, backward)`` returns a function ``q(x)`` whose forward
rounds ``x`` to ``forward`` and whose backward rounds the incoming gradient
(the *error*) to ``backward``; a ``None`` format is the identity on that side
(straight-through).  ``Quantizer`` is the same as an ``nn.Module``, to place
between layers (QPyTorch's ``quantizer`` / ``Quantizer``; Yang et al., SWALP 2019).

Default rounding: ``"nearest"`` forward, ``"stochastic"`` backward.  A rounded
activation is used once, so nearest is the better choice there: half the worst
error, lower variance, and a deterministic forward (evaluation and inference
need no generator and repeat exactly).  Errors are small next to the grid and
are summed over the batch and over steps, so only unbiased rounding keeps the
expected gradient right; nearest rounding flushes small errors to zero
(Gupta et al. 2015).  QPyTorch defaults to stochastic on both sides; pass
``forward_rounding="stochastic"`` for that.

``clamping_grad_zero=True`` (QPyTorch's option) zeroes the gradient wherever the
forward pass clamped: where ``x`` lies beyond the values the forward format (or
block) can hold and was saturated to its largest or smallest value (inf inputs
included); formats that overflow to inf or NaN clamp nothing.
"""
from __future__ import annotations

import functools

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..numbers import FixedPoint, FloatFormat, quantize
from ._checks import check_format, check_rounding, make_generator


class _Quantize(torch.autograd.Function):
    """Forward: quantize x to ``forward``; backward: quantize the gradient to ``backward``."""

    @staticmethod
    def forward(ctx, x, forward, backward, forward_rounding, backward_rounding, generator, clamping_grad_zero=False):
        ctx.backward_spec = (backward, backward_rounding, generator)
        ctx.clamped = clamped(x.detach(), forward) if clamping_grad_zero and forward is not None else None
        if forward is None:
            return x.view_as(x)
        return quantize(x, forward, forward_rounding, generator=generator)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        fmt, rounding, generator = ctx.backward_spec
        if fmt is not None:
            grad = quantize(grad, fmt, rounding, generator=generator)
        if ctx.clamped is not None:
            grad = grad.masked_fill(ctx.clamped, 0)
        return grad, None, None, None, None, None, None


def clamped(x: torch.Tensor, fmt) -> torch.Tensor:
    """Where ``quantize(x, fmt)`` saturates: ``x`` beyond the largest (smallest) value it can
    round to, in any rounding mode (rounding up gives less than x, or down more)."""
    return (quantize(x, fmt, "up") < x) | (quantize(x, fmt, "down") > x)


def _spec(forward, backward, forward_rounding, backward_rounding, generator, clamping_grad_zero=False) -> tuple:
    """Validate the arguments eagerly; an int seed becomes a Generator owned by the quantizer."""
    check_format("forward", forward)
    check_format("backward", backward)
    check_rounding("forward_rounding", forward_rounding)
    check_rounding("backward_rounding", backward_rounding)
    if not isinstance(clamping_grad_zero, bool):
        raise ValueError(f"Invalid clamping_grad_zero: {clamping_grad_zero!r} (must be a bool)")
    return forward, backward, forward_rounding, backward_rounding, make_generator(generator), clamping_grad_zero


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _apply(forward, backward, forward_rounding, backward_rounding, generator, clamping_grad_zero, x):
    return _Quantize.apply(x, forward, backward, forward_rounding, backward_rounding, generator, clamping_grad_zero)


def quantizer(forward=None, backward=None, forward_rounding: str = "nearest",
              backward_rounding: str = "stochastic", *, generator=None, clamping_grad_zero: bool = False):
    """Return ``q(x)``: ``x`` rounded to ``forward``, its gradient rounded to ``backward``.

    ``generator`` (a torch.Generator, an int seed or None for torch's default
    generator) drives stochastic rounding on both sides.  ``clamping_grad_zero``:
    zero gradient where the forward pass saturated (QPyTorch, 2019).  With both
    formats None, ``q`` returns its input unchanged.

    >>> q = quantizer(FixedPoint(4, 2), clamping_grad_zero=True)
    >>> x = torch.tensor([0.3, 5.0], requires_grad=True)
    >>> q(x).sum().backward()
    >>> x.grad.tolist()
    [1.0, 0.0]
    """
    spec = _spec(forward, backward, forward_rounding, backward_rounding, generator, clamping_grad_zero)
    if forward is None and backward is None:
        return _identity
    return functools.partial(_apply, *spec)


class Quantizer(nn.Module):
    """``quantizer(...)`` as a module: rounds what passes forward and the error that flows back.

    Same arguments as :func:`quantizer`; the formats are kept as
    ``forward_format`` / ``backward_format`` and shown in the repr.
    """

    def __init__(self, forward=None, backward=None, forward_rounding: str = "nearest",
                 backward_rounding: str = "stochastic", *, generator=None, clamping_grad_zero: bool = False):
        super().__init__()
        (self.forward_format, self.backward_format, self.forward_rounding,
         self.backward_rounding, self.generator, self.clamping_grad_zero) = _spec(
            forward, backward, forward_rounding, backward_rounding, generator, clamping_grad_zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forward_format is None and self.backward_format is None:
            return x
        out = _Quantize.apply(x, self.forward_format, self.backward_format, self.forward_rounding,
                              self.backward_rounding, self.generator, self.clamping_grad_zero)
        self.mark(out)
        return out

    @property
    def key(self) -> tuple:
        """What this quantizer does; equal keys round to the same values."""
        return (self.forward_format, self.backward_format, self.forward_rounding, self.backward_rounding,
                self.clamping_grad_zero)

    @property
    def elementwise(self) -> bool:
        """Whether both sides round each element on its own (no shared block scales)."""
        return all(f is None or isinstance(f, (FloatFormat, FixedPoint))
                   for f in (self.forward_format, self.backward_format))

    def mark(self, out: torch.Tensor) -> None:
        """Record on ``out`` that it holds this quantizer's output (until it is changed in place)."""
        out._relaxtorch_quantized = (self.key, out._version)

    def applied_to(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is, unchanged, the output of a quantizer with this one's key: then
        applying this one again would round values already on the grid."""
        return getattr(x, "_relaxtorch_quantized", None) == (self.key, x._version)

    def extra_repr(self) -> str:
        def side(fmt, rounding):
            return "None" if fmt is None else f"{fmt!r} ({rounding})"
        return (f"forward={side(self.forward_format, self.forward_rounding)}, "
                f"backward={side(self.backward_format, self.backward_rounding)}"
                + (", clamping_grad_zero=True" if self.clamping_grad_zero else ""))
