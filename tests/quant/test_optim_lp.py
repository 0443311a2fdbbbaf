"""OptimLP: exact when off, formats hold after every step, the accumulator against a hand-written
loop, bit-identical resume, the torch.optim interface, the bit count, eager argument checks."""
import copy
import io
import math

import pytest
import torch
from torch import nn

from relaxtorch.numbers import BlockFloat, FixedPoint, quantize
from relaxtorch.numbers import presets as P
from relaxtorch.optim import SWALP
from relaxtorch.quant import OptimLP

from .helpers import representable as _representable


def model_and_data(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 2))
    g = torch.Generator().manual_seed(seed + 100)
    batches = [(torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)) for _ in range(8)]
    return model, batches


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def train(model, opt, batches, after_step=None):
    for batch in batches:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
        if after_step is not None:
            after_step()


OPTIMIZERS = {
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3, foreach=False),
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "adamw_amsgrad": lambda ps: torch.optim.AdamW(ps, lr=1e-2, amsgrad=True),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_formats_none_is_exactly_the_wrapped_optimizer(name):
    m1, batches = model_and_data()
    m2 = copy.deepcopy(m1)
    bare = OPTIMIZERS[name](m1.parameters())
    wrapped = OptimLP(OPTIMIZERS[name](m2.parameters()), generator=0)
    train(m1, bare, batches)
    train(m2, wrapped, batches)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
        for k, v in bare.state[p1].items():
            assert torch.equal(v, wrapped.state[p2][k])


FORMATS = [
    dict(weight=P.FP8_E4M3, grad=P.FP8_E5M2, momentum=P.FP8_E4M3),
    dict(weight=FixedPoint(8, 5), grad=FixedPoint(8, 7), momentum=FixedPoint(8, 5), acc=P.FP16),
    dict(weight=P.BFP8, grad=BlockFloat(8, dim=0), momentum=P.BFP8, acc=P.FP32),
    dict(weight=P.MXFP8_E4M3, grad=P.MXFP8_E5M2, momentum=P.MXFP8_E4M3, acc=P.BF16),
]


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("formats", FORMATS, ids=lambda f: "-".join(repr(v) for v in f.values()))
def test_every_stored_number_is_in_its_format_after_each_step(name, formats):
    model, batches = model_and_data()
    opt = OptimLP(OPTIMIZERS[name](model.parameters()), **formats, generator=1)

    def check():
        for p in model.parameters():
            assert _representable(p.detach(), formats["weight"])
            assert _representable(p.grad, formats["grad"])
            if "acc" in formats:
                assert _representable(opt._acc[p], formats["acc"])
            for key, v in opt.state[p].items():
                if key == "step":
                    assert v.item() == opt.state[p]["step"].item()  # counters are not rounded
                else:
                    assert v.shape == p.shape and _representable(v, formats["momentum"])

    train(model, opt, batches, check)
    assert float(loss_fn(model, batches[0]).detach()) < 10  # it still learns something finite


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_accumulator_matches_hand_written_sgd_momentum(weight_decay):
    """Reference: q(grad) -> momentum update -> acc update -> acc rounded -> weight = q(acc) -> q(momentum).

    The draws from the generator happen in this order: all gradients, then per
    parameter the weight (the accumulator rounds to nearest: no draw), then all
    momentum buffers.  Arithmetic uses torch's own ops, as SGD's loop does.
    """
    fw, fg, fm, fa = P.FP8_E4M3, P.FP8_E5M2, FixedPoint(10, 8), P.FP16
    lr, mom = 0.05, 0.9
    model, batches = model_and_data(seed=3)
    ref_model = copy.deepcopy(model)
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=lr, momentum=mom, weight_decay=weight_decay,
                                  foreach=False), weight=fw, grad=fg, momentum=fm, acc=fa,
                  generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    params = list(ref_model.parameters())
    acc = [quantize(p.detach(), fa, "nearest") for p in params]
    buf = [None] * len(params)
    for batch in batches:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
        ref_model.zero_grad()
        loss_fn(ref_model, batch).backward()
        with torch.no_grad():
            grads = [quantize(p.grad, fg, "stochastic", generator=gen) for p in params]
            for i in range(len(params)):
                d = grads[i].add(acc[i], alpha=weight_decay) if weight_decay else grads[i]
                buf[i] = d.clone() if buf[i] is None else buf[i].mul(mom).add(d)
                acc[i] = quantize(acc[i].add(buf[i], alpha=-lr), fa, "nearest")
                params[i].copy_(quantize(acc[i], fw, "stochastic", generator=gen))
            buf = [quantize(b, fm, "stochastic", generator=gen) for b in buf]
        for i, p in enumerate(model.parameters()):
            assert torch.equal(p.grad, grads[i])
            assert torch.equal(opt._acc[p], acc[i])
            assert torch.equal(p.detach(), params[i].detach())
            assert torch.equal(opt.state[p]["momentum_buffer"], buf[i])


