"""The problems ``relaxtorch sample`` runs: the embedded posteriors of :mod:`relaxtorch.mcmc.problems`.

``PROBLEM_OPTIONS[name]`` lists the options a config may set in ``[problems.<name>]``, each
``(default, lo, hi)``.  ``exact_moments`` is the answer a run is scored against: the closed
form where there is one, else a long float64 full-data HMC run (its own Monte Carlo error is
in the report), and nothing for the Bayesian MLP (scored on held-out data only).
"""
from __future__ import annotations

PROBLEMS = ("gaussian_2d", "linear_regression", "logistic_regression", "synthetic_logistic",
            "robust_regression", "digits_mlp")
PROBLEM_OPTIONS = {
    "gaussian_2d": {"n": (1000, 1, 10 ** 7), "rho": (0.9, -0.999, 0.999)},
    "linear_regression": {"noise_scale": (0.7, 1e-3, 1e3), "prior_scale": (1.0, 1e-3, 1e3)},
    "logistic_regression": {"prior_scale": (1.0, 1e-3, 1e3)},
    "synthetic_logistic": {"n": (100_000, 100, 10 ** 7), "d": (10, 1, 1000), "prior_scale": (1.0, 1e-3, 1e3)},
    "robust_regression": {"n": (100_000, 100, 10 ** 7), "d": (10, 1, 1000), "nu": (4.0, 0.1, 1e3)},
    "digits_mlp": {"hidden": (50, 1, 4096), "prior_scale": (1.0, 1e-3, 1e3)},
}


def build_problem(name: str, options: dict):
    """The library problem ``name`` with the config's options."""
    from ...mcmc.problems import load_problem
    return load_problem(name, **options)


def exact_moments(problem) -> dict:
    """{"mean", "cov", "source"} of the posterior a run is scored against."""
    if problem.mean is not None:
        return {"mean": problem.mean, "cov": problem.cov, "source": "closed form"}
    if problem.name == "digits_mlp":
        return {"mean": None, "cov": None, "source": "none (held-out data only)"}
    from ...mcmc.problems import reference_posterior
    ref = reference_posterior(problem)
    return {"mean": ref.mean, "cov": ref.cov, "source": "float64 full-data HMC reference"}
