"""WrappedOptimizer's one state-dict mechanism: each wrapper adds one namespaced entry to the
wrapped optimizer's state dict, stacks nest, torch.load(weights_only=True) reads them back,
and a wrapper twice in one stack is refused instead of silently overwriting its entry."""
import io

import pytest
import torch

from relaxtorch import SWALP, FixedPoint, OptimLP
from relaxtorch.comm import DeTAG, ring


def _stack(w):
    return SWALP(DeTAG(OptimLP(torch.optim.SGD([w], lr=0.1, momentum=0.9), weight=FixedPoint(8, 4),
                               generator=1), ring(1)), start=1)


def test_stacked_wrappers_save_one_entry_each_and_reload_weights_only():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = _stack(w)
    for _ in range(3):
        w.grad = torch.ones(3)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert set(sd) == {"state", "param_groups", "optim_lp", "decentralized", "swalp"}
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = _stack(w2)
    opt2.load_state_dict(sd)
    for o, p in ((opt, w), (opt2, w2)):
        p.grad = torch.ones(3)
        o.step()
    assert torch.equal(w, w2) and torch.equal(opt.average[0], opt2.average[0])
    assert opt2.optimizer.steps == 4 and opt2.optimizer.tracker is not None


def test_optional_and_colliding_entries():
    w = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([w], lr=0.1)
    OptimLP(sgd).load_state_dict(sgd.state_dict())  # OptimLP's entry is optional (a bare SGD checkpoint)
    with pytest.raises(ValueError, match="no 'swalp' entry"):
        SWALP(sgd).load_state_dict(sgd.state_dict())
    with pytest.raises(RuntimeError, match="same wrapper twice"):
        SWALP(SWALP(sgd)).state_dict()
