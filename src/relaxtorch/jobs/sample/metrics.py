"""What a run got: posterior errors against the exact answer, predictive quality, ESS and R-hat.

* ``mean_error``: the Mahalanobis distance sqrt(δᵀ Σ⁻¹ δ) of the sample mean from the exact μ,
  in posterior standard deviations (0.1 = a tenth of one);
* ``cov_error``: ‖S − Σ‖_F / ‖Σ‖_F, the sample covariance's relative error;
* ``test_nll``, ``test_accuracy``, ``test_ece`` (classification) or ``test_rmse`` (regression)
  of the posterior predictive: the predictions averaged over up to ``PREDICTIVE_DRAWS`` samples;
* ``ess_bulk`` / ``ess_tail``: the smallest over the parameters, ``ess_per_second`` the bulk one
  over the run's seconds, ``rhat``: the largest split rank-normalised R-hat.
"""
from __future__ import annotations

import math

import torch

PREDICTIVE_DRAWS = 100


def flat(samples) -> torch.Tensor:
    """Samples (chains, draws, *event) or a dict of them as one float64 (chains, draws, dim) tensor."""
    parts = list(samples.values()) if isinstance(samples, dict) else [samples]
    return torch.cat([p.reshape(p.shape[0], p.shape[1], -1).double() for p in parts], dim=2)


def _draw(samples, c: int, d: int):
    if isinstance(samples, dict):
        return {k: v[c, d] for k, v in samples.items()}
    return samples[c, d]


def predictive(problem, samples) -> dict:
    """Posterior-predictive quality on the problem's test split ({} when it has none)."""
    from ...mcmc.metrics import accuracy, ece, nll
    if problem.predict is None or problem.test is None:
        return {}
    first = next(iter(samples.values())) if isinstance(samples, dict) else samples
    chains, draws = first.shape[0], first.shape[1]
    picks = [(c, d) for c in range(chains) for d in range(draws)]
    step = max(1, len(picks) // PREDICTIVE_DRAWS)
    X, y = problem.test[0], problem.test[1]
    with torch.no_grad():
        mean = sum(problem.predict(_draw(samples, c, d), X).double() for c, d in picks[::step]) / len(picks[::step])
    if problem.task == "classification":
        return {"test_nll": float(nll(mean, y)), "test_accuracy": float(accuracy(mean, y)),
                "test_ece": float(ece(mean, y))}
    return {"test_rmse": float((mean.flatten() - y.double().flatten()).square().mean().sqrt())}


def assess(problem, exact: dict, samples, seconds: float) -> dict:
    """The accuracy columns of a run's row (see the module docstring)."""
    from ...mcmc.diagnostics import ess, rhat
    from ...mcmc.metrics import cov_error, mean_error
    x = flat(samples)
    out = {}
    if x.shape[1] >= 4:
        bulk, tail = ess(x, method="bulk"), ess(x, method="tail")
        out["ess_bulk"] = float(bulk.min())
        out["ess_tail"] = float(tail.min())
        out["ess_per_second"] = out["ess_bulk"] / seconds if seconds > 0 else None
        out["rhat"] = float(rhat(x).max()) if x.shape[0] * x.shape[1] >= 8 else None
    if exact.get("mean") is not None:
        out["mean_error"] = float(mean_error(x, exact["mean"], exact["cov"]))
        if x.shape[0] * x.shape[1] > 1:
            out["cov_error"] = float(cov_error(x, exact["cov"]))
    out.update(predictive(problem, samples))
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
