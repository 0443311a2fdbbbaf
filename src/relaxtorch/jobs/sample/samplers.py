"""The samplers ``relaxtorch sample`` can run, each a name -> how to build its kernel for a problem.

Two families, both driven through the kernel contract of :mod:`relaxtorch.mcmc`
(``init``/``step(generator, state, minibatch, step_size)``):

* gradient samplers (``sgld``, ``sghmc``, ``amagold``, the low-precision SGLDs) take a
  uniform minibatch of ``[chain].batch_size`` each step and the minibatch log-posterior
  gradient of :func:`relaxtorch.mcmc.grad_estimator`;
* Metropolis-Hastings samplers (``mh``, ``tunamh``, ``tfmh``, ``flymc``) draw their own data and
  need per-datum energies with bounds: they run on the GLM problems only (logistic and
  robust regression), and are skipped elsewhere with the reason in the report.

Each has default settings (``settings``), overridden per problem by :data:`TUNED` (step sizes
that suit each problem's posterior scale) and then by the config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

EXACT = "exact"


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler of the job: ``family`` "gradient" or "mh"; ``precision`` True when it runs at the
    sweep's low precisions (else float32 only); ``exact``: targets the posterior exactly."""

    name: str
    family: str
    settings: dict
    build: Callable
    exact: bool = False
    precision: bool = False
    describe: str = ""
    checks: dict = field(default_factory=dict)  # setting -> (lo, hi, lo_open)


def _grad(problem, s):
    """The minibatch log-posterior gradient; with ``control_variate`` (Baker et al. 2019) centred
    at the posterior mode, whose full-data gradient costs one pass, once."""
    from ...mcmc import full_gradient, grad_estimator
    if not s.get("control_variate"):
        return grad_estimator(problem.log_prior, problem.pointwise, problem.data_size)
    from ...mcmc.problems import laplace
    mode = laplace(problem)[0].to(problem.init.dtype)
    centre_grad = full_gradient(problem.pointwise, mode, [problem.data])
    return grad_estimator(problem.log_prior, problem.pointwise, problem.data_size, centre=mode,
                          centre_grad=centre_grad)


def _energy(problem):
    def energy(theta):
        return -problem.log_density(theta)
    return energy


def _sgld(problem, s, fmt):
    from ...mcmc import SGLDKernel
    return SGLDKernel(_grad(problem, s), temperature=s["temperature"])


def _sghmc(problem, s, fmt):
    from ...mcmc import SGHMCKernel
    return SGHMCKernel(_grad(problem, s), friction=s["friction"], temperature=s["temperature"])


def _amagold(problem, s, fmt):
    from ...mcmc import AMAGOLDKernel
    return AMAGOLDKernel(_grad(problem, s), _energy(problem), friction=s["friction"],
                         correction_every=s["correction_every"], data_size=problem.data_size,
                         temperature=s["temperature"])


def _lowprec(accumulator, variance_correction):
    def build(problem, s, fmt):
        from ...mcmc import SGLDLPKernel
        return SGLDLPKernel(_grad(problem, s), fmt, accumulator=accumulator, variance_correction=variance_correction,
                            temperature=s["temperature"])
    return build


def _mh(kind):
    def build(problem, s, fmt):
        from ...mcmc import mh
        model = glm_model(problem)
        if kind == "mh":
            return mh.FullMH(model)
        if kind == "tunamh":
            return mh.TunaMH(model.with_center(model.map_estimate()), chi=s["chi"])
        if kind == "tfmh":
            return mh.TFMH(model.with_center(model.map_estimate()))
        return mh.FlyMC(model.flymc_bound(model.map_estimate()), q=s["q"])
    return build


def glm_model(problem):
    """The per-datum energies with bounds of a GLM problem (for the MH samplers), else None."""
    from ...mcmc import mh
    kind = GLM.get(problem.name)
    if kind is None:
        return None
    X, y = _with_bias(problem.data[0].double()), problem.data[1].double()
    if kind == "logistic":
        return mh.LogisticRegression(X, y, prior_scale=problem.info["prior_scale"])
    return mh.RobustLinearRegression(X, y, prior_scale=problem.info["prior_scale"], nu=problem.info["nu"],
                                     scale=problem.info["noise_scale"])


def _with_bias(X):
    """The design matrix with the problems' bias column (last), as the MH models take it."""
    import torch
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)


GLM = {"logistic_regression": "logistic", "synthetic_logistic": "logistic", "robust_regression": "robust"}


