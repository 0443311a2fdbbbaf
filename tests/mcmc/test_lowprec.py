"""Low-precision SGLD (Zhang, Wilson & De Sa, ICML 2022): kernels and the optimizer shell.

The table of samplers goes through the package's checks (same generator -> same bits; zero
noise and zero gradient leave the position unchanged; grid membership), and the stationary
variance on a Gaussian target is compared with its closed form: for U(θ) = θ²/2 one step is
θ' = (1 - ε/2) θ + noise, and a step whose noise has mean 0 and variance exactly ε (float32
SGLD, and VC SGLDLP-L by construction) has the stationary variance ε / (1 - (1 - ε/2)²).
Naive SGLDLP-L adds the rounding variance and must fail that check (the test's power).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relaxtorch.mcmc import SGLDLP, SGLDLPKernel, lp_update
from relaxtorch.numbers import BlockFloat, FixedPoint, FloatFormat, quantize

from ..numbers.reference import value_set

CONFIGS = [("full", True), ("low", False), ("low", True)]  # SGLDLP-F, naive SGLDLP-L, VC SGLDLP-L
FMTS = [FixedPoint(8, 4), BlockFloat(8), FloatFormat(4, 3)]


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _std_normal(w, batch):
    return {k: -v for k, v in w.items()} if isinstance(w, dict) else -w


def _run(kernel, x0, steps, eps, seed=0, batch=None):
    g = _gen(seed)
    s = kernel.init(x0)
    batch = torch.zeros(3) if batch is None else batch
    for _ in range(steps):
        s, info = kernel.step(g, s, batch, eps)
    return s, info


@pytest.mark.parametrize("acc,vc", CONFIGS)
@pytest.mark.parametrize("fmt", FMTS, ids=repr)
def test_same_generator_same_bits(fmt, acc, vc):
    k = SGLDLPKernel(_std_normal, fmt, accumulator=acc, variance_correction=vc)
    x0 = {"a": torch.randn(50, generator=_gen(1)), "b": torch.randn(3, 4, generator=_gen(2))}
    a, _ = _run(k, x0, 10, 0.01, seed=5)
    b, _ = _run(k, x0, 10, 0.01, seed=5)
    c, _ = _run(k, x0, 10, 0.01, seed=6)
    for key in x0:
        assert torch.equal(a.position[key].view(torch.int32), b.position[key].view(torch.int32))
        assert torch.equal(a.weights[key], b.weights[key])
    assert not torch.equal(a.position["a"], c.position["a"])


@pytest.mark.parametrize("acc,vc", CONFIGS)
@pytest.mark.parametrize("fmt", FMTS, ids=repr)
def test_zero_noise_zero_gradient_keeps_the_position(fmt, acc, vc):
    k = SGLDLPKernel(lambda w, b: torch.zeros_like(w), fmt, accumulator=acc, variance_correction=vc, temperature=0.0)
    x0 = torch.randn(200, generator=_gen(3))
    s0 = k.init(x0)
    s, info = _run(k, x0, 5, 0.1)
    assert torch.equal(s.position, s0.position) and s.step == 5
    assert (info.grad_evals, info.data_touched, info.accepted) == (3, 3, None)
    if acc == "full":
        assert torch.equal(s.position, x0)  # the float32 accumulator is the initial position


@pytest.mark.parametrize("acc,vc", CONFIGS)
@pytest.mark.parametrize("fmt", [FixedPoint(8, 4), FloatFormat(4, 3)], ids=repr)
def test_weights_are_on_the_grid(fmt, acc, vc):
    k = SGLDLPKernel(_std_normal, fmt, accumulator=acc, variance_correction=vc)
    s, _ = _run(k, torch.randn(500, generator=_gen(4)), 20, 0.003)
    assert np.isin(s.weights.double().numpy(), value_set(fmt).values).all()
    if acc == "low":
        assert s.weights is s.position


# ---------------------------------------------------------------- stationary variance

def _stationary_var(eps, s2=1.0):
    r = 1 - eps / (2 * s2)
    return eps / (1 - r * r)


@pytest.mark.parametrize("fmt,sd,eps,n,steps", [(FixedPoint(8, 3), 1.0, 2.0**-8, 30_000, 600),
                                                (BlockFloat(6), 0.7, 2.0**-6, 20_000, 300)], ids=repr)
def test_stationary_variance_on_a_gaussian(fmt, sd, eps, n, steps):
    """n independent chains on N(0, sd²) (one tensor; n < 32768 keeps each op on one thread) for
    about 1.2 sd²/ε steps from the stationary law.  FixedPoint(8, 3): gap 2**-3, ε = 2**-8 = gap²/4.
    BlockFloat(6), one block: at sd 0.7 its largest magnitude stays in [2, 4), shared exponent 1,
    gap 2**-3, ε = 2**-6 >= gap²/4 (a block whose exponent grows is rounded onto the coarser grid:
    vc_quantize's documented limit).  Naive rounding adds about gap²/6 to each step's variance ε."""
    v = _stationary_var(eps, sd * sd)
    x0 = math.sqrt(v) * torch.randn(n, generator=_gen(7))
    results = {}
    for acc, vc in CONFIGS:
        k = SGLDLPKernel(lambda w, b: w / (-sd * sd), fmt, accumulator=acc, variance_correction=vc)
        s, _ = _run(k, x0, steps, eps, seed=8)
        y = s.position.double()
        se_var = v * math.sqrt(2.0 / n)
        results[(acc, vc)] = ((y.var().item() - v) / se_var, y.mean().item() / math.sqrt(v / n))
    for key in [("full", True), ("low", True)]:  # SGLDLP-F and VC SGLDLP-L: exact up to saturation
        z_var, z_mean = results[key]
        assert abs(z_var) < 5 and abs(z_mean) < 5, (key, results)
    assert results[("low", False)][0] > 10, results  # naive SGLDLP-L: far too wide


# ---------------------------------------------------------------- the optimizer shell

def _mean_nll_grad(w):
    """A fixed smooth gradient (of the mean NLL of a Gaussian model centred at 0.5)."""
    return torch.tanh(w - 0.5)


@pytest.mark.parametrize("acc,vc", CONFIGS)
@pytest.mark.parametrize("fmt", [FixedPoint(8, 4), BlockFloat(8, dim=0)], ids=repr)
def test_shell_matches_kernel_bit_for_bit(fmt, acc, vc):
    n_data, lr, wd = 200, 1e-2, 0.05
    x0 = torch.randn(6, 5, generator=_gen(9))
    p = torch.nn.Parameter(x0.clone())
    opt = SGLDLP([p], lr=lr, data_size=n_data, fmt=fmt, accumulator=acc, variance_correction=vc,
                 weight_decay=wd, generator=_gen(10))
    k = SGLDLPKernel(lambda w, b: _mean_nll_grad(w).add(w, alpha=wd).mul(-n_data), fmt, accumulator=acc,
                     variance_correction=vc)
    s, g = k.init(x0), _gen(10)
    assert torch.equal(p.detach(), s.weights)
    for _ in range(15):
        p.grad = _mean_nll_grad(p.detach())
        opt.step()
        s, _ = k.step(g, s, torch.zeros(1), 2 * lr / n_data)
        assert torch.equal(p.detach().view(torch.int32), s.weights.view(torch.int32))
    if acc == "full":
        assert torch.equal(opt.state[p]["accumulator"], s.position)


def test_shell_with_a_model_and_a_scheduler():
    torch.manual_seed(0)  # only for the data below; the sampler draws from its own generator
    X, y = torch.randn(64, 3), torch.randn(64, 1)
    model = torch.nn.Linear(3, 1)
    opt = SGLDLP(model.parameters(), lr=1e-2, data_size=64, fmt=BlockFloat(8), generator=3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 ** k)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1e-2 / 8 and opt.sampler == "VC SGLDLP-L"
    for prm in model.parameters():
        assert torch.equal(quantize(prm.detach(), BlockFloat(8), "nearest"), prm.detach())
    frozen = [prm.detach().clone() for prm in model.parameters()]
    opt.param_groups[0]["lr"] = 0.0  # a group at lr 0 is left as it is
    opt.step()
    assert all(torch.equal(a, prm.detach()) for a, prm in zip(frozen, model.parameters()))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("acc,vc", CONFIGS)
def test_divergence_raises_naming_step_and_sampler(acc, vc):
    k = SGLDLPKernel(lambda w, b: torch.full_like(w, math.inf), FixedPoint(8, 4), accumulator=acc,
                     variance_correction=vc)
    g, s = _gen(), k.init(torch.zeros(4))
    with pytest.raises(FloatingPointError, match=rf"{k.name}: .* at step 1"):
        k.step(g, s, torch.zeros(1), 0.1)  # a fixed-point grid would saturate inf: still caught
    p = torch.nn.Parameter(torch.zeros(3))
    opt = SGLDLP([p], lr=0.1, data_size=10, fmt=FixedPoint(8, 4), accumulator=acc, variance_correction=vc)
    p.grad = torch.full((3,), math.nan)
    with pytest.raises(FloatingPointError, match="at step 1"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))  # nothing written


def test_bad_arguments():
    fx = FixedPoint(8, 4)
    for kw, name in [(dict(fmt="int8"), "fmt"), (dict(accumulator="half"), "accumulator"),
                     (dict(variance_correction=1), "variance_correction"), (dict(temperature=-1.0), "temperature"),
                     (dict(grad_fmt=3), "grad_fmt")]:
        with pytest.raises(ValueError, match=f"Invalid {name}"):
            SGLDLPKernel(_std_normal, **{"fmt": fx, **kw})
    k = SGLDLPKernel(_std_normal, fx)
    with pytest.raises(ValueError, match="Invalid step_size"):
        k.step(_gen(), k.init(torch.zeros(2)), torch.zeros(1), 0.0)
    p = [torch.nn.Parameter(torch.zeros(2))]
    for kw, name in [(dict(lr=-1.0), "lr"), (dict(data_size=0), "data_size"), (dict(weight_decay=-0.1), "weight_decay"),
                     (dict(temperature=math.nan), "temperature"), (dict(generator="x"), "generator"),
                     (dict(accumulator="x"), "accumulator")]:
        with pytest.raises(ValueError, match=f"Invalid {name}"):
            SGLDLP(p, **{"lr": 0.1, "data_size": 10, "fmt": fx, **kw})


def test_grad_fmt_rounds_the_gradient():
    g = _gen(11)
    pos, w, means = lp_update([torch.zeros(1000)], [torch.full((1000,), 0.3)], g, 0.5, 0.0, FixedPoint(8, 4),
                              "full", True, FixedPoint(8, 1))
    assert set(torch.unique(means[0] * 8).tolist()) == {0.0, 1.0}  # (ε/2) Q_G(0.3), Q_G(0.3) in {0, 0.5}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("acc,vc", CONFIGS)
def test_cuda_kernel(acc, vc):
    k = SGLDLPKernel(_std_normal, FixedPoint(8, 3), accumulator=acc, variance_correction=vc)
    g = _gen(12, "cuda")
    s = k.init(torch.randn(100_000, device="cuda", generator=g) * 0.7)
    for _ in range(300):
        s, _ = k.step(g, s, torch.zeros(1, device="cuda"), 2.0**-8)
    assert s.position.device.type == "cuda" and torch.isfinite(s.position).all()
    if acc == "low":
        assert torch.equal(s.position * 8, torch.round(s.position * 8))
