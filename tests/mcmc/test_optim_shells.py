"""The torch.optim shells: on a Bayesian linear regression (nn.Linear) each shell matches its kernel bit
for bit given the same generator and gradients, also under an LR scheduler (the cyclical cosine of
cSG-MCMC); SGLD at temperature 0 is SGD; AMAGOLD through the shell recovers the closed-form
posterior; bad arguments raise ValueError naming them; a non-finite update raises before any
parameter is written."""
import math

import pytest
import torch

from relaxtorch.mcmc import AMAGOLD, SGHMC, SGLD, AMAGOLDKernel, SGHMCKernel, SGLDKernel, cyclical_lr
from relaxtorch.mcmc._tree import leaves, vdot

N, SIGMA2, WD = 64, 0.25, 0.02


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.5, -0.5], dtype=torch.float64) + 0.3 + 0.5 * torch.randn(N, generator=g,
                                                                                      dtype=torch.float64)
    return x, y


def make_model():
    m = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.2, 0.1]]))
        m.bias.fill_(-0.1)
    return m


def loss_fn(out, y):
    """Minibatch mean negative log-likelihood of y ~ N(f(x), SIGMA2) (up to a constant)."""
    return ((out.squeeze(-1) - y) ** 2).mean() / (2 * SIGMA2)


def kernel_grad(recorded, wd):
    """The shell's gradient convention written out, ∇log p̂ = -N (∇ mean loss + wd θ), on the gradients
    the shell was given (``recorded``: the same tensors, so no BLAS result is compared across calls)."""
    def grad(position, idx):
        return {k: (g.add(position[k], alpha=wd) if wd else g).mul(-N) for k, g in recorded.items()}
    return grad


def full_energy_of(x, y, w, b):
    """N × the full-data mean loss, without a matmul (elementwise products and sums only)."""
    return N * loss_fn((x * w[0]).sum(-1, keepdim=True) + b, y)


def kernel_energy(x, y, wd):
    def energy(position):
        u = float(full_energy_of(x, y, position["weight"], position["bias"]))
        if wd:
            u += 0.5 * N * wd * float(vdot(leaves(position), leaves(position)))
        return u
    return energy


def batches(steps, size=8, seed=1):
    return torch.randint(N, (steps, size), generator=torch.Generator().manual_seed(seed))


def shell_and_kernel(name, model, x, y, wd, schedule=None, steps=40):
    """Run the shell on ``model`` and the kernel on a copy of its parameters; yield both after each step."""
    gen_s, gen_k = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    lr, recorded = 0.05, {}
    common = dict(lr=lr, data_size=N, weight_decay=wd, generator=gen_s)
    if name == "sgld":
        opt = SGLD(model.parameters(), **common)
        kernel, to_step = SGLDKernel(kernel_grad(recorded, wd)), lambda lr: 2.0 * lr / N
    elif name == "sghmc":
        opt = SGHMC(model.parameters(), friction=0.3, **common)
        kernel, to_step = SGHMCKernel(kernel_grad(recorded, wd), friction=0.3), lambda lr: lr / N
    else:
        opt = AMAGOLD(model.parameters(), friction=0.3, correction_every=4,
                      full_energy=lambda: full_energy_of(x, y, model.weight, model.bias), **common)
        kernel = AMAGOLDKernel(kernel_grad(recorded, wd), kernel_energy(x, y, wd), friction=0.3,
                               correction_every=4, data_size=N)
        to_step = lambda lr: lr / N
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    state = kernel.init({k: v.detach().clone() for k, v in model.named_parameters()})
    for idx in batches(steps):
        step_size = to_step(opt.param_groups[0]["lr"])
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        recorded.update({k: p.grad for k, p in model.named_parameters()})
        opt.step()
        state, info = kernel.step(gen_k, state, idx, step_size)
        if sched:
            sched.step()
        yield opt, state, info


