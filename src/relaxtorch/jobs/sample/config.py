"""``relaxtorch sample``'s TOML configuration: defaults for every key, strict checks.

Tables::

    [sweep]   problems, samplers, precisions, seeds, threads
    [chain]   chains, steps, burn_in, thin, batch_size, max_sample_mb
    [samplers.<sampler>]                    settings for one sampler (step_size, friction, ...)
    [problems.<problem>]                    problem options (n: the synthetic set's size)
    [problems.<problem>.samplers.<sampler>] settings for one sampler on one problem

A run's sampler settings are the sampler's defaults, then the problem's defaults for it
(:data:`.samplers.TUNED`), then ``[samplers.<s>]``, then ``[problems.<p>.samplers.<s>]``,
later ones winning.  Low-precision samplers run once per precision other than ``fp32``;
the others run in float32.  Errors name the file and the key:
``x.toml: [chain].steps: must be an integer, got a string 'a'``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..._files import read_toml, tomllib
from .._config import ConfigChecker, range_error
from .defaults import DEFAULT_TOML
from .precisions import PRECISIONS
from .problems import PROBLEM_OPTIONS, PROBLEMS
from .samplers import SAMPLERS, check_settings


class ConfigError(ValueError):
    """A configuration the job cannot run; the message names the file and key."""


SWEEP_DEFAULTS = {
    "problems": list(PROBLEMS),
    "samplers": list(SAMPLERS),
    "precisions": ["fp32", "fixed8"],
    "seeds": [0],
    "threads": 1,
}
CHAIN_DEFAULTS = {"chains": 2, "steps": 2000, "burn_in": 500, "thin": 1, "batch_size": 32, "max_sample_mb": 256.0}
CHAIN_LIMITS = {"chains": (1, 64), "steps": (1, 10 ** 8), "burn_in": (0, 10 ** 8), "thin": (1, 10 ** 6),
                "batch_size": (1, 10 ** 7), "max_sample_mb": (0.001, 10 ** 6)}


@dataclass
class Config:
    """A validated configuration (``source`` is the file it came from, or None)."""

    sweep: dict = field(default_factory=lambda: copy.deepcopy(SWEEP_DEFAULTS))
    chain: dict = field(default_factory=lambda: dict(CHAIN_DEFAULTS))
    samplers: dict = field(default_factory=dict)          # sampler -> settings
    problems: dict = field(default_factory=dict)          # problem -> options
    problem_samplers: dict = field(default_factory=dict)  # (problem, sampler) -> settings
    source: str | None = None

    def settings(self, problem: str, sampler: str) -> dict:
        """The sampler's settings on this problem, every layer applied."""
        from .samplers import settings_for
        return {**settings_for(problem, sampler), **self.samplers.get(sampler, {}),
                **self.problem_samplers.get((problem, sampler), {})}

    def to_dict(self) -> dict:
        return {"source": self.source, "sweep": self.sweep, "chain": self.chain, "samplers": self.samplers,
                "problems": self.problems,
                "problem_samplers": {f"{p}/{s}": v for (p, s), v in self.problem_samplers.items()}}


class _Checker(ConfigChecker):
    error = ConfigError

    def sampler_settings(self, where: str, sampler: str, table: dict) -> dict:
        table = self.table(where, table)
        spec = SAMPLERS[sampler]
        self.keys(where, table, tuple(spec.settings))
        out = {k: self.scalar(f"{where}.{k}", v, type(spec.settings[k])) for k, v in table.items()}
        why = check_settings(sampler, {**spec.settings, **out})
        if why is not None:
            key, _, reason = why.partition(": ")
            self.fail(f"{where}.{key}" if key in out else where, reason if key in out else why)
        return out


def parse(raw: dict, source: str | None = None) -> Config:
    """Validate a parsed TOML document and fill in the defaults."""
    c = _Checker(source)
    c.keys("", raw, ("sweep", "chain", "samplers", "problems"))
    cfg = Config(source=source)
    sweep = c.table("[sweep]", raw.get("sweep", {}))
    c.keys("[sweep]", sweep, tuple(SWEEP_DEFAULTS))
    for key, choices, what in (("problems", tuple(PROBLEMS), "problem"), ("samplers", tuple(SAMPLERS), "sampler"),
                               ("precisions", tuple(PRECISIONS), "precision")):
        if key in sweep:
            cfg.sweep[key] = c.names(f"[sweep].{key}", sweep[key], choices, what)
    if "seeds" in sweep:
        cfg.sweep["seeds"] = c.seeds("[sweep].seeds", sweep["seeds"])
    if "threads" in sweep:
        cfg.sweep["threads"] = c.threads("[sweep].threads", sweep["threads"])
    chain = c.table("[chain]", raw.get("chain", {}))
    c.keys("[chain]", chain, tuple(CHAIN_DEFAULTS))
    for key, value in chain.items():
        typ = type(CHAIN_DEFAULTS[key])
        cfg.chain[key] = c.scalar(f"[chain].{key}", value, typ)
        lo, hi = CHAIN_LIMITS[key]
        if range_error(cfg.chain[key], lo, hi):
            c.fail(f"[chain].{key}", range_error(cfg.chain[key], lo, hi))
    if cfg.chain["burn_in"] >= cfg.chain["steps"]:
        c.fail("[chain].burn_in", f"must be below [chain].steps ({cfg.chain['steps']}): no sample would be kept")
    for s, table in c.table("[samplers]", raw.get("samplers", {})).items():
        if s not in SAMPLERS:
            c.fail(f"[samplers.{s}]", f"unknown sampler {s!r} (choose from {', '.join(SAMPLERS)})")
        cfg.samplers[s] = c.sampler_settings(f"[samplers.{s}]", s, table)
    for p, table in c.table("[problems]", raw.get("problems", {})).items():
        where = f"[problems.{p}]"
        if p not in PROBLEMS:
            c.fail(where, f"unknown problem {p!r} (choose from {', '.join(PROBLEMS)})")
        table = dict(c.table(where, table))
        for s, sub in c.table(f"{where}.samplers", table.pop("samplers", {})).items():
            if s not in SAMPLERS:
                c.fail(f"[problems.{p}.samplers.{s}]", f"unknown sampler {s!r} (choose from {', '.join(SAMPLERS)})")
            cfg.problem_samplers[(p, s)] = c.sampler_settings(f"[problems.{p}.samplers.{s}]", s, sub)
        allowed = PROBLEM_OPTIONS.get(p, {})
        c.keys(where, table, tuple(allowed))
        options = {}
        for k, v in table.items():
            default, lo, hi = allowed[k]
            options[k] = c.scalar(f"{where}.{k}", v, type(default))
            if range_error(options[k], lo, hi):
                c.fail(f"{where}.{k}", range_error(options[k], lo, hi))
        cfg.problems[p] = options
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML file; None gives the default sweep (``DEFAULT_TOML``)."""
    if path is None:
        return parse(tomllib.loads(DEFAULT_TOML))
    return parse(read_toml(path, ConfigError), str(path))


def quick(cfg: Config, steps: int = 300) -> Config:
    """A smoke-test version of ``cfg``: at most ``steps`` steps per chain, the first seed."""
    cfg = copy.deepcopy(cfg)
    cfg.chain["steps"] = min(cfg.chain["steps"], steps)
    cfg.chain["burn_in"] = min(cfg.chain["burn_in"], cfg.chain["steps"] // 3)
    cfg.sweep["seeds"] = cfg.sweep["seeds"][:1]
    return cfg
