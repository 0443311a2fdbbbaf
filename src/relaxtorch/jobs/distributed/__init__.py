"""Distributed training runs: launch N ranks, train with ``relaxtorch.comm`` algorithms, report.

``relaxtorch dist --nproc 4`` (one machine, listening on 127.0.0.1 only) or ``torchrun
--nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m relaxtorch.jobs.distributed``
(any number of machines; ``HOST`` the first one, 127.0.0.1 on one machine).  In Python::

    from relaxtorch.jobs.distributed import load_config, launch_local, format_summary
    report = launch_local(load_config("examples/dist_digits.toml"), "dist_out")
    print(format_summary(report))
"""
from .algorithms import Context, build
from .config import ALGORITHMS, MODELS, ConfigError, DistConfig, RunSpec, load_config, override, parse
from .data import BatchSchedule, partition
from .launch import RankFailure, launch_local, run_torchrun
from .models import build_model
from .report import format_summary, write_report
from .train import RankContext, run_job

__all__ = ["ALGORITHMS", "BatchSchedule", "ConfigError", "Context", "DistConfig", "MODELS", "RankContext",
           "RankFailure", "RunSpec", "build", "build_model", "format_summary", "launch_local", "load_config",
           "override", "parse", "partition", "run_job", "run_torchrun", "write_report"]
