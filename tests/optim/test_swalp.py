"""SWALP: the running average is the mean of the scheduled iterates, and on a noisy
quadratic with 8-bit stochastic-rounded weights the average reaches far below the
noise ball where the low-precision iterates stall (the paper's quadratic claim)."""
import copy

import pytest
import torch

import relaxtorch as rt
from relaxtorch.optim import SWALP


def test_average_is_mean_of_scheduled_iterates():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = SWALP(torch.optim.SGD([w], lr=0.1), start=2, cycle=3)
    g = torch.Generator().manual_seed(0)
    seen = []
    for step in range(1, 15):
        w.grad = torch.randn(3, generator=g)
        opt.step()
        if step > 2 and (step - 2) % 3 == 0:
            seen.append(w.detach().double().clone())
    assert opt.n_averaged == len(seen) == 4
    torch.testing.assert_close(opt.average[0].double(), torch.stack(seen).mean(0), rtol=1e-6, atol=1e-7)
    before = w.detach().clone()
    with opt.averaged():
        torch.testing.assert_close(w.detach(), opt.average[0])
    assert torch.equal(w.detach(), before)


def _noisy_quadratic(average: bool, steps=8000, seed=0):
    target = torch.tensor([0.3141, -0.7183, 0.05, 1.234])  # off the 2**-4 grid
    w = torch.nn.Parameter(torch.zeros(4))
    fmt = rt.FixedPoint(8, 4)
    g = torch.Generator().manual_seed(seed)
    opt = SWALP(torch.optim.SGD([w], lr=0.05), start=steps // 4, cycle=1)
    for _ in range(steps):
        w.grad = (w.detach() - target) + 0.1 * torch.randn(4, generator=g)
        opt.step()
        with torch.no_grad():
            w.copy_(rt.quantize(w, fmt, "stochastic", generator=g))
    final = opt.average[0] if average else w.detach()
    return float((final - target).pow(2).sum())


def test_average_beats_low_precision_noise_ball():
    err_iterate = _noisy_quadratic(average=False)
    err_average = _noisy_quadratic(average=True)
    assert err_iterate > 5e-3  # the low-precision iterate stays in a noise ball
    assert err_average < err_iterate / 20


@pytest.mark.parametrize("kwargs, name", [({"start": -1}, "start"), ({"cycle": 0}, "cycle"),
                                          ({"dtype": torch.float16}, "dtype")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SWALP(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), **kwargs)


def test_state_dict_round_trip():
    w = torch.nn.Parameter(torch.ones(2))
    opt = SWALP(torch.optim.SGD([w], lr=0.1, momentum=0.9), cycle=2)
    for _ in range(5):
        w.grad = torch.ones(2)
        opt.step()
    state = copy.deepcopy(opt.state_dict())  # as a save to disk would
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = SWALP(torch.optim.SGD([w2], lr=0.1, momentum=0.9), cycle=2)
    opt2.load_state_dict(state)
    for o, p in ((opt, w), (opt2, w2)):
        for _ in range(3):
            p.grad = torch.ones(2)
            o.step()
    assert torch.equal(w, w2) and torch.equal(opt.average[0], opt2.average[0])
