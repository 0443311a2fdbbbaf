"""Embedded Bayesian inference problems for the samplers, the ``relaxtorch sample`` job and the
benchmarks: each a frozen :class:`Problem` with its prior, per-datum likelihood, data and,
where known, the exact posterior mean and covariance.

=========================  ====================================================  ==========
``gaussian_2d``            mean of correlated 2-D Gaussian data (conjugate)       closed form
``linear_regression``      diabetes (scikit-learn), Gaussian prior, known noise   closed form
``logistic_regression``    breast cancer (scikit-learn), Gaussian prior           reference run
``synthetic_logistic``     seeded planted logistic model, N = 10^5 .. 10^6        reference run
``robust_regression``      seeded linear data, Student-t likelihood (TunaMH's)    reference run
``digits_mlp``             Bayesian MLP on digits (scikit-learn), Gaussian prior  none
=========================  ====================================================  ==========

The contract every sampler can rely on: ``log_likelihood(θ, batch)`` is the *sum* over the
batch of the per-datum log-likelihoods ``pointwise(θ, batch)`` (a vector; minus the energies
U_i(θ) of minibatch Metropolis-Hastings), so a minibatch B of ``data_size`` N estimates the full
log-likelihood as ``N / |B| * log_likelihood(θ, B)``.  A batch is a tuple of tensors indexed
along dim 0 (``problem.batch(indices)``); ``data`` is the training set as one such batch.
Everything is computed in θ's dtype and device (data are cast on the fly), so a float64 θ
gives float64 log-densities and a CUDA θ runs on CUDA after ``problem.to("cuda")``.

Where there is no closed form, :func:`reference_posterior` computes the "exact" answer the
job compares against: a long full-data HMC run in float64 (seeded, no cache), whose own
Monte Carlo error is reported with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._seeding import generator, numpy_rng
from ._reference import Reference, laplace, reference_posterior

__all__ = ["PROBLEMS", "Problem", "Reference", "digits_mlp", "gaussian_2d", "laplace", "linear_regression",
           "load_problem", "logistic_regression", "mlp_logits", "mlp_module", "reference_posterior",
           "robust_regression", "synthetic_logistic"]

Batch = tuple  # a tuple of tensors sharing dim 0


@dataclass(frozen=True, eq=False)
class Problem:
    """A posterior p(θ | data) ∝ exp(log_prior(θ) + Σ_i pointwise(θ, x_i)).

    ``init`` is the starting position (a tensor, or a dict of tensors for ``digits_mlp``);
    ``mean``/``cov`` the exact posterior moments (float64, over the flattened θ) or None;
    ``predict(θ, X)`` class probabilities (classification, shape (B, classes)) or the
    predictive mean (regression), None where the problem has no inputs.
    """

    name: str
    log_prior: Callable
    pointwise: Callable
    data: Batch
    test: Batch | None
    init: torch.Tensor | dict
    mean: torch.Tensor | None = None
    cov: torch.Tensor | None = None
    predict: Callable | None = None
    task: str = "regression"  # "regression", "classification" or "density"
    info: dict = field(default_factory=dict)  # the settings the problem was built with

    @property
    def data_size(self) -> int:
        return int(self.data[0].shape[0])

    @property
    def dim(self) -> int:
        """Number of scalar parameters."""
        return sum(t.numel() for t in _leaves(self.init))

    def log_likelihood(self, theta, batch: Batch) -> torch.Tensor:
        """Σ over ``batch`` of the per-datum log-likelihoods (a scalar)."""
        return self.pointwise(theta, batch).sum()

    def log_density(self, theta) -> torch.Tensor:
        """The unnormalised full-data log posterior: log_prior(θ) + log_likelihood(θ, data)."""
        return self.log_prior(theta) + self.log_likelihood(theta, self.data)

    def batch(self, indices: torch.Tensor) -> Batch:
        """The training points at ``indices`` as a batch."""
        return tuple(t[indices] for t in self.data)

    def to(self, device) -> "Problem":
        """The same problem with data, init and moments on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        init = {k: v.to(device) for k, v in self.init.items()} if isinstance(self.init, dict) else self.init.to(device)
        return replace(self, data=tuple(map(mv, self.data)), test=None if self.test is None else tuple(map(mv, self.test)),
                       init=init, mean=mv(self.mean), cov=mv(self.cov))

    def __repr__(self) -> str:
        exact = "closed form" if self.mean is not None else "no closed form"
        return f"Problem({self.name!r}, dim={self.dim}, data_size={self.data_size}, {exact})"


def _leaves(position):
    return list(position.values()) if isinstance(position, dict) else [position]


def _like(t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return t if (t.dtype == theta.dtype and t.device == theta.device) else t.to(theta)


def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"Invalid {name}: {value!r} (must be an int {bound})")
    return int(value)


