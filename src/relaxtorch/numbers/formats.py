"""Number formats as values: floating point, fixed point, block floating point, MX.

Every format is a frozen, hashable dataclass validated at construction.  Values
are simulated in a float32 container, so each format's value set must fit in
float32 (largest value at most 3.4e38, grid no finer than 2**-149).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

_F32_MAX = float.fromhex("0x1.fffffep127")
_F32_TINY_EXP = -149  # exponent of float32's smallest subnormal

SPECIALS = ("ieee", "fn", "none")
OVERFLOW = ("saturate", "inf", "nan")
SCALE_MODES = ("floor", "ceil", "even")


def _invalid(name: str, value, why: str) -> ValueError:
    return ValueError(f"Invalid {name}: {value!r} ({why})")


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, value, "must be an int")
    if not lo <= value <= hi:
        raise _invalid(name, value, f"must be in {lo}..{hi}")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format with ``exp`` exponent and ``man`` mantissa bits.

    ``specials`` says how the top exponent field is used:
    ``"ieee"`` reserves it for inf/NaN (IEEE 754, Higham's chop: E4M3 max 240),
    ``"fn"`` keeps it finite except the all-ones pattern, which is NaN
    (OCP FP8 e4m3fn: max 448), ``"none"`` makes every pattern finite
    (QPyTorch; OCP FP6/FP4 element types: E4M3 max 480).
    ``overflow`` is what a result beyond the largest finite value becomes:
    ``"saturate"`` (+-max), ``"inf"`` (only with ``specials="ieee"``) or ``"nan"``.
    It defaults to ``"inf"`` for IEEE formats and ``"saturate"`` otherwise.
    """

    exp: int
    man: int
    bias: int | None = None
    specials: str = "ieee"
    subnormals: bool = True
    overflow: str | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_int("exp", self.exp, 1, 8)
        _check_int("man", self.man, 0, 23)
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exp - 1) - 1)
        elif isinstance(self.bias, bool) or not isinstance(self.bias, int):
            raise _invalid("bias", self.bias, "must be an int or None")
        if self.specials not in SPECIALS:
            raise _invalid("specials", self.specials, f"must be one of {SPECIALS}")
        if not isinstance(self.subnormals, bool):
            raise _invalid("subnormals", self.subnormals, "must be a bool")
        if self.overflow is None:
            object.__setattr__(self, "overflow", "inf" if self.specials == "ieee" else "saturate")
        if self.overflow not in OVERFLOW:
            raise _invalid("overflow", self.overflow, f"must be one of {OVERFLOW}")
        if self.overflow == "inf" and self.specials != "ieee":
            raise _invalid("overflow", "inf", f"specials={self.specials!r} has no infinities")
        if self.overflow == "nan" and self.specials == "none":
            raise _invalid("overflow", "nan", "specials='none' has no NaN encoding")
        if self._top_normal_field() < 1:
            raise _invalid("exp", self.exp, f"leaves no normal numbers with specials={self.specials!r}")
        if self.emin - self.man < _F32_TINY_EXP:
            raise _invalid("bias", self.bias, "grid finer than float32's smallest subnormal 2**-149")
        if self.max > _F32_MAX:
            raise _invalid("bias", self.bias, "largest value exceeds float32's range")

    def _top_normal_field(self) -> int:
        top = 2**self.exp - 1
        if self.specials == "ieee" or (self.specials == "fn" and self.man == 0):
            return top - 1
        return top

    @property
    def bits(self) -> int:
        return 1 + self.exp + self.man

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return self._top_normal_field() - self.bias

    @property
    def max(self) -> float:
        top_mantissas = 2**self.man - 1
        if self.specials == "fn" and self.man > 0:
            top_mantissas -= 1  # the all-ones pattern is NaN
        return math.ldexp(1.0 + top_mantissas / 2**self.man, self.emax)

    def __repr__(self) -> str:
        if self.name:
            return self.name
        extra = "" if self.bias == 2 ** (self.exp - 1) - 1 else f", bias={self.bias}"
        extra += "" if self.subnormals else ", subnormals=False"
        return (f"FloatFormat(exp={self.exp}, man={self.man}{extra}, "
                f"specials={self.specials!r}, overflow={self.overflow!r})")


