"""The accuracy-efficiency trade-off: sweep precisions x algorithms x models x seeds, report the cost.

``relaxtorch tradeoff`` on the command line; in Python::

    from relaxtorch.jobs.tradeoff import load_config, run_sweep, write_report, format_summary
    report = run_sweep(load_config("examples/halp_logreg.toml"))
    write_report(report, "out"); print(format_summary(report))
"""
from .algorithms import ALGORITHMS, RUNNERS, Result
from .config import Config, ConfigError, load_config, parse
from .convex import ConvexObjective
from .hyper import Hyper
from .models import MODELS, build_model
from .plan import RunSpec, plan
from .precisions import PRECISIONS, Precision, get_precision
from .report import format_summary, write_report
from .runner import run_sweep, summarize

__all__ = ["ALGORITHMS", "Config", "ConfigError", "ConvexObjective", "Hyper", "MODELS", "PRECISIONS", "Precision",
           "RUNNERS", "Result", "RunSpec", "build_model", "format_summary", "get_precision", "load_config", "parse",
           "plan", "run_sweep", "summarize", "write_report"]
