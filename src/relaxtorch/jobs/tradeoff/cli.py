"""``relaxtorch tradeoff``: the accuracy-efficiency sweep on the command line."""
from __future__ import annotations

from .._cli import CLIError

HELP = "sweep precisions x algorithms x models x seeds; report accuracy vs cost"
DESCRIPTION = ("Train every configured combination of precision, algorithm, model and seed on embedded data; "
               "print the accuracy-efficiency table and write report.json, report.csv, pareto.png and "
               "loss_curves.png.")


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (default: the built-in sweep, "
                                                    "examples/default.toml)")
    p.add_argument("--out", metavar="DIR", default="tradeoff_out", help="output folder (default: ./tradeoff_out)")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated seeds, replacing [sweep].seeds (e.g. 0,1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 256 training rows, one seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` as a list (CLIError naming the option on anything else)."""
    from .._config import seed_error
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds: expected distinct integers >= 0, got {text!r}")
    for s in seeds:
        if seed_error(s):
            raise CLIError(f"--seeds: {seed_error(s)}")
    return seeds


def run(args) -> None:
    from .._output import Staging
    from . import ConfigError, format_summary, load_config, run_sweep, write_report
    from .config import quick
    from .plan import load_data, plan
    from .report import FILES

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    try:
        cfg = load_config(args.config)
        if args.quick:
            cfg = quick(cfg)
        if seeds is not None:
            cfg.sweep["seeds"] = seeds
            cfg.explicit.add("seeds")
        plan(cfg, load_data(cfg))  # every configuration error before any file is made
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    # --out is checked now, written in a staging folder (report.json marked partial after every
    # finished run) and swapped in at the end; an interrupted sweep leaves its rows in OUT/partial
    with Staging(args.out, "tradeoff", owns=FILES) as stage:
        with stage.writing():
            report = run_sweep(cfg, progress=not args.no_progress,
                               on_run=lambda rep: write_report(rep, stage.path, plots=False))
            write_report(report, stage.path)
            stage.commit()
    paths = [stage.out / name for name in FILES]
    print(format_summary(report))
    print(f"\n{len(report['runs'])} runs in {report['seconds']:.0f} s; wrote:")
    for p in paths:
        print(f"  {p}")