def test_accumulator_keeps_updates_smaller_than_the_weight_grid():
    """lr * grad far below half an FP8 step: lost with nearest-rounded weights, kept by an FP32 accumulator."""
    def run(acc):
        w = nn.Parameter(torch.ones(4))
        opt = OptimLP(torch.optim.SGD([w], lr=1e-3), weight=P.FP8_E4M3, weight_rounding="nearest", acc=acc)
        for _ in range(200):
            w.grad = torch.ones(4)
            opt.step()
        return w.detach()
    assert torch.equal(run(None), torch.ones(4))  # 1 - 1e-3 rounds back to 1 every step
    assert torch.equal(run(P.FP32), torch.full((4,), 0.8125))  # acc = 0.8 -> nearest FP8 is 0.8125


@pytest.mark.parametrize("name", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("generator", [7, "torch"])
def test_state_dict_round_trip_continues_bit_identically(name, generator):
    formats = dict(weight=P.FP8_E4M3, grad=P.FP8_E5M2, momentum={"momentum_buffer": P.FP8_E4M3,
                   "exp_avg": P.FP8_E4M3, "exp_avg_sq": P.BF16}, acc=P.FP16)

    def make(seed):
        model, batches = model_and_data(seed)
        gen = seed if generator != "torch" else torch.Generator().manual_seed(seed)
        return model, batches, OptimLP(OPTIMIZERS[name](model.parameters()), **formats, generator=gen)

    model, batches, opt = make(0)
    train(model, opt, batches[:4])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train(model, opt, batches[4:])
    buf.seek(0)
    saved = torch.load(buf)
    other, _, opt2 = make(1)  # different init and generator seed: everything comes from the checkpoint
    other.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    train(other, opt2, batches[4:])
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q) and torch.equal(opt._acc[p], opt2._acc[q])
        for k, v in opt.state[p].items():
            assert torch.equal(v, opt2.state[q][k])


