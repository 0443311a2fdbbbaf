"""A link model: simulated bandwidth and latency, so slow networks can be studied on one machine.

Each message costs ``latency + bytes / bandwidth`` seconds (the alpha-beta model of
Hockney, 1994); messages that go out together to different peers (one round) share the
bandwidth and overlap their latencies. The model only accounts for time; it never sleeps
(nor spins): no core is spent on a simulated transfer.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_RATE_UNITS = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "tbps": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class LinkModel:
    """A point-to-point link: ``bandwidth`` in bits per second (``inf`` for unlimited)
    and ``latency`` in seconds per message."""

    bandwidth: float = math.inf
    latency: float = 0.0

    def __post_init__(self):
        if not (self.bandwidth > 0):
            raise ValueError(f"Invalid bandwidth: {self.bandwidth!r} (bits per second, must be > 0)")
        if not (self.latency >= 0) or math.isinf(self.latency):
            raise ValueError(f"Invalid latency: {self.latency!r} (seconds, must be finite and >= 0)")

    def seconds(self, nbytes: int, messages: int = 1, rounds: int | None = None) -> float:
        """Time to send ``messages`` messages carrying ``nbytes`` bytes in total, one after another;
        or, given ``rounds``, in that many rounds of messages to different peers that go out
        together: their latencies overlap (one per round) and their bytes share the link.

        >>> LinkModel(8e6, 1e-3).seconds(3000, messages=3), LinkModel(8e6, 1e-3).seconds(3000, 3, rounds=1)
        (0.006, 0.004)
        """
        if messages == 0:
            return 0.0
        return (messages if rounds is None else rounds) * self.latency + 8.0 * nbytes / self.bandwidth

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.bandwidth) and self.latency == 0.0

    def __str__(self) -> str:
        if math.isinf(self.bandwidth):
            return "unlimited" if self.latency == 0 else f"unlimited,{self.latency * 1e3:g}ms"
        unit, factor = next((u, f) for u, f in (("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3), ("bps", 1.0))
                            if self.bandwidth >= f or f == 1.0)
        return f"{self.bandwidth / factor:g}{unit},{self.latency * 1e3:g}ms"


def _quantity(text: str, part: str, what: str, units: dict, unit_names: str) -> float:
    """``part`` (``"500mbps"``) as a number in base units; ValueError naming the part and why."""
    m = re.fullmatch(r"(.*?)(" + "|".join(sorted(units, key=len, reverse=True)) + r")", part)
    if m is None or not m.group(1):
        raise ValueError(f"Invalid link: {text!r} ({what} {part!r} needs a number and a unit: {unit_names})")
    number = m.group(1)
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"Invalid link: {text!r} ({what} {part!r}: {number!r} is not a number)") from None
    if math.isnan(value):
        raise ValueError(f"Invalid link: {text!r} ({what} {part!r} is not a number)")
    if value < 0 or (what == "bandwidth" and value == 0):
        bound = "> 0" if what == "bandwidth" else ">= 0"
        raise ValueError(f"Invalid link: {text!r} ({what} {part!r} must be {bound})")
    scaled = value * units[m.group(2)]
    if not math.isfinite(scaled):
        hint = "; for no limit write 'unlimited'" if what == "bandwidth" else ""
        raise ValueError(f"Invalid link: {text!r} ({what} {part!r} is too large to be finite{hint})")
    if what == "bandwidth" and scaled < 1.0:
        raise ValueError(f"Invalid link: {text!r} (bandwidth {part!r} is below 1 bps)")
    return scaled


def parse_link(text: str) -> LinkModel:
    """Parse ``"500Mbps,1ms"`` (bandwidth, then optional latency) or ``"unlimited"``.

    Bandwidth units: bps, Kbps, Mbps, Gbps, Tbps (bits per second, powers of 1000);
    latency units: s, ms, us, ns.  Every number must be finite and not negative (a
    bandwidth > 0); an empty text is an error, not an unlimited link.

    >>> parse_link("500Mbps,1ms")
    LinkModel(bandwidth=500000000.0, latency=0.001)
    >>> parse_link("-5Mbps")
    Traceback (most recent call last):
    ...
    ValueError: Invalid link: '-5Mbps' (bandwidth '-5mbps' must be > 0)
    """
    if not isinstance(text, str):
        raise TypeError(f"Invalid link: {text!r} (expected a string like '500Mbps,1ms')")
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise ValueError(f"Invalid link: {text!r} (empty; give BANDWIDTH[,LATENCY] like 500Mbps,1ms, or 'unlimited')")
    if s in ("unlimited", "inf", "none"):
        return LinkModel()
    parts = s.split(",")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"Invalid link: {text!r} (expected BANDWIDTH[,LATENCY], e.g. 500Mbps,1ms)")
    if parts[0] in ("unlimited", "inf", "none"):
        bandwidth = math.inf
    else:
        bandwidth = _quantity(text, parts[0], "bandwidth", _RATE_UNITS, "bps, Kbps, Mbps, Gbps, Tbps")
    latency = 0.0
    if len(parts) == 2:
        latency = _quantity(text, parts[1], "latency", _TIME_UNITS, "s, ms, us, ns")
    try:
        return LinkModel(bandwidth, latency)
    except ValueError as exc:
        raise ValueError(f"Invalid link: {text!r} ({exc})") from None
