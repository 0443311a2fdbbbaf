"""The samplers ``relaxtorch gibbs`` can run, by config name, and how each is built.

Each name maps to a class of :mod:`relaxtorch.mcmc.factor`; a ``[samplers.<name>]`` table
gives its keyword settings (checked against the class's signature, then by the class
itself, which refuses bad values with ``ValueError``).  Threaded samplers (asynchronous
Gibbs) run once per entry of ``[sweep].threads``; the others run on one thread.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplerSpec:
    cls: str                 # class name in relaxtorch.mcmc.factor
    threaded: bool = False   # takes threads=k
    about: str = ""


SAMPLERS = {
    "gibbs": SamplerSpec("Gibbs", about="sequential Gibbs (systematic, random or permutation scan)"),
    "async_gibbs": SamplerSpec("AsyncGibbs", threaded=True,
                               about="HOGWILD!-Gibbs: k threads share the assignment without locks"),
    "poisson_gibbs": SamplerSpec("PoissonGibbs", about="Poisson-minibatched Gibbs (Zhang & De Sa 2019)"),
    "min_gibbs": SamplerSpec("MINGibbs", about="MIN-Gibbs (De Sa, Chen & Wong 2018)"),
    "mgpmh": SamplerSpec("MGPMH", about="minibatch-Gibbs-proposal MH (De Sa, Chen & Wong 2018)"),
    "double_min_gibbs": SamplerSpec("DoubleMINGibbs", about="DoubleMIN-Gibbs (De Sa, Chen & Wong 2018)"),
}


_MODULES = ("gibbs", "async_gibbs", "poisson_gibbs", "min_gibbs", "state")


def factor_api(name: str):
    """``relaxtorch.mcmc.factor.<name>`` (a sampler class, ``marginals``), also when only its module
    (gibbs.py, async_gibbs.py, ...) defines it; None when neither does."""
    import importlib

    from ...mcmc import factor
    found = getattr(factor, name, None)
    for module in _MODULES:
        if found is not None:
            break
        try:
            found = getattr(importlib.import_module(f"{factor.__name__}.{module}"), name, None)
        except ImportError:
            continue
    return found


def sampler_class(name: str):
    """The class of sampler ``name``; ValueError when this build of relaxtorch.mcmc.factor lacks it."""
    cls = factor_api(SAMPLERS[name].cls)
    if cls is None:
        raise ValueError(f"sampler {name!r} is not available (relaxtorch.mcmc.factor has no {SAMPLERS[name].cls})")
    return cls


def setting_names(name: str) -> tuple[str, ...]:
    """The keyword settings a ``[samplers.<name>]`` table may give (``threads`` comes from the sweep)."""
    params = inspect.signature(sampler_class(name)).parameters
    return tuple(p for p in params if p != "threads" and params[p].kind in
                 (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))


def build_sampler(name: str, settings: dict, threads: int = 1):
    """The sampler value; ``ValueError`` (from the class) on settings it refuses."""
    kwargs = dict(settings)
    if SAMPLERS[name].threaded:
        kwargs["threads"] = threads
    return sampler_class(name)(**kwargs)


def label(name: str, threads: int) -> str:
    return f"{name} x{threads}" if SAMPLERS[name].threaded else name