_T = {"temperature": 1.0, "control_variate": False}
_STEP = (0.0, 1e3, True)
SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in [
    SamplerSpec("sgld", "gradient", {"step_size": 1e-4, **_T}, _sgld,
                describe="SGLD (Welling & Teh 2011)", checks={"step_size": _STEP}),
    SamplerSpec("sghmc", "gradient", {"step_size": 1e-5, "friction": 0.1, **_T}, _sghmc,
                describe="SGHMC (Chen, Fox & Guestrin 2014)", checks={"step_size": _STEP}),
    SamplerSpec("amagold", "gradient", {"step_size": 1e-5, "friction": 0.1, "correction_every": 5, **_T,
                                        "control_variate": True}, _amagold,
                exact=True, describe="AMAGOLD (Zhang, Cooper & De Sa 2020)", checks={"step_size": _STEP}),
    SamplerSpec("sgld_lp_vc", "gradient", {"step_size": 1e-4, **_T}, _lowprec("low", True), precision=True,
                describe="variance-corrected low-precision SGLD (Zhang, Wilson & De Sa 2022)",
                checks={"step_size": _STEP}),
    SamplerSpec("sgld_lp_naive", "gradient", {"step_size": 1e-4, **_T}, _lowprec("low", False), precision=True,
                describe="naive low-precision SGLD, low-precision accumulator", checks={"step_size": _STEP}),
    SamplerSpec("sgld_lp_full", "gradient", {"step_size": 1e-4, **_T}, _lowprec("full", False), precision=True,
                describe="low-precision SGLD with a float32 accumulator (SGLDLP-F)", checks={"step_size": _STEP}),
    SamplerSpec("mh", "mh", {"step_size": 0.01}, _mh("mh"), exact=True,
                describe="random-walk Metropolis-Hastings on the full data", checks={"step_size": _STEP}),
    SamplerSpec("tunamh", "mh", {"step_size": 0.01, "chi": 1e-4}, _mh("tunamh"), exact=True,
                describe="TunaMH (Zhang, Cooper & De Sa 2020)", checks={"step_size": _STEP, "chi": (0, 1e12, True)}),
    SamplerSpec("tfmh", "mh", {"step_size": 0.01}, _mh("tfmh"), exact=True,
                describe="truncation-free minibatch MH", checks={"step_size": _STEP}),
    SamplerSpec("flymc", "mh", {"step_size": 0.01, "q": 0.01}, _mh("flymc"), exact=True,
                describe="Firefly Monte Carlo (Maclaurin & Adams 2014)",
                checks={"step_size": _STEP, "q": (0, 1, True)}),
]}
for _s in SAMPLERS.values():
    _s.checks.setdefault("temperature", (0.0, 1e6, False))
    _s.checks.setdefault("friction", (0.0, 1.0, True))
    _s.checks.setdefault("correction_every", (1, 10 ** 6, False))

# step sizes (and the like) that suit each problem's posterior scale; the config overrides them
# Step sizes that suit each problem's posterior (ε for the SGLDs; η for SGHMC and AMAGOLD, where
# η = ε/2 matches SGLD at friction 1; the random-walk scale for MH), picked on the default chains.
def _tuned(problem, sgld, sghmc, amagold, mh=None, chi=1e-4):
    out = {(problem, s): {"step_size": sgld} for s in ("sgld", "sgld_lp_vc", "sgld_lp_naive", "sgld_lp_full")}
    out[(problem, "sghmc")] = {"step_size": sghmc}
    out[(problem, "amagold")] = {"step_size": amagold}
    if mh is not None:
        out.update({(problem, s): {"step_size": mh} for s in ("mh", "tfmh", "flymc")})
        out[(problem, "tunamh")] = {"step_size": mh, "chi": chi}
    return out


TUNED: dict[tuple[str, str], dict] = {
    **_tuned("gaussian_2d", 0.01, 0.005, 2e-3), **_tuned("linear_regression", 3e-4, 1.5e-4, 2.5e-4),
    **_tuned("logistic_regression", 2e-3, 1e-3, 2.5e-4, mh=0.05), **_tuned("robust_regression", 5e-5, 5e-5, 1e-4, mh=0.01),
    **_tuned("synthetic_logistic", 1e-5, 5e-6, 5e-6, mh=0.003), **_tuned("digits_mlp", 1e-4, 5e-5, 5e-5),
}


def settings_for(problem: str, sampler: str) -> dict:
    """The sampler's defaults with the problem's tuned values on top."""
    return {**SAMPLERS[sampler].settings, **TUNED.get((problem, sampler), {})}


def check_settings(sampler: str, settings: dict) -> str | None:
    """Why ``settings`` cannot run (``"key: why"``), or None."""
    spec = SAMPLERS[sampler]
    for key, value in settings.items():
        if isinstance(value, bool):
            continue
        lo, hi, lo_open = spec.checks.get(key, (-math.inf, math.inf, False))
        if not math.isfinite(value) or not (value > lo if lo_open else value >= lo) or value > hi:
            bracket = "(" if lo_open else "["
            return f"{key}: must be a finite number in {bracket}{lo:g}, {hi:g}], got {value!r}"
    return None


def skip_reason(spec: SamplerSpec, problem, settings: dict) -> str | None:
    """Why ``spec`` with ``settings`` does not run on ``problem`` (None when it does)."""
    if spec.family == "mh" and problem.name not in GLM:
        return (f"{spec.name} needs per-datum energies with bounds (logistic or robust regression); "
                f"{problem.name} has none")
    if settings.get("control_variate") and isinstance(problem.init, dict):
        return (f"{spec.name}'s control_variate is centred at the posterior mode, which needs a flat parameter "
                f"vector ({problem.name} has a dict); set control_variate = false for it")
    return None