def _check_pos(name, value, lo_open=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= lo_open:
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > {lo_open:g})")
    return float(value)


def _gaussian_prior(scale: float) -> Callable:
    """log N(θ; 0, scale² I), every leaf of θ, normalised."""
    def log_prior(theta):
        leaves = _leaves(theta)
        n = sum(t.numel() for t in leaves)
        sq = sum((t * t).sum() for t in leaves)
        return -0.5 * sq / scale ** 2 - n * (math.log(scale) + 0.5 * math.log(2 * math.pi))
    return log_prior


def _with_bias(X: torch.Tensor) -> torch.Tensor:
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)


# ------------------------------------------------------------------ 1. correlated 2-D Gaussian

def gaussian_2d(*, n: int = 1000, rho: float = 0.9, scales: tuple[float, float] = (1.0, 0.5),
                prior_scale: float = 10.0, seed: int = 0) -> Problem:
    """The mean θ of 2-D Gaussian data x_i ~ N(θ, n·S), S the correlated covariance with unit
    correlation ``rho`` and standard deviations ``scales``, prior θ ~ N(0, prior_scale² I).
    The posterior is N(μ, Σ) with Σ = (I/prior_scale² + S⁻¹)⁻¹ (≈ S): a correlated 2-D Gaussian
    target whose gradients come from data (so minibatches have noise).

    >>> p = gaussian_2d()
    >>> p.dim, p.data_size, [round(v, 2) for v in p.cov.flatten().tolist()]
    (2, 1000, [0.99, 0.44, 0.44, 0.25])
    """
    n = _check_int("n", n, 1)
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not -1 < rho < 1:
        raise ValueError(f"Invalid rho: {rho!r} (must be in (-1, 1))")
    if len(scales) != 2:
        raise ValueError(f"Invalid scales: {scales!r} (must be two standard deviations)")
    sx, sy = (_check_pos("scales", s) for s in scales)
    prior_scale = _check_pos("prior_scale", prior_scale)
    seed = _check_int("seed", seed, 0)
    S = torch.tensor([[sx * sx, rho * sx * sy], [rho * sx * sy, sy * sy]], dtype=torch.float64)
    lik_cov = n * S
    rng = numpy_rng(seed, "gaussian_2d", n)
    centre = rng.normal(size=2) * np.array([sx, sy])
    x = torch.tensor(rng.multivariate_normal(centre, lik_cov.numpy(), size=n)).float().double()  # stored as float32
    prec = torch.linalg.inv(lik_cov)
    post_cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) / prior_scale ** 2 + n * prec)
    post_mean = post_cov @ (prec @ x.sum(0))
    chol = torch.linalg.cholesky(lik_cov)
    log_norm = -torch.log(torch.diagonal(chol)).sum().item() - math.log(2 * math.pi)

    def pointwise(theta, batch):
        (xb,) = batch
        r = _like(xb, theta) - theta
        z = torch.linalg.solve_triangular(_like(chol, theta), r.T, upper=False)
        return -0.5 * (z * z).sum(0) + log_norm

    info = dict(n=n, rho=rho, scales=(sx, sy), prior_scale=prior_scale, seed=seed)
    return Problem("gaussian_2d", _gaussian_prior(prior_scale), pointwise, (x.float(),), None,
                   torch.zeros(2), post_mean, (post_cov + post_cov.T) / 2, None, "density", info)


# ------------------------------------------------------------------ 2. Bayesian linear regression

def linear_regression(*, noise_scale: float = 0.7, prior_scale: float = 1.0, seed: int = 0,
                      test_fraction: float = 0.25) -> Problem:
    """y = Xw + b + ε, ε ~ N(0, noise_scale²) (known), [w, b] ~ N(0, prior_scale² I), on
    scikit-learn's diabetes set (features standardized, target standardized with the training
    split's mean and sd; θ = [w, b], bias last).  Closed-form posterior (Bishop 2006, §3.3):
    Σ = (I/prior_scale² + XᵀX/noise_scale²)⁻¹, μ = Σ Xᵀy / noise_scale².

    >>> p = linear_regression()
    >>> p.dim, p.data_size
    (11, 332)
    """
    from ..data import load_dataset
    noise_scale = _check_pos("noise_scale", noise_scale)
    prior_scale = _check_pos("prior_scale", prior_scale)
    d = load_dataset("diabetes", seed=_check_int("seed", seed, 0), test_fraction=test_fraction)
    mu, sd = d.y_train.double().mean(), d.y_train.double().std()
    y_tr, y_te = ((d.y_train.double() - mu) / sd).float(), ((d.y_test.double() - mu) / sd).float()
    X = _with_bias(d.X_train).double()
    prec = torch.eye(X.shape[1], dtype=torch.float64) / prior_scale ** 2 + X.T @ X / noise_scale ** 2
    cov = torch.linalg.inv(prec)
    mean = cov @ (X.T @ y_tr.double()) / noise_scale ** 2
    log_norm = -math.log(noise_scale) - 0.5 * math.log(2 * math.pi)

    def pointwise(theta, batch):
        xb, yb = batch
        r = _like(yb, theta) - _like(xb, theta) @ theta[:-1] - theta[-1]
        return -0.5 * (r / noise_scale) ** 2 + log_norm

    def predict(theta, X):
        return _like(X, theta) @ theta[:-1] + theta[-1]

    info = dict(noise_scale=noise_scale, prior_scale=prior_scale, seed=seed, y_mean=mu.item(), y_sd=sd.item())
    return Problem("linear_regression", _gaussian_prior(prior_scale), pointwise, (d.X_train, y_tr),
                   (d.X_test, y_te), torch.zeros(X.shape[1]), mean, (cov + cov.T) / 2, predict, "regression", info)


