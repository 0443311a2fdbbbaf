"""Translate an element format into the parameters of the rounding kernels.

Every element format is described to the kernels as the same thing: a grid of
magnitudes.  A value of float32 exponent ``E`` lies on a grid of step
``2**(E - man)`` when ``E >= emin`` (normal numbers) and of step ``2**k_low``
below (subnormals, a flush to ``{0, 2**emin}``, or fixed point, whose ``emin`` is
out of reach).  Magnitudes beyond ``max_pos``/``max_neg`` overflow by policy.
A block scale ``2**s`` shifts ``emin``, ``k_low`` and the maxima together.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .formats import FixedPoint, FloatFormat

OVERFLOW_CODE = {"saturate": 0, "inf": 1, "nan": 2}
NEVER = 1 << 20  # an exponent no float32 reaches: "no normal range" (fixed point)


class Grid(NamedTuple):
    man: int
    emin: int
    k_low: int
    max_pos: float
    max_neg: float
    overflow: int


def element_grid(fmt: FloatFormat | FixedPoint) -> Grid:
    if isinstance(fmt, FloatFormat):
        k_low = fmt.emin - fmt.man if fmt.subnormals else fmt.emin
        return Grid(fmt.man, fmt.emin, k_low, fmt.max, fmt.max, OVERFLOW_CODE[fmt.overflow])
    return Grid(NEVER + fmt.fl, NEVER, -fmt.fl, fmt.max, 0.0 - fmt.min, OVERFLOW_CODE["saturate"])  # +0.0 if unsigned


_F32_MAX = float.fromhex("0x1.fffffep127")


def finite_cap(man: int, emin: int, k_low: int) -> float:
    """The largest float32-finite value of a grid: float32's maximum rounded toward zero onto
    the grid's step at exponent 127 (0 if that step exceeds 2**127); the kernels' ``finite_cap``."""
    k = 127 - man if emin <= 127 else k_low
    if k > 127:
        return 0.0
    step = math.ldexp(1.0, k)
    return math.floor(_F32_MAX / step) * step if k > 104 else _F32_MAX


def shifted(grid: Grid, s: int) -> Grid:
    """The grid scaled by ``2**s`` (a block's shared scale).  Its extremes are capped at the
    largest value float32 can hold: two's-complement -2**(wl-1) steps at scale 2**127 would be
    -2**128, so such a block saturates at -(2**(wl-1) - 1) steps instead."""
    cap = finite_cap(grid.man, grid.emin + s, grid.k_low + s)
    return grid._replace(emin=grid.emin + s, k_low=grid.k_low + s,
                         max_pos=min(math.ldexp(grid.max_pos, s), cap), max_neg=min(math.ldexp(grid.max_neg, s), cap))


def elem_mantissa_bits(fmt: FloatFormat | FixedPoint) -> int:
    """Mantissa width used by the "even" MX scale mode."""
    return fmt.man if isinstance(fmt, FloatFormat) else max(fmt.wl - 2, 0)
