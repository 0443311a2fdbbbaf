"""per_example_grads against a plain loop of per-example backward passes (float32 tolerance)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from relaxtorch.order import per_example_grads, set_grads_


def _model(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    if kind == "batchnorm":
        return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    if kind == "dropout":
        return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(0.3), nn.Linear(7, 3))
    raise AssertionError(kind)


def _loop_reference(model, x, y, seed):
    """Per example i: the same batch forward (same dropout masks, batch statistics), backward of loss i."""
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        torch.manual_seed(seed)
        out = model(x)
        nn.functional.cross_entropy(out[i:i + 1], y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def _single_reference(model, x, y):
    """Per example i: a forward pass of example i alone (no batch coupling)."""
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


X = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 3, (9,), generator=torch.Generator().manual_seed(2))
TOL = dict(rtol=1e-5, atol=1e-6)  # float32 sums of a few dozen terms in another order


@pytest.mark.parametrize("microbatch", [None, 4])
def test_vmap_path_matches_single_example_backward(microbatch):
    model = _model("mlp")
    losses, grads = per_example_grads(model, nn.functional.cross_entropy, X, Y, microbatch=microbatch)
    ref = _single_reference(model, X, Y)
    torch.testing.assert_close(grads, ref, **TOL)
    expect = torch.stack([nn.functional.cross_entropy(model(X[i:i + 1]), Y[i:i + 1]) for i in range(9)]).detach()
    torch.testing.assert_close(losses, expect, **TOL)


@pytest.mark.parametrize("kind", ["batchnorm", "dropout"])
@pytest.mark.parametrize("microbatch", [None, 2])
def test_train_mode_fallback_matches_loop_of_backward_passes(kind, microbatch):
    model = _model(kind).train()
    torch.manual_seed(5)
    losses, grads = per_example_grads(model, nn.functional.cross_entropy, X, Y, microbatch=microbatch)
    ref = _loop_reference(model, X, Y, seed=5)
    torch.testing.assert_close(grads, ref, **TOL)
    # the per-example gradients sum to the gradient of the summed batch loss
    model.zero_grad()
    torch.manual_seed(5)
    nn.functional.cross_entropy(model(X), Y, reduction="sum").backward()
    total = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(grads.sum(0), total, rtol=1e-5, atol=1e-5)


def test_eval_mode_batchnorm_takes_vmap_and_matches_single_examples():
    model = _model("batchnorm")
    model.train()(X)  # move the running statistics away from their defaults
    model.eval()
    _, grads = per_example_grads(model, nn.functional.cross_entropy, X, Y)
    torch.testing.assert_close(grads, _single_reference(model, X, Y), **TOL)


def test_frozen_parameters_are_left_out():
    model = _model("mlp")
    model[0].weight.requires_grad_(False)
    _, grads = per_example_grads(model, nn.functional.cross_entropy, X, Y)
    assert grads.shape == (9, sum(p.numel() for p in model.parameters() if p.requires_grad))


def test_bad_input_names_the_argument():
    model = _model("mlp")
    with pytest.raises(ValueError, match="Invalid targets"):
        per_example_grads(model, nn.functional.cross_entropy, X, Y[:3])
    with pytest.raises(ValueError, match="Invalid microbatch"):
        per_example_grads(model, nn.functional.cross_entropy, X, Y, microbatch=0)
    with pytest.raises(ValueError, match="Invalid model"):
        per_example_grads(lambda x: x, nn.functional.cross_entropy, X, Y)


def test_set_grads_writes_the_mean_gradient_of_the_batch():
    model = _model("mlp")
    _, grads = per_example_grads(model, nn.functional.cross_entropy, X, Y)
    set_grads_(model, grads.mean(0))
    mine = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    nn.functional.cross_entropy(model(X), Y).backward()
    for a, p in zip(mine, model.parameters()):
        torch.testing.assert_close(a, p.grad, **TOL)
    with pytest.raises(ValueError, match="Invalid flat"):
        set_grads_(model, grads)