@pytest.mark.parametrize("wd", [0.0, WD])
@pytest.mark.parametrize("schedule", [None, cyclical_lr(40, 4)], ids=["constant", "cyclical"])
@pytest.mark.parametrize("name", ["sgld", "sghmc", "amagold"])
def test_shell_matches_kernel_bit_for_bit(data, name, schedule, wd):
    x, y = data
    model = make_model()
    lrs, accepted = set(), []
    for opt, state, info in shell_and_kernel(name, model, x, y, wd, schedule):
        live = state.trajectory if name == "amagold" else state.position
        for k, p in model.named_parameters():
            assert torch.equal(p.detach(), live[k]), k
        if name == "amagold":
            for s, k in zip(opt.sample(), state.position):
                assert torch.equal(s, state.position[k])
            if info.accepted is not None:
                accepted.append(info.accepted)
                assert opt.rounds == state.rounds and opt.accepted == state.accepted
        lrs.add(opt.param_groups[0]["lr"])
    assert len(lrs) == (1 if schedule is None else 10)
    if name == "amagold":
        assert len(accepted) == 10 and True in accepted and False in accepted  # both branches of the MH test


def test_cyclical_lr_is_the_papers_schedule():
    f = cyclical_lr(1000, 4)
    for k in (1, 100, 249, 250, 251, 999):  # the paper's k is 1-based: α_k = α₀/2 (cos(π mod(k-1, L)/L) + 1)
        assert f(k - 1) == pytest.approx(0.5 * (math.cos(math.pi * ((k - 1) % 250) / 250) + 1), abs=1e-15)
    assert f(0) == 1.0 and f(250) == 1.0 and 0 < f(249) < 1e-3
    with pytest.raises(ValueError, match="Invalid cycles"):
        cyclical_lr(3, 4)


def test_sgld_at_temperature_zero_is_sgd(data):
    x, y = data
    a, b = make_model(), make_model()
    sgld = SGLD(a.parameters(), lr=0.05, data_size=N, temperature=0.0, weight_decay=WD)
    sgd = torch.optim.SGD(b.parameters(), lr=0.05, weight_decay=WD)
    for idx in batches(30):
        for m, opt in ((a, sgld), (b, sgd)):
            opt.zero_grad()
            loss_fn(m(x[idx]), y[idx]).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_amagold_shell_recovers_the_closed_form_posterior(data):
    """Prior N(0, 1/(N wd)) on weight and bias (weight decay), Gaussian likelihood: the posterior is
    N(Λ⁻¹ Xᵀy/σ², Λ⁻¹) with Λ = N wd I + XᵀX/σ², X with a column of ones."""
    x, y = data
    xb = torch.cat([x, torch.ones(N, 1, dtype=torch.float64)], 1)
    precision = N * WD * torch.eye(3, dtype=torch.float64) + xb.T @ xb / SIGMA2
    cov = torch.linalg.inv(precision)
    mean = cov @ xb.T @ y / SIGMA2
    model = make_model()
    opt = AMAGOLD(model.parameters(), lr=0.02, friction=0.5, correction_every=4, data_size=N, weight_decay=WD,
                  full_energy=lambda: N * loss_fn(model(x), y), generator=torch.Generator().manual_seed(3))
    draws = []
    for idx in batches(16_000, size=16, seed=5):
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        w, b = opt.sample()
        draws.append(torch.cat([w.flatten(), b]))
    d = torch.stack(draws[2000:]) - mean
    f = torch.cat([d, d ** 2], 1)
    exact = torch.cat([torch.zeros(3, dtype=torch.float64), cov.diagonal()])
    nb = 25
    m = len(f) // nb
    mcse = f[: m * nb].reshape(nb, m, -1).mean(1).std(0) / math.sqrt(nb)
    assert ((f.mean(0) - exact).abs() <= 4 * mcse).all(), (f.mean(0), exact, mcse)
    assert (mcse[3:] < 0.1 * cov.diagonal()).all()  # precise enough to mean something
    assert 0.3 < opt.acceptance_rate < 1