@dataclass(frozen=True)
class FixedPoint:
    """Two's-complement (or unsigned) fixed point: ``wl`` bits of which ``fl`` are fraction.

    The grid step is ``2**-fl``; values outside the range are clamped (saturated).
    ``symmetric=True`` drops the most negative code: range +-(2**(wl-1) - 1) steps, the
    value set of a sign-magnitude integer (QPyTorch's ``symmetric``; microxcaling's MX
    integer elements, 2023).
    """

    wl: int
    fl: int
    signed: bool = True
    symmetric: bool = False
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_int("wl", self.wl, 1 if not self.signed else 2, 24)
        _check_int("fl", self.fl, -126, 149)
        if not isinstance(self.signed, bool):
            raise _invalid("signed", self.signed, "must be a bool")
        if not isinstance(self.symmetric, bool):
            raise _invalid("symmetric", self.symmetric, "must be a bool")
        if self.symmetric and not self.signed:
            raise _invalid("symmetric", True, "an unsigned format has no negative codes to drop")
        if self.max > _F32_MAX:
            raise _invalid("fl", self.fl, "largest value exceeds float32's range")

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def eps(self) -> float:
        return math.ldexp(1.0, -self.fl)

    @property
    def max(self) -> float:
        int_bits = self.wl - 1 if self.signed else self.wl
        return (2**int_bits - 1) * self.eps

    @property
    def min(self) -> float:
        if not self.signed:
            return 0.0
        return -self.max if self.symmetric else -(2 ** (self.wl - 1)) * self.eps

    def __repr__(self) -> str:
        if self.name:
            return self.name
        extra = ("" if self.signed else ", signed=False") + (", symmetric=True" if self.symmetric else "")
        return f"FixedPoint(wl={self.wl}, fl={self.fl}{extra})"


@dataclass(frozen=True)
class BlockFloat:
    """Block floating point (QPyTorch semantics): ``wl``-bit signed integers sharing an exponent.

    The shared exponent is ``floor(log2(max |x|))`` over the whole tensor
    (``dim=None``) or over each slice ``x.select(dim, i)``; values are then
    fixed point with step ``2**(shared - (wl - 2))``, clamped to ``wl`` bits.  Infinities
    and NaN do not set the shared exponent: NaN stays NaN and +-inf saturate to the
    block's largest values, element by element, as fixed point does.
    """

    wl: int
    dim: int | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_int("wl", self.wl, 2, 24)
        if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int)):
            raise _invalid("dim", self.dim, "must be an int or None")

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def element(self) -> FixedPoint:
        """The per-element grid for a block whose shared exponent is 0."""
        return FixedPoint(self.wl, self.wl - 2)

    def __repr__(self) -> str:
        return self.name or f"BlockFloat(wl={self.wl}" + ("" if self.dim is None else f", dim={self.dim}") + ")"


ElementFormat = Union[FloatFormat, FixedPoint]


@dataclass(frozen=True)
class MXFormat:
    """OCP Microscaling (MX v1.0) block format: a power-of-two E8M0 scale per block.

    Blocks are ``block`` consecutive elements along dimension ``axis`` (default the
    last; microxcaling's ``axes``; the last block of a row may be shorter): the result,
    stochastic bits included, is that of ``x.transpose(axis, -1)`` transposed back.  The scale exponent is chosen by ``scale_mode``:
    ``"floor"`` (the spec): ``floor(log2(amax)) - emax(elem)``, which may saturate
    the largest elements (957 -> 896 in MXFP8 E4M3); ``"ceil"``: the smallest
    scale with ``amax <= max(elem) * scale``, never saturating; ``"even"``
    (torchao's EVEN): ``floor`` after rounding amax to the element's mantissa width.
    Elements are rounded to ``elem`` and saturate.  A block holding inf or NaN
    becomes NaN (the spec's NaN scale).  A block's values are those of ``elem`` times
    its scale that float32 can hold: where ``ceil`` or ``even`` pick a scale whose
    largest element exceeds float32's maximum (amax near 3.4e38), or an integer's
    most negative code times 2**127 is -2**128, the block saturates at its largest
    float32-finite value instead (never inf).
    """

    elem: ElementFormat
    block: int = 32
    scale_mode: str = "floor"
    axis: int = -1
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.elem, (FloatFormat, FixedPoint)):
            raise _invalid("elem", self.elem, "must be a FloatFormat or FixedPoint")
        _check_int("block", self.block, 1, 2**20)
        if self.scale_mode not in SCALE_MODES:
            raise _invalid("scale_mode", self.scale_mode, f"must be one of {SCALE_MODES}")
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise _invalid("axis", self.axis, "must be an int")

    @property
    def scale_bits(self) -> int:
        return 8

    @property
    def bits(self) -> float:
        """Bits per element, the shared scale included."""
        return self.elem.bits + self.scale_bits / self.block

    @property
    def elem_emax(self) -> int:
        """Exponent of the element type's largest value (the spec's emax_elem)."""
        return math.floor(math.log2(self.elem.max))

    def __repr__(self) -> str:
        if self.name:
            return self.name
        extra = "" if self.axis == -1 else f", axis={self.axis}"
        return f"MXFormat(elem={self.elem!r}, block={self.block}, scale_mode={self.scale_mode!r}{extra})"


Format = Union[FloatFormat, FixedPoint, BlockFloat, MXFormat]
FORMAT_TYPES = (FloatFormat, FixedPoint, BlockFloat, MXFormat)