# ------------------------------------------------------------------ 3. Bayesian logistic regression

def _logistic(name, X_tr, y_tr, X_te, y_te, prior_scale, info):
    def pointwise(theta, batch):
        xb, yb = batch
        logits = _like(xb, theta) @ theta[:-1] + theta[-1]
        return _like(yb, theta) * logits - F.softplus(logits)  # log sigmoid(±z); BCE's float64 backward is ~50x slower

    def predict(theta, X):
        p1 = torch.sigmoid(_like(X, theta) @ theta[:-1] + theta[-1])
        return torch.stack([1 - p1, p1], dim=-1)

    return Problem(name, _gaussian_prior(prior_scale), pointwise, (X_tr, y_tr.float()), (X_te, y_te.float()),
                   torch.zeros(X_tr.shape[1] + 1), None, None, predict, "classification", info)


def logistic_regression(*, prior_scale: float = 1.0, seed: int = 0, test_fraction: float = 0.25) -> Problem:
    """P(y=1 | x) = sigmoid(x·w + b), [w, b] ~ N(0, prior_scale² I), on scikit-learn's breast
    cancer set (30 standardized features; θ = [w, b], bias last).  No closed form: compare
    against :func:`reference_posterior`.  Labels are stored as float 0/1.

    >>> logistic_regression().dim
    31
    """
    from ..data import load_dataset
    prior_scale = _check_pos("prior_scale", prior_scale)
    d = load_dataset("breast_cancer", seed=_check_int("seed", seed, 0), test_fraction=test_fraction)
    return _logistic("logistic_regression", d.X_train, d.y_train, d.X_test, d.y_test, prior_scale,
                     dict(prior_scale=prior_scale, seed=seed))


def synthetic_logistic(*, n: int = 100_000, d: int = 10, prior_scale: float = 1.0, seed: int = 0,
                       n_test: int = 10_000) -> Problem:
    """Logistic regression on ``n`` seeded points (10^5 <= n <= 10^6, for minibatch MH):
    x ~ N(0, I_d), labels from a planted w ~ N(0, I/d) and bias ~ N(0, 1/d) (kept in
    ``info["w_true"]``, bias last), plus ``n_test`` test points from the same model.

    >>> p = synthetic_logistic()
    >>> p.dim, p.data_size
    (11, 100000)
    """
    n = _check_int("n", n, 10 ** 5, 10 ** 6)
    d = _check_int("d", d, 1, 1000)
    n_test = _check_int("n_test", n_test, 1)
    prior_scale = _check_pos("prior_scale", prior_scale)
    rng = numpy_rng(_check_int("seed", seed, 0), "synthetic_logistic", n, d)
    w = rng.normal(size=d + 1) / math.sqrt(d)
    X = rng.normal(size=(n + n_test, d)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(X.astype(np.float64) @ w[:d] + w[d])))
    y = (rng.random(n + n_test) < p).astype(np.float32)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    return _logistic("synthetic_logistic", X[:n], y[:n], X[n:], y[n:], prior_scale,
                     dict(n=n, d=d, prior_scale=prior_scale, seed=seed, w_true=torch.from_numpy(w)))


# ------------------------------------------------------------------ 4. robust linear regression

