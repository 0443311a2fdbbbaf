"""Gibbs sampling of factor graphs, relaxed: samplers x threads x seeds against a reference.

``relaxtorch gibbs`` on the command line; in Python::

    from relaxtorch.jobs.gibbs import load_config, run_sweep, format_summary
    print(format_summary(run_sweep(load_config("examples/gibbs.toml"))))
"""
from .config import Config, ConfigError, load_config, parse
from .metrics import marginal_error
from .report import format_summary, write_report
from .runner import RunSpec, plan, run_one, run_sweep
from .samplers import SAMPLERS

__all__ = ["Config", "ConfigError", "RunSpec", "SAMPLERS", "format_summary", "load_config", "marginal_error",
           "parse", "plan", "run_one", "run_sweep", "write_report"]
