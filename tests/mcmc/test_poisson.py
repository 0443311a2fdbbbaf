"""The Poisson minibatch primitive: alias tables, Poisson draws and thinning against closed forms."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from relaxtorch.mcmc.poisson import alias_table, poisson_counts, poisson_minibatch, thin


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 17, 64])
def test_alias_table_is_exact_for_small_tables(k):
    rng = np.random.default_rng(k)
    for trial in range(20):
        w = rng.exponential(size=k) * (rng.random(k) < 0.7)  # some zero weights
        if w.sum() == 0:
            w[0] = 1.0
        t = alias_table(torch.tensor(w))
        assert t.prob.dtype == torch.float64 and t.alias.dtype == torch.int64
        assert bool(((t.prob >= 0) & (t.prob <= 1)).all()) and bool(((t.alias >= 0) & (t.alias < k)).all())
        # the table's distribution, rebuilt column by column (a slow loop), is c_i / C
        p = np.zeros(k)
        for j in range(k):
            p[j] += t.prob[j].item() / k
            p[t.alias[j].item()] += (1 - t.prob[j].item()) / k
        np.testing.assert_allclose(p, w / w.sum(), rtol=0, atol=1e-14)
        np.testing.assert_allclose(t.probabilities().numpy(), p, rtol=0, atol=1e-15)
        assert t.total == pytest.approx(w.sum(), rel=1e-15)


def test_alias_draws_pass_chi_square_and_skip_zero_weights():
    w = torch.tensor([0.5, 3.0, 0.0, 1.0, 7.0, 0.25, 2.0, 0.0, 4.0, 1.5], dtype=torch.float64)
    t = alias_table(w)
    n = 200_000
    idx = t.sample(_gen(3), n)
    counts = torch.bincount(idx, minlength=len(w)).numpy()
    assert counts[2] == 0 and counts[7] == 0
    nz = (w > 0).numpy()
    expected = n * (w / w.sum()).numpy()[nz]
    assert stats.chisquare(counts[nz], expected).pvalue > 1e-3
    # power: the same test rejects draws from the uniform distribution over the support
    wrong = torch.bincount(alias_table(torch.tensor(nz, dtype=torch.float64)).sample(_gen(4), n),
                           minlength=len(w)).numpy()
    assert stats.chisquare(wrong[nz], expected).pvalue < 1e-10


def test_large_table_probabilities():
    w = torch.rand(100_000, generator=_gen(1), dtype=torch.float64) ** 3
    t = alias_table(w)
    torch.testing.assert_close(t.probabilities(), w / w.sum(), rtol=0, atol=1e-15)


def _moments_ok(x: np.ndarray, mu: np.ndarray, k=5.0):
    """Each column's sample mean and variance within k standard errors of a Poisson(mu)."""
    r = x.shape[0]
    mean, var = x.mean(0), x.var(0, ddof=1)
    se_mean = np.sqrt(mu / r)
    se_var = np.sqrt((mu + 2 * mu ** 2) / r)  # Var(s²) ≈ (μ4 - σ⁴)/r, μ4 = μ + 3μ² for a Poisson
    assert np.all(np.abs(mean - mu) <= k * se_mean + 1e-12), (mean, mu)
    assert np.all(np.abs(var - mu) <= k * se_var + 1e-12), (var, mu)


def test_poisson_minibatch_counts_are_independent_poissons():
    w = torch.tensor([1.0, 2.0, 0.5, 4.0, 0.0, 2.5], dtype=torch.float64)
    t, rate, reps = alias_table(w), 12.0, 6000
    g = _gen(5)
    counts = np.stack([torch.bincount(poisson_minibatch(g, t, rate), minlength=len(w)).numpy()
                       for _ in range(reps)])
    mu = rate * (w / w.sum()).numpy()
    _moments_ok(counts, mu)
    assert counts[:, 4].max() == 0
    # independence (Poisson splitting): correlations between counts vanish; total is Poisson(rate)
    c = np.corrcoef(counts[:, [0, 1, 3, 5]].T)
    assert np.all(np.abs(c[np.triu_indices(4, 1)]) < 5 / math.sqrt(reps))
    _moments_ok(counts.sum(1, keepdims=True).astype(float), np.array([rate]))


def test_dense_counts_have_the_same_law():
    w = torch.tensor([1.0, 3.0, 0.0, 6.0], dtype=torch.float64)
    t, g = alias_table(w), _gen(6)
    counts = np.stack([poisson_counts(g, t, 20.0).numpy() for _ in range(5000)])
    _moments_ok(counts, 20.0 * (w / w.sum()).numpy())
    assert counts[:, 2].max() == 0


def test_thinning_gives_poisson_with_the_thinned_rate():
    w = torch.tensor([2.0, 1.0, 1.0, 4.0], dtype=torch.float64)
    p = torch.tensor([0.9, 0.1, 0.5, 0.25], dtype=torch.float64)
    t, g, rate = alias_table(w), _gen(7), 16.0
    out = []
    for _ in range(6000):
        idx = poisson_minibatch(g, t, rate)
        out.append(torch.bincount(idx[thin(g, idx, p[idx])], minlength=4).numpy())
    _moments_ok(np.stack(out), rate * (w / w.sum() * p).numpy())


def test_same_seed_same_bits():
    t = alias_table(torch.rand(50, generator=_gen(0)))
    a = [poisson_minibatch(_gen(9), t, 30.0) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    assert not torch.equal(poisson_minibatch(_gen(9), t, 30.0), poisson_minibatch(_gen(10), t, 30.0))
    assert poisson_minibatch(_gen(0), t, 0.0).numel() == 0


@pytest.mark.parametrize("w", [[1.0, -0.5], [1.0, float("nan")], [float("inf"), 1.0], [0.0, 0.0], [[1.0, 2.0]], []])
def test_bad_weights_raise(w):
    with pytest.raises(ValueError, match="Invalid weights"):
        alias_table(torch.tensor(w, dtype=torch.float64))


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_bad_rates_raise(rate):
    t = alias_table(torch.ones(3))
    with pytest.raises(ValueError, match="Invalid rate"):
        poisson_minibatch(_gen(), t, rate)
    with pytest.raises(ValueError, match="Invalid rate"):
        poisson_counts(_gen(), t, rate)


def test_inputs_not_mutated():
    w = torch.tensor([1.0, 2.0, 3.0])
    before = w.clone()
    alias_table(w)
    assert torch.equal(w, before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda():
    w = torch.tensor([1.0, 0.0, 3.0], device="cuda")
    t = alias_table(w)
    g = _gen(0, "cuda")
    idx = poisson_minibatch(g, t, 1000.0)
    assert idx.device.type == "cuda" and not bool((idx == 1).any())
    counts = torch.bincount(t.sample(g, 100_000), minlength=3).cpu().double()
    assert abs(counts[2].item() / 100_000 - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 100_000)
    assert poisson_counts(g, t, 5.0).device.type == "cuda"
    assert thin(g, idx, torch.full(idx.shape, 0.5, device="cuda")).device.type == "cuda"
