"""Posterior and predictive metrics against slow, obviously-correct Python loops (float64)."""
import math

import pytest
import torch

from relaxtorch.mcmc.metrics import (accuracy, cov_error, ece, mean_error, nll, average_probs,
                                     predictive_nll)


def _probs(seed, n, k, sharpen=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = sharpen * torch.randn(n, k, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, dim=1)
    labels = torch.multinomial(probs, 1, generator=g)[:, 0]  # calibrated labels: a small ECE
    return probs, labels


def slow_ece(probs, labels, bins=15):
    """Guo et al. 2017, as written: bins ((m-1)/M, m/M], point by point."""
    n = len(labels)
    total = 0.0
    for m in range(1, bins + 1):
        lo, hi = (m - 1) / bins, m / bins
        members = []
        for i in range(n):
            conf = max(probs[i].tolist())
            if (lo < conf <= hi) or (m == 1 and conf == 0.0):
                members.append(i)
        if not members:
            continue
        acc = sum(1.0 for i in members if max(range(probs.shape[1]), key=lambda c: (probs[i, c].item(), -c)) == labels[i]) / len(members)
        conf = sum(max(probs[i].tolist()) for i in members) / len(members)
        total += len(members) / n * abs(acc - conf)
    return total


@pytest.mark.parametrize("seed, n, k, sharpen", [(0, 300, 10, 3.0), (1, 257, 2, 1.0), (2, 100, 3, 0.1)])
def test_ece_matches_the_slow_loop(seed, n, k, sharpen):
    probs, labels = _probs(seed, n, k, sharpen)
    assert math.isclose(ece(probs, labels).item(), slow_ece(probs, labels), rel_tol=1e-12, abs_tol=1e-15)
    assert math.isclose(ece(probs, labels, bins=4).item(), slow_ece(probs, labels, 4), rel_tol=1e-12, abs_tol=1e-15)
    miscal = probs ** 4 / (probs ** 4).sum(1, keepdim=True)  # over-confident: a larger ECE
    assert math.isclose(ece(miscal, labels).item(), slow_ece(miscal, labels), rel_tol=1e-12)


def test_ece_on_bin_edges_and_statistics():
    """Confidences exactly on the edges m/15 go to the lower bin, as the interval says."""
    conf = torch.tensor([m / 15 for m in range(8, 16)], dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], dim=1)
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0])
    assert math.isclose(ece(probs, labels).item(), slow_ece(probs, labels), rel_tol=1e-12)
    probs, labels = _probs(3, 20_000, 5)  # calibrated by construction: ECE -> 0 as n grows
    assert ece(probs, labels) < 0.02
    assert ece(probs ** 4 / (probs ** 4).sum(1, keepdim=True), labels) > 0.05


def test_nll_and_accuracy_match_loops():
    probs, labels = _probs(4, 200, 4)
    slow_nll = -sum(math.log(probs[i, labels[i]].item()) for i in range(200)) / 200
    slow_acc = sum(1 for i in range(200) if int(probs[i].argmax()) == int(labels[i])) / 200
    assert math.isclose(nll(probs, labels).item(), slow_nll, rel_tol=1e-12)
    assert accuracy(probs, labels).item() == slow_acc
    assert accuracy(probs.float(), labels.float()).item() == slow_acc  # float labels holding classes


def test_average_probs_and_predictive_nll_match_loops():
    g = torch.Generator().manual_seed(5)
    per_sample = torch.softmax(torch.randn(7, 30, 3, generator=g, dtype=torch.float64), dim=2)
    labels = torch.randint(0, 3, (30,), generator=g)
    pred = average_probs(per_sample)
    for i in range(30):
        for c in range(3):
            assert math.isclose(pred[i, c].item(), sum(per_sample[s, i, c].item() for s in range(7)) / 7, rel_tol=1e-12)
    log_lik = torch.log(per_sample[:, torch.arange(30), labels])  # (samples, points)
    slow = -sum(math.log(sum(math.exp(log_lik[s, i].item()) for s in range(7)) / 7) for i in range(30)) / 30
    assert math.isclose(predictive_nll(log_lik).item(), slow, rel_tol=1e-12)
    assert math.isclose(predictive_nll(log_lik).item(), nll(pred, labels).item(), rel_tol=1e-12)
    assert math.isfinite(predictive_nll(log_lik - 1000).item())  # logsumexp: no underflow