@pytest.mark.parametrize("make,arg", [
    (lambda ps: SGLD(ps, lr=0.0, data_size=10), "lr"),
    (lambda ps: SGLD(ps, lr=-1.0, data_size=10), "lr"),
    (lambda ps: SGLD(ps, lr=math.inf, data_size=10), "lr"),
    (lambda ps: SGLD(ps, lr=0.1, data_size=0), "data_size"),
    (lambda ps: SGLD(ps, lr=0.1, data_size=10, temperature=-0.5), "temperature"),
    (lambda ps: SGLD(ps, lr=0.1, data_size=10, weight_decay=-1.0), "weight_decay"),
    (lambda ps: SGLD(ps, lr=0.1, data_size=10, generator="seed"), "generator"),
    (lambda ps: SGHMC(ps, lr=0.1, friction=0.0, data_size=10), "friction"),
    (lambda ps: SGHMC(ps, lr=0.1, friction=1.01, data_size=10), "friction"),
    (lambda ps: AMAGOLD(ps, lr=0.1, friction=0.5, correction_every=0, full_energy=lambda: 0, data_size=10),
     "correction_every"),
    (lambda ps: AMAGOLD(ps, lr=0.1, friction=0.5, correction_every=3, full_energy=None, data_size=10),
     "full_energy"),
    (lambda ps: AMAGOLD([{"params": ps[:1]}, {"params": ps[1:], "temperature": 2.0}], lr=0.1, friction=0.5,
                        correction_every=3, full_energy=lambda: 0, data_size=10), "temperature"),
])
def test_bad_arguments_raise_naming_them(make, arg):
    ps = list(make_model().parameters())
    with pytest.raises(ValueError, match=f"Invalid {arg}"):
        make(ps)


@pytest.mark.parametrize("cls", [SGLD, SGHMC, AMAGOLD])
def test_non_finite_update_raises_before_writing(data, cls):
    x, y = data
    model = make_model()
    extra = {} if cls is SGLD else dict(friction=0.5)
    if cls is AMAGOLD:
        extra.update(correction_every=3, full_energy=lambda: N * loss_fn(model(x), y))
    opt = cls(model.parameters(), lr=0.01, data_size=N, **extra)
    for step in range(1, 4):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        if step == 3:
            model.bias.grad.fill_(math.nan)
            before = [p.detach().clone() for p in model.parameters()]
            with pytest.raises(FloatingPointError, match=rf"{cls.__name__}.*step 3"):
                opt.step()
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
        else:
            opt.step()


def test_state_dict_round_trip_continues_the_chain(data):
    """SGHMC's momentum lives in the optimizer state: a checkpoint restores it."""
    x, y = data
    a = make_model()
    opt = SGHMC(a.parameters(), lr=0.05, friction=0.3, data_size=N, generator=torch.Generator().manual_seed(1))
    for idx in batches(5):
        opt.zero_grad()
        loss_fn(a(x[idx]), y[idx]).backward()
        opt.step()
    b = make_model()
    b.load_state_dict(a.state_dict())
    opt_b = SGHMC(b.parameters(), lr=0.05, friction=0.3, data_size=N, generator=torch.Generator())
    opt_b.load_state_dict(opt.state_dict())
    opt_b.generator.set_state(opt.generator.get_state())
    opt.zero_grad()
    loss_fn(a(x[:8]), y[:8]).backward()
    for p, q in zip(a.parameters(), b.parameters()):
        q.grad = p.grad.clone()  # the same gradient (no BLAS result compared across calls)
    opt.step()
    opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [SGLD, SGHMC, AMAGOLD])
def test_cuda_shells_same_bits(cls):
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=g, dtype=torch.float64).to(dev)
    y = (x.sum(1) + 0.1).to(dev)

    def run():
        model = make_model().to(dev)
        extra = {} if cls is SGLD else dict(friction=0.5)
        if cls is AMAGOLD:
            extra.update(correction_every=3, full_energy=lambda: full_energy_of(x, y, model.weight, model.bias))
        opt = cls(model.parameters(), lr=0.01, data_size=N, generator=torch.Generator(device=dev).manual_seed(1),
                  **extra)
        for idx in batches(12):
            opt.zero_grad()
            loss_fn(model(x[idx.to(dev)]), y[idx.to(dev)]).backward()
            opt.step()
        return [p.detach() for p in model.parameters()]

    a, b = run(), run()
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in a)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
