r"""Posteriors written for minibatch Metropolis-Hastings: per-datum energies and their bounds.

A target is ``π(θ) ∝ exp(-U_0(θ) - Σ_i U_i(θ))``: ``U_0`` (prior and anything else cheap) is
computed exactly, the ``U_i`` only for the data a kernel draws.  TunaMH and TFMH (Zhang,
Cooper & De Sa, NeurIPS 2020) need, for every datum, the bound

    |U_i(θ) - U_i(θ')| <= c_i M(θ, θ'),    M symmetric, c_i >= 0,

and FlyMC (Maclaurin & Adams, UAI 2014) needs lower bounds ``B_i(θ) <= L_i(θ) = exp(-U_i(θ))``
whose product is a Gaussian in θ (so ``Σ_i log B_i`` costs O(d²), not O(N)).

Both models here are generalised linear: ``U_i(θ) = ρ(y_i, z_i)`` with ``z_i = x_i·θ`` and a
Gaussian prior ``U_0(θ) = |θ|²/(2 s²)``.  With ``K1 = sup|∂ρ/∂z|`` and ``K2 = sup|∂²ρ/∂z²|``:

* **Lipschitz bound** (the TunaMH paper's): ``|ρ(z) - ρ(z')| <= K1 |x·(θ-θ')|``, so
  ``c_i = K1 |x_i|`` and ``M = |θ - θ'|`` (Cauchy-Schwarz).
* **Control variate** (``center=θ̂``, usually the MAP; the Taylor decomposition of Cornish et
  al., "Scalable Metropolis-Hastings for Exact Bayesian Inference with Large Datasets", ICML
  2019): the first-order Taylor part ``ρ(ẑ_i) + ρ'(ẑ_i)(z_i - ẑ_i)`` sums to a linear function
  of θ, which moves into ``U_0`` (``g·θ`` with ``g = Σ_i ρ'(ẑ_i) x_i``, computed once); the
  per-datum energy becomes the remainder ``R_i(θ) = ρ(z_i) - ρ(ẑ_i) - ρ'(ẑ_i)(z_i - ẑ_i)``.  On
  the segment ``θ_t`` from θ to θ', ``|∂R_i/∂t| = |ρ'(z_t) - ρ'(ẑ)| |x·(θ'-θ)| <= K2 |x|² |θ_t - θ̂|
  |θ' - θ|`` and ``|θ_t - θ̂| <= max(|θ - θ̂|, |θ' - θ̂|)`` (a norm is convex), so
  ``c_i = K2 |x_i|²`` and ``M = max(|θ - θ̂|, |θ' - θ̂|) |θ - θ'|``.  Near the mode M is of the
  order of (posterior width)², so the expected TunaMH batch no longer grows with N.

Logistic regression, labels ``y ∈ {-1, +1}``: ``ρ = log(1 + exp(-y z))``, ``ρ' = -y σ(-y z)``,
``ρ'' = σ(z) σ(-z)``: ``K1 = 1``, ``K2 = 1/4``.  FlyMC's bound is Jaakkola & Jordan's (2000):
``log σ(t) >= log σ(ξ) + (t - ξ)/2 - λ(ξ)(t² - ξ²)``, ``λ(ξ) = tanh(ξ/2) / (4ξ)``, tight at
``t = ±ξ``; with ``ξ_i = |x_i·θ̂|`` it is MAP-tuned as in the FlyMC paper.

Robust linear regression, Student-t likelihood with ``ν`` degrees of freedom and scale σ
(TunaMH's second experiment): ``ρ = (ν+1)/2 log(1 + r²/ν)``, ``r = (y - z)/σ``.  ``∂ρ/∂r =
(ν+1) r / (ν + r²)`` peaks at ``r = √ν``: ``K1 = (ν+1) / (2√ν σ)``; ``∂²ρ/∂r² = (ν+1)(ν - r²) /
(ν + r²)²`` is largest in size at ``r = 0``: ``K2 = (ν+1) / (ν σ²)``.  FlyMC's bound comes from
the concavity of ``log(1 + u)`` in ``u = r²/ν``: ``log(1+u) <= log(1+u₀) + (u - u₀)/(1 + u₀)``,
a Gaussian in z, tight at ``r = ±r̂``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..._seeding import generator as _generator, numpy_rng

__all__ = ["FlyMCBound", "GLMPosterior", "LogisticRegression", "RobustLinearRegression",
           "synthetic_logistic", "synthetic_robust"]


def _bad(name, value, why):
    return ValueError(f"Invalid {name}: {value!r} ({why})")


@dataclass(frozen=True, eq=False)
class FlyMCBound:
    """Per-datum Gaussian lower bounds ``-log B_i(θ) = α_i z_i² + β_i z_i + γ_i >= U_i(θ)``,
    ``z_i = x_i·θ``, with their collapsed sum ``θᵀAθ + b·θ + γ_sum`` (A = Σ α_i x_i x_iᵀ)."""

    model: "GLMPosterior"
    alpha: torch.Tensor
    beta: torch.Tensor
    gamma: torch.Tensor
    A: torch.Tensor
    b: torch.Tensor
    gamma_sum: float

    def bound_energy(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``-log B_i(θ)`` for the data ``idx`` (all when None)."""
        X = self.model.X if idx is None else self.model.X[idx]
        z = X @ theta
        sel = (lambda t: t) if idx is None else (lambda t: t[idx])
        return (sel(self.alpha) * z + sel(self.beta)) * z + sel(self.gamma)

    def bound_energy_sum(self, theta: torch.Tensor) -> torch.Tensor:
        """``Σ_i -log B_i(θ)`` in O(d²)."""
        return theta @ (self.A @ theta) + self.b @ theta + self.gamma_sum


