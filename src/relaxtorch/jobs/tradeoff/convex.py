"""The convex objective of ``logreg`` in float64: its optimum and relative suboptimality.

``f(theta) = mean data loss + weight_decay/2 * |theta|^2`` over the training
set, ``theta`` = the linear layer's weight and bias.  The optimum ``f*`` comes
from Newton's method with backtracking in float64, run until the gradient norm
is below ``tol`` (1e-12); runs report ``(f(w) - f*) / f*`` with ``f`` in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...data import Dataset
from .models import data_loss


@dataclass(frozen=True)
class Optimum:
    value: float  # f*
    theta: torch.Tensor  # float64 minimizer, flattened (weight rows, then bias)
    grad_norm: float  # |grad f(theta)| at the returned point
    iterations: int


class ConvexObjective:
    """``f`` for a one-layer linear model on ``data`` with L2 strength ``weight_decay``."""

    def __init__(self, data: Dataset, weight_decay: float, k: int):
        self.data, self.weight_decay, self.k = data, float(weight_decay), k
        self.X = data.X_train.double()
        self.y = data.y_train if data.task == "classification" and data.n_classes != 2 else data.y_train.double()
        self.d = self.X.shape[1]
        self._optimum: Optimum | None = None

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        W = theta[: self.k * self.d].reshape(self.k, self.d)
        b = theta[self.k * self.d:]
        return data_loss(self.X @ W.T + b, self.y, self.data) + 0.5 * self.weight_decay * theta.pow(2).sum()

    @staticmethod
    def theta_of(model: nn.Module) -> torch.Tensor:
        """The model's parameters flattened in float64 (weight rows, then bias)."""
        lin = next(m for m in model.modules() if isinstance(m, nn.Linear))
        return torch.cat([lin.weight.detach().double().reshape(-1), lin.bias.detach().double().reshape(-1)])

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            t = theta.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.value(t), t)
        return g

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """Closed-form Hessian: (1/n) sum_i A_i (x) x_i x_i^T + weight_decay I, x_i with a trailing 1."""
        n, d, k = self.X.shape[0], self.d, self.k
        Xa = torch.cat([self.X, torch.ones(n, 1, dtype=torch.float64)], dim=1)
        W, b = theta[: k * d].reshape(k, d), theta[k * d:]
        z = self.X @ W.T + b
        if self.data.task == "regression":
            A = torch.ones(n, 1, 1, dtype=torch.float64)
        elif k == 1:
            s = torch.sigmoid(z)
            A = (s * (1 - s)).reshape(n, 1, 1)
        else:
            p = torch.softmax(z, dim=1)
            A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        H = (A.reshape(n, k * k).T @ (Xa[:, :, None] * Xa[:, None, :]).reshape(n, -1)) / n
        H = H.reshape(k, k, d + 1, d + 1).permute(0, 2, 1, 3).reshape(k * (d + 1), k * (d + 1))
        t = torch.arange(k * (d + 1))  # theta order (weight rows, then bias) -> [W | b] row order
        perm = torch.where(t < k * d, (t // d) * (d + 1) + t % d, (t - k * d) * (d + 1) + d)
        return H[perm][:, perm] + self.weight_decay * torch.eye(k * (d + 1), dtype=torch.float64)

    def optimum(self, tol: float = 1e-12, max_iter: int = 100) -> Optimum:
        """Newton's method from 0 with Armijo backtracking; cached."""
        if self._optimum is not None:
            return self._optimum
        theta = torch.zeros(self.k * (self.d + 1), dtype=torch.float64)
        f = float(self.value(theta))
        it = 0
        for it in range(1, max_iter + 1):
            g = self.grad(theta)
            if float(g.norm()) < tol:
                break
            H = self.hessian(theta)
            step = torch.linalg.solve(H, g)
            t, slope = 1.0, float(g @ step)
            while True:
                cand = theta - t * step
                fc = float(self.value(cand))
                if fc <= f - 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            theta, f = cand, fc
        gn = float(self.grad(theta).norm())
        self._optimum = Optimum(float(self.value(theta)), theta, gn, it)
        return self._optimum

    def suboptimality(self, model: nn.Module) -> float:
        """``(f(w) - f*) / f*`` of the model's parameters, in float64."""
        opt = self.optimum()
        return (float(self.value(self.theta_of(model))) - opt.value) / opt.value
