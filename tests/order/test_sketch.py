"""Sketched per-example gradients (``LinearGrads(sketch=k)``): each layer's sketch against its
Kronecker map applied to the formed gradient (float64), the sketches' inner products as unbiased
estimates of the gradients' (a statistical check over independent maps), determinism by
generator, GraB on sketches against random reshuffling on the true gradients, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from relaxtorch import order as rto

F64 = torch.float64


def _model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 8, bias=False), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    model[4].weight.requires_grad_(False)  # its bias alone: a bias-only block
    return model


def _formed(model, x, y, reduction="mean"):
    """Per example: the gradient of its own loss term, one backward pass each (the reference)."""
    losses = nn.functional.cross_entropy(model(x), y, reduction="none")
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], params, retain_graph=True)])
                        for i in range(x.shape[0])])


def _record(rec, model, x, y, reduction="mean"):
    with rec:
        nn.functional.cross_entropy(model(x), y, reduction=reduction).backward()
    return rec.grads()


def _reference_sketch(rec, model, formed):
    """The Kronecker map of each block applied to the formed gradients, in float64: a weight block
    (with its bias as the last column) G_i [o, in (+1)] -> vec(Pᵀ G_i [Q; q_bias]); a bias block -> Pᵀ δ_i."""
    parts, start = [], 0
    for (module, weight, bias), (p, q, q_bias) in zip(rec._blocks_layout, rec._maps):
        o, n_in = module.out_features, module.in_features
        if weight:
            size = o * n_in + (o if bias else 0)
            g = formed[:, start:start + size]
            w = g[:, :o * n_in].reshape(-1, o, n_in)
            if bias:
                w = torch.cat([w, g[:, o * n_in:, None]], dim=2)
            full_q = torch.cat([q, q_bias[None]]) if bias else q
            parts.append((p.T @ w @ full_q).reshape(formed.shape[0], -1))
        else:
            size = o
            parts.append(formed[:, start:start + size] @ p)
        start += size
    assert start == formed.shape[1]
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("k", [1, 9, 20])
def test_sketch_is_each_layers_kronecker_map_of_the_formed_gradient(reduction, k):
    model = _model()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 6, dtype=F64, generator=gen), torch.randint(3, (7,), generator=gen)
    rec = rto.LinearGrads(model, reduction=reduction, sketch=k, generator=torch.Generator().manual_seed(1))
    z = _record(rec, model, x, y, reduction)
    assert z.dtype == F64 and z.shape == (7, rec.dim)
    k1, k2 = rto.projection.kronecker_shape(k)
    assert rec.dim == 2 * k1 * k2 + k1 * k2  # two weight blocks and one bias block
    torch.testing.assert_close(z, _reference_sketch(rec, model, _formed(model, x, y)), rtol=1e-10, atol=1e-12)


def test_float32_sketch_matches_float64():
    model = _model().float()
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(16, 6, generator=gen), torch.randint(3, (16,), generator=gen)
    rec = rto.LinearGrads(model, sketch=16, generator=torch.Generator().manual_seed(2))
    z = _record(rec, model, x, y)
    assert z.dtype == torch.float32
    want = _reference_sketch(rec, model, _formed(model.double(), x.double(), y))
    torch.testing.assert_close(z.double(), want, rtol=1e-4, atol=1e-5)


def test_sketch_inner_products_are_unbiased_estimates_of_the_gradients():
    # E[<z_i, z_j>] over independent Gaussian maps = <g_i, g_j> (E[P Pᵀ] = E[Q Qᵀ] = I, P and Q
    # independent); the mean of R draws within 4 standard errors, for three pairs of examples
    model = _model()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(3, 6, dtype=F64, generator=gen), torch.randint(3, (3,), generator=gen)
    g = _formed(model, x, y)
    exact = g @ g.T
    draws = 1500
    samples = []
    maps = torch.Generator().manual_seed(6)
    for _ in range(draws):
        z = _record(rto.LinearGrads(model, sketch=4, generator=maps), model, x, y)
        samples.append((z @ z.T)[torch.triu_indices(3, 3)[0], torch.triu_indices(3, 3)[1]])
    samples = torch.stack(samples)
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(draws)
    want = exact[torch.triu_indices(3, 3)[0], torch.triu_indices(3, 3)[1]]
    assert torch.all((mean - want).abs() <= 4 * se), (mean, want, se)
    # and the estimate is not trivially unbiased: a single draw is off by far more than the SE
    assert (samples[0] - want).abs().max() > 4 * se.max()


def test_the_maps_come_from_the_generator():
    model = _model()
    x, y = torch.randn(5, 6, dtype=F64), torch.randint(3, (5,))
    a = _record(rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(0)), model, x, y)
    b = _record(rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(0)), model, x, y)
    c = _record(rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(1)), model, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_one_with_block_records_every_step():
    model = _model()
    gen = torch.Generator().manual_seed(7)
    xs, ys = torch.randn(3, 4, 6, dtype=F64, generator=gen), torch.randint(3, (3, 4), generator=gen)
    per_step = rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(0))
    whole = rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(0))
    want = [_record(per_step, model, x, y) for x, y in zip(xs, ys)]
    with whole:
        for x, y, w in zip(xs, ys, want):
            nn.functional.cross_entropy(model(x), y).backward()
            assert torch.equal(whole.grads(), w)


def _discrepancy(g, perm):
    centered = g - g.mean(0)
    return centered[perm].cumsum(0).norm(dim=1).max().item()


def test_grab_on_sketches_balances_the_true_gradients():
    # fixed per-example gradients of an MLP (n = 256, d = 176 + 85): GraB observing their sketches
    # (64 numbers a layer) orders the *true* gradients with a prefix discrepancy well below the best
    # of 50 random reshufflings (0.61x here; the exact factored GraB 0.52x, 4 numbers a layer 1.02x)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 5)).double()
    n, batch = 256, 16
    gen = torch.Generator().manual_seed(8)
    X, Y = torch.randn(n, 10, dtype=F64, generator=gen) + 0.5, torch.randint(5, (n,), generator=gen)
    g = _formed(model, X, Y)
    rr = torch.Generator().manual_seed(9)
    rr_best = min(_discrepancy(g, torch.randperm(n, generator=rr)) for _ in range(50))

    def balanced(sketch):
        rec = rto.LinearGrads(model, sketch=sketch, generator=torch.Generator().manual_seed(10))
        order = rto.make("grab", n=n, d=rec.dim)
        state = order.init(torch.Generator().manual_seed(11))
        for _ in range(4):
            perm, state = order.epoch(state)
            for start in range(0, n, batch):
                idx = perm[start:start + batch]
                state = order.observe(state, idx, _record(rec, model, X[idx], Y[idx]))
        return order.epoch(state)[0]

    sketched, exact = _discrepancy(g, balanced(64)), _discrepancy(g, balanced(None))
    assert exact < sketched < 0.7 * rr_best, (sketched, exact, rr_best)


def test_bad_sketch_arguments_are_refused():
    model = _model()
    for bad in (0, -3, 2.5, True, "64", 10**9):
        with pytest.raises(ValueError, match="Invalid sketch"):
            rto.LinearGrads(model, sketch=bad)
    with pytest.raises(ValueError, match="Invalid generator"):
        rto.LinearGrads(model, sketch=4, generator=np.random.default_rng(0))
    rec = rto.LinearGrads(model, sketch=4)
    with rec:
        model(torch.randn(2, 6, dtype=F64))
    with pytest.raises(RuntimeError, match="backward"):
        rec.grads()
    order = rto.make("grab", n=10, d=rec.dim + 1)
    state = order.init(torch.Generator().manual_seed(0))
    order.epoch(state)
    with rec:
        nn.functional.cross_entropy(model(torch.randn(2, 6, dtype=F64)), torch.tensor([0, 1])).backward()
    with pytest.raises(ValueError, match="Invalid grads"):
        order.observe(state, torch.tensor([0, 1]), rec.grads())


def test_a_backward_pass_with_create_graph_records_the_same_gradients():
    model = _model()
    gen = torch.Generator().manual_seed(12)
    x, y = torch.randn(5, 6, dtype=F64, generator=gen), torch.randint(3, (5,), generator=gen)
    plain = _record(rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(0)), model, x, y)
    rec = rto.LinearGrads(model, sketch=9, generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    with rec:  # gradients that carry a graph (a second-order method's pass)
        torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    torch.testing.assert_close(rec.grads(), plain, rtol=1e-12, atol=1e-14)
    exact = rto.LinearGrads(model)
    with exact:
        torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    torch.testing.assert_close(exact.grads().dense(), _formed(model, x, y))


def test_order_specs_name_a_sketch():
    assert rto.parse_spec("grab") == ("grab", None) and rto.parse_spec("pair:sketch=64") == ("pair", 64)
    for bad, why in (("grub", "known orders"), ("rr:sketch=4", "does not balance"), ("grab:sketch=0", "sketch=K"),
                     ("grab:sketch=x", "sketch=K"), ("grab:dim=4", "the only option"), (4, "a string")):
        with pytest.raises(ValueError, match=f"Invalid order.*{why}"):
            rto.parse_spec(bad)
