"""Named precision presets: which number format each kind of stored number uses.

A :class:`Precision` assigns a format (``None`` = float32, not quantized) to
the weights, forward activations, backward errors, gradients, momentum
(optimizer state) and an optional high-precision accumulator.  ``acc=None``
in a low-precision preset means the weights themselves are low precision, as in
LP-SGD and SWALP ("all numbers 8-bit"): there is no float32 master copy.

Fixed-point fraction bits, chosen for standardized inputs and default inits
(weights of order 0.1-1; minibatch-mean errors and gradients of order
1e-3-1e-1, which stochastic rounding keeps unbiased on a coarse grid):

==========  =====================  ====================  ======================
preset      weights, momentum      activations           errors, gradients
==========  =====================  ====================  ======================
``fixed8``  FixedPoint(8, 6):      FixedPoint(8, 1):     FixedPoint(8, 7):
            +-2, step 1/64         +-64, step 1/2        +-1, step 1/128
``fixed4``  FixedPoint(4, 2):      FixedPoint(4, 0):     FixedPoint(4, 5):
            +-2, step 1/4          +-8, step 1           +-1/4, step 1/32
==========  =====================  ====================  ======================

Activations include the logits and saturate with a straight-through backward,
so their range must hold the logits: a clamp inside the logits' range lets
cross-entropy push the weights to their own clamp (measured on the digits MLP
at lr 0.1: +-16 or +-32 diverge to 8-14% test error, +-64 trains to 3.4%).
One fixed-point scale cannot serve inputs of order 1 and logits of order 30:
that is what block floating point (``bfp8``) fixes.

``bfp8`` is the SWALP paper's 8-bit block floating point: one shared exponent
per tensor for weights, gradients and momentum, and per example ("small block",
``dim=0``) for activations and errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...numbers import BlockFloat, FixedPoint, finfo
from ...numbers import presets as P

ROLES = ("weight", "activation", "error", "grad", "momentum", "acc")


@dataclass(frozen=True)
class Precision:
    """Formats per role; ``None`` is float32 (no quantization)."""

    name: str
    weight: object = None
    activation: object = None
    error: object = None
    grad: object = None
    momentum: object = None
    acc: object = None
    description: str = field(default="", compare=False)

    @property
    def is_baseline(self) -> bool:
        return all(getattr(self, r) is None for r in ROLES)

    def bits(self, role: str) -> float:
        """Bits per stored number of ``role`` (32 for float32)."""
        fmt = getattr(self, role)
        return 32 if fmt is None else finfo(fmt).bits

    @property
    def weight_bits(self) -> float:
        """Bits per stored weight: the accumulator's when one exists, else the weight format's."""
        return self.bits("acc") if self.acc is not None else self.bits("weight")

    def formats(self) -> dict[str, str]:
        return {r: ("float32" if getattr(self, r) is None else repr(getattr(self, r))) for r in ROLES}


def _uniform(name: str, fmt, description: str, **over) -> Precision:
    roles = dict(weight=fmt, activation=fmt, error=fmt, grad=fmt, momentum=fmt)
    roles.update(over)
    return Precision(name, **roles, description=description)


def _fixed(name: str, wl: int, w_fl: int, a_fl: int, e_fl: int) -> Precision:
    w, a, e = FixedPoint(wl, w_fl), FixedPoint(wl, a_fl), FixedPoint(wl, e_fl)
    return Precision(name, weight=w, activation=a, error=e, grad=e, momentum=w,
                     description=f"{wl}-bit fixed point; fraction bits {w_fl} weights/momentum, "
                                 f"{a_fl} activations, {e_fl} errors/gradients")


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", description="float32 everywhere (the baseline)"),
    _uniform("bf16", P.BF16, "bfloat16 everywhere"),
    _uniform("fp8_e4m3", P.FP8_E4M3, "OCP FP8 E4M3 (max 448) everywhere"),
    _uniform("fp8_e5m2", P.FP8_E5M2, "FP8 E5M2 everywhere"),
    _fixed("fixed8", 8, 6, 1, 7),
    _fixed("fixed4", 4, 2, 0, 5),
    _uniform("bfp8", P.BFP8, "8-bit block float (SWALP): per-tensor exponent, per-example for acts/errors",
             activation=BlockFloat(8, dim=0), error=BlockFloat(8, dim=0)),
    _uniform("mxfp8", P.MXFP8_E4M3, "OCP MXFP8 E4M3, 32-element blocks"),
    _uniform("mxfp4", P.MXFP4, "OCP MXFP4 (E2M1), 32-element blocks"),
)}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r} (choose from {', '.join(PRECISIONS)})")
    return PRECISIONS[name]
