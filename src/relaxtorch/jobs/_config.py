"""Validation shared by the jobs' TOML configs (tradeoff, hogwild, dist).

``ConfigChecker`` raises its ``error`` class with the file and the key in the message:
``x.toml: [train].lr: must be a number, got a string 'a'``.
"""
from __future__ import annotations

import math

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

    def scalar_or_list(self, where: str, value, typ) -> list:
        """A scalar or a non-empty list of scalars of type ``typ``, as a list."""
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(where, "must not be an empty list")
        return [self.scalar(f"{where}[{i}]" if isinstance(value, list) else where, v, typ)
                for i, v in enumerate(values)]
