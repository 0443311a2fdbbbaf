"""The number formats the low-precision samplers store their samples in.

``fixedN`` is N-bit two's-complement fixed point whose fraction bits suit the problem: the
integer part just covers the posterior's range (``problem_range``: the exact mean plus four
standard deviations where known, else the problem's declared range), as a user would pick it.
``bfp8`` is 8-bit block floating point with one shared exponent per parameter tensor, which
needs no such choice; ``bf16`` and ``fp8_e4m3`` are float formats.
"""
from __future__ import annotations

import math

from ... import formats as F
from ...numbers import BlockFloat, FixedPoint, finfo

PRECISIONS = {"fp32": None, "fixed8": ("fixed", 8), "fixed6": ("fixed", 6), "bfp8": BlockFloat(8),
              "bf16": F.BF16, "fp8_e4m3": F.FP8_E4M3}


def problem_range(problem, exact: dict | None = None) -> float:
    """The magnitude a fixed-point sample of ``problem`` must hold (``exact``: its exact moments)."""
    if exact and exact.get("mean") is not None:
        sd = exact["cov"].double().diagonal().clamp_min(0).sqrt()
        return float((exact["mean"].double().flatten().abs() + 4 * sd).max())
    return float(problem.info.get("range", 4.0))


def format_for(name: str, problem, exact: dict | None = None):
    """The relaxtorch format of precision ``name`` on ``problem`` (None: float32)."""
    p = PRECISIONS[name]
    if isinstance(p, tuple):
        wl = p[1]
        int_bits = max(0, math.ceil(math.log2(max(problem_range(problem, exact), 1e-30))))  # 2**int_bits >= range
        return FixedPoint(wl, max(0, wl - 1 - int_bits))
    return p


def bits_of(fmt) -> int:
    """Bits per stored number (32 for float32)."""
    return 32 if fmt is None else int(finfo(fmt).bits)
