"""``relaxtorch sample``: sampler x precision x problem x seed sweeps on the command line."""
from __future__ import annotations

from .._cli import CLIError

HELP = "sample posteriors with relaxed samplers; report accuracy vs cost against the exact posterior"
DESCRIPTION = ("Run every configured sampler (SGLD, SGHMC, AMAGOLD, low-precision SGLD, full MH, TunaMH, TFMH, "
               "FlyMC) at every precision on every problem and seed; print the table and write report.json, "
               "report.csv, samples/*.pt (torch.load(..., weights_only=True)) and traces, autocorrelation, "
               "ESS-per-second and posterior plots.")


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (default: the built-in sweep, examples/sample.toml)")
    p.add_argument("--out", metavar="DIR", default="sample_out", help="output folder (default: ./sample_out)")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated seeds, replacing [sweep].seeds (e.g. 0,1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 300 steps per chain, one seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> None:
    from .._output import Staging
    from ..tradeoff.cli import parse_seeds
    from .config import ConfigError, load_config, quick
    from .report import FILES, format_summary, write_report, write_samples

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    try:
        cfg = load_config(args.config)
        if args.quick:
            cfg = quick(cfg)
        if seeds is not None:
            cfg.sweep["seeds"] = seeds
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    from .runner import run_sweep
    # --out is checked before any work; files are staged and swapped in at the end; an
    # interrupted sweep leaves the finished runs' samples and a partial report in OUT/partial
    with Staging(args.out, "sample", owns=FILES) as stage:
        with stage.writing():
            def on_run(report, spec, samples):
                write_samples(stage.path, spec, samples)
                write_report(report, stage.path, plots=False)
            try:
                report, pictures = run_sweep(cfg, progress=not args.no_progress, on_run=on_run)
            except ValueError as exc:  # a problem or sampler refused its settings
                raise CLIError(str(exc)) from None
            write_report(report, stage.path, pictures=pictures)
            stage.commit()
    print(format_summary(report))
    print(f"\n{len(report['runs'])} runs in {report['seconds']:.0f} s; wrote {stage.out}/: "
          + ", ".join(n for n in FILES if (stage.out / n).exists()))
