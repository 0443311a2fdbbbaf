"""A link model: simulated bandwidth and latency, so slow networks can be studied on one machine.

Each message costs ``latency + bytes / bandwidth`` seconds (the alpha-beta model of
Hockney, 1994). The model only accounts for time; it never sleeps.
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

    def seconds(self, nbytes: int, messages: int = 1) -> float:
        """Time to send ``messages`` messages carrying ``nbytes`` bytes in total, one after another."""
        if messages == 0:
            return 0.0
        return messages * self.latency + 8.0 * nbytes / self.bandwidth

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.bandwidth) and self.latency == 0.0

    def __str__(self) -> str:
        if math.isinf(self.bandwidth):
            return "unlimited" if self.latency == 0 else f"unlimited,{self.latency * 1e3:g}ms"
        unit, factor = next((u, f) for u, f in (("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3), ("bps", 1.0))
                            if self.bandwidth >= f or f == 1.0)
        return f"{self.bandwidth / factor:g}{unit},{self.latency * 1e3:g}ms"


def parse_link(text: str) -> LinkModel:
    """Parse ``"500Mbps,1ms"`` (bandwidth, then optional latency) or ``"unlimited"``.

    Bandwidth units: bps, Kbps, Mbps, Gbps, Tbps (bits per second, powers of 1000);
    latency units: s, ms, us, ns.
    """
    s = text.strip().lower().replace(" ", "")
    if s in ("", "unlimited", "inf", "none"):
        return LinkModel()
    parts = s.split(",")
    if len(parts) > 2:
        raise ValueError(f"Invalid link: {text!r} (expected BANDWIDTH[,LATENCY], e.g. 500Mbps,1ms)")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)([kmgt]?bps)", parts[0])
    if m is None:
        raise ValueError(f"Invalid link: {text!r} (bandwidth {parts[0]!r} needs a unit: bps, Kbps, Mbps, Gbps)")
    bandwidth = float(m.group(1)) * _RATE_UNITS[m.group(2)]
    latency = 0.0
    if len(parts) == 2:
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)(s|ms|us|ns)", parts[1])
        if m is None:
            raise ValueError(f"Invalid link: {text!r} (latency {parts[1]!r} needs a unit: s, ms, us, ns)")
        latency = float(m.group(1)) * _TIME_UNITS[m.group(2)]
    try:
        return LinkModel(bandwidth, latency)
    except ValueError as exc:
        raise ValueError(f"Invalid link: {text!r} ({exc})") from None
