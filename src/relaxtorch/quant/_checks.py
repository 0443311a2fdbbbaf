"""Shared argument checks and bit counting for the quant package."""
from __future__ import annotations

import math

import torch

from ..numbers import ROUNDINGS, BlockFloat, MXFormat, finfo
from ..numbers.formats import FORMAT_TYPES


def check_format(name: str, fmt) -> None:
    """A relaxtorch number format or None, else TypeError naming the argument."""
    if fmt is not None and not isinstance(fmt, FORMAT_TYPES):
        raise TypeError(f"Invalid {name}: {fmt!r} (expected FloatFormat, FixedPoint, BlockFloat, MXFormat or None)")


def check_rounding(name: str, rounding) -> None:
    if not isinstance(rounding, str) or rounding not in ROUNDINGS:
        raise ValueError(f"Invalid {name}: {rounding!r} (must be one of {ROUNDINGS})")


def resolve_roundings(given: dict, defaults: dict, rounding) -> dict:
    """Per-role roundings: an explicit ``<role>_rounding``, else ``rounding``, else the role's default."""
    if rounding is not None:
        check_rounding("rounding", rounding)
    out = {}
    for role, value in given.items():
        value = value if value is not None else (rounding if rounding is not None else defaults[role])
        check_rounding(f"{role}_rounding", value)
        out[role] = value
    return out


def make_generator(generator) -> torch.Generator | None:
    """An int seed becomes a CPU torch.Generator (made once, so successive calls draw fresh bits)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"Invalid generator: {generator!r} (expected a torch.Generator, an int seed or None)")


def tensor_bits(t: torch.Tensor, fmt) -> int:
    """Bits to store ``t`` in ``fmt`` (None: t's dtype), shared block exponents/scales included."""
    n = t.numel()
    if fmt is None:
        return n * (torch.finfo(t.dtype).bits if t.is_floating_point() else torch.iinfo(t.dtype).bits)
    if isinstance(fmt, MXFormat):
        last = t.shape[-1] if t.dim() > 0 else 1
        blocks = (n // max(last, 1)) * math.ceil(last / fmt.block) if n else 0
        return n * fmt.elem.bits + blocks * fmt.scale_bits
    if isinstance(fmt, BlockFloat):
        blocks = 1 if fmt.dim is None or t.dim() == 0 else t.shape[fmt.dim]
        return n * fmt.wl + 8 * blocks  # one 8-bit shared exponent per block (QPyTorch/SWALP)
    return n * int(finfo(fmt).bits)
