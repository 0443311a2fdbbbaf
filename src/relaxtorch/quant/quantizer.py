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
    def forward(ctx, x, forward, backward, forward_rounding, backward_rounding, generator):
        ctx.backward_spec = (backward, backward_rounding, generator)
        if forward is None:
            return x.view_as(x)
        return quantize(x, forward, forward_rounding, generator=generator)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        fmt, rounding, generator = ctx.backward_spec
        if fmt is not None:
            grad = quantize(grad, fmt, rounding, generator=generator)
        return grad, None, None, None, None, None


def _spec(forward, backward, forward_rounding, backward_rounding, generator) -> tuple:
    """Validate the arguments eagerly; an int seed becomes a Generator owned by the quantizer."""
    check_format("forward", forward)
    check_format("backward", backward)
    check_rounding("forward_rounding", forward_rounding)
    check_rounding("backward_rounding", backward_rounding)
    return forward, backward, forward_rounding, backward_rounding, make_generator(generator)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _apply(forward, backward, forward_rounding, backward_rounding, generator, x):
    return _Quantize.apply(x, forward, backward, forward_rounding, backward_rounding, generator)


def quantizer(forward=None, backward=None, forward_rounding: str = "nearest",
              backward_rounding: str = "stochastic", *, generator=None):
    """Return ``q(x)``: ``x`` rounded to ``forward``, its gradient rounded to ``backward``.

    ``generator`` (a torch.Generator, an int seed or None for torch's default
    generator) drives stochastic rounding on both sides.  With both formats
    None, ``q`` returns its input unchanged.
    """
    spec = _spec(forward, backward, forward_rounding, backward_rounding, generator)
    if forward is None and backward is None:
        return _identity
    return functools.partial(_apply, *spec)


class Quantizer(nn.Module):
    """``quantizer(...)`` as a module: rounds what passes forward and the error that flows back.

    Same arguments as :func:`quantizer`; the formats are kept as
    ``forward_format`` / ``backward_format`` and shown in the repr.
    """

    def __init__(self, forward=None, backward=None, forward_rounding: str = "nearest",
                 backward_rounding: str = "stochastic", *, generator=None):
        super().__init__()
        (self.forward_format, self.backward_format, self.forward_rounding,
         self.backward_rounding, self.generator) = _spec(forward, backward, forward_rounding,
                                                         backward_rounding, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forward_format is None and self.backward_format is None:
            return x
        out = _Quantize.apply(x, self.forward_format, self.backward_format, self.forward_rounding,
                              self.backward_rounding, self.generator)
        self.mark(out)
        return out

    @property
    def key(self) -> tuple:
        """What this quantizer does; equal keys round to the same values."""
        return self.forward_format, self.backward_format, self.forward_rounding, self.backward_rounding

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
                f"backward={side(self.backward_format, self.backward_rounding)}")
