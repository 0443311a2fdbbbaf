"""``relaxtorch gibbs``: Gibbs samplers x threads x seeds on one factor graph, against a reference."""
from __future__ import annotations

from .._cli import CLIError

HELP = "Gibbs-sample a factor graph (builder spec or DeepDive folder); report updates/s and marginal error vs time"
DESCRIPTION = ("Run every configured sampler (sequential, asynchronous, Poisson-minibatched and MIN-Gibbs, MGPMH) "
               "on every thread count and seed on one factor graph (a builder spec like 'ising:64x64,beta=0.4,h=0.1' "
               "or 'deepdive:PATH'); print updates/s, sweeps, the marginal error against a reference (exact "
               "enumeration when small, else a long sequential run) and the time to reach an error; write "
               "report.json, report.csv, marginals/*.npy and marginal_error.png.")


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (default: the built-in run, examples/gibbs.toml)")
    p.add_argument("--graph", metavar="SPEC", help="graph spec replacing the config's, e.g. ising:64x64,beta=0.4 "
                                                   "or deepdive:PATH")
    p.add_argument("--out", metavar="DIR", default="gibbs_out", help="output folder (default: ./gibbs_out)")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated seeds, replacing [sweep].seeds (e.g. 0,1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 sweeps per run, one seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> None:
    from .._output import Staging
    from ..tradeoff.cli import parse_seeds
    from .config import ConfigError, load_config, quick
    from .graphs import GraphSpecError, check_spec, parse_spec
    from .report import FILES, format_summary, write_marginals, write_report

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    try:
        cfg = load_config(args.config)
        if args.graph is not None:
            try:
                cfg.graph = check_spec(parse_spec(args.graph))
            except GraphSpecError as exc:
                raise ConfigError(f"--graph: {exc}") from None
        if args.quick:
            cfg = quick(cfg)
        if seeds is not None:
            cfg.sweep["seeds"] = seeds
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    from .runner import run_sweep
    # --out is checked before any work; files are staged and swapped in at the end; an interrupted
    # sweep leaves the marginals written so far and a partial report in OUT/partial
    with Staging(args.out, "gibbs", owns=FILES) as stage:
        with stage.writing():
            try:
                report = run_sweep(cfg, progress=not args.no_progress,
                                   on_run=lambda report: write_report(report, stage.path, plots=False),
                                   on_checkpoint=lambda spec, m: write_marginals(stage.path, spec.file_label, m),
                                   on_reference=lambda m: write_marginals(stage.path, "reference", m))
            except GraphSpecError as exc:  # the builder or the DeepDive reader refused the graph
                raise CLIError(f"graph: {exc}") from None
            write_report(report, stage.path)
            stage.commit()
    print(format_summary(report))
    print(f"\n{len(report['runs'])} runs in {report['seconds']:.0f} s; wrote {stage.out}/: "
          + ", ".join(n for n in FILES if (stage.out / n).exists()))
