"""The "exact" posterior of a problem without a closed form: a long full-data HMC run.

Hamiltonian Monte Carlo (Duane, Kennedy, Pendleton & Roweth 1987; Neal 2011) in float64 on
the full data, preconditioned by the Laplace approximation: Newton's method finds the mode
m and the Hessian H of −log p there, and HMC samples z in θ = m + L z (L Lᵀ = H⁻¹), where the
posterior is close to N(0, I), with a fixed number of leapfrog steps and a step size jittered
±20% per iteration (so no trajectory length resonates).  Chains run side by side, one leapfrog step at a time.
Seeded, no cache: the job computes it once per run and reports its Monte Carlo error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .._seeding import generator
from .diagnostics import ess, mcse, rhat


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference run: posterior ``mean`` and ``cov`` (float64), with the ``samples``
    (chains, draws, dim) they come from, the MCSE of the mean, bulk ESS and R-hat per
    coordinate, the HMC acceptance rate, and the Laplace mode ``map`` and covariance."""

    mean: torch.Tensor
    cov: torch.Tensor
    samples: torch.Tensor
    mcse: torch.Tensor
    ess: torch.Tensor
    rhat: torch.Tensor
    acceptance: float
    map: torch.Tensor
    laplace_cov: torch.Tensor


def _float64(problem):
    """The problem with its floating-point data cast to float64 once (not at every call)."""
    cast = lambda t: t.to(torch.float64) if t.is_floating_point() else t  # noqa: E731
    return replace(problem, data=tuple(map(cast, problem.data)))


def laplace(problem, *, iterations: int = 100, tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mode and the inverse Hessian of −log p there (Newton's method with a
    backtracking line search, float64, full data)."""
    if isinstance(problem.init, dict):
        raise ValueError(f"Invalid problem: {problem.name!r} (the Laplace/HMC reference needs a flat tensor position)")
    problem = _float64(problem)
    neg = lambda t: -problem.log_density(t)  # noqa: E731
    theta = problem.init.detach().to(torch.float64).clone()
    for _ in range(iterations):
        value = neg(theta)
        grad = torch.func.grad(neg)(theta)
        hess = torch.func.hessian(neg)(theta)
        step = torch.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10 and not neg(theta - t * step) <= value:
            t /= 2
        theta = theta - t * step
        if grad.abs().max() < tol * (1 + value.abs()) or t <= 1e-10:
            break
    hess = torch.func.hessian(neg)(theta)
    cov = torch.linalg.inv(hess)
    return theta, (cov + cov.T) / 2


def reference_posterior(problem, *, chains: int = 4, draws: int = 2000, warmup: int = 200,
                        leapfrog: int = 6, step_size: float = 0.3, seed: int = 0) -> Reference:
    """A full-data float64 HMC run of ``chains`` x ``draws`` (after ``warmup``) on ``problem``.

    >>> from relaxtorch.mcmc.problems import linear_regression
    >>> p = linear_regression()
    >>> ref = reference_posterior(p, chains=2, draws=300, warmup=50)
    >>> bool(((ref.mean - p.mean).abs() < 5 * ref.mcse).all())
    True
    """
    for name, value, lo in (("chains", chains, 1), ("draws", draws, 4), ("warmup", warmup, 0), ("leapfrog", leapfrog, 1),
                            ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"Invalid {name}: {value!r} (must be an int >= {lo})")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0 < step_size < 2:
        raise ValueError(f"Invalid step_size: {step_size!r} (must be in (0, 2): the leapfrog of N(0, I) is stable below 2)")
    problem = _float64(problem)
    mode, cov = laplace(problem)
    chol = torch.linalg.cholesky(cov)
    device = mode.device
    gen = generator(seed, "reference_posterior", problem.name, device=device)

    def grad_u(z):
        """Gradient and value of the potential −log p(m + L z), chain by chain (a backward pass
        through a stack of chains is ~15x slower here: autograd through the row views)."""
        gs, us = [], []
        for row in z:
            theta = (mode + chol @ row).requires_grad_()
            u = -problem.log_density(theta)
            (g,) = torch.autograd.grad(u, theta)
            gs.append(chol.T @ g)
            us.append(u.detach())
        return torch.stack(gs), torch.stack(us)

    d = mode.numel()
    z = torch.randn(chains, d, generator=gen, dtype=torch.float64, device=device)
    g, u = grad_u(z)
    kept = torch.empty(chains, draws, d, dtype=torch.float64, device=device)
    accepted = 0
    for it in range(warmup + draws):
        eps = step_size * (0.8 + 0.4 * torch.rand((), generator=gen, dtype=torch.float64, device=device))
        p0 = torch.randn(chains, d, generator=gen, dtype=torch.float64, device=device)
        zn, p, gn = z, p0 - 0.5 * eps * g, g
        for k in range(leapfrog):
            zn = zn + eps * p
            gn, un = grad_u(zn)
            if k < leapfrog - 1:
                p = p - eps * gn
        p = p - 0.5 * eps * gn
        log_ratio = (u - un) + 0.5 * ((p0 * p0).sum(1) - (p * p).sum(1))
        log_ratio = torch.where(torch.isnan(log_ratio), -math.inf, log_ratio)  # a diverged trajectory is rejected
        accept = torch.log(torch.rand(chains, generator=gen, dtype=torch.float64, device=device)) < log_ratio
        z = torch.where(accept[:, None], zn, z)
        g = torch.where(accept[:, None], gn, g)
        u = torch.where(accept, un, u)
        if not torch.isfinite(u).all():
            raise FloatingPointError(f"reference HMC on {problem.name!r}: non-finite log density at step {it}")
        if it >= warmup:
            kept[:, it - warmup] = mode + z @ chol.T
            accepted += int(accept.sum())
    flat = kept.reshape(-1, d)
    return Reference(flat.mean(0), torch.cov(flat.T).reshape(d, d), kept, mcse(kept), ess(kept), rhat(kept),
                     accepted / (chains * draws), mode, cov)
