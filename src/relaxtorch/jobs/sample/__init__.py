"""Sampling, relaxed: sweep samplers x precisions x problems x seeds against the exact posterior.

``relaxtorch sample`` on the command line; in Python::

    from relaxtorch.jobs.sample import load_config, run_sweep, format_summary
    report, pictures = run_sweep(load_config("examples/sample.toml"))
    print(format_summary(report))
"""
from .config import Config, ConfigError, load_config, parse
from .report import format_summary, write_report
from .runner import RunSpec, plan, run_one, run_sweep
from .samplers import SAMPLERS

__all__ = ["Config", "ConfigError", "RunSpec", "SAMPLERS", "format_summary", "load_config", "parse", "plan",
           "run_one", "run_sweep", "write_report"]
