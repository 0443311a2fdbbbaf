"""Exact minibatch MH (full MH, TunaMH, TFMH, FlyMC): bounds, exactness against a grid posterior,
batch sizes against their closed forms, and bad input.

Goodness of fit: R chains start from independent exact posterior draws (inverse CDF on a fine
grid) and run T steps; for an exact kernel the final states are i.i.d. from the posterior, so a
Kolmogorov-Smirnov test against the grid CDF applies as it stands.  The same test rejects a naive
minibatch MH that plugs a minibatch estimate of the log ratio into the MH rule (it has power).
"""
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import stats

from relaxtorch.mcmc.mh import (TFMH, FlyMC, FullMH, LogisticRegression, RobustLinearRegression, TunaMH,
                                run_chain, synthetic_logistic, synthetic_robust)
from relaxtorch.mcmc.mh._common import MHInfo, MHState, accept, propose


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------- the models and their bounds
def _models():
    X, y, _ = synthetic_logistic(400, 3, seed=1, dtype=torch.float64)
    lr = LogisticRegression(X, y, prior_scale=5.0)
    X, y, _ = synthetic_robust(400, 3, seed=2, dtype=torch.float64)
    rr = RobustLinearRegression(X, y, nu=3.0, scale=0.7)
    return {"logistic": lr, "robust": rr}


@pytest.mark.parametrize("name", ["logistic", "robust"])
@pytest.mark.parametrize("cv", [False, True])
def test_bounds_hold(name, cv):
    m = _models()[name]
    th_hat = m.map_estimate()
    if cv:
        m = m.with_center(th_hat)
    g = _gen(11)
    for scale in (1e-3, 0.05, 1.0, 5.0):
        th = th_hat + scale * torch.randn(3, generator=g, dtype=torch.float64)
        th2 = th + scale * torch.randn(3, generator=g, dtype=torch.float64)
        diff = m.energy_diff(th, th2)
        bound = m.c * m.bound(th, th2)
        assert bool((diff.abs() <= bound * (1 + 1e-12) + 1e-15).all())
        assert float(m.bound(th, th2)) == pytest.approx(float(m.bound(th2, th)), rel=1e-14)  # symmetric
        if scale <= 0.05:  # the bound is not vacuous: some datum comes within a factor 10 of it
            assert float((diff.abs() / bound).max()) > 0.1
        torch.testing.assert_close(diff, m.energy(th2) - m.energy(th), rtol=1e-9, atol=1e-12)
        u0, u1 = m.energy_pair(th, th2)
        torch.testing.assert_close(u1 - u0, diff, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["logistic", "robust"])
def test_control_variate_keeps_the_posterior(name):
    m = _models()[name]
    cv = m.with_center(m.map_estimate())
    g = _gen(3)
    gaps = [float(cv.total_energy(th) - m.total_energy(th))
            for th in (torch.randn(3, generator=g, dtype=torch.float64) for _ in range(5))]
    assert max(gaps) - min(gaps) < 1e-9 * (1 + abs(gaps[0]))  # the same π up to a constant


@pytest.mark.parametrize("name", ["logistic", "robust"])
def test_map_estimate_is_a_stationary_point(name):
    m = _models()[name]
    th = m.map_estimate().requires_grad_(True)
    m.total_energy(th).backward()
    assert float(th.grad.abs().max()) < 1e-8 * m.data_size


@pytest.mark.parametrize("name", ["logistic", "robust"])
def test_flymc_bounds_are_lower_bounds_tight_at_the_centre(name):
    m = _models()[name]
    th_hat = m.map_estimate()
    b = m.flymc_bound(th_hat)
    torch.testing.assert_close(b.bound_energy(th_hat), m.energy(th_hat), rtol=1e-10, atol=1e-12)
    g = _gen(5)
    for scale in (0.01, 0.3, 3.0):
        th = th_hat + scale * torch.randn(3, generator=g, dtype=torch.float64)
        assert bool((b.bound_energy(th) >= m.energy(th) - 1e-12).all())
        torch.testing.assert_close(b.bound_energy_sum(th), b.bound_energy(th).sum(), rtol=1e-10, atol=1e-9)
        idx = torch.tensor([3, 1, 3])
        torch.testing.assert_close(b.bound_energy(th, idx), b.bound_energy(th)[idx])


# ---------------------------------------------------------------- exactness on a 1-D problem
def _problem(kind):
    g = _gen(21)
    n = 24
    x = torch.randn(n, 1, generator=g, dtype=torch.float64) * 1.5
    if kind == "logistic":
        y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(0.8 * x[:, 0])).long()
        return LogisticRegression(x, y, prior_scale=3.0)
    y = 0.8 * x[:, 0] + 0.5 * torch.from_numpy(np.random.default_rng(0).standard_t(3.0, n))
    return RobustLinearRegression(x, y, nu=3.0, scale=0.5, prior_scale=3.0)


