"""Every sampler of ``relaxtorch.mcmc`` through one table, on one posterior (1-D Bayesian logistic
regression, whose exact posterior is computed by quadrature on a fine grid): the same generator
gives the same bits; zero noise with a zero gradient leaves the position where it is (gradient
samplers; MH samplers inject no noise); the posterior mean and variance fall within K Monte Carlo
standard errors (ESS-based) of the exact ones.  A kernel exported by the package but missing
from the table fails the suite, so a new sampler cannot skip these checks.  The families' own
files test more (power against biased samplers, bounds, shells, bad input)."""
import inspect
import math

import pytest
import torch

import relaxtorch as rt
import relaxtorch.mcmc as mc

K = 4.0
N = 200


def _data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, 1, generator=g, dtype=torch.float64)
    y = (torch.rand(N, generator=g, dtype=torch.float64) < torch.sigmoid(1.2 * x[:, 0])).double()
    return x, y


X, Y = _data()
MODEL64 = mc.mh.LogisticRegression(X, Y, prior_scale=3.0)
MODEL32 = mc.mh.LogisticRegression(X.float(), Y.float(), prior_scale=3.0)


def _exact():
    grid = torch.linspace(-2.0, 5.0, 20001, dtype=torch.float64)
    logp = torch.stack([-MODEL64.total_energy(t.reshape(1)) for t in grid])
    w = torch.softmax(logp, 0)
    mean = (w * grid).sum()
    return float(mean), float((w * (grid - mean) ** 2).sum())


EXACT_MEAN, EXACT_VAR = _exact()


def _grad(model, zero=False):
    if zero:
        return lambda theta, idx: torch.zeros_like(theta)
    return mc.grad_estimator(lambda t: -model.base_energy(t), lambda t, idx: -model.energy(t, idx), N)


CENTRE = MODEL64.map_estimate()
FMT = rt.FixedPoint(16, 12)
# name -> (build(zero_gradient, temperature), family, step size for the moment check, steps)
TABLE = {
    "SGLDKernel": (lambda z, t: mc.SGLDKernel(_grad(MODEL32, z), temperature=t), "gradient", 5e-3, 10000),
    "SGHMCKernel": (lambda z, t: mc.SGHMCKernel(_grad(MODEL32, z), friction=0.5, temperature=t), "gradient", 2.5e-3,
                    10000),
    "AMAGOLDKernel": (lambda z, t: mc.AMAGOLDKernel(_grad(MODEL32, z), MODEL32.total_energy, friction=0.5,
                                                    correction_every=4, data_size=N, temperature=t),
                      "gradient", 5e-3, 10000),
    "SGLDLPKernel": (lambda z, t: mc.SGLDLPKernel(_grad(MODEL32, z), FMT, temperature=t), "gradient", 5e-3, 10000),
    "FullMH": (lambda z, t: mc.FullMH(MODEL64), "mh", 0.3, 6000),
    "TunaMH": (lambda z, t: mc.TunaMH(MODEL64.with_center(CENTRE), chi=1e-3), "mh", 0.3, 6000),
    "TFMH": (lambda z, t: mc.TFMH(MODEL64.with_center(CENTRE)), "mh", 0.2, 6000),
    "FlyMC": (lambda z, t: mc.FlyMC(MODEL64.flymc_bound(CENTRE), q=0.1), "mh", 0.3, 6000),
}


def test_every_exported_kernel_is_in_the_table():
    kernels = {name for name, obj in vars(mc).items()
               if inspect.isclass(obj) and callable(getattr(obj, "init", None)) and callable(getattr(obj, "step", None))
               and not issubclass(obj, torch.optim.Optimizer)}
    assert kernels == set(TABLE), f"add {sorted(kernels - set(TABLE))} to the table"


def _init(family):
    return torch.zeros(1, dtype=torch.float64 if family == "mh" else torch.float32)


# SGHMC without an estimate of the gradient noise (B̂ = 0, Chen et al.'s practical form) is
# widened by minibatch noise; here it takes the full data, its minibatch behaviour is in test_sgmcmc
BATCH = {"SGHMCKernel": N}


def _run(name, steps, step_size, seed, zero=False, temperature=1.0, batch=None):
    batch = batch or BATCH.get(name, 20)
    build, family, _, _ = TABLE[name]
    kernel = build(zero, temperature)
    gen, batches = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1000)
    state = kernel.init(_init(family)) if name != "FlyMC" else kernel.init(_init(family), gen)
    out, infos = [], []
    for _ in range(steps):
        mb = torch.randint(N, (batch,), generator=batches) if family == "gradient" else None
        state, info = kernel.step(gen, state, mb, step_size)
        out.append(state.position.double().clone())
        infos.append(info)
    return torch.stack(out), infos


@pytest.mark.parametrize("name", list(TABLE))
def test_same_generator_same_bits(name):
    step = TABLE[name][2]
    a, info = _run(name, 30, step, seed=5)
    b, _ = _run(name, 30, step, seed=5)
    c, _ = _run(name, 30, step, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for i in info:  # the kernel contract's cost fields (a Poisson minibatch may be empty)
        assert i.grad_evals >= 0 and i.data_touched >= 0 and (i.accepted is None or isinstance(i.accepted, bool))
    assert sum(i.data_touched for i in info) > 0


@pytest.mark.parametrize("name", [n for n, v in TABLE.items() if v[1] == "gradient"])
def test_zero_noise_and_zero_gradient_leave_the_position(name):
    build, family, step, _ = TABLE[name]
    kernel = build(True, 0.0)
    start = torch.tensor([0.6875])  # on FMT's grid
    state = kernel.init(start.clone())
    for _ in range(12):
        state, _ = kernel.step(torch.Generator().manual_seed(0), state, torch.arange(5), step)
    assert torch.equal(state.position, start)


@pytest.mark.parametrize("name", list(TABLE))
def test_moments_within_k_mcse(name):
    _, family, step, steps = TABLE[name]
    chain, _ = _run(name, steps, step, seed=11)
    draws = chain[steps // 5:, 0]  # burn-in: 20%
    x = draws.reshape(1, -1)
    ess_mean = float(mc.ess(x, method="mean"))
    assert ess_mean > 100, f"{name}: chain barely moves (ESS {ess_mean:.0f})"
    mean_se = math.sqrt(float(draws.var()) / ess_mean)
    assert abs(float(draws.mean()) - EXACT_MEAN) < K * mean_se + 0.02 * math.sqrt(EXACT_VAR), name
    # the variance: the MCSE of the mean of (θ - μ)², with its own ESS
    sq = (draws - EXACT_MEAN) ** 2
    var_se = math.sqrt(float(sq.var()) / float(mc.ess(sq.reshape(1, -1), method="mean")))
    assert abs(float(sq.mean()) - EXACT_VAR) < K * var_se + 0.05 * EXACT_VAR, name
