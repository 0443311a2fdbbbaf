"""The distributed job's TOML configuration: defaults for every key, strict validation.

One job trains several runs (algorithms) on the same ranks, one after another,
so they can be compared side by side::

    [dist]                 job keys and the defaults of every run
    nproc = 4              ranks of the one-machine shortcut
    steps = 300
    link = "500Mbps,1ms"

    [[runs]]               one table per run; any run key overrides [dist]
    algorithm = "allreduce"

    [[runs]]
    algorithm = "cocktail"
    name = "cocktail-2bit"
    bits = 2               algorithm options (see ``OPTIONS``)

Without ``[[runs]]`` the job runs ``DEFAULT_ALGORITHMS``.  Errors name the file
and the key: ``x.toml: [[runs]][2].ratio: unknown key for algorithm 'cocktail' (...)``.
"""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .._config import MAX_LR, MAX_PENALTY, ConfigChecker, cpu_count, kind, range_error, seed_error
from ..._files import read_toml
from .schedule import SCHEDULES

ALGORITHMS = ("allreduce", "cocktail", "sign-ef", "topk-ef", "qsgd", "dpsgd", "detag", "moniqua")
DECENTRALIZED = ("dpsgd", "detag", "moniqua")
DEFAULT_ALGORITHMS = ("allreduce", "cocktail")
MODELS = ("mlp", "mlp1m")
DATASETS = ("digits", "breast_cancer", "synthetic_classification")
PARTITIONS = ("iid", "label")
TOPOLOGIES = ("ring", "torus", "exp", "one-peer-exp", "complete")
DEVICES = ("auto", "cpu", "cuda")

# Algorithm options: key -> (type, check, what the check means).  Unset options take
# the algorithm class's own default, so the paper's defaults live in one place.
_RATIO = (float, lambda v: 0 < v <= 1, "must be in (0, 1]")
_BITS = (int, lambda v: 1 <= v <= 32, "must be in 1..32")
_BUCKET = (int, lambda v: v >= 1, "must be >= 1")
OPTIONS = {
    "allreduce": {},
    "cocktail": {"random_ratio": _RATIO, "topk_ratio": _RATIO, "bits": _BITS, "bucket": _BUCKET,
                 "overlap": (bool, lambda v: True, ""), "exchange_thread": (bool, lambda v: True, "")},
    "sign-ef": {},
    "topk-ef": {"ratio": _RATIO},
    "qsgd": {"bits": _BITS, "bucket": _BUCKET},
    "dpsgd": {},
    "detag": {"gossip_rounds": (int, lambda v: v >= 1, "must be >= 1"), "accelerate": (bool, lambda v: True, "")},
    "moniqua": {"bits": (int, lambda v: 1 <= v <= 8, "must be in 1..8")},
}


class ConfigError(ValueError):
    """A configuration the job cannot run; the message names the file (or option) and key."""


@dataclass
class RunSpec:
    """One run: an algorithm and its training settings (every field a run table may override)."""

    algorithm: str = "allreduce"
    name: str = ""
    model: str = "mlp"
    data: str = "digits"
    partition: str = "iid"
    label_skew: float = 0.9
    reshuffle: bool = False
    order: str = "rr"
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.1
    lr_schedule: str = "constant"
    lr_final: float = 0.0
    lr_step: int = 0
    lr_gamma: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    link: str = "500Mbps,1ms"
    topology: str = "ring"
    options: dict = field(default_factory=dict)

    @property
    def decentralized(self) -> bool:
        return self.algorithm in DECENTRALIZED

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistConfig:
    """A validated job: ranks, timeouts, evaluation/checkpoint cadence and the runs."""

    nproc: int = 4
    seed: int = 0
    timeout: float = 60.0
    eval_every: int = 25
    checkpoint_every: int = 100
    device: str = "auto"
    threads: int = 0  # torch threads per rank; 0: cores / local ranks
    run_defaults: dict = field(default_factory=dict)  # the [dist] table's run keys
    runs: list = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runs"}
        d["runs"] = [r.to_dict() for r in self.runs]
        return d


JOB_KEYS = {"nproc": int, "seed": int, "timeout": float, "eval_every": int, "checkpoint_every": int,
            "device": str, "threads": int}
RUN_KEYS = {f.name: {"int": int, "str": str, "bool": bool, "float": float}[f.type]
            for f in fields(RunSpec) if f.name not in ("options", "name", "algorithm")}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


class _Checker(ConfigChecker):
    error = ConfigError


