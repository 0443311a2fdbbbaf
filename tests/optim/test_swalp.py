"""SWALP: the running average is the mean of the scheduled iterates (also under an LR
scheduler, against a slow float64 reference loop), it is a torch optimizer that schedulers and
checkpoints (torch.load(weights_only=True)) accept, and on a noisy quadratic with 8-bit
stochastic-rounded weights the average reaches far below the noise ball where the
low-precision iterates stall (the paper's quadratic claim)."""
import copy
import io

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


def _lp_sgd(w, seed=3):
    return rt.OptimLP(torch.optim.SGD([w], lr=0.2, momentum=0.9), weight=rt.FixedPoint(8, 4),
                      grad=rt.FixedPoint(8, 4), momentum=rt.FixedPoint(8, 4), generator=seed)


def _grads(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, generator=g) for _ in range(steps)]


def test_lr_scheduler_steps_it_and_the_average_matches_a_reference_loop():
    """SWALP(OptimLP(SGD)) under MultiStepLR: the lr the scheduler sets is the wrapped optimizer's,
    and the average equals the float64 mean of the iterates of steps i > start, (i - start) % cycle
    == 0 (Algorithm 1 of the paper) of the same LP-SGD run without SWALP (the reference loop)."""
    steps, start, cycle = 40, 9, 4
    grads = _grads(steps)
    target = torch.linspace(-1, 1, 5)

    ref_w = torch.nn.Parameter(torch.zeros(5))
    ref = _lp_sgd(ref_w)  # the reference: the same LP-SGD with its lr set by hand
    seen = []
    for i in range(1, steps + 1):
        for group in ref.param_groups:
            group["lr"] = 0.2 * 0.5 ** ((i > 10) + (i > 25))  # MultiStepLR([10, 25], 0.5) by hand
        ref_w.grad = (ref_w.detach() - target) + grads[i - 1]
        ref.step()
        if i > start and (i - start) % cycle == 0:
            seen.append(ref_w.detach().double().clone())
    expected = torch.stack(seen).mean(0)

    w = torch.nn.Parameter(torch.zeros(5))
    opt = SWALP(_lp_sgd(w), start=start, cycle=cycle, dtype=torch.float64)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 25], gamma=0.5)
    lrs = []
    for i in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        w.grad = (w.detach() - target) + grads[i]
        opt.step()
        sched.step()
    assert isinstance(opt, torch.optim.Optimizer)
    assert lrs[0] == 0.2 and lrs[10] == 0.1 and lrs[25] == 0.05 and opt.optimizer.param_groups[0]["lr"] == 0.05
    assert torch.equal(w.detach(), ref_w.detach())  # SWALP only observes: the iterates are unchanged
    assert opt.n_averaged == len(seen) == (steps - start) // cycle
    torch.testing.assert_close(opt.average[0], expected, rtol=1e-12, atol=1e-14)


def test_state_dict_round_trips_through_weights_only_load():
    """Save at step 12 (SWALP + OptimLP's generator + a scheduler), resume, and the run goes on
    bit for bit as the uninterrupted one."""
    grads = _grads(30, seed=1)

    def run(opt, sched, w, part):
        for g in part:
            w.grad = w.detach() + g
            opt.step()
            sched.step()

    w = torch.nn.Parameter(torch.zeros(5))
    opt = SWALP(_lp_sgd(w), start=5, cycle=2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    run(opt, sched, w, grads[:12])
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "w": w.detach().clone()}, buf)
    run(opt, sched, w, grads[12:])
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert set(saved["opt"]) == {"state", "param_groups", "optim_lp", "swalp"}
    w2 = torch.nn.Parameter(saved["w"].clone())
    opt2 = SWALP(_lp_sgd(w2, seed=99), start=5, cycle=2)  # another seed: the checkpoint restores it
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=30)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    run(opt2, sched2, w2, grads[12:])
    assert torch.equal(w, w2) and torch.equal(opt.average[0], opt2.average[0])
    assert opt2.steps == 30 and opt2.n_averaged == opt.n_averaged == 12
    with pytest.raises(ValueError, match="Invalid state_dict"):  # a bare optimizer's state is not SWALP's
        opt2.load_state_dict(opt2.optimizer.state_dict())
