"""Accuracy of a sampler: posterior moments against the exact answer, and the quality of the
posterior predictive on test data (NLL, accuracy, calibration).

Samples are shaped ``(chains, draws, *event)`` as in :mod:`relaxtorch.mcmc.diagnostics`
(chains pooled, the event flattened).  Predictive probabilities are ``(points, classes)``:
average the per-sample probabilities first (:func:`average_probs`).  Results are
float64 0-d tensors on the inputs' device.
"""
from __future__ import annotations

import math

import torch

__all__ = ["accuracy", "cov_error", "ece", "mean_error", "nll", "average_probs", "predictive_nll"]


def _pooled(samples, name="samples") -> torch.Tensor:
    if not isinstance(samples, torch.Tensor) or samples.ndim < 2 or samples.shape[0] * samples.shape[1] < 1:
        raise ValueError(f"Invalid {name}: {getattr(samples, 'shape', type(samples).__name__)!r} "
                         f"(must be a tensor shaped (chains, draws, *event))")
    return samples.detach().to(torch.float64).reshape(samples.shape[0] * samples.shape[1], -1)


def _flat_like(t, d, name) -> torch.Tensor:
    t = torch.as_tensor(t).detach().to(torch.float64).reshape(-1)
    if t.numel() != d:
        raise ValueError(f"Invalid {name}: {t.numel()} elements (the samples' event has {d})")
    return t


def mean_error(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
    """Error of the sample mean: the Euclidean distance to ``mean``, or with ``cov`` the
    Mahalanobis distance sqrt(δᵀ Σ⁻¹ δ) (in posterior standard deviations; scale-free).

    >>> s = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])   # one chain, two draws: mean (2, 1)
    >>> mean_error(s, torch.zeros(2)).item() == 5 ** 0.5
    True
    """
    x = _pooled(samples)
    delta = x.mean(0) - _flat_like(mean, x.shape[1], "mean").to(x.device)
    if cov is None:
        return torch.linalg.vector_norm(delta)
    c = torch.as_tensor(cov).detach().to(device=x.device, dtype=torch.float64).reshape(x.shape[1], x.shape[1])
    return torch.sqrt(delta @ torch.linalg.solve(c, delta))


def cov_error(samples: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Relative Frobenius error of the sample covariance: ||Σ̂ − Σ||_F / ||Σ||_F (Σ̂ with 1/(n−1)).

    >>> s = torch.tensor([[[1.0], [-1.0], [1.0], [-1.0]]])   # sample variance 4/3
    >>> round(cov_error(s, torch.ones(1, 1)).item(), 6)
    0.333333
    """
    x = _pooled(samples)
    d = x.shape[1]
    if x.shape[0] < 2:
        raise ValueError(f"Invalid samples: {x.shape[0]} draw (a covariance needs at least 2)")
    c = torch.as_tensor(cov).detach().to(device=x.device, dtype=torch.float64)
    if c.numel() != d * d:
        raise ValueError(f"Invalid cov: shape {tuple(c.shape)} (must be ({d}, {d}))")
    c = c.reshape(d, d)
    est = torch.cov(x.T).reshape(d, d)
    return torch.linalg.matrix_norm(est - c) / torch.linalg.matrix_norm(c)


def average_probs(probs: torch.Tensor) -> torch.Tensor:
    """Average per-sample class probabilities ``(samples, points, classes)`` into the posterior
    predictive ``(points, classes)`` (float64)."""
    if not isinstance(probs, torch.Tensor) or probs.ndim != 3:
        raise ValueError(f"Invalid probs: {getattr(probs, 'shape', probs)!r} (must be (samples, points, classes))")
    return probs.detach().to(torch.float64).mean(0)


def _check_probs(probs, labels):
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[0] < 1:
        raise ValueError(f"Invalid probs: {getattr(probs, 'shape', probs)!r} (must be (points, classes))")
    if not isinstance(labels, torch.Tensor) or labels.shape != probs.shape[:1]:
        raise ValueError(f"Invalid labels: {getattr(labels, 'shape', labels)!r} (must be ({probs.shape[0]},))")
    y = labels.to(torch.int64)
    if not torch.equal(y.to(labels.dtype), labels) or y.min() < 0 or y.max() >= probs.shape[1]:
        raise ValueError(f"Invalid labels: (must be integer classes in [0, {probs.shape[1]}))")
    return probs.detach().to(torch.float64), y.to(probs.device)


def nll(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood −(1/n) Σ log p(y_i) of the predictive ``probs`` (points, classes).

    >>> round(nll(torch.tensor([[0.5, 0.5], [0.9, 0.1]]), torch.tensor([0, 0])).item(), 6)   # -(log 0.5 + log 0.9) / 2
    0.399254
    """
    p, y = _check_probs(probs, labels)
    return -torch.log(p.gather(1, y[:, None])).mean()


def predictive_nll(log_lik: torch.Tensor) -> torch.Tensor:
    """Test NLL of the posterior predictive from per-sample, per-point log-likelihoods
    ``(samples, points)``: −(1/n) Σ_i log((1/S) Σ_s p(y_i | θ_s)), by logsumexp (any task).

    >>> round(predictive_nll(torch.log(torch.tensor([[0.2], [0.6]]))).item(), 6)   # -log 0.4
    0.916291
    """
    if not isinstance(log_lik, torch.Tensor) or log_lik.ndim != 2 or 0 in log_lik.shape:
        raise ValueError(f"Invalid log_lik: {getattr(log_lik, 'shape', log_lik)!r} (must be (samples, points))")
    ll = log_lik.detach().to(torch.float64)
    return -(torch.logsumexp(ll, dim=0) - math.log(ll.shape[0])).mean()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of points whose most probable class (the first on ties) is the label.

    >>> accuracy(torch.tensor([[0.6, 0.4], [0.3, 0.7]]), torch.tensor([0, 0])).item()
    0.5
    """
    p, y = _check_probs(probs, labels)
    return (p.argmax(1) == y).to(torch.float64).mean()


def ece(probs: torch.Tensor, labels: torch.Tensor, *, bins: int = 15) -> torch.Tensor:
    """Expected calibration error (Guo, Pleiss, Sun & Weinberger, ICML 2017): points binned by
    confidence max_k p_k into ``bins`` equal intervals ((m−1)/M, m/M] (confidence 0 in the first),
    ECE = Σ_m |B_m|/n · |accuracy(B_m) − confidence(B_m)|.

    >>> round(ece(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), torch.tensor([0, 1])).item(), 6)   # (|1 - 0.9| + |0 - 0.8|) / 2
    0.45
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"Invalid bins: {bins!r} (must be an int >= 1)")
    p, y = _check_probs(probs, labels)
    conf, pred = p.max(1)
    correct = (pred == y).to(torch.float64)
    upper = torch.arange(1, bins + 1, dtype=torch.float64, device=p.device) / bins  # m/M, as a loop computes it
    which = torch.searchsorted(upper, conf.contiguous(), side="left").clamp(max=bins - 1)  # (m-1)/M < conf <= m/M
    count = torch.zeros(bins, dtype=torch.float64, device=p.device).index_add_(0, which, torch.ones_like(conf))
    acc = torch.zeros_like(count).index_add_(0, which, correct)
    cs = torch.zeros_like(count).index_add_(0, which, conf)
    return (acc - cs).abs().sum() / p.shape[0]
