"""Validation shared by the jobs' TOML configs (tradeoff, hogwild, dist).

``ConfigChecker`` raises its ``error`` class with the file and the key in the message:
``x.toml: [train].lr: must be a number, got a string 'a'``.
"""
from __future__ import annotations

import math
import os

TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def kind(value) -> str:
    """How a TOML value reads in an error message."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


class ConfigChecker:
    """Checks on parsed TOML values; subclasses set ``error`` (a ValueError subclass)."""

    error: type[Exception] = ValueError

    def __init__(self, source: str | None):
        self.prefix = f"{source}: " if source else ""

    def fail(self, where: str, why: str):
        raise self.error(f"{self.prefix}{where}: {why}")

    def table(self, where: str, value) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"must be a table, got {kind(value)}")
        return value

    def keys(self, where: str, table: dict, allowed) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"{where}.{key}" if where else f"[{key}]",
                          f"unknown key (choose from {', '.join(allowed)})")

    def scalar(self, where: str, value, typ):
        ok = (isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))) or \
            (typ is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            self.fail(where, f"must be {TYPES[typ]}, got {kind(value)} {value!r}")
        if typ is float:
            if not math.isfinite(value):
                self.fail(where, f"must be a finite number, got {value!r}")
            return float(value)
        return value

    def names(self, where: str, value, choices, what: str) -> list:
        """A non-empty list of distinct names, each one of ``choices`` (None: any string)."""
        if not isinstance(value, list) or not value:
            self.fail(where, f"must be a non-empty list of {what} names, got {kind(value)}")
        for v in value:
            if not isinstance(v, str):
                self.fail(where, f"must be a list of strings, got {kind(v)} {v!r}")
            if choices is not None and v not in choices:
                self.fail(where, f"unknown {what} {v!r} (choose from {', '.join(choices)})")
        if len(set(value)) != len(value):
            self.fail(where, "has a name twice")
        return list(value)

    def seeds(self, where: str, value) -> list[int]:
        """A non-empty list of distinct seeds torch.Generator accepts."""
        if not isinstance(value, list) or not value:
            self.fail(where, f"must be a non-empty list of integers, got {kind(value)}")
        seeds = [self.scalar(where, s, int) for s in value]
        for s in seeds:
            if seed_error(s):
                self.fail(where, seed_error(s))
        if len(set(seeds)) != len(seeds):
            self.fail(where, "must be distinct integers >= 0")
        return seeds

    def threads(self, where: str, value) -> int:
        """A thread count this machine can run."""
        n = self.scalar(where, value, int)
        if threads_error(n):
            self.fail(where, threads_error(n))
        return n

    def scalar_or_list(self, where: str, value, typ) -> list:
        """A scalar or a non-empty list of scalars of type ``typ``, as a list."""
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(where, "must not be an empty list")
        return [self.scalar(f"{where}[{i}]" if isinstance(value, list) else where, v, typ)
                for i, v in enumerate(values)]


# ------------------------------------------------------------------ ranges shared by the jobs' checks
SEED_LIMIT = 2 ** 63  # torch.Generator.manual_seed takes seeds in [0, 2**63)
MAX_LR = 1e6  # a step size beyond this is a typo, not a setting (and overflows float32 updates)
MAX_PENALTY = 1e6  # L2 strengths / weight decays


def cpu_count() -> int:
    """The CPUs this process may use (its affinity mask), the bound of every thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def seed_error(value) -> str | None:
    """Why ``value`` is not a usable seed (None when it is)."""
    if not 0 <= value < SEED_LIMIT:
        return f"must be in 0..2**63-1 (what torch.Generator accepts), got {value}"
    return None


def threads_error(value) -> str | None:
    """Why ``value`` is not a usable thread count on this machine (None when it is)."""
    n = cpu_count()
    if not 1 <= value <= n:
        return f"must be in 1..{n} (the CPUs this machine lets the job use), got {value}"
    return None


def range_error(value, lo, hi, *, lo_open: bool = False, hi_open: bool = False, unit: str = "") -> str | None:
    """Why the number ``value`` is not finite and in the range (None when it is); the range is in the message."""
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if ok:
        return None
    brackets = ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + (")" if hi_open else "]")
    return f"must be a finite number in {brackets}{unit}, got {value!r}"
