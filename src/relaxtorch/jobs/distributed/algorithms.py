"""Build a run's algorithm (a ``relaxtorch.comm`` wrapper of ``torch.optim.SGD``) from its name and options.

The classes are imported when a run needs them, so this package imports even
where some of ``relaxtorch.comm`` is missing; ``check_available`` says which
class a run lacks before any process starts.  A job may pass its own
``factory(spec, model, ctx)`` instead of ``build`` (the launcher pickles it by
reference, so it must be a module-level function).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from .config import RunSpec

# algorithm -> the relaxtorch.comm names it uses
NEEDS = {
    "allreduce": ("DataParallel", "Identity"),
    "cocktail": ("CocktailSGD",),
    "sign-ef": ("DataParallel", "ErrorFeedback", "Sign"),
    "topk-ef": ("DataParallel", "ErrorFeedback", "TopK"),
    "qsgd": ("DataParallel", "Quantize"),
    "dpsgd": ("DPSGD", "topology"),
    "detag": ("DeTAG", "topology"),
    "moniqua": ("Moniqua", "topology"),
}
TOPK_EF_RATIO = 0.01  # topk-ef's default when the run gives no ratio


@dataclass(frozen=True)
class Context:
    """What a factory may need besides the run: where this rank sits and the link model."""

    rank: int
    world: int
    seed: int
    link: object  # relaxtorch.comm.LinkModel
    device: torch.device


def _comm(name: str):
    comm = importlib.import_module("relaxtorch.comm")
    try:
        return getattr(comm, name)
    except AttributeError:
        raise ImportError(f"relaxtorch.comm.{name} is not available in this install") from None


def check_available(algorithm: str) -> str | None:
    """Why ``algorithm`` cannot be built here (None when it can)."""
    for name in NEEDS[algorithm]:
        try:
            _comm(name)
        except ImportError as exc:
            return f"algorithm {algorithm!r} needs {exc}"
    return None


def check_run(spec: RunSpec, world: int) -> str | None:
    """Why ``spec`` cannot run on ``world`` ranks here (None when it can): a missing class, a
    topology that does not fit, or a setting the algorithm would otherwise silently ignore."""
    why = check_available(spec.algorithm)
    if why:
        return why
    try:
        _compressor(spec)
        if spec.algorithm == "cocktail" and spec.options.get("bits", 4) != 32:
            _comm("Quantize")(spec.options.get("bits", 4), spec.options.get("bucket", 128))
    except ValueError as exc:
        return str(exc)
    if not spec.decentralized:
        return None
    try:
        _comm("topology")(spec.topology, world)
    except ValueError as exc:
        return f"topology {spec.topology!r} with {world} ranks: {exc}"
    return None


def _compressor(spec: RunSpec):
    """The compressor of a ``DataParallel`` run (None for the others)."""
    o = spec.options
    if spec.algorithm == "allreduce":
        return _comm("Identity")()
    if spec.algorithm == "sign-ef":
        return _comm("ErrorFeedback")(_comm("Sign")())
    if spec.algorithm == "topk-ef":
        return _comm("ErrorFeedback")(_comm("TopK")(o.get("ratio", TOPK_EF_RATIO)))
    if spec.algorithm == "qsgd":
        return _comm("Quantize")(**o)
    return None


def build(spec: RunSpec, model: torch.nn.Module, ctx: Context):
    """The algorithm of ``spec`` driving ``model``'s parameters on this rank."""
    o, link = spec.options, ctx.link
    a = spec.algorithm
    sgd = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if not spec.decentralized:
        if a == "cocktail":
            return _comm("CocktailSGD")(sgd, link=link, seed=ctx.seed, **o)
        return _comm("DataParallel")(sgd, _compressor(spec), link=link, seed=ctx.seed)
    topo = _comm("topology")(spec.topology, ctx.world)
    if a == "dpsgd":
        return _comm("DPSGD")(sgd, topo, link=link, **o)
    if a == "detag":
        return _comm("DeTAG")(sgd, topo, link=link, **o)
    return _comm("Moniqua")(sgd, topo, seed=ctx.seed, link=link, **o)
