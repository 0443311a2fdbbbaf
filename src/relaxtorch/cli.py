"""The ``relaxtorch`` command."""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


def _formats(args: argparse.Namespace) -> None:
    from ._table import format_table
    from .numbers import finfo
    from .numbers.formats import BlockFloat, FloatFormat, MXFormat
    from .numbers.presets import ALL

    rows = []
    for name, fmt in ALL.items():
        fi = finfo(fmt)
        if isinstance(fmt, FloatFormat):
            kind = f"float E{fmt.exp}M{fmt.man}, {fmt.specials}, overflow={fmt.overflow}"
        elif isinstance(fmt, MXFormat):
            kind = f"MX: {fmt.block} x {fmt.elem!r} + E8M0 scale ({fmt.scale_mode})"
        elif isinstance(fmt, BlockFloat):
            kind = f"{fmt.wl}-bit ints, shared exponent per tensor"
        else:
            kind = f"fixed point, {fmt.wl} bits, {fmt.fl} fraction"
        rows.append([name, fi.bits, fi.max, fi.smallest_normal, fi.smallest_subnormal, fi.eps,
                     "yes" if fi.has_inf else "no", "yes" if fi.has_nan else "no", kind])
    if args.json:
        keys = ["name", "bits", "max", "smallest_normal", "smallest_subnormal", "eps", "inf", "nan", "kind"]
        print(json.dumps([dict(zip(keys, r)) for r in rows], indent=2))
        return
    print(format_table(["format", "bits", "max", "min normal", "min subnormal", "eps", "inf", "nan", "kind"],
                       rows, "lrrrrrrrl"))
    print("\nBlock formats: bits include the shared scale; limits are for a block scale of 1.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaxtorch",
        description="Relaxed-consistency machine learning: what each relaxation saves and what it costs.")
    parser.add_argument("--version", action="version", version=f"relaxtorch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("formats", help="print the table of preset number formats and their limits")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_formats)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.func(args)
    except CLIError as exc:
        print(f"relaxtorch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"relaxtorch {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
