"""The sweep's TOML configuration: defaults for every key, strict validation, per-run settings.

Every key has a default (``Hyper``'s, ``SWEEP_DEFAULTS``, ``DATA_DEFAULTS``);
the bare command runs ``DEFAULT_TOML`` (= examples/default.toml).  Tables::

    [sweep]      pairs = ["mlp/digits"] | models = [...] x datasets = [...],
                 algorithms, precisions, orders (example orders, default ["rr"]; "grab:sketch=64":
                 GraB on 64-number sketches of each layer's gradients), seeds, threads
    [data]       split_seed, test_fraction, max_train (0 = all)
    [train]      the Hyper keys (epochs, batch_size, lr, ...)
    [models.<model>]                  Hyper keys for one model
    [algorithms.<algorithm>]          Hyper keys for one algorithm
    [models.<model>.algorithms.<a>]   Hyper keys for one model and algorithm

A run's settings are ``[train]``, then the model's table, the algorithm's,
and the model-and-algorithm table, later ones winning.  Errors name the file
and the key: ``x.toml: [sweep].precisions: unknown precision 'fp7' (choose from ...)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from .._config import ConfigChecker, seed_error
from ..._files import read_toml, tomllib
from ...data import DATASETS
from ...order import ORDERS, parse_spec
from .algorithms import ALGORITHMS
from .defaults import DEFAULT_TOML
from .hyper import HYPER_KEYS, Hyper, check_hyper
from .models import MODELS
from .precisions import PRECISIONS



class ConfigError(ValueError):
    """A configuration the sweep cannot run; the message names the file and key."""


SWEEP_DEFAULTS = {
    "pairs": None,  # None: every model with every dataset
    "models": ["mlp"],
    "datasets": ["digits"],
    "algorithms": list(ALGORITHMS),
    "precisions": ["fp32", "bf16", "fp8_e4m3", "fixed8", "bfp8", "mxfp4"],
    "orders": ["rr"],  # example orders (relaxtorch.order.ORDERS): "rr", "grab", "pair", "grab:sketch=64", ...
    "seeds": [0, 1, 2],
    "threads": 1,
}
DATA_DEFAULTS = {"split_seed": 0, "test_fraction": 0.25, "max_train": 0}


@dataclass
class Config:
    """A validated configuration (``source`` is the file it came from, or None)."""

    sweep: dict = field(default_factory=lambda: copy.deepcopy(SWEEP_DEFAULTS))
    data: dict = field(default_factory=lambda: dict(DATA_DEFAULTS))
    train: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    algorithms: dict = field(default_factory=dict)
    model_algorithms: dict = field(default_factory=dict)  # (model, algorithm) -> overrides
    source: str | None = None
    explicit: set = field(default_factory=set)  # the [sweep] keys the file gave (the others are defaults)

    def hyper(self, model: str, algorithm: str) -> Hyper:
        values = {**Hyper().to_dict(), **self.train, **self.models.get(model, {}),
                  **self.algorithms.get(algorithm, {}), **self.model_algorithms.get((model, algorithm), {})}
        return Hyper(**values)

    def pairs(self) -> list[tuple[str, str]]:
        s = self.sweep
        if s["pairs"] is not None:
            return [tuple(p.split("/", 1)) for p in s["pairs"]]
        return [(m, d) for m in s["models"] for d in s["datasets"]]

    def to_dict(self) -> dict:
        sweep = {k: v for k, v in self.sweep.items() if k not in ("models", "datasets")}
        sweep["pairs"] = ["/".join(p) for p in self.pairs()]
        return {"source": self.source, "sweep": sweep,
                "data": self.data, "train": self.train, "models": self.models, "algorithms": self.algorithms,
                "model_algorithms": {f"{m}/{a}": v for (m, a), v in self.model_algorithms.items()}}


class _Checker(ConfigChecker):
    error = ConfigError

    def hyper(self, where: str, table: dict) -> dict:
        out = {}
        for key, value in table.items():
            if key not in HYPER_KEYS:
                self.fail(f"{where}.{key}", f"unknown key (choose from {', '.join(HYPER_KEYS)})")
            out[key] = self.scalar(f"{where}.{key}", value, HYPER_KEYS[key])
        merged = {**Hyper().to_dict(), **out}
        why = check_hyper(merged)
        if why and why.split(":")[0] in out:
            self.fail(f"{where}.{why.split(':')[0]}", why.split(": ", 1)[1])
        return out



def _orders(c, value) -> list[str]:
    """``[sweep].orders``: names of ``relaxtorch.order.ORDERS``, a balancing one optionally
    ``NAME:sketch=K`` (``relaxtorch.order.parse_spec``)."""
    where = "[sweep].orders"
    names = c.names(where, value, None, "order")
    for v in names:
        name = v.partition(":")[0]
        if name not in ORDERS:
            c.fail(where, f"unknown order {name!r} (choose from {', '.join(ORDERS)})")
        try:
            parse_spec(v)
        except ValueError as exc:
            c.fail(where, str(exc))
    return names


def parse(raw: dict, source: str | None = None) -> Config:
    """Validate a parsed TOML document and fill in the defaults."""
    c = _Checker(source)
    c.keys("", raw, ("sweep", "data", "train", "models", "algorithms"))
    cfg = Config(source=source)
    sweep = c.table("[sweep]", raw.get("sweep", {}))
    c.keys("[sweep]", sweep, tuple(SWEEP_DEFAULTS))
    cfg.explicit = set(sweep) | ({"models", "datasets"} if "pairs" in sweep else set())
    for key, choices, what in (("models", MODELS, "model"), ("datasets", DATASETS, "dataset"),
                               ("algorithms", ALGORITHMS, "algorithm"), ("precisions", tuple(PRECISIONS), "precision")):
        if key in sweep:
            cfg.sweep[key] = c.names(f"[sweep].{key}", sweep[key], choices, what)
    if "orders" in sweep:
        cfg.sweep["orders"] = _orders(c, sweep["orders"])
    if "pairs" in sweep:
        if "models" in sweep or "datasets" in sweep:
            c.fail("[sweep].pairs", "give either pairs or models and datasets, not both")
        cfg.sweep["pairs"] = _pairs(c, sweep["pairs"])
    if "seeds" in sweep:
        cfg.sweep["seeds"] = c.seeds("[sweep].seeds", sweep["seeds"])
    if "threads" in sweep:
        cfg.sweep["threads"] = c.threads("[sweep].threads", sweep["threads"])
    data = c.table("[data]", raw.get("data", {}))
    c.keys("[data]", data, tuple(DATA_DEFAULTS))
    for key, typ in (("split_seed", int), ("test_fraction", float), ("max_train", int)):
        if key in data:
            cfg.data[key] = c.scalar(f"[data].{key}", data[key], typ)
    if not 0 < cfg.data["test_fraction"] < 1:
        c.fail("[data].test_fraction", "must be in (0, 1)")
    if cfg.data["max_train"] < 0:
        c.fail("[data].max_train", "must be >= 0")
    if seed_error(cfg.data["split_seed"]):
        c.fail("[data].split_seed", seed_error(cfg.data["split_seed"]))
    cfg.train.update(c.hyper("[train]", c.table("[train]", raw.get("train", {}))))
    for m, table in c.table("[models]", raw.get("models", {})).items():
        where = f"[models.{m}]"
        if m not in MODELS:
            c.fail(where, f"unknown model {m!r} (choose from {', '.join(MODELS)})")
        table = dict(c.table(where, table))
        for a, sub in c.table(f"{where}.algorithms", table.pop("algorithms", {})).items():
            if a not in ALGORITHMS:
                c.fail(f"[models.{m}.algorithms.{a}]", f"unknown algorithm {a!r} (choose from {', '.join(ALGORITHMS)})")
            sub_where = f"[models.{m}.algorithms.{a}]"
            cfg.model_algorithms[(m, a)] = c.hyper(sub_where, c.table(sub_where, sub))
        cfg.models[m] = c.hyper(where, table)
    for a, table in c.table("[algorithms]", raw.get("algorithms", {})).items():
        where = f"[algorithms.{a}]"
        if a not in ALGORITHMS:
            c.fail(where, f"unknown algorithm {a!r} (choose from {', '.join(ALGORITHMS)})")
        cfg.algorithms[a] = c.hyper(where, c.table(where, table))
    return cfg


def _pairs(c: _Checker, value) -> list[str]:
    names = c.names("[sweep].pairs", value, None, "model/dataset")
    for p in names:
        m, _, d = p.partition("/")
        if m not in MODELS:
            c.fail("[sweep].pairs", f"unknown model {m!r} in {p!r} (choose from {', '.join(MODELS)})")
        if d not in DATASETS:
            c.fail("[sweep].pairs", f"unknown dataset {d!r} in {p!r} (choose from {', '.join(DATASETS)})")
    return names


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML file; None gives the default sweep (``DEFAULT_TOML``)."""
    if path is None:
        return parse(tomllib.loads(DEFAULT_TOML))
    return parse(read_toml(path, ConfigError), str(path))


def quick(cfg: Config, epochs: int = 2, max_train: int = 256) -> Config:
    """A smoke-test version of ``cfg``: at most ``epochs`` epochs, ``max_train`` rows, the first seed."""
    cfg = copy.deepcopy(cfg)
    cfg.train["epochs"] = min(cfg.train.get("epochs", Hyper().epochs), epochs)
    for table in [*cfg.models.values(), *cfg.algorithms.values(), *cfg.model_algorithms.values()]:
        if "epochs" in table:
            table["epochs"] = min(table["epochs"], epochs)
    cfg.data["max_train"] = min(cfg.data["max_train"] or max_train, max_train)
    cfg.sweep["seeds"] = cfg.sweep["seeds"][:1]
    return cfg