@dataclass(frozen=True, eq=False)
class GLMPosterior:
    """Base of the GLM posteriors: data ``X`` [N, d], ``y`` [N], prior N(0, prior_scale² I),
    optional control-variate ``center`` (see the module docstring).  Subclasses give ρ."""

    X: torch.Tensor
    y: torch.Tensor
    prior_scale: float = 10.0
    center: torch.Tensor | None = None
    _cv: tuple | None = field(default=None, init=False, repr=False)  # (zhat, rho_hat, slope, g) at the centre
    c: torch.Tensor = field(default=None, init=False, repr=False)  # bound weights c_i

    K1 = 1.0  # sup |dρ/dz| (subclasses)
    K2 = 1.0  # sup |d²ρ/dz²|

    def __post_init__(self):
        X, y = self.X, self.y
        if not isinstance(X, torch.Tensor) or X.ndim != 2 or not X.dtype.is_floating_point:
            raise _bad("X", getattr(X, "shape", X), "must be a 2-D floating-point tensor [N, d]")
        if not isinstance(y, torch.Tensor) or y.shape != X.shape[:1]:
            raise _bad("y", getattr(y, "shape", y), f"must be a tensor of shape ({X.shape[0]},)")
        if not bool(torch.isfinite(X).all()):
            raise _bad("X", "non-finite entries", "must be finite")
        if not bool(torch.isfinite(y.to(X.dtype)).all()):
            raise _bad("y", "non-finite entries", "must be finite")
        s = self.prior_scale
        if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
            raise _bad("prior_scale", s, "must be a finite number > 0")
        object.__setattr__(self, "y", self._labels(y.to(X.dtype)))
        norms = torch.linalg.vector_norm(X, dim=1)
        if self.center is None:
            object.__setattr__(self, "c", self.K1 * norms)
        else:
            th = self.center.to(X.dtype)
            if th.shape != (X.shape[1],) or not bool(torch.isfinite(th).all()):
                raise _bad("center", tuple(th.shape), f"must be a finite tensor of shape ({X.shape[1]},)")
            zhat = X @ th
            slope = self.rho_prime(self.y, zhat)
            cv = (zhat, self.rho(self.y, zhat), slope, X.T @ slope)
            object.__setattr__(self, "center", th)
            object.__setattr__(self, "_cv", cv)
            object.__setattr__(self, "c", self.K2 * norms.square())
        cols = [X, self.y[:, None]] + ([self._cv[2][:, None]] if self._cv is not None else [])
        object.__setattr__(self, "_rows", torch.cat(cols, 1))

    # ρ and its derivatives in z (subclasses)
    def _labels(self, y):
        return y

    def rho(self, y, z):
        raise NotImplementedError

    def rho_prime(self, y, z):
        raise NotImplementedError

    def curvature(self, y, z):
        """Weights of the Newton/majorise-minimise step of :meth:`map_estimate` (>= 0)."""
        raise NotImplementedError

    @property
    def data_size(self) -> int:
        return int(self.X.shape[0])

    def base_energy(self, theta: torch.Tensor) -> torch.Tensor:
        """``U_0(θ)``: the prior's energy (plus the control variate's linear part)."""
        u = 0.5 * theta.square().sum() / self.prior_scale ** 2
        if self._cv is not None:
            u = u + self._cv[3] @ theta
        return u

    def energy(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-datum energies ``U_i(θ)`` for ``idx`` (all data when None)."""
        X = self.X if idx is None else self.X[idx]
        return self._u(X @ theta, idx)

    def energy_pair(self, theta, theta_new, idx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U_i(θ), U_i(θ'))`` for ``idx`` in one pass over the rows."""
        X = self.X if idx is None else self.X[idx]
        z = X @ torch.stack([theta, theta_new], 1)
        return self._u(z[:, 0], idx), self._u(z[:, 1], idx)

    def energy_diff(self, theta, theta_new, idx=None) -> torch.Tensor:
        """``U_i(θ') - U_i(θ)`` for ``idx`` (all data when None): one gather of the packed rows
        (features, label, control-variate slope), one matrix product."""
        rows = self._rows if idx is None else self._rows[idx]
        d = self.X.shape[1]
        z = rows[:, :d] @ torch.stack([theta, theta_new], 1)
        y = rows[:, d:d + 1]
        u = self.rho(y, z)
        diff = u[:, 1] - u[:, 0]
        if self._cv is not None:
            diff = diff - rows[:, d + 1] * (z[:, 1] - z[:, 0])
        return diff

    def _u(self, z, idx):
        y = self.y if idx is None else self.y[idx]
        u = self.rho(y, z)
        if self._cv is not None:
            zhat, rho_hat, slope, _ = self._cv
            if idx is not None:
                zhat, rho_hat, slope = zhat[idx], rho_hat[idx], slope[idx]
            u = u - rho_hat - slope * (z - zhat)
        return u

    def total_energy(self, theta: torch.Tensor) -> torch.Tensor:
        """``U_0(θ) + Σ_i U_i(θ)`` (the negative log posterior up to a constant)."""
        return self.base_energy(theta) + self.energy(theta).sum()

    def bound(self, theta: torch.Tensor, theta_new: torch.Tensor) -> torch.Tensor:
        """``M(θ, θ')``: ``|θ - θ'|``, or ``max(|θ - θ̂|, |θ' - θ̂|) |θ - θ'|`` with a centre."""
        if self.center is None:
            return torch.linalg.vector_norm(theta_new - theta)
        n = torch.linalg.vector_norm(torch.stack([theta_new - theta, theta - self.center, theta_new - self.center]), dim=1)
        return n[0] * n[1:].max()

    def with_center(self, center: torch.Tensor) -> "GLMPosterior":
        """The same posterior split around ``center`` (the control variate; same π)."""
        return replace(self, center=center)

    def map_estimate(self, iters: int = 200, tol: float = 1e-12) -> torch.Tensor:
        """The posterior mode by Newton / majorise-minimise steps in float64 (full data)."""
        X, y = self.X.double(), self.y.double()
        d = X.shape[1]
        theta = torch.zeros(d, dtype=torch.float64, device=X.device)
        eye = torch.eye(d, dtype=torch.float64, device=X.device) / self.prior_scale ** 2
        for _ in range(iters):
            z = X @ theta
            grad = X.T @ self.rho_prime(y, z) + theta / self.prior_scale ** 2
            H = (X.T * self.curvature(y, z)) @ X + eye
            step = torch.linalg.solve(H, grad)
            theta = theta - step
            if float(step.abs().max()) < tol:
                break
        return theta.to(self.X.dtype)

    def flymc_bound(self, center: torch.Tensor | None = None) -> FlyMCBound:
        """FlyMC's collapsible lower bounds, tight at ``z_i = x_i·center`` (the MAP by default).

        Built on the raw likelihood (not the control variate's remainders)."""
        raw = self if self.center is None else replace(self, center=None)
        th = raw.map_estimate() if center is None else center.to(self.X.dtype)
        alpha, beta, gamma = raw._quadratic_bound(raw.y, raw.X @ th)
        A = (raw.X.T * alpha) @ raw.X
        return FlyMCBound(raw, alpha, beta, gamma, A, raw.X.T @ beta, float(gamma.sum()))

    def _quadratic_bound(self, y, zhat):
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class LogisticRegression(GLMPosterior):
    """Bayesian logistic regression: labels in {0, 1} or {-1, +1}, prior N(0, prior_scale² I).

    >>> X = torch.tensor([[1.0, 0.5], [1.0, -1.0], [1.0, 2.0]]); y = torch.tensor([1, 0, 1])
    >>> m = LogisticRegression(X, y)
    >>> th, th2 = torch.zeros(2), torch.tensor([0.3, -0.2])
    >>> bool(((m.energy(th) - m.energy(th2)).abs() <= m.c * m.bound(th, th2)).all())
    True
    """

    K1 = 1.0
    K2 = 0.25

    def _labels(self, y):
        if bool(((y != 0) & (y != 1) & (y != -1)).any()):
            raise _bad("y", "labels outside {0, 1, -1}", "logistic regression labels are 0/1 or -1/+1")
        return torch.where(y == 0, -torch.ones_like(y), y)

    def rho(self, y, z):
        return F.softplus(-y * z)

    def rho_prime(self, y, z):
        return -y * torch.sigmoid(-y * z)

    def curvature(self, y, z):
        s = torch.sigmoid(z)
        return s * (1 - s)

    def _quadratic_bound(self, y, zhat):
        xi = zhat.abs()
        safe = torch.where(xi > 1e-6, xi, torch.ones_like(xi))
        lam = torch.where(xi > 1e-6, torch.tanh(safe / 2) / (4 * safe), torch.full_like(xi, 0.125))
        return lam, -0.5 * y, F.softplus(-xi) + 0.5 * xi - lam * xi.square()


@dataclass(frozen=True, eq=False)
class RobustLinearRegression(GLMPosterior):
    """Bayesian linear regression with a Student-t likelihood (``nu`` d.o.f., ``scale``).

    >>> X = torch.tensor([[1.0, 0.5], [1.0, -1.0]]); y = torch.tensor([0.2, 3.0])
    >>> m = RobustLinearRegression(X, y, nu=4.0)
    >>> m.K1, m.K2   # (nu+1)/(2 sqrt(nu) scale), (nu+1)/(nu scale²)
    (1.25, 1.25)
    """

    nu: float = 4.0
    scale: float = 1.0

    def __post_init__(self):
        for name in ("nu", "scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise _bad(name, v, "must be a finite number > 0")
        nu, s = float(self.nu), float(self.scale)
        object.__setattr__(self, "K1", (nu + 1) / (2 * math.sqrt(nu) * s))
        object.__setattr__(self, "K2", (nu + 1) / (nu * s * s))
        super().__post_init__()

    def rho(self, y, z):
        r = (y - z) / self.scale
        return 0.5 * (self.nu + 1) * torch.log1p(r.square() / self.nu)

    def rho_prime(self, y, z):
        r = (y - z) / self.scale
        return -(self.nu + 1) * r / ((self.nu + r.square()) * self.scale)

    def curvature(self, y, z):  # ρ'/(z - y): a majoriser's curvature (IRLS), never negative
        r = (y - z) / self.scale
        return (self.nu + 1) / ((self.nu + r.square()) * self.scale ** 2)

    def _quadratic_bound(self, y, zhat):
        nu, s = self.nu, self.scale
        u0 = ((y - zhat) / s).square() / nu
        k = (nu + 1) / (2 * (1 + u0) * nu * s * s)  # coefficient of (y - z)²
        gamma = k * y.square() + 0.5 * (nu + 1) * (torch.log1p(u0) - u0 / (1 + u0))
        return k, -2 * k * y, gamma


def synthetic_logistic(n: int = 100_000, d: int = 10, *, seed: int = 0, dtype=torch.float32):
    """A seeded logistic-regression set: ``X ~ N(0, I)``, ``w ~ N(0, I/d)``, ``y ~ Bernoulli(σ(Xw))``
    in {0, 1}.  Returns ``(X, y, w)``.

    >>> X, y, w = synthetic_logistic(100, 3, seed=1); X.shape, y.shape, w.shape
    (torch.Size([100, 3]), torch.Size([100]), torch.Size([3]))
    """
    g = _generator(seed, "synthetic_logistic", n, d)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(d)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(X @ w)).to(torch.int64)
    return X.to(dtype), y, w.to(dtype)


def synthetic_robust(n: int = 100_000, d: int = 10, *, nu: float = 4.0, noise: float = 1.0, seed: int = 0,
                     dtype=torch.float32):
    """A seeded robust-regression set: ``y = Xw + noise · t_ν`` (heavy tails), ``X ~ N(0, I)``,
    ``w ~ N(0, I)``.  Returns ``(X, y, w)``.

    >>> X, y, w = synthetic_robust(50, 2, seed=0); y.dtype
    torch.float32
    """
    g = _generator(seed, "synthetic_robust", n, d)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    rng = numpy_rng(seed, "synthetic_robust_t", n, d)
    t = torch.from_numpy(rng.standard_t(nu, size=n))
    y = X @ w + noise * t
    return X.to(dtype), y.to(dtype), w.to(dtype)
