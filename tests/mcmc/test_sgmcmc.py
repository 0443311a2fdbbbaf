"""The SG-MCMC kernels, through one table: the same generator gives the same bits; zero noise with a
zero gradient leaves the position where it is; moments on Gaussian posteriors (1-D, and a
correlated 2-D one, known in closed form) fall within k·MCSE (batch means, fixed seeds); bad
arguments raise ValueError naming them; a non-finite chain raises FloatingPointError naming the
step and the sampler.  Then AMAGOLD at a large fixed step passes a goodness-of-fit test against
the exact posterior while SGLD and SGHMC at that step fail it (the test has power)."""
import math

import pytest
import torch
from scipy import stats

from relaxtorch.mcmc import AMAGOLDKernel, SGHMCKernel, SGLDKernel

K = 4.0  # tolerance in Monte Carlo standard errors


class Gaussian:
    """Data y_i ~ N(θ, S), prior θ ~ N(0, τ² I): the posterior is N(mean, cov) in closed form.
    Minibatch gradients are exact N/|B| estimates (closed form, float64); the energy is U(θ)."""

    def __init__(self, dim, corr, n=50, tau2=4.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        s = torch.full((dim, dim), corr, dtype=torch.float64).fill_diagonal_(1.0) * n  # N S⁻¹ = corr⁻¹
        self.n, self.tau2 = n, tau2
        self.s_inv = torch.linalg.inv(s)
        self.y = torch.randn(n, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s).T + 0.5
        precision = torch.eye(dim, dtype=torch.float64) / tau2 + n * self.s_inv
        self.cov = torch.linalg.inv(precision)
        self.mean = self.cov @ (self.s_inv @ self.y.sum(0))
        self.precision = precision

    # elementwise products and sums only (no BLAS), so that reruns are defined bit for bit
    def grad(self, theta, idx):
        r = (self.y[idx] - theta).sum(0)
        return -theta / self.tau2 + (self.n / len(idx)) * (self.s_inv * r).sum(-1)

    def energy(self, theta):
        r = self.y - theta
        return 0.5 * (theta * theta).sum() / self.tau2 + 0.5 * (r[:, :, None] * self.s_inv * r[:, None, :]).sum()


def batches(n, size, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(n, (steps, size), generator=g)


# every sampler, with a step size for the moment checks (small where the sampler is biased)
SAMPLERS = {
    "sgld": dict(make=lambda t, temp=1.0: SGLDKernel(t.grad, temperature=temp), moment_step=0.03),
    "sghmc": dict(make=lambda t, temp=1.0: SGHMCKernel(t.grad, friction=0.2, temperature=temp), moment_step=0.004),
    "amagold": dict(make=lambda t, temp=1.0: AMAGOLDKernel(t.grad, t.energy, friction=0.5, correction_every=4,
                                                          data_size=t.n, temperature=temp), moment_step=0.02),
    "amagold-resample": dict(make=lambda t, temp=1.0: AMAGOLDKernel(
        t.grad, t.energy, friction=0.1, correction_every=4, data_size=t.n, temperature=temp, resample_momentum=True),
        moment_step=0.02),
}


def run_chain(kernel, target, step_size, steps, seed, batch=5):
    gen = torch.Generator().manual_seed(seed)
    state = kernel.init(torch.zeros(target.mean.shape[0], dtype=torch.float64))
    out, infos = torch.empty(steps, target.mean.shape[0], dtype=torch.float64), []
    for i, idx in enumerate(batches(target.n, batch, steps, seed + 1)):
        state, info = kernel.step(gen, state, idx, step_size)
        out[i] = state.position
        infos.append(info)
    return out, state, infos


def batch_means(f, n_batches=25):
    """Mean of f (draws, k) and its Monte Carlo standard error by non-overlapping batch means."""
    m = f.shape[0] // n_batches
    b = f[: m * n_batches].reshape(n_batches, m, -1).mean(1)
    return f.mean(0), b.std(0) / math.sqrt(n_batches)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_generator_same_bits(name):
    target = Gaussian(2, 0.5)
    kernel = SAMPLERS[name]["make"](target)
    a, sa, _ = run_chain(kernel, target, 0.05, 30, seed=3)
    b, sb, _ = run_chain(kernel, target, 0.05, 30, seed=3)
    c, _, _ = run_chain(kernel, target, 0.05, 30, seed=4)
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(sa, sb) if isinstance(x, torch.Tensor))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", SAMPLERS)
def test_zero_noise_zero_gradient_keeps_position(name):
    class Flat:
        n = 10
        grad = staticmethod(lambda theta, idx: {k: torch.zeros_like(v) for k, v in theta.items()})
        energy = staticmethod(lambda theta: torch.zeros((), dtype=torch.float64))

    kernel = SAMPLERS[name]["make"](Flat, temp=0.0)
    x0 = {"w": torch.tensor([1.5, -2.25], dtype=torch.float64), "b": torch.tensor(0.75, dtype=torch.float64)}
    copy = {k: v.clone() for k, v in x0.items()}
    state, gen = kernel.init(x0), torch.Generator().manual_seed(0)
    for _ in range(25):
        state, info = kernel.step(gen, state, torch.arange(3), 0.1)
        for k in x0:
            assert torch.equal(state.position[k], copy[k])
    assert all(torch.equal(x0[k], copy[k]) for k in x0)  # input not mutated
    assert info.grad_evals == 3 and info.data_touched >= 3


@pytest.mark.parametrize("dim,corr", [(1, 0.0), (2, 0.8)], ids=["1d", "2d-correlated"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_moments_within_k_mcse(name, dim, corr):
    target = Gaussian(dim, corr)
    spec = SAMPLERS[name]
    draws, _, infos = run_chain(spec["make"](target), target, spec["moment_step"], 40_000, seed=11)
    draws = draws[4000:]
    d = draws - target.mean
    second = torch.einsum("ni,nj->nij", d, d).reshape(len(d), -1)
    features = torch.cat([d, second], 1)
    exact = torch.cat([torch.zeros(dim, dtype=torch.float64), target.cov.reshape(-1)])
    est, mcse = batch_means(features)
    assert (mcse < 0.15 * target.cov.diagonal().max()).all(), f"chain mixes too slowly to test: mcse={mcse}"
    assert ((est - exact).abs() <= K * mcse).all(), f"{name}: {est} vs exact {exact} (mcse {mcse})"
    if name.startswith("amagold"):
        assert 0.25 < infos[-1].acceptance_rate < 1


def test_amagold_exact_at_large_step_where_sgld_and_sghmc_are_biased():
    """Goodness of fit on the correlated 2-D posterior: the squared Mahalanobis distance
    d² = (θ - μ)ᵀ Λ (θ - μ) of an exact draw is χ²(2); draws thinned far beyond the
    autocorrelation time are tested with Kolmogorov–Smirnov.  The same test rejects SGLD and
    SGHMC at the same step (SGLD's ε = 2η is its SGHMC-α=1 equivalent)."""
    target = Gaussian(2, 0.8)
    eta, steps, thin = 0.1, 32_000, 40
    kernels = {
        "amagold": AMAGOLDKernel(target.grad, target.energy, friction=1.0, correction_every=3, data_size=target.n),
        "sghmc": SGHMCKernel(target.grad, friction=0.5),
        "sgld": SGLDKernel(target.grad),
    }
    p_values = {}
    for name, kernel in kernels.items():
        draws, _, infos = run_chain(kernel, target, 2 * eta if name == "sgld" else eta, steps, seed=5, batch=25)
        d = draws[2000::thin] - target.mean
        d2 = torch.einsum("ni,ij,nj->n", d, target.precision, d)
        lag1 = torch.corrcoef(torch.stack([d2[:-1], d2[1:]]))[0, 1]
        assert abs(lag1) < 0.15, f"{name}: thinned draws still correlated (lag-1 {lag1:.3f})"
        p_values[name] = stats.kstest(d2.numpy(), stats.chi2(2).cdf).pvalue
        if name == "amagold":
            rate = infos[-1].acceptance_rate
            assert 0.3 < rate < 0.999, rate
    assert p_values["amagold"] > 1e-3, p_values
    assert p_values["sgld"] < 1e-6 and p_values["sghmc"] < 1e-6, p_values


def test_sgld_stationary_variance_matches_the_discretised_chain():
    """With the full-data gradient on a Gaussian N(μ, 1/λ), SGLD is the AR(1) chain
    θ' - μ = (1 - ελ/2)(θ - μ) + sqrt(ε) ξ, whose stationary variance ε / (1 - (1 - ελ/2)²) is not
    1/λ: at ε = 1/λ it is 4/(3λ).  A wrong noise scale (variance 2ε, or drift ε) misses it."""
    target = Gaussian(1, 0.0)
    lam = target.precision.item()
    eps = 1.0 / lam
    gen, kernel = torch.Generator().manual_seed(8), SGLDKernel(target.grad)
    state, full, out = kernel.init(torch.zeros(1, dtype=torch.float64)), torch.arange(target.n), []
    for _ in range(30_000):
        state, _ = kernel.step(gen, state, full, eps)
        out.append(state.position)
    d = torch.stack(out[1000:]) - target.mean
    est, mcse = batch_means(d ** 2)
    exact = eps / (1 - (1 - eps * lam / 2) ** 2)
    assert abs(exact - 4 / (3 * lam)) < 1e-12
    assert abs(est.item() - exact) <= K * mcse.item()
    assert abs(est.item() - 1 / lam) > K * mcse.item()  # and it is detectably not the posterior


def test_sghmc_at_full_friction_is_sgld_at_twice_the_step():
    """v = η g + sqrt(2η) ξ and θ += v is θ + (ε/2) g + sqrt(ε) ξ with ε = 2η: the two kernels'
    noise scales cross-check each other (same generator, same draws)."""
    target = Gaussian(2, 0.5)
    a, _, _ = run_chain(SGHMCKernel(target.grad, friction=1.0), target, 0.05, 200, seed=2)
    b, _, _ = run_chain(SGLDKernel(target.grad), target, 0.1, 200, seed=2)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SAMPLERS)
def test_tempered_target(name):
    """At temperature 2 the target is the posterior squared-rooted: a Gaussian's variance doubles."""
    target = Gaussian(1, 0.0)
    spec = SAMPLERS[name]
    draws, _, _ = run_chain(spec["make"](target, temp=2.0), target, spec["moment_step"], 30_000, seed=21)
    d = draws[3000:] - target.mean
    est, mcse = batch_means(d ** 2)
    assert abs(est.item() - 2 * target.cov.item()) <= K * mcse.item()


@pytest.mark.parametrize("name", SAMPLERS)
def test_non_finite_chain_raises_naming_step_and_sampler(name):
    class Blowup:
        n = 10
        calls = 0

        @staticmethod
        def grad(theta, idx):
            Blowup.calls += 1
            return torch.full_like(theta, math.nan if Blowup.calls == 3 else 1.0)

        energy = staticmethod(lambda theta: 0.5 * (theta ** 2).sum())

    kernel = SAMPLERS[name]["make"](Blowup)
    kernel_name = type(kernel).__name__.replace("Kernel", "")
    state, gen = kernel.init(torch.zeros(2, dtype=torch.float64)), torch.Generator().manual_seed(0)
    with pytest.raises(FloatingPointError, match=rf"{kernel_name}.*step 3"):
        for _ in range(5):
            state, _ = kernel.step(gen, state, torch.arange(2), 0.01)
    assert state.step == 2 and torch.isfinite(state.position).all()


BAD = [
    (lambda: SGLDKernel(lambda x, b: x, temperature=-1.0), "temperature"),
    (lambda: SGLDKernel(lambda x, b: x, temperature=math.nan), "temperature"),
    (lambda: SGHMCKernel(lambda x, b: x, friction=0.0), "friction"),
    (lambda: SGHMCKernel(lambda x, b: x, friction=1.5), "friction"),
    (lambda: AMAGOLDKernel(lambda x, b: x, lambda x: x, friction=0.5, correction_every=0, data_size=3),
     "correction_every"),
    (lambda: AMAGOLDKernel(lambda x, b: x, lambda x: x, friction=0.5, correction_every=2, data_size=0), "data_size"),
    (lambda: AMAGOLDKernel(lambda x, b: x, lambda x: x, friction=-0.1, correction_every=2, data_size=3), "friction"),
]


@pytest.mark.parametrize("make,arg", BAD, ids=[a for _, a in BAD])
def test_bad_arguments_raise_naming_them(make, arg):
    with pytest.raises(ValueError, match=rf"Invalid {arg}"):
        make()


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("step", [0.0, -0.1, math.inf, math.nan])
def test_bad_step_size_raises(name, step):
    target = Gaussian(1, 0.0)
    kernel = SAMPLERS[name]["make"](target)
    with pytest.raises(ValueError, match="Invalid step_size"):
        kernel.step(torch.Generator(), kernel.init(torch.zeros(1, dtype=torch.float64)), torch.arange(2), step)


def test_amagold_holds_the_step_size_through_a_round():
    target = Gaussian(1, 0.0)
    kernel = AMAGOLDKernel(target.grad, target.energy, friction=0.5, correction_every=3, data_size=target.n)
    state, gen, used = kernel.init(torch.zeros(1, dtype=torch.float64)), torch.Generator().manual_seed(0), []
    for i in range(9):
        state, info = kernel.step(gen, state, torch.arange(2), 0.01 * (i + 1))
        used.append(info.step_size)
    # round 1: the first step's 0.01; round 2: the value passed at step 3 (0.03); round 3: step 6's
    assert used == [0.01] * 3 + [0.03] * 3 + [0.06] * 3
    # the energy is evaluated once at the start and once per round
    assert state.rounds == 3


def test_amagold_reject_restores_start_and_flips_momentum():
    """A proposal into an infinite-energy region is always rejected: θ₀ stays, p becomes -p₀."""
    wall = lambda theta: torch.where(theta.sum() > 0.5, torch.tensor(math.inf, dtype=torch.float64),
                                     0.5 * (theta ** 2).sum())
    kernel = AMAGOLDKernel(lambda x, b: torch.ones_like(x), wall, friction=0.5, correction_every=4, data_size=1,
                           temperature=0.0)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(torch.zeros(1, dtype=torch.float64))
    for _ in range(4):
        state, info = kernel.step(gen, state, torch.arange(1), 1.0)
    assert info.accepted is False and info.acceptance_rate == 0.0
    assert torch.equal(state.position, torch.zeros(1, dtype=torch.float64))
    assert torch.equal(state.momentum, torch.zeros(1, dtype=torch.float64).neg())  # p₀ = 0 flipped
    # a second round from p₀ = 0 is the same trajectory: rejected again, position unchanged
    for _ in range(4):
        state, info = kernel.step(gen, state, torch.arange(1), 1.0)
    assert info.accepted is False and torch.equal(state.position, torch.zeros(1, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SAMPLERS)
def test_cuda_same_bits_and_on_device(name):
    target = Gaussian(2, 0.5)
    dev = torch.device("cuda")
    for attr in ("y", "s_inv", "mean"):
        setattr(target, attr, getattr(target, attr).to(dev))
    kernel = SAMPLERS[name]["make"](target)

    def run(seed):
        gen = torch.Generator(device=dev).manual_seed(seed)
        state = kernel.init(torch.zeros(2, dtype=torch.float64, device=dev))
        for idx in batches(target.n, 5, 50, 1).to(dev):
            state, _ = kernel.step(gen, state, idx, 0.02)
        return state.position

    a, b = run(0), run(0)
    assert a.device.type == "cuda" and torch.equal(a, b) and torch.isfinite(a).all()
