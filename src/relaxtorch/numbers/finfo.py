"""``finfo(fmt)``: the limits of a format, like numpy.finfo / torch.finfo."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .formats import BlockFloat, FixedPoint, FloatFormat, Format, MXFormat


@dataclass(frozen=True)
class Finfo:
    """Limits of a number format. For block formats, limits are those of a block with scale 1."""

    bits: float  # storage bits per number (block formats include their share of the scale)
    max: float  # largest finite value
    min: float  # most negative finite value
    smallest_normal: float
    smallest_subnormal: float  # smallest positive value
    eps: float  # distance from 1.0 to the next value (the step for fixed point)
    has_inf: bool
    has_nan: bool

    @property
    def tiny(self) -> float:  # numpy's name
        return self.smallest_normal


def finfo(fmt: Format) -> Finfo:
    if isinstance(fmt, FloatFormat):
        tiny = math.ldexp(1.0, fmt.emin)
        sub = math.ldexp(1.0, fmt.emin - fmt.man) if fmt.subnormals else tiny
        return Finfo(fmt.bits, fmt.max, -fmt.max, tiny, sub, math.ldexp(1.0, -fmt.man),
                     fmt.specials == "ieee", fmt.specials != "none")
    if isinstance(fmt, FixedPoint):
        return Finfo(fmt.bits, fmt.max, fmt.min, fmt.eps, fmt.eps, fmt.eps, False, False)
    if isinstance(fmt, BlockFloat):
        e = finfo(fmt.element)
        return Finfo(fmt.bits, e.max, e.min, e.smallest_normal, e.smallest_subnormal, e.eps, False, False)
    if isinstance(fmt, MXFormat):
        e = finfo(fmt.elem)
        return Finfo(fmt.bits, e.max, e.min, e.smallest_normal, e.smallest_subnormal, e.eps, False, True)
    raise TypeError(f"Invalid fmt: {fmt!r} (expected FloatFormat, FixedPoint, BlockFloat or MXFormat)")