def _grid_posterior(model):
    grid = torch.linspace(-8, 8, 40001, dtype=torch.float64)
    lp = -torch.stack([model.total_energy(t.reshape(1)) for t in grid])
    p = torch.exp(lp - lp.max())
    cdf = torch.cumsum((p[1:] + p[:-1]) / 2, 0)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), cdf / cdf[-1]])
    return grid.numpy(), cdf.numpy()


_GRIDS = {}


def _grid(kind):
    if kind not in _GRIDS:
        _GRIDS[kind] = _grid_posterior(_problem(kind))
    return _GRIDS[kind]


@dataclass(frozen=True, eq=False)
class NaiveMinibatchMH:
    """Biased on purpose: plugs (N/b) Σ_batch ΔU_i into the MH rule as if it were exact."""

    model: object
    batch: int = 4
    name = "NaiveMH"

    def init(self, position):
        return MHState(position, 0)

    def step(self, generator, state, minibatch=None, step_size=None):
        th = state.position
        th2 = propose(generator, th, step_size)
        n = self.model.data_size
        idx = torch.randperm(n, generator=generator)[:self.batch]
        est = n / self.batch * self.model.energy_diff(th, th2, idx).sum()
        lr = float(self.model.base_energy(th) - self.model.base_energy(th2) - est)
        ok = accept(generator, lr, th.device)
        return MHState(th2 if ok else th, state.step + 1), MHInfo(ok, self.batch, 2 * self.batch, 0, lr)


def _final_states(kernel, kind, step_size, chains=300, steps=30, seed=0, flymc=False):
    grid, cdf = _grid(kind)
    rng = np.random.default_rng(seed)
    starts = np.interp(rng.random(chains), cdf, grid)  # exact posterior draws
    out = np.empty(chains)
    for c in range(chains):
        g = _gen(1000 * seed + c)
        pos = torch.tensor([starts[c]], dtype=torch.float64)
        state = kernel.init(pos, g) if flymc else kernel.init(pos)
        for _ in range(steps):
            state, _ = kernel.step(g, state, None, step_size)
        out[c] = float(state.position[0])
    return out


def _ks_pvalue(samples, kind):
    grid, cdf = _grid(kind)
    return stats.kstest(samples, lambda v: np.interp(v, grid, cdf)).pvalue


def _exact_kernels():
    lr = _problem("logistic")
    th_hat = lr.map_estimate()
    rr = _problem("robust")
    return {
        "full_mh": ("logistic", FullMH(lr), 0.6, False),
        "tunamh": ("logistic", TunaMH(lr, chi=0.05), 0.6, False),
        "tunamh_cv": ("logistic", TunaMH(lr.with_center(th_hat), chi=0.05), 0.6, False),
        "tfmh": ("logistic", TFMH(lr), 0.3, False),
        "flymc": ("logistic", FlyMC(lr.flymc_bound(th_hat), q=0.3), 0.6, True),
        "tunamh_robust": ("robust", TunaMH(rr.with_center(rr.map_estimate()), chi=0.05), 0.3, False),
        "full_mh_robust": ("robust", FullMH(rr), 0.3, False),
    }


@pytest.mark.parametrize("name", list(_exact_kernels()))
def test_exact_samplers_match_the_grid_posterior(name):
    kind, kernel, step, flymc = _exact_kernels()[name]
    samples = _final_states(kernel, kind, step, flymc=flymc)
    assert _ks_pvalue(samples, kind) > 1e-3


def test_the_same_test_rejects_naive_minibatch_mh():
    samples = _final_states(NaiveMinibatchMH(_problem("logistic")), "logistic", 0.6)
    assert _ks_pvalue(samples, "logistic") < 1e-6


def test_chains_move():
    # the exactness test is not passed by a chain that never moves: acceptance is well above 0
    for name, (kind, kernel, step, flymc) in _exact_kernels().items():
        pos = torch.tensor([0.7], dtype=torch.float64)
        g = _gen(2)
        st = kernel.init(pos, g) if flymc else kernel.init(pos)
        r = run_chain(kernel, g, st, 200, step)
        assert 0.15 < r.acceptance_rate < 0.99, name


# ---------------------------------------------------------------- batch sizes and costs
@dataclass(frozen=True, eq=False)
class FixedBound:
    """A model whose M(θ, θ') is a constant, so the batch size's law is known: Poisson(λ)."""

    inner: object
    M: float

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def bound(self, theta, theta_new):
        return torch.tensor(self.M, dtype=torch.float64)