def test_mean_and_cov_errors_match_loops():
    g = torch.Generator().manual_seed(6)
    s = torch.randn(3, 50, 2, 2, generator=g, dtype=torch.float64)  # (chains, draws, event 2x2)
    rows = [s[c, t].reshape(-1).tolist() for c in range(3) for t in range(50)]
    n, d = len(rows), 4
    m = [sum(r[j] for r in rows) / n for j in range(d)]
    true_mean = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    assert math.isclose(mean_error(s, true_mean).item(), math.sqrt(sum((m[j] - true_mean[j].item()) ** 2 for j in range(d))), rel_tol=1e-12)
    est = [[sum((r[a] - m[a]) * (r[b] - m[b]) for r in rows) / (n - 1) for b in range(d)] for a in range(d)]
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    true_cov = A @ A.T + torch.eye(d, dtype=torch.float64)
    num = math.sqrt(sum((est[a][b] - true_cov[a, b].item()) ** 2 for a in range(d) for b in range(d)))
    den = math.sqrt(sum(true_cov[a, b].item() ** 2 for a in range(d) for b in range(d)))
    assert math.isclose(cov_error(s, true_cov).item(), num / den, rel_tol=1e-12)
    delta = torch.tensor(m, dtype=torch.float64) - true_mean
    maha = math.sqrt(float(delta @ torch.linalg.inv(true_cov) @ delta))
    assert math.isclose(mean_error(s, true_mean, true_cov).item(), maha, rel_tol=1e-10)


def test_errors_shrink_with_more_samples():
    """On exact draws from N(0, Σ), the errors are of order 1/sqrt(n): they could be wrong."""
    g = torch.Generator().manual_seed(7)
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    L = torch.linalg.cholesky(cov)
    x = (torch.randn(1, 40_000, 2, generator=g, dtype=torch.float64) @ L.T)
    assert mean_error(x, torch.zeros(2), cov) < 4 * math.sqrt(2 / 40_000)
    assert cov_error(x, cov) < 0.03
    assert cov_error(x, torch.eye(2, dtype=torch.float64)) > 0.5


@pytest.mark.parametrize("call, match", [
    (lambda: ece(torch.ones(3, 2) / 2, torch.tensor([0, 1, 2])), "Invalid labels"),
    (lambda: ece(torch.ones(3, 2) / 2, torch.tensor([0, 1])), "Invalid labels"),
    (lambda: ece(torch.ones(3, 2) / 2, torch.tensor([0.0, 0.5, 1.0])), "Invalid labels"),
    (lambda: ece(torch.ones(3, 2) / 2, torch.tensor([0, 1, 1]), bins=0), "Invalid bins"),
    (lambda: nll(torch.ones(3) / 2, torch.tensor([0, 1, 1])), "Invalid probs"),
    (lambda: predictive_nll(torch.zeros(3)), "Invalid log_lik"),
    (lambda: average_probs(torch.zeros(3, 2)), "Invalid probs"),
    (lambda: mean_error(torch.zeros(5), torch.zeros(1)), "Invalid samples"),
    (lambda: mean_error(torch.zeros(2, 5, 3), torch.zeros(2)), "Invalid mean"),
    (lambda: cov_error(torch.zeros(2, 5, 3), torch.eye(2)), "Invalid cov"),
    (lambda: cov_error(torch.zeros(1, 1, 3), torch.eye(3)), "Invalid samples"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    probs, labels = _probs(8, 500, 10)
    for f in (ece, nll, accuracy):
        assert math.isclose(f(probs.cuda(), labels.cuda()).item(), f(probs, labels).item(), rel_tol=1e-10)
    x = torch.randn(2, 100, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert math.isclose(cov_error(x.cuda(), torch.eye(3).cuda()).item(), cov_error(x, torch.eye(3)).item(), rel_tol=1e-10)
