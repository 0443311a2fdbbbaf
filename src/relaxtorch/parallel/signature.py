"""The DMGC signature of a Buckwild! run: the precision of Data, Model, Gradient and Communication.

``"D8M8G32C8"`` (De Sa et al., ISCA 2017) reads: the dataset is stored in 8-bit
fixed point, the shared model in 8-bit fixed point, intermediate gradient values
(the margin and the loss derivative) are computed in 32-bit float, and every
write to the shared model carries an 8-bit number.  ``"D32M32G32C32"`` is plain
float32 Hogwild!.

What each width means here:

* ``D`` (8, 16, 32): example values as int8 / int16 fixed point with one scale per
  dataset (rounded once, to nearest), or float32.
* ``M`` (8, 16, 32): the shared model as int8 / int16 fixed point with
  ``fl`` fraction bits (``FixedPoint(M, fl)``), or float32.  A fixed-point model
  is written with stochastic rounding, so every write is unbiased.
* ``G`` (8, 16, 32): intermediate gradient values are rounded to nearest in
  FP8 E4M3 (8), BF16 (16) or kept in float32 (32).
* ``C`` (8, 16, 32, at most ``M``): the number written per coordinate.  With a
  float32 model, updates are rounded stochastically to FP8 E4M3 / BF16; with a
  fixed-point model the write is an integer number of model steps, saturated
  to ``C`` bits when ``C < M``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

WIDTHS = (8, 16, 32)
_PARTS = (("D", "data", "dataset precision"), ("M", "model", "model precision"),
          ("G", "gradient", "gradient precision"), ("C", "communication", "communication precision"))
_TOKEN = re.compile(r"([A-Za-z])(\d*)")


def _invalid(value, why: str) -> ValueError:
    return ValueError(f"Invalid signature: {value!r} ({why})")


@dataclass(frozen=True)
class Signature:
    """A validated DMGC signature; ``str(sig)`` gives the canonical ``"D8M8G32C8"`` form."""

    data: int = 32
    model: int = 32
    gradient: int = 32
    communication: int = 32

    def __post_init__(self) -> None:
        for letter, field_name, what in _PARTS:
            bits = getattr(self, field_name)
            if isinstance(bits, bool) or not isinstance(bits, int) or bits not in WIDTHS:
                raise _invalid(self._text(), f"{letter}{bits}: {what} must be 8, 16 or 32 bits")
        if self.communication > self.model:
            raise _invalid(self._text(), f"C{self.communication}: a write cannot carry more bits than "
                                         f"the M{self.model} model stores (use C{self.model} or less)")

    def _text(self) -> str:
        return f"D{self.data}M{self.model}G{self.gradient}C{self.communication}"

    def __str__(self) -> str:
        return self._text()

    @property
    def full_precision(self) -> bool:
        return (self.data, self.model, self.gradient, self.communication) == (32, 32, 32, 32)

    @property
    def fixed_model(self) -> bool:
        """True when the shared model is stored as int8/int16 fixed point."""
        return self.model < 32

    @classmethod
    def parse(cls, text: "str | Signature") -> "Signature":
        return parse_signature(text)


def parse_signature(text: "str | Signature") -> Signature:
    """Parse ``"D8M8G32C8"`` (case-insensitive, all four parts, in this order).

    Raises ``ValueError`` naming the offending part: ``parse_signature("D8M7G32C8")``
    fails with ``Invalid signature: 'D8M7G32C8' (M7: model precision must be 8, 16 or 32 bits)``.
    """
    if isinstance(text, Signature):
        return text
    if not isinstance(text, str):
        raise TypeError(f"Invalid signature: {text!r} (expected a string like 'D8M8G32C8')")
    s = text.strip()
    pos, found = 0, []
    for m in _TOKEN.finditer(s):
        if m.start() != pos:
            raise _invalid(text, f"unexpected {s[pos:m.start()]!r} at position {pos}")
        found.append((m.group(1).upper(), m.group(2), m.group(0)))
        pos = m.end()
    if pos != len(s) or not s:
        raise _invalid(text, f"unexpected {s[pos:]!r} at position {pos}" if s else "empty; expected e.g. 'D8M8G32C8'")
    letters = [f[0] for f in found]
    values = {}
    for i, (letter, field_name, what) in enumerate(_PARTS):
        if i >= len(found):
            raise _invalid(text, f"missing the {letter} part ({what}); expected four parts like 'D8M8G32C8'")
        got, digits, token = found[i]
        if got != letter:
            if got in letters[:i]:
                why = f"{token}: {got} appears twice"
            elif got in "DMGC":
                why = f"{token}: parts must come in the order D, M, G, C (expected {letter} here)"
            else:
                why = f"{token}: unknown part {got!r}; the parts are D, M, G and C"
            raise _invalid(text, why)
        if not digits:
            raise _invalid(text, f"{token}: {what} needs a bit width (8, 16 or 32)")
        bits = int(digits)
        if bits not in WIDTHS:
            raise _invalid(text, f"{token}: {what} must be 8, 16 or 32 bits")
        values[field_name] = bits
    if len(found) > len(_PARTS):
        raise _invalid(text, f"{found[len(_PARTS)][2]}: unexpected part after C")
    return Signature(**values)
