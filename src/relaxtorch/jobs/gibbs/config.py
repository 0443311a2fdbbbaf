"""``relaxtorch gibbs``'s TOML configuration: defaults for every key, strict checks.

Keys and tables::

    graph = "ising:64x64,beta=0.4,h=0.1"  |  "deepdive:PATH"  |  [graph] builder = "...", ...
    [sweep]      samplers, threads, seeds, epsilon
    [run]        sweeps, burn_in, checkpoints
    [reference]  method ("auto" | "exact" | "gibbs" | "uniform"), sweeps, burn_in, seed
    [samplers.<sampler>]   keyword settings of one sampler (scan, lam, ...)

Errors name the file and the key: ``x.toml: [sweep].samplers: unknown sampler 'gibs' (...)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..._files import read_toml, tomllib
from .._config import ConfigChecker, range_error
from .defaults import DEFAULT_TOML
from .graphs import GraphSpecError, check_spec, describe_spec, parse_spec
from .samplers import SAMPLERS, build_sampler, setting_names


class ConfigError(ValueError):
    """A configuration the job cannot run; the message names the file and key."""


SWEEP_DEFAULTS = {"samplers": ["gibbs", "async_gibbs", "poisson_gibbs"], "threads": [1, 2], "seeds": [0],
                  "epsilon": 0.02}
RUN_DEFAULTS = {"sweeps": 2000, "burn_in": 100, "checkpoints": 20}
RUN_LIMITS = {"sweeps": (1, 10 ** 9), "burn_in": (0, 10 ** 9), "checkpoints": (1, 10 ** 4)}
REFERENCE_DEFAULTS = {"method": "auto", "sweeps": 40000, "burn_in": 1000, "seed": 1_000_003}
REFERENCE_METHODS = ("auto", "exact", "gibbs", "uniform")
EXACT_LIMIT = 2 ** 20  # "auto" enumerates up to this many free assignments


@dataclass
class Config:
    """A validated configuration (``source`` is the file it came from, or None)."""

    graph: dict = field(default_factory=lambda: parse_spec("ising:32x32,beta=0.3,h=0.1"))
    sweep: dict = field(default_factory=lambda: copy.deepcopy(SWEEP_DEFAULTS))
    run: dict = field(default_factory=lambda: dict(RUN_DEFAULTS))
    reference: dict = field(default_factory=lambda: dict(REFERENCE_DEFAULTS))
    samplers: dict = field(default_factory=dict)  # sampler -> settings
    source: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "graph": describe_spec(self.graph), "sweep": self.sweep, "run": self.run,
                "reference": self.reference, "samplers": self.samplers}


class _Checker(ConfigChecker):
    error = ConfigError

    def sampler_settings(self, where: str, name: str, table: dict) -> dict:
        table = self.table(where, table)
        try:
            allowed = setting_names(name)
        except ValueError as exc:
            self.fail(where, str(exc))
        self.keys(where, table, allowed)
        for k, v in table.items():
            if not isinstance(v, (int, float, str, bool)):
                self.fail(f"{where}.{k}", f"must be a number, a string or true/false, got a {type(v).__name__}")
        try:
            build_sampler(name, table, threads=1)
        except (ValueError, TypeError) as exc:
            self.fail(where, str(exc))
        return dict(table)


def parse(raw: dict, source: str | None = None) -> Config:
    """Validate a parsed TOML document and fill in the defaults."""
    c = _Checker(source)
    c.keys("", raw, ("graph", "sweep", "run", "reference", "samplers"))
    cfg = Config(source=source)
    if "graph" in raw:
        try:
            cfg.graph = parse_spec(raw["graph"])
        except GraphSpecError as exc:
            c.fail("graph", str(exc))
    try:
        cfg.graph = check_spec(cfg.graph, Path(source).parent if source else None)
    except GraphSpecError as exc:
        c.fail("graph", str(exc))

    sweep = c.table("[sweep]", raw.get("sweep", {}))
    c.keys("[sweep]", sweep, tuple(SWEEP_DEFAULTS))
    if "samplers" in sweep:
        cfg.sweep["samplers"] = c.names("[sweep].samplers", sweep["samplers"], tuple(SAMPLERS), "sampler")
    if "seeds" in sweep:
        cfg.sweep["seeds"] = c.seeds("[sweep].seeds", sweep["seeds"])
    if "threads" in sweep:
        values = sweep["threads"] if isinstance(sweep["threads"], list) else [sweep["threads"]]
        if not values:
            c.fail("[sweep].threads", "must be a thread count or a non-empty list of them")
        cfg.sweep["threads"] = [c.threads("[sweep].threads", v) for v in values]
        if len(set(cfg.sweep["threads"])) != len(cfg.sweep["threads"]):
            c.fail("[sweep].threads", "has a thread count twice")
    if "epsilon" in sweep:
        cfg.sweep["epsilon"] = c.scalar("[sweep].epsilon", sweep["epsilon"], float)
        if range_error(cfg.sweep["epsilon"], 0, 1, lo_open=True):
            c.fail("[sweep].epsilon", range_error(cfg.sweep["epsilon"], 0, 1, lo_open=True))

    run = c.table("[run]", raw.get("run", {}))
    c.keys("[run]", run, tuple(RUN_DEFAULTS))
    for key, value in run.items():
        cfg.run[key] = c.scalar(f"[run].{key}", value, int)
        if range_error(cfg.run[key], *RUN_LIMITS[key]):
            c.fail(f"[run].{key}", range_error(cfg.run[key], *RUN_LIMITS[key]))
    if cfg.run["checkpoints"] > cfg.run["sweeps"]:
        c.fail("[run].checkpoints", f"must be at most [run].sweeps ({cfg.run['sweeps']})")

    ref = c.table("[reference]", raw.get("reference", {}))
    c.keys("[reference]", ref, tuple(REFERENCE_DEFAULTS))
    if "method" in ref:
        method = c.scalar("[reference].method", ref["method"], str)
        if method not in REFERENCE_METHODS:
            c.fail("[reference].method", f"unknown method {method!r} (choose from {', '.join(REFERENCE_METHODS)})")
        cfg.reference["method"] = method
    for key, (lo, hi) in {"sweeps": (1, 10 ** 9), "burn_in": (0, 10 ** 9), "seed": (0, 2 ** 63 - 1)}.items():
        if key in ref:
            cfg.reference[key] = c.scalar(f"[reference].{key}", ref[key], int)
            if range_error(cfg.reference[key], lo, hi):
                c.fail(f"[reference].{key}", range_error(cfg.reference[key], lo, hi))

    for s, table in c.table("[samplers]", raw.get("samplers", {})).items():
        if s not in SAMPLERS:
            c.fail(f"[samplers.{s}]", f"unknown sampler {s!r} (choose from {', '.join(SAMPLERS)})")
        cfg.samplers[s] = c.sampler_settings(f"[samplers.{s}]", s, table)
    for s in cfg.sweep["samplers"]:  # defaults must build too (a sampler may need a setting)
        if s not in cfg.samplers:
            cfg.samplers[s] = c.sampler_settings(f"[samplers.{s}]", s, {})
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML file; None gives the default run (``DEFAULT_TOML``)."""
    if path is None:
        return parse(tomllib.loads(DEFAULT_TOML))
    return parse(read_toml(path, ConfigError), str(path))


def quick(cfg: Config, sweeps: int = 200) -> Config:
    """A smoke-test version of ``cfg``: at most ``sweeps`` sweeps per run, the first seed."""
    cfg = copy.deepcopy(cfg)
    cfg.run["sweeps"] = min(cfg.run["sweeps"], sweeps)
    cfg.run["burn_in"] = min(cfg.run["burn_in"], sweeps // 4)
    cfg.run["checkpoints"] = min(cfg.run["checkpoints"], cfg.run["sweeps"])
    cfg.reference["sweeps"] = min(cfg.reference["sweeps"], 20 * sweeps)
    cfg.sweep["seeds"] = cfg.sweep["seeds"][:1]
    return cfg