def _check_job(c: _Checker, where: str, key: str, v):
    if key == "nproc" and not 1 <= v <= 1024:
        c.fail(f"{where}{key}", f"must be in 1..1024, got {v}")
    if key in ("checkpoint_every", "threads") and v < 0:
        c.fail(f"{where}{key}", f"must be >= 0, got {v}")
    if key == "seed" and seed_error(v):
        c.fail(f"{where}{key}", seed_error(v))
    if key == "threads" and v > cpu_count():
        c.fail(f"{where}{key}", f"must be in 0..{cpu_count()} (0: cores / ranks; this machine lets the job use "
                                f"{cpu_count()} CPUs), got {v}")
    if key == "eval_every" and v < 1:
        c.fail(f"{where}{key}", f"must be >= 1, got {v}")
    if key == "timeout" and not 0 < v < 1e6:
        c.fail(f"{where}{key}", f"must be > 0 seconds, got {v}")
    if key == "device" and v not in DEVICES:
        c.fail(f"{where}{key}", f"unknown device {v!r} (choose from {', '.join(DEVICES)})")


def _check_run(c: _Checker, where: str, key: str, v):
    choices = {"model": MODELS, "data": DATASETS, "partition": PARTITIONS, "topology": TOPOLOGIES}.get(key)
    if key == "topology" and re.fullmatch(r"torus:\d+x\d+", v):
        return
    if choices is not None and v not in choices:
        c.fail(f"{where}{key}", f"unknown {key} {v!r} (choose from {', '.join(choices)})")
    if key in ("steps", "batch_size") and v < 1:
        c.fail(f"{where}{key}", f"must be >= 1, got {v}")
    if key == "lr" and range_error(v, 0, MAX_LR, lo_open=True):  # finite: inf passes "> 0"
        c.fail(f"{where}{key}", range_error(v, 0, MAX_LR, lo_open=True))
    if key == "lr_schedule" and v not in SCHEDULES:
        c.fail(f"{where}{key}", f"unknown schedule {v!r} (choose from {', '.join(SCHEDULES)})")
    if key == "lr_final" and range_error(v, 0, MAX_LR):
        c.fail(f"{where}{key}", range_error(v, 0, MAX_LR))
    if key == "lr_step" and v < 0:
        c.fail(f"{where}{key}", f"must be >= 0 (0: the schedule's default), got {v}")
    if key == "lr_gamma" and range_error(v, 0, 1, lo_open=True):
        c.fail(f"{where}{key}", range_error(v, 0, 1, lo_open=True))
    if key == "momentum" and range_error(v, 0, 1, hi_open=True):
        c.fail(f"{where}{key}", range_error(v, 0, 1, hi_open=True))
    if key == "weight_decay" and range_error(v, 0, MAX_PENALTY):
        c.fail(f"{where}{key}", range_error(v, 0, MAX_PENALTY))
    if key == "order":
        from ...order import ORDERS
        if v not in ORDERS:
            c.fail(f"{where}{key}", f"unknown order {v!r} (choose from {', '.join(ORDERS)})")
    if key == "label_skew" and not 0 <= v <= 1:
        c.fail(f"{where}{key}", f"must be in [0, 1], got {v}")
    if key == "link":
        from ...comm.link import parse_link
        try:
            parse_link(v)
        except ValueError as exc:
            c.fail(f"{where}{key}", str(exc))


def _run(c: _Checker, where: str, table: dict, defaults: dict) -> RunSpec:
    table = dict(table)
    if "algorithm" not in table:
        c.fail(f"{where}.algorithm", f"missing (choose from {', '.join(ALGORITHMS)})")
    algo = c.scalar(f"{where}.algorithm", table.pop("algorithm"), str)
    if algo not in ALGORITHMS:
        c.fail(f"{where}.algorithm", f"unknown algorithm {algo!r} (choose from {', '.join(ALGORITHMS)})")
    name = c.scalar(f"{where}.name", table.pop("name", algo), str)
    if not _NAME.fullmatch(name):
        c.fail(f"{where}.name", f"{name!r} must be 1-64 letters, digits or _.+- (it names files)")
    values, options = dict(defaults), {}
    for key, value in table.items():
        if key in RUN_KEYS:
            values[key] = c.scalar(f"{where}.{key}", value, RUN_KEYS[key])
            _check_run(c, f"{where}.", key, values[key])
        elif key in OPTIONS[algo]:
            typ, ok, why = OPTIONS[algo][key]
            options[key] = c.scalar(f"{where}.{key}", value, typ)
            if not ok(options[key]):
                c.fail(f"{where}.{key}", f"{why}, got {value!r}")
        else:
            allowed = [*RUN_KEYS, *OPTIONS[algo]]
            c.fail(f"{where}.{key}", f"unknown key for algorithm {algo!r} (choose from name, {', '.join(allowed)})")
    spec = RunSpec(algorithm=algo, name=name, options=options, **values)
    why = order_error(spec)
    if why:
        c.fail(f"{where}.order", why)
    return spec


