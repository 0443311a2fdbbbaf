"""``relaxtorch formats``: every preset number format with its bits, range and precision."""
from __future__ import annotations

import json

HELP = "print the table of preset number formats and their limits"
DESCRIPTION = ("Print every preset number format of relaxtorch.formats: bits per value, largest value, "
               "smallest normal and subnormal, machine epsilon, inf/NaN, and the kind of format.")


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def describe(fmt) -> str:
    """One line saying what kind of format ``fmt`` is."""
    from ...numbers.formats import BlockFloat, FloatFormat, MXFormat
    if isinstance(fmt, FloatFormat):
        return f"float E{fmt.exp}M{fmt.man}, {fmt.specials}, overflow={fmt.overflow}"
    if isinstance(fmt, MXFormat):
        axis = "" if fmt.axis == -1 else f", axis {fmt.axis}"
        return f"MX: {fmt.block} x {fmt.elem!r} + E8M0 scale ({fmt.scale_mode}{axis})"
    if isinstance(fmt, BlockFloat):
        return f"{fmt.wl}-bit ints, shared exponent per tensor"
    kind = "sign-magnitude" if fmt.symmetric else ("two's complement" if fmt.signed else "unsigned")
    return f"fixed point, {fmt.wl} bits, {fmt.fl} fraction, {kind}"


def run(args) -> None:
    from ...numbers import finfo
    from ...numbers.presets import ALL
    from .._report import format_table

    rows = []
    for name, fmt in ALL.items():
        fi = finfo(fmt)
        rows.append([name, fi.bits, fi.max, fi.min, fi.smallest_normal, fi.smallest_subnormal, fi.eps,
                     "yes" if fi.has_inf else "no", "yes" if fi.has_nan else "no", describe(fmt)])
    if args.json:
        keys = ["name", "bits", "max", "min", "smallest_normal", "smallest_subnormal", "eps", "inf", "nan", "kind"]
        print(json.dumps([dict(zip(keys, r)) for r in rows], indent=2))
        return
    print(format_table(["format", "bits", "max", "min", "min normal", "min subnormal", "eps", "inf", "nan", "kind"],
                       rows, "lrrrrrrrrl"))
    print("\nBlock formats: bits include the shared scale; limits are for a block scale of 1.")