def robust_regression(*, n: int = 100_000, d: int = 10, nu: float = 4.0, noise_scale: float = 1.0,
                      prior_scale: float = 1.0, seed: int = 0, n_test: int = 10_000) -> Problem:
    """Robust linear regression, the Student-t likelihood of TunaMH's experiment (Zhang, Cooper &
    De Sa, NeurIPS 2020, after Cornish et al. 2019): y = x·w + b + noise_scale·t_nu,
    x ~ N(0, I_d), planted w ~ N(0, I/d) (``info["w_true"]``, bias last), prior
    N(0, prior_scale² I), the likelihood Student-t with ``nu`` degrees of freedom and scale
    ``noise_scale``.  No closed form (the posterior is log-concave only near the data).

    >>> robust_regression(n=1000, d=3).dim
    4
    """
    n = _check_int("n", n, 1)
    d = _check_int("d", d, 1, 1000)
    n_test = _check_int("n_test", n_test, 1)
    nu, noise_scale, prior_scale = (_check_pos(k, v) for k, v in
                                    (("nu", nu), ("noise_scale", noise_scale), ("prior_scale", prior_scale)))
    rng = numpy_rng(_check_int("seed", seed, 0), "robust_regression", n, d)
    w = rng.normal(size=d + 1) / math.sqrt(d)
    X = rng.normal(size=(n + n_test, d))
    y = X @ w[:d] + w[d] + noise_scale * rng.standard_t(nu, size=n + n_test)
    X, y = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    log_norm = (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
                - math.log(noise_scale))

    def pointwise(theta, batch):
        xb, yb = batch
        r = (_like(yb, theta) - _like(xb, theta) @ theta[:-1] - theta[-1]) / noise_scale
        return -(nu + 1) / 2 * torch.log1p(r * r / nu) + log_norm

    def predict(theta, X):
        return _like(X, theta) @ theta[:-1] + theta[-1]

    info = dict(n=n, d=d, nu=nu, noise_scale=noise_scale, prior_scale=prior_scale, seed=seed, w_true=torch.from_numpy(w))
    return Problem("robust_regression", _gaussian_prior(prior_scale), pointwise, (X[:n], y[:n]), (X[n:], y[n:]),
                   torch.zeros(d + 1), None, None, predict, "regression", info)


# ------------------------------------------------------------------ 5. Bayesian MLP on digits

def mlp_module(hidden: int = 50) -> torch.nn.Module:
    """The digits MLP as a module, 64 -> hidden -> ReLU -> 10; its ``named_parameters`` are the
    keys of :func:`digits_mlp`'s positions ("0.weight", "0.bias", "2.weight", "2.bias")."""
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def mlp_logits(params: dict, X: torch.Tensor) -> torch.Tensor:
    """The MLP's logits for a position ``params`` (a dict as :func:`mlp_module`'s parameters)."""
    w0 = params["0.weight"]
    h = F.relu(F.linear(_like(X, w0), w0, params["0.bias"]))
    return F.linear(h, params["2.weight"], params["2.bias"])


def digits_mlp(*, hidden: int = 50, prior_scale: float = 1.0, seed: int = 0, test_fraction: float = 0.25) -> Problem:
    """A Bayesian MLP (:func:`mlp_module`) on scikit-learn's digits (64 standardized pixels,
    10 classes), a N(0, prior_scale² I) prior on every weight and bias, a categorical
    likelihood.  Positions are dicts of tensors; ``init`` is PyTorch's default initialisation
    drawn from ``seed`` (no global RNG).  ``predict`` gives softmax probabilities for the
    test NLL, accuracy and ECE of :mod:`relaxtorch.mcmc.metrics`.  No exact posterior.

    >>> p = digits_mlp(hidden=8)
    >>> p.dim, sorted(p.init)
    (610, ['0.bias', '0.weight', '2.bias', '2.weight'])
    """
    from .._seeding import build_module
    from ..data import load_dataset
    hidden = _check_int("hidden", hidden, 1)
    prior_scale = _check_pos("prior_scale", prior_scale)
    d = load_dataset("digits", seed=_check_int("seed", seed, 0), test_fraction=test_fraction)
    module = build_module(lambda: mlp_module(hidden), generator(seed, "digits_mlp init"))
    init = {k: v.detach().clone() for k, v in module.named_parameters()}

    def pointwise(params, batch):
        xb, yb = batch
        return -F.cross_entropy(mlp_logits(params, xb), yb, reduction="none")

    def predict(params, X):
        return torch.softmax(mlp_logits(params, X), dim=-1)

    return Problem("digits_mlp", _gaussian_prior(prior_scale), pointwise, (d.X_train, d.y_train),
                   (d.X_test, d.y_test), init, None, None, predict, "classification",
                   dict(hidden=hidden, prior_scale=prior_scale, seed=seed))


PROBLEMS = {"gaussian_2d": gaussian_2d, "linear_regression": linear_regression,
            "logistic_regression": logistic_regression, "synthetic_logistic": synthetic_logistic,
            "robust_regression": robust_regression, "digits_mlp": digits_mlp}


def load_problem(name: str, **kwargs) -> Problem:
    """Build an embedded problem by name (see ``PROBLEMS``) with its keyword settings.

    >>> load_problem("gaussian_2d", rho=0.5).info["rho"]
    0.5
    """
    if name not in PROBLEMS:
        raise ValueError(f"Invalid name: {name!r} (choose from {', '.join(PROBLEMS)})")
    return PROBLEMS[name](**kwargs)