@pytest.mark.parametrize("chi", [0.0, 0.01, 0.1])
def test_batch_sizes_have_the_papers_mean(chi):
    lr = _models()["logistic"]
    m = FixedBound(lr, M=0.004)  # the Lipschitz bound holds for steps below M = 0.004
    C = float(lr.c.sum())
    steps = 3000
    if chi == 0.0:
        kernel, lam = TFMH(m), C * m.M
    else:
        kernel, lam = TunaMH(m, chi=chi), chi * (C * m.M) ** 2 + C * m.M
    st = kernel.init(lr.map_estimate())
    r = run_chain(kernel, _gen(4), st, steps, 1e-4)
    b = r.data_touched.double().numpy()
    assert abs(b.mean() - lam) < 5 * math.sqrt(lam / steps)
    assert abs(b.var() - lam) < 5 * math.sqrt((lam + 2 * lam ** 2) / steps)
    assert torch.equal(r.energy_evals, 2 * r.data_touched)


def test_full_mh_touches_all_data_and_flymc_few():
    lr = _models()["logistic"]
    th = lr.map_estimate()
    r = run_chain(FullMH(lr), _gen(0), FullMH(lr).init(th), 20, 0.05)
    assert bool((r.data_touched == 400).all()) and bool((r.energy_evals == 400).all())
    k = FlyMC(lr.flymc_bound(th), q=0.05)
    r = run_chain(k, _gen(0), k.init(th, _gen(1)), 50, 0.05)
    assert 0 < r.mean_batch < 200
    assert r.state.bright.numel() < 100 and r.state.bright.unique().numel() == r.state.bright.numel()


# ---------------------------------------------------------------- contract: bits, bad input, NaN
def _all_kernels():
    lr = _models()["logistic"]
    th = lr.map_estimate()
    return th, [FullMH(lr), TunaMH(lr.with_center(th), chi=0.01), TFMH(lr), FlyMC(lr.flymc_bound(th), q=0.1)]


def test_same_generator_same_bits():
    th, kernels = _all_kernels()
    for k in kernels:
        a = run_chain(k, _gen(8), k.init(th.clone()), 30, 0.03)
        b = run_chain(k, _gen(8), k.init(th.clone()), 30, 0.03)
        assert torch.equal(a.samples, b.samples) and torch.equal(a.data_touched, b.data_touched), k.name
        c = run_chain(k, _gen(9), k.init(th.clone()), 30, 0.03)
        assert not torch.equal(a.samples, c.samples), k.name


def test_inputs_not_mutated_and_info_fields():
    th, kernels = _all_kernels()
    for k in kernels:
        pos = th.clone()
        st = k.init(pos)
        st2, info = k.step(_gen(1), st, None, 0.03)
        assert torch.equal(pos, th) and st.step == 0 and st2.step == 1
        assert isinstance(info.accepted, bool) and info.grad_evals == 0
        assert isinstance(info.data_touched, int) and isinstance(info.energy_evals, int)


@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), float("inf"), None, "0.1"])
def test_bad_step_size_raises(step_size):
    th, kernels = _all_kernels()
    for k in kernels:
        with pytest.raises(ValueError, match="Invalid step_size"):
            k.step(_gen(), k.init(th), None, step_size)


def test_minibatch_must_be_none():
    th, kernels = _all_kernels()
    for k in kernels:
        with pytest.raises(ValueError, match="Invalid minibatch"):
            k.step(_gen(), k.init(th), torch.arange(3), 0.1)


@pytest.mark.parametrize("chi", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_chi_raises(chi):
    with pytest.raises(ValueError, match="Invalid chi"):
        TunaMH(_models()["logistic"], chi=chi)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, float("nan")])
def test_bad_q_raises(q):
    lr = _models()["logistic"]
    with pytest.raises(ValueError, match="Invalid q"):
        FlyMC(lr.flymc_bound(), q=q)


@dataclass(frozen=True, eq=False)
class WithC:
    inner: object
    c: torch.Tensor

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("c", [[1.0, -1.0], [1.0, float("nan")], [float("inf"), 1.0], [0.0, 0.0], [[1.0]]])
@pytest.mark.parametrize("cls", [TunaMH, TFMH])
def test_bad_bounds_raise(c, cls):
    with pytest.raises(ValueError, match="Invalid c"):
        cls(WithC(_models()["logistic"], torch.tensor(c, dtype=torch.float64)))


