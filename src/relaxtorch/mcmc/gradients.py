"""Minibatch estimates of the log-posterior gradient, with optional control variates.

For a posterior p(θ | x_1..x_N) ∝ p(θ) Π_i p(x_i | θ) and a minibatch B,

    ∇log p̂(θ) = ∇log p(θ) + N/|B| Σ_{b∈B} ∇log p(x_b | θ)                       (plain)
    ∇log p̂(θ) = ∇log p(θ) + N/|B| Σ_{b∈B} [∇log p(x_b | θ) - ∇log p(x_b | c)]
                + Σ_{i=1..N} ∇log p(x_i | c)                                        (control variate)

both unbiased for ∇log p(θ | x).  The control-variate form (Baker, Fearnhead, Fox &
Nemeth, "Control variates for stochastic gradient MCMC", Statistics and Computing 2019)
has a variance that vanishes as θ approaches the centre c; it evaluates two gradients per
datum.  The SG-MCMC kernels take any callable ``grad_fn(position, minibatch)`` returning
∇log p̂; :func:`grad_estimator` builds one from a log prior and a per-datum log likelihood
with autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ._tree import Tree, batch_size, leaves, unflatten

LogPrior = Callable[[Tree], torch.Tensor]
LogLikelihood = Callable[[Tree, object], torch.Tensor]


def _detached(position: Tree) -> Tree:
    return unflatten(position, [x.detach().requires_grad_(True) for x in leaves(position)])


def _grad(fn_value: torch.Tensor, at: Tree) -> list:
    xs = leaves(at)
    gs = torch.autograd.grad(fn_value, xs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, gs)]


@dataclass(frozen=True)
class GradEstimator:
    """``est(position, minibatch)`` -> the minibatch estimate of ∇log p(θ | data), a tree shaped
    like ``position`` (see the module docstring; built by :func:`grad_estimator`)."""

    log_prior: Optional[LogPrior]
    log_likelihood: LogLikelihood
    data_size: int
    centre: Optional[Tree] = None
    centre_grad: Optional[Tree] = None

    @property
    def evals_per_datum(self) -> int:
        """Per-datum gradient evaluations: 2 with a control variate (at θ and at the centre), else 1."""
        return 1 if self.centre is None else 2

    def __call__(self, position: Tree, minibatch) -> Tree:
        scale = self.data_size / batch_size(minibatch)
        with torch.enable_grad():
            theta = _detached(position)
            lik = self.log_likelihood(theta, minibatch).sum()
            total = lik * scale
            if self.log_prior is not None:
                total = total + self.log_prior(theta)
            g = _grad(total, theta)
            if self.centre is not None:
                c = _detached(self.centre)
                gc = _grad(self.log_likelihood(c, minibatch).sum() * scale, c)
                g = [a - b + f for a, b, f in zip(g, gc, leaves(self.centre_grad))]
        return unflatten(position, [x.detach() for x in g])


def grad_estimator(log_prior: Optional[LogPrior], log_likelihood: LogLikelihood, data_size: int, *,
                   centre: Optional[Tree] = None, centre_grad: Optional[Tree] = None) -> GradEstimator:
    """The minibatch log-posterior gradient estimator (N/|B| scaling), optionally with a control variate.

    ``log_prior(θ)`` returns a scalar (None: a flat prior); ``log_likelihood(θ, minibatch)``
    returns the per-datum log likelihoods (they are summed); ``data_size`` is N.  A control
    variate needs both ``centre`` (a position c) and ``centre_grad`` = Σ_i ∇log p(x_i | c) over
    the full data set (:func:`full_gradient` computes it).

    >>> est = grad_estimator(lambda t: -0.5 * (t ** 2).sum(), lambda t, y: -0.5 * (y - t) ** 2, 100)
    >>> est(torch.tensor([0.0]), torch.tensor([1.0, 3.0])).tolist()  # 0 + 100/2 * (1 + 3)
    [200.0]
    """
    if isinstance(data_size, bool) or not isinstance(data_size, int) or data_size < 1:
        raise ValueError(f"Invalid data_size: {data_size!r} (a positive int: the number of data points N)")
    if (centre is None) != (centre_grad is None):
        raise ValueError(f"Invalid centre_grad: {'None' if centre_grad is None else 'given'} (a control variate "
                         f"needs both centre and centre_grad, the full-data log-likelihood gradient at the centre)")
    if centre is not None:
        cs, fs = leaves(centre), leaves(centre_grad)
        if len(cs) != len(fs) or any(c.shape != f.shape for c, f in zip(cs, fs)):
            raise ValueError(f"Invalid centre_grad: shapes {[tuple(f.shape) for f in fs]} (must match the centre's "
                             f"{[tuple(c.shape) for c in cs]})")
    return GradEstimator(log_prior, log_likelihood, data_size, centre, centre_grad)


def full_gradient(log_likelihood: LogLikelihood, position: Tree, batches) -> Tree:
    """Σ_i ∇log p(x_i | θ) over every minibatch in ``batches`` (an iterable covering the data set
    once): the ``centre_grad`` of a control variate.

    >>> full_gradient(lambda t, y: -0.5 * (y - t) ** 2, torch.tensor([0.0]), [torch.tensor([1.0, 3.0])]).tolist()
    [4.0]
    """
    total = None
    with torch.enable_grad():
        for batch in batches:
            theta = _detached(position)
            g = _grad(log_likelihood(theta, batch).sum(), theta)
            total = g if total is None else [a + b for a, b in zip(total, g)]
    if total is None:
        raise ValueError("Invalid batches: empty (full_gradient needs the whole data set)")
    return unflatten(position, total)
