"""The ``relaxtorch`` command."""
from __future__ import annotations

import argparse
import json
import sys

from relaxtorch import __version__


from ._errors import CLIError  # noqa: F401 - subcommands raise it through this name


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


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds: expected distinct integers >= 0, got {text!r}")
    return seeds


def _tradeoff(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .tradeoff import ConfigError, format_summary, load_config, run_sweep, write_report
    from .tradeoff.config import quick
    from .tradeoff.plan import load_data, plan

    seeds = _seeds(args.seeds) if args.seeds is not None else None
    try:
        cfg = load_config(args.config)
        if args.quick:
            cfg = quick(cfg)
        if seeds is not None:
            cfg.sweep["seeds"] = seeds
        plan(cfg, load_data(cfg))  # every configuration error before any file is made
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"--out {args.out}: cannot create the folder ({exc.strerror or exc})") from None
    report = run_sweep(cfg, progress=not args.no_progress)
    try:
        paths = write_report(report, args.out)
    except OSError as exc:
        raise CLIError(f"--out {args.out}: cannot write the report ({exc.strerror or exc})") from None
    print(format_summary(report))
    print(f"\n{len(report['runs'])} runs in {report['seconds']:.0f} s; wrote:")
    for p in paths:
        print(f"  {p}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaxtorch",
        description="Relaxed-consistency machine learning: what each relaxation saves and what it costs.")
    parser.add_argument("--version", action="version", version=f"relaxtorch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("formats", help="print the table of preset number formats and their limits")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_formats)
    p = sub.add_parser("tradeoff", help="sweep precisions x algorithms x models x seeds; report accuracy vs cost",
                       description="Train every configured combination of precision, algorithm, model and seed "
                                   "on embedded data; print the accuracy-efficiency table and write report.json, "
                                   "report.csv, pareto.png and loss_curves.png.")
    p.add_argument("--config", metavar="FILE", help="TOML config (default: the built-in sweep, "
                                                    "examples/default.toml)")
    p.add_argument("--out", metavar="DIR", default="tradeoff_out", help="output folder (default: ./tradeoff_out)")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated seeds, replacing [sweep].seeds (e.g. 0,1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 256 training rows, one seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_tradeoff)
    from .parallel.cli import add_parser as add_hogwild
    add_hogwild(sub)
    from .dist.cli import add_parser as add_dist
    add_dist(sub)
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
