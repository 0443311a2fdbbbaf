"""Which runs a configuration makes, which it skips and why, and which requests it refuses.

A combination that cannot run (``svrg`` on an MLP, ``halp`` at fp32, ``cnn``
on a data set without images) is skipped with a note when it comes out of a
cross product; it is a :class:`ConfigError` when it was named explicitly (a
``pairs`` entry) or when a name the file gave in ``[sweep]`` would run nowhere
at all.  A default name that runs nowhere (the built-in algorithm list on the
default MLP: svrg and halp need a convex model) is dropped with its reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...data import Dataset, load_dataset
from .algorithms import unsupported
from .config import Config, ConfigError
from .hyper import Hyper, check_hyper
from .models import model_error
from .precisions import PRECISIONS


@dataclass(frozen=True)
class RunSpec:
    model: str
    dataset: str
    algorithm: str
    precision: str
    seed: int
    hyper: Hyper
    order: str = "rr"

    @property
    def label(self) -> str:
        order = "" if self.order == "rr" else f" order={self.order}"
        return f"{self.model}/{self.dataset} {self.algorithm}@{self.precision}{order} seed={self.seed}"


def load_data(cfg: Config) -> dict[str, Dataset]:
    """The sweep's data sets, split with ``[data].split_seed`` and subsampled to ``max_train``."""
    d = cfg.data
    names = sorted({ds for _, ds in cfg.pairs()})
    return {n: load_dataset(n, seed=d["split_seed"], test_fraction=d["test_fraction"])
            .subsample(d["max_train"], d["split_seed"]) for n in names}


def plan(cfg: Config, datasets: dict[str, Dataset]) -> tuple[list[RunSpec], list[dict]]:
    """(runs in sweep order, skipped combinations with their reasons)."""
    where = f"{cfg.source}: " if cfg.source else ""
    explicit = cfg.sweep["pairs"] is not None
    runs, skipped, used = [], [], {"models": set(), "datasets": set(), "algorithms": set(), "precisions": set()}
    reasons: dict[tuple[str, str], str] = {}
    halp_bits: dict[tuple, str] = {}
    for model, ds in cfg.pairs():
        why = model_error(model, datasets[ds])
        if why:
            if explicit:
                raise ConfigError(f"{where}[sweep].pairs: {model}/{ds}: {why}")
            skipped.append(dict(model=model, dataset=ds, algorithm="*", precision="*", reason=why))
            reasons.setdefault(("models", model), why)
            reasons.setdefault(("datasets", ds), why)
            continue
        for alg in cfg.sweep["algorithms"]:
            hp = _hyper(cfg, model, alg, where)
            for prec in cfg.sweep["precisions"]:
                why = unsupported(alg, model, PRECISIONS[prec])
                if why:
                    skipped.append(dict(model=model, dataset=ds, algorithm=alg, precision=prec, reason=why))
                    reasons.setdefault(("algorithms", alg), why)
                    reasons.setdefault(("precisions", prec), why)
                    continue
                if alg == "halp":
                    bits = min(int(PRECISIONS[prec].weight_bits), 24)
                    first = halp_bits.setdefault((model, ds, bits), prec)
                    if first != prec:  # HALP sees a precision only through its bit count
                        skipped.append(dict(model=model, dataset=ds, algorithm=alg, precision=prec,
                                            reason=f"halp@{prec} is the same run as halp@{first} ({bits} bits)"))
                        used["precisions"].add(prec)
                        continue
                if alg == "halp" and hp.weight_decay <= 0:
                    raise ConfigError(f"{where}weight_decay: must be > 0 for halp on {model} "
                                      "(HALP's strong-convexity constant mu is the L2 strength)")
                used["models"].add(model), used["datasets"].add(ds)
                used["algorithms"].add(alg), used["precisions"].add(prec)
                runs.extend(RunSpec(model, ds, alg, prec, s, hp, order) for order in cfg.sweep["orders"]
                            for s in cfg.sweep["seeds"])
    names = {"algorithms": cfg.sweep["algorithms"], "precisions": cfg.sweep["precisions"],
             "models": [m for m, _ in cfg.pairs()], "datasets": [d for _, d in cfg.pairs()]}
    unused = [(key, name) for key, requested in names.items() for name in dict.fromkeys(requested)
              if name not in used[key]]
    # a name the file did not give (a default, e.g. svrg beside the default mlp) is dropped, not an error:
    # its combinations are in ``skipped`` with the reason, which the table prints
    unused = [(key, name) for key, name in unused if key in cfg.explicit or (key, name) not in reasons]
    if unused:  # report a name with a specific reason first (the cause, not its consequences)
        key, name = next((u for u in unused if u in reasons), unused[0])
        k = "pairs" if explicit and key in ("models", "datasets") else key
        why = reasons.get((key, name), "no combination of the sweep runs it")
        raise ConfigError(f"{where}[sweep].{k}: {name!r} would run nowhere in this sweep ({why})")
    if not runs:
        raise ConfigError(f"{where}[sweep]: no combination of this sweep can run")
    return runs, skipped


def _hyper(cfg: Config, model: str, alg: str, where: str) -> Hyper:
    hp = cfg.hyper(model, alg)
    why = check_hyper(hp.to_dict())
    if why:
        raise ConfigError(f"{where}{model}/{alg}: {why}")
    return hp