def order_error(spec: RunSpec) -> str | None:
    """Why the run's example order cannot run with its other settings (None when it can)."""
    from ...order import ORDERS
    if spec.reshuffle and ORDERS[spec.order].needs_gradients:
        return (f"{spec.order!r} balances the examples of a fixed partition; reshuffle redraws it every epoch "
                "(use a gradient-free order, e.g. rr)")
    return None


def parse(raw: dict, source: str | None = None) -> DistConfig:
    """Validate a parsed TOML document and fill in the defaults."""
    c = _Checker(source)
    for key in raw:
        if key not in ("dist", "runs"):
            c.fail(f"[{key}]", "unknown table (choose from dist, runs)")
    cfg = DistConfig(source=source)
    run_defaults = {k: getattr(RunSpec(), k) for k in RUN_KEYS}
    for key, value in c.table("[dist]", raw.get("dist", {})).items():
        if key in JOB_KEYS:
            setattr(cfg, key, c.scalar(f"[dist].{key}", value, JOB_KEYS[key]))
            _check_job(c, "[dist].", key, getattr(cfg, key))
        elif key in RUN_KEYS:
            run_defaults[key] = c.scalar(f"[dist].{key}", value, RUN_KEYS[key])
            _check_run(c, "[dist].", key, run_defaults[key])
        else:
            c.fail(f"[dist].{key}", f"unknown key (choose from {', '.join([*JOB_KEYS, *RUN_KEYS])})")
    runs = raw.get("runs", [{"algorithm": a} for a in DEFAULT_ALGORITHMS])
    if not isinstance(runs, list) or not runs:
        c.fail("[[runs]]", f"must be a non-empty array of tables, got {kind(runs)}")
    for i, table in enumerate(runs, 1):
        cfg.runs.append(_run(c, f"[[runs]][{i}]", c.table(f"[[runs]][{i}]", table), run_defaults))
    _check_names(c, cfg.runs, "[[runs]]")
    cfg.run_defaults = {k: v for k, v in run_defaults.items() if v != getattr(RunSpec(), k)}
    return cfg


def _check_names(c: _Checker, runs: list, where: str):
    seen = set()
    for r in runs:
        if r.name in seen:
            c.fail(f"{where}.name", f"{r.name!r} names two runs; give them distinct names")
        seen.add(r.name)


def load_config(path: str | Path | None = None) -> DistConfig:
    """Read and validate a TOML file; None gives the defaults (``DEFAULT_ALGORITHMS`` on digits)."""
    if path is None:
        return parse({})
    return parse(read_toml(path, ConfigError), str(path))


def override(cfg: DistConfig, *, algorithms: list[str] | None = None, **values) -> DistConfig:
    """A copy of ``cfg`` with command-line values: job keys replace the job's, run keys replace
    every run's, and ``algorithms`` replaces the runs by one default run per algorithm.
    ``None`` values are ignored.  Errors name the option (``--steps: must be >= 1, got 0``)."""
    cfg = copy.deepcopy(cfg)
    c = _Checker(None)
    if algorithms is not None:
        if not algorithms:
            c.fail("--algorithm", "is empty")
        for a in algorithms:
            if a not in ALGORITHMS:
                c.fail("--algorithm", f"unknown algorithm {a!r} (choose from {', '.join(ALGORITHMS)})")
        cfg.runs = [RunSpec(algorithm=a, name=a, **cfg.run_defaults) for a in dict.fromkeys(algorithms)]
    for key, value in values.items():
        if value is None:
            continue
        where = f"--{key.replace('_', '-')}"
        if key in JOB_KEYS:
            setattr(cfg, key, c.scalar(where, value, JOB_KEYS[key]))
            _check_option(c, where, key, getattr(cfg, key), _check_job)
        elif key in RUN_KEYS:
            value = c.scalar(where, value, RUN_KEYS[key])
            _check_option(c, where, key, value, _check_run)
            cfg.run_defaults[key] = value
            for r in cfg.runs:
                setattr(r, key, value)
        else:
            raise TypeError(f"override() got an unknown key {key!r}")
    return cfg


def _check_option(c: _Checker, where: str, key: str, value, check):
    try:
        check(c, "", key, value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).split(': ', 1)[1]}") from None
