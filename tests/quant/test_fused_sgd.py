"""OptimLP's fused SGD step is bit-identical to the unfused path (OptimLP(fused=False) around
torch.optim.SGD): every option combination, every rounding, the same seeds, accumulators,
state-dict round trips that switch between the two, and the cases that must stay unfused."""
import copy
import io
import itertools

import pytest
import torch
from torch import nn

from relaxtorch.numbers import FixedPoint
from relaxtorch.numbers import presets as P
from relaxtorch.quant import OptimLP, _fused


def model_and_batches(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 40), nn.Tanh(), nn.Linear(40, 3))
    g = torch.Generator().manual_seed(seed + 1)
    return model, [(torch.randn(24, 6, generator=g), torch.randn(24, 3, generator=g)) for _ in range(5)]


def run(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def same(a, b):
    return a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def assert_same(m1, o1, m2, o2):
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert same(p1.detach(), p2.detach())
        assert same(p1.grad, p2.grad)
        assert o1.optimizer.state[p1].keys() == o2.optimizer.state[p2].keys()
        for k, v in o1.optimizer.state[p1].items():
            assert same(v, o2.optimizer.state[p2][k]), k
        if p1 in o1._acc:
            assert same(o1._acc[p1], o2._acc[p2])
    if o1.generator is not None:
        assert torch.equal(o1.generator.get_state(), o2.generator.get_state())


def pair(sgd_kwargs, lp_kwargs, seed=0):
    m1, batches = model_and_batches(seed)
    m2 = copy.deepcopy(m1)
    fused = OptimLP(torch.optim.SGD(m1.parameters(), **sgd_kwargs), **lp_kwargs)
    plain = OptimLP(torch.optim.SGD(m2.parameters(), **sgd_kwargs), **lp_kwargs, fused=False)
    return m1, fused, m2, plain, batches


SGD_OPTIONS = [dict(lr=0.05, momentum=m, weight_decay=wd, dampening=d, nesterov=n, foreach=fe)
               for m, wd, d, n, fe in itertools.product((0.0, 0.9), (0.0, 1e-2), (0.0, 0.3), (False, True),
                                                        (None, True))
               if not (n and (m == 0 or d != 0))]
FORMATS = [
    dict(weight=P.FP8_E4M3, grad=P.FP8_E5M2, momentum=P.FP8_E5M2),
    dict(weight=FixedPoint(8, 5), grad=FixedPoint(8, 7), momentum=FixedPoint(10, 7), acc=P.FP16),
    dict(weight=P.BF16, acc=P.FP32, grad_scaling=0.5),
    dict(grad=P.FP8_E4M3),
    dict(momentum={"momentum_buffer": P.BF16}, weight=P.FP4_E2M1),
    dict(),
]


@pytest.mark.parametrize("sgd", SGD_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("fmts", FORMATS, ids=lambda f: "-".join(f"{k}={v!r}" for k, v in f.items()) or "none")
def test_fused_matches_unfused_for_every_option(sgd, fmts):
    m1, fused, m2, plain, batches = pair(sgd, {**fmts, "generator": 3})
    run(m1, fused, batches)
    run(m2, plain, batches)
    assert_same(m1, fused, m2, plain)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic", "toward_zero", "down", "up", "nearest_away"])
@pytest.mark.parametrize("acc_rounding", ["nearest", "stochastic"])
def test_fused_matches_unfused_for_every_rounding(rounding, acc_rounding):
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    fmts = dict(weight=P.FP8_E4M3, grad=P.FP8_E5M2, momentum=P.FP8_E4M3, acc=P.BF16, rounding=rounding,
                acc_rounding=acc_rounding, generator=torch.Generator().manual_seed(11))
    m1, fused, m2, plain, batches = pair(sgd, fmts)
    m2 = copy.deepcopy(m1)  # the generator object must not be shared
    plain = OptimLP(torch.optim.SGD(m2.parameters(), **sgd), **{**fmts, "generator": 11}, fused=False)
    run(m1, fused, batches)
    run(m2, plain, batches)
    assert_same(m1, fused, m2, plain)


def test_the_fused_path_runs():
    m1, fused, _, _, batches = pair(dict(lr=0.05, momentum=0.9), dict(weight=P.FP8_E4M3, generator=0))
    calls = []
    orig = _fused.sgd_step
    try:
        _fused.sgd_step = lambda lp, params: calls.append(orig(lp, params)) or calls[-1]
        run(m1, fused, batches[:1])
    finally:
        _fused.sgd_step = orig
    assert calls == [True]


@pytest.mark.parametrize("first_fused", [True, False])
def test_state_dict_round_trips_switch_between_fused_and_unfused(first_fused):
    sgd = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    fmts = dict(weight=P.FP8_E4M3, grad=P.FP8_E5M2, momentum=P.FP8_E5M2, acc=P.FP16, acc_rounding="stochastic")
    m_ref, batches = model_and_batches()
    m_a = copy.deepcopy(m_ref)
    ref = OptimLP(torch.optim.SGD(m_ref.parameters(), **sgd), **fmts, generator=5, fused=False)
    run(m_ref, ref, batches + batches)
    a = OptimLP(torch.optim.SGD(m_a.parameters(), **sgd), **fmts, generator=5, fused=first_fused)
    run(m_a, a, batches)
    buf = io.BytesIO()
    torch.save({"model": m_a.state_dict(), "opt": a.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    m_b, _ = model_and_batches(seed=9)
    m_b.load_state_dict(ckpt["model"])
    b = OptimLP(torch.optim.SGD(m_b.parameters(), **sgd), **fmts, generator=0, fused=not first_fused)
    b.load_state_dict(ckpt["opt"])
    run(m_b, b, batches)
    assert_same(m_ref, ref, m_b, b)


def test_other_cases_stay_unfused_and_still_agree():
    m, batches = model_and_batches()
    cases = [
        OptimLP(torch.optim.SGD(m.parameters(), lr=0.1, maximize=True), weight=P.FP8_E4M3),
        OptimLP(torch.optim.SGD(m.parameters(), lr=0.1), weight=P.MXFP8_E4M3),
        OptimLP(torch.optim.Adam(m.parameters(), lr=0.1), weight=P.FP8_E4M3),
        OptimLP(torch.optim.SGD(m.parameters(), lr=torch.tensor(0.1)), weight=P.FP8_E4M3),
    ]
    for opt in cases:
        opt.zero_grad()
        ((m(batches[0][0]) - batches[0][1]) ** 2).mean().backward()
        assert not _fused._eligible(opt, [p for p in opt._params() if p.grad is not None])
    opt = OptimLP(torch.optim.SGD(m.parameters(), lr=0.1), weight=P.FP8_E4M3)
    opt.optimizer.register_step_post_hook(lambda *a: None)
    assert not _fused._eligible(opt, [p for p in opt._params() if p.grad is not None])
