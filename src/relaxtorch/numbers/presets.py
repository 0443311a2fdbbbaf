"""Named formats: IEEE half/bfloat16, OCP FP8/FP6/FP4, OCP MX block formats, NVFP4-like."""
from __future__ import annotations

from .formats import BlockFloat, FixedPoint, FloatFormat, MXFormat

FP32 = FloatFormat(8, 23, name="FP32")
FP16 = FloatFormat(5, 10, name="FP16")
BF16 = FloatFormat(8, 7, name="BF16")
FP8_E5M2 = FloatFormat(5, 2, name="FP8_E5M2")  # IEEE-like: inf/NaN, overflow to inf like a torch cast
FP8_E4M3 = FloatFormat(4, 3, specials="fn", name="FP8_E4M3")  # OCP e4m3fn: max 448, saturates
FP6_E3M2 = FloatFormat(3, 2, specials="none", name="FP6_E3M2")  # OCP MX element, max 28
FP6_E2M3 = FloatFormat(2, 3, specials="none", name="FP6_E2M3")  # OCP MX element, max 7.5
FP4_E2M1 = FloatFormat(2, 1, specials="none", name="FP4_E2M1")  # OCP MX element, max 6
INT8 = FixedPoint(8, 6, name="INT8")  # OCP MXINT8 element: two's complement, 6 fraction bits
INT8_SM = FixedPoint(8, 6, symmetric=True, name="INT8_SM")  # sign-magnitude (microxcaling): +-127/64

MXFP8_E4M3 = MXFormat(FP8_E4M3, name="MXFP8_E4M3")
MXFP8_E5M2 = MXFormat(FloatFormat(5, 2, overflow="saturate"), name="MXFP8_E5M2")
MXFP6_E3M2 = MXFormat(FP6_E3M2, name="MXFP6_E3M2")
MXFP6_E2M3 = MXFormat(FP6_E2M3, name="MXFP6_E2M3")
MXFP4 = MXFormat(FP4_E2M1, name="MXFP4")
MXINT8 = MXFormat(INT8, name="MXINT8")  # OCP MX v1.0 (2023): -2 (0x80) is a code
MXINT8_SM = MXFormat(INT8_SM, name="MXINT8_SM")  # microxcaling's MX int8: no -2

BFP8 = BlockFloat(8, name="BFP8")

ALL = {f.name: f for f in (FP32, FP16, BF16, FP8_E5M2, FP8_E4M3, FP6_E3M2, FP6_E2M3, FP4_E2M1, INT8, INT8_SM,
                           MXFP8_E4M3, MXFP8_E5M2, MXFP6_E3M2, MXFP6_E2M3, MXFP4, MXINT8, MXINT8_SM, BFP8)}

__all__ = list(ALL) + ["ALL"]