@pytest.mark.parametrize("cls", [TunaMH, TFMH])
def test_wrong_bounds_are_caught(cls):
    lr = _models()["logistic"]
    k = cls(WithC(lr, lr.c * 1e-3))  # far too small to bound the energy differences
    st = k.init(lr.map_estimate())
    with pytest.raises(ValueError, match="Invalid bounds"):
        for _ in range(50):
            st, _ = k.step(_gen(), st, None, 0.5)


@dataclass(frozen=True, eq=False)
class NaNAfter:
    """Energies turn NaN when θ leaves [-lim, lim]."""

    inner: object
    lim: float

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _nan(self, th):
        return torch.where((th.abs() > self.lim).any(), float("nan"), 0.0)

    def energy_diff(self, th, th2, idx=None):
        return self.inner.energy_diff(th, th2, idx) + self._nan(th2)

    def energy(self, th, idx=None):
        return self.inner.energy(th, idx) + self._nan(th)

    def total_energy(self, th):
        return self.inner.total_energy(th) + self._nan(th)


def test_nan_stops_the_chain_naming_step_and_sampler():
    lr = _models()["logistic"]
    m = NaNAfter(lr, 0.0)  # every proposal is outside
    th = torch.zeros(3, dtype=torch.float64)
    for k in (FullMH(m), TunaMH(m, chi=0.01), TFMH(m)):
        with pytest.raises(FloatingPointError, match=rf"{k.name}.*step 1"):
            k.step(_gen(), k.init(th), None, 0.1)
    with pytest.raises(FloatingPointError, match="FlyMC.*step 0"):
        FlyMC(lr.flymc_bound()).init(torch.tensor([float("nan")] * 3, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernels_run_on_cuda():
    X, y, _ = synthetic_logistic(2000, 3, seed=0, dtype=torch.float64)
    lr = LogisticRegression(X.cuda(), y.cuda())
    th = lr.map_estimate()
    assert th.device.type == "cuda"
    for k in (FullMH(lr), TunaMH(lr.with_center(th), chi=0.01), TFMH(lr), FlyMC(lr.flymc_bound(th), q=0.1)):
        g = _gen(0, "cuda")
        st = k.init(th, g) if isinstance(k, FlyMC) else k.init(th)
        r = run_chain(k, g, st, 20, 0.02)
        assert r.samples.device.type == "cuda" and bool(torch.isfinite(r.samples).all()), k.name


def test_bad_model_arguments_raise():
    X, y = torch.randn(5, 2, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="Invalid X"):
        LogisticRegression(X[0], y)
    with pytest.raises(ValueError, match="Invalid X"):
        LogisticRegression(torch.full((5, 2), float("nan")), y)
    with pytest.raises(ValueError, match="Invalid y"):
        LogisticRegression(X, y[:3])
    with pytest.raises(ValueError, match="Invalid y"):
        LogisticRegression(X, torch.tensor([0, 1, 2, 0, 1]))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="Invalid prior_scale"):
            LogisticRegression(X, y, prior_scale=bad)
        with pytest.raises(ValueError, match="Invalid nu"):
            RobustLinearRegression(X, y.double(), nu=bad)
        with pytest.raises(ValueError, match="Invalid scale"):
            RobustLinearRegression(X, y.double(), scale=bad)
    with pytest.raises(ValueError, match="Invalid center"):
        LogisticRegression(X, y).with_center(torch.zeros(3, dtype=torch.float64))


def test_labels_zero_one_and_signed_agree():
    X = torch.randn(6, 2, dtype=torch.float64)
    y01 = torch.tensor([0, 1, 1, 0, 1, 0])
    a, b = LogisticRegression(X, y01), LogisticRegression(X, 2 * y01 - 1)
    th = torch.tensor([0.3, -1.2], dtype=torch.float64)
    torch.testing.assert_close(a.energy(th), b.energy(th))
    # against the textbook Bernoulli likelihood, float64
    p = torch.sigmoid(X @ th)
    torch.testing.assert_close(a.energy(th), -(y01 * torch.log(p) + (1 - y01) * torch.log1p(-p)))


def test_student_t_energy_matches_scipy():
    X = torch.randn(7, 2, dtype=torch.float64)
    y = torch.randn(7, dtype=torch.float64) * 3
    m = RobustLinearRegression(X, y, nu=3.5, scale=0.8)
    th = torch.tensor([0.5, -0.25], dtype=torch.float64)
    ref = -stats.t.logpdf(y.numpy(), df=3.5, loc=(X @ th).numpy(), scale=0.8)
    u = m.energy(th).numpy()
    np.testing.assert_allclose(u - u[0], ref - ref[0], rtol=1e-10, atol=1e-12)  # up to the normaliser
