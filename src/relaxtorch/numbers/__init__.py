"""Number formats and rounding: the precision relaxation's core."""
from .finfo import Finfo, finfo
from .formats import BlockFloat, FixedPoint, FloatFormat, MXFormat
from .rounding import ROUNDINGS, quantize, quantize_

__all__ = ["BlockFloat", "Finfo", "FixedPoint", "FloatFormat", "MXFormat", "ROUNDINGS", "finfo", "quantize", "quantize_"]
