"""Build a run's algorithm (a ``relaxtorch.comm`` wrapper of ``torch.optim.SGD``) from its name and options.

A job may pass its own
``factory(spec, model, ctx)`` instead of ``build`` (the launcher pickles it by
reference, so it must be a module-level function).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import comm
from .config import RunSpec

TOPK_EF_RATIO = 0.01  # topk-ef's default when the run gives no ratio


@dataclass(frozen=True)
class Context:
    """What a factory may need besides the run: where this rank sits and the link model."""

    rank: int
    world: int
    seed: int
    link: object  # relaxtorch.comm.LinkModel
    device: torch.device


def check_run(spec: RunSpec, world: int) -> str | None:
    """Why ``spec`` cannot run on ``world`` ranks here (None when it can): an invalid compressor
    setting or a topology that does not fit."""
    try:
        _compressor(spec)
        if spec.algorithm == "cocktail" and spec.options.get("bits", 4) != 32:
            comm.QSGD(spec.options.get("bits", 4), spec.options.get("bucket", 128))
    except ValueError as exc:
        return str(exc)
    if not spec.decentralized:
        return None
    try:
        comm.topology(spec.topology, world)
    except ValueError as exc:
        return f"topology {spec.topology!r} with {world} ranks: {exc}"
    return None


def _compressor(spec: RunSpec):
    """The compressor of a ``DataParallel`` run (None for the others)."""
    o = spec.options
    if spec.algorithm == "allreduce":
        return comm.Identity()
    if spec.algorithm == "sign-ef":
        return comm.ErrorFeedback(comm.Sign())
    if spec.algorithm == "topk-ef":
        return comm.ErrorFeedback(comm.TopK(o.get("ratio", TOPK_EF_RATIO)))
    if spec.algorithm == "qsgd":
        return comm.QSGD(**o)
    return None


def build(spec: RunSpec, model: torch.nn.Module, ctx: Context):
    """The algorithm of ``spec`` driving ``model``'s parameters on this rank."""
    o, link = spec.options, ctx.link
    a = spec.algorithm
    sgd = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if not spec.decentralized:
        if a == "cocktail":
            return comm.CocktailSGD(sgd, link=link, seed=ctx.seed, **o)
        return comm.DataParallel(sgd, _compressor(spec), link=link, seed=ctx.seed)
    topo = comm.topology(spec.topology, ctx.world)
    if a == "dpsgd":
        return comm.DPSGD(sgd, topo, link=link, **o)
    if a == "detag":
        return comm.DeTAG(sgd, topo, link=link, **o)
    return comm.Moniqua(sgd, topo, seed=ctx.seed, link=link, **o)