def test_is_a_torch_optimizer_with_schedulers_hooks_and_groups():
    model, batches = model_and_data()
    inner = torch.optim.SGD(model[0].parameters(), lr=0.1, momentum=0.9)
    opt = OptimLP(inner, weight=P.FP8_E4M3, grad=P.FP8_E5M2, generator=0)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.01})  # a generator, as torch allows
    assert len(inner.param_groups) == 2
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, batches[:2], sched.step)
    assert calls == ["pre", "post"] * 2
    assert inner.param_groups[0]["lr"] == pytest.approx(0.025) and inner.param_groups[1]["lr"] == pytest.approx(0.0025)
    assert all(_representable(p.detach(), P.FP8_E4M3) for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    # the learning rate survives a state-dict round trip and load keeps the groups in sync
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt.param_groups is inner.param_groups and inner.param_groups[1]["lr"] == pytest.approx(0.0025)
    assert "OptimLP(weight=FP8_E4M3 (stochastic), grad=FP8_E5M2 (stochastic)" in repr(opt)
    swa = SWALP(copy.deepcopy(opt), start=1)  # composes with the SWALP wrapper; copies as a whole
    assert isinstance(swa.optimizer, OptimLP) and swa.optimizer.optimizer is not inner


def test_closure_grad_scaling_and_params_without_grad():
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    frozen = nn.Parameter(torch.tensor([0.3]))
    opt = OptimLP(torch.optim.SGD([w, frozen], lr=0.1), grad=P.FP8_E5M2, weight=P.FP8_E4M3, acc=P.FP32,
                  grad_scaling=0.25, generator=4)

    def closure():
        opt.zero_grad()
        loss = (w ** 3).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == 1 - 8 + 27
    gen = torch.Generator().manual_seed(4)
    assert torch.equal(w.grad, quantize(3 * torch.tensor([1.0, 4.0, 9.0]) * 0.25, P.FP8_E5M2, "stochastic",
                                        generator=gen))
    assert frozen.grad is None and frozen.item() == pytest.approx(0.3) and frozen not in opt._acc


def test_rounding_shorthand_and_defaults():
    params = [nn.Parameter(torch.ones(2))]
    assert OptimLP(torch.optim.SGD(params, lr=1)).roundings == {
        "weight": "stochastic", "grad": "stochastic", "momentum": "stochastic", "acc": "nearest"}
    opt = OptimLP(torch.optim.SGD(params, lr=1), rounding="nearest", grad_rounding="down")
    assert opt.roundings == {"weight": "nearest", "grad": "down", "momentum": "nearest", "acc": "nearest"}


def test_reset_accumulators_restarts_from_the_weights():
    w = nn.Parameter(torch.ones(2))
    opt = OptimLP(torch.optim.SGD([w], lr=0.01), weight=P.FP8_E4M3, weight_rounding="nearest", acc=P.FP32)
    w.grad = torch.ones(2)
    opt.step()
    with torch.no_grad():
        w.fill_(4.0)
    opt.reset_accumulators()
    w.grad = torch.ones(2)
    opt.step()
    assert torch.equal(opt._acc[w], torch.full((2,), 3.99))
    assert torch.equal(w.detach(), torch.full((2,), 4.0))


def test_memory_counts_each_role_at_its_bits():
    w = nn.Parameter(torch.zeros(4, 64))
    b = nn.Parameter(torch.zeros(4))
    sgd = OptimLP(torch.optim.SGD([w, b], lr=0.1, momentum=0.9), weight=P.FP8_E4M3, momentum=P.FP8_E4M3,
                  acc=P.FP16)
    assert sgd.memory_bits() == {"weight": 8 * 260}  # state and accumulators appear at the first step
    w.grad, b.grad = torch.ones(4, 64), torch.ones(4)
    sgd.step()
    assert sgd.memory_bits() == {"weight": 8 * 260, "acc": 16 * 260, "momentum_buffer": 8 * 260}
    assert sgd.bits_per_param() == 32 and sgd.memory_bytes()["acc"] == 520
    # MX: 8-bit elements plus one 8-bit scale per 32-element block (w: 8 blocks, b: 1 block)
    mx = OptimLP(torch.optim.Adam([w, b]), weight=P.MXFP8_E4M3, momentum={"exp_avg": P.MXFP8_E4M3})
    mx.step()
    assert mx.memory_bits() == {"weight": 8 * 260 + 8 * 9, "exp_avg": 8 * 260 + 8 * 9,
                                "exp_avg_sq": 32 * 260, "step": 2 * 32}
    assert mx.bits_per_param() == pytest.approx((2 * (8 * 260 + 72) + 32 * 260 + 64) / 260)
    plain = OptimLP(torch.optim.SGD([w, b], lr=0.1, momentum=0.9))
    plain.step()
    assert plain.bits_per_param() == 64
    bfp = OptimLP(torch.optim.SGD([w], lr=0.1), weight=BlockFloat(8, dim=0))
    assert bfp.memory_bits() == {"weight": 8 * 256 + 8 * 4}  # one shared exponent per row


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"weight": "fp8"}, TypeError, "Invalid weight: 'fp8'"),
    ({"grad": torch.bfloat16}, TypeError, "Invalid grad"),
    ({"acc": 16}, TypeError, "Invalid acc"),
    ({"momentum": "fp8"}, TypeError, "Invalid momentum"),
    ({"momentum": {"exp_avg": "fp8"}}, TypeError, "Invalid momentum\\['exp_avg'\\]"),
    ({"momentum": {1: P.FP16}}, TypeError, "Invalid momentum: key 1"),
    ({"grad_rounding": "round"}, ValueError, "Invalid grad_rounding: 'round'"),
    ({"weight_rounding": None, "rounding": "nearst"}, ValueError, "Invalid rounding: 'nearst'"),
    ({"acc_rounding": 0}, ValueError, "Invalid acc_rounding"),
    ({"grad_scaling": 0}, ValueError, "Invalid grad_scaling: 0"),
    ({"grad_scaling": math.nan}, ValueError, "Invalid grad_scaling"),
    ({"grad_scaling": True}, ValueError, "Invalid grad_scaling"),
    ({"generator": "seed"}, TypeError, "Invalid generator"),
])
def test_bad_arguments_fail_at_construction(kwargs, exc, match):
    model, _ = model_and_data()
    with pytest.raises(exc, match=match):
        OptimLP(torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_bad_optimizer_and_parameter_dtypes():
    with pytest.raises(TypeError, match="Invalid optimizer"):
        OptimLP([nn.Parameter(torch.ones(2))], weight=P.FP16)
    with pytest.raises(ValueError, match="Invalid acc: FP16"):
        OptimLP(torch.optim.SGD([nn.Parameter(torch.ones(2, dtype=torch.bfloat16))], lr=1), acc=P.FP16)
    with pytest.raises(ValueError, match="Invalid optimizer: has a torch.float64"):
        OptimLP(torch.optim.SGD([nn.Parameter(torch.ones(2, dtype=torch.float64))], lr=1), weight=P.FP16)
    opt = OptimLP(torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=1), grad=P.FP16)
    with pytest.raises(ValueError, match="float64"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2, dtype=torch.float64))]})
    OptimLP(torch.optim.SGD([nn.Parameter(torch.ones(2, dtype=torch.float64))], lr=1))  # no formats: fine


def test_optimizers_that_reevaluate_the_closure_are_refused_at_construction():
    from relaxtorch.formats import FP8_E4M3
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="Invalid optimizer: LBFGS"):
        OptimLP(torch.optim.LBFGS([w]), weight=FP8_E4M3)
    OptimLP(torch.optim.Adam([w]), weight=FP8_E4M3)  # closure optional: accepted
