"""Factored per-example gradients: FactoredGrads' algebra against the formed gradients, every
balancing order on factored input against the same order on the formed gradients, and
LinearGrads against a loop of per-example backward passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from relaxtorch import order as rto
from relaxtorch.order.factored import Dense, FactoredGrads, Outer

F64 = torch.float64
LAYERS = [(5, 7), (3, 5)]  # (out, in) of each Linear


def _factored(b, seed=0, dtype=F64, layers=LAYERS):
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for o, i in layers:
        dz, a = torch.randn(b, o, generator=gen, dtype=dtype), torch.randn(b, i, generator=gen, dtype=dtype)
        blocks += [Outer(dz, a, bias=True)] if o == 5 else [Outer(dz, a), Dense(dz)]  # a bias both ways
    return FactoredGrads(blocks)


def _dim(layers=LAYERS):
    return sum(o * i + o for o, i in layers)


# ----------------------------------------------------------------------------- the algebra

def test_dense_is_the_outer_products_in_linear_weight_layout():
    f = _factored(4)
    dense = f.dense()
    (o, i) = LAYERS[0]
    b0 = f.blocks[0]
    for k in range(4):
        assert torch.equal(dense[k, :o * i].view(o, i), torch.outer(b0.dz[k], b0.a[k]))
        assert torch.equal(dense[k, o * i:o * i + o], b0.dz[k])
    assert f.shape == dense.shape == (4, _dim())


def test_dots_gram_and_weighted_sums_match_the_formed_gradients():
    f = _factored(6, seed=1)
    dense = f.dense()
    gen = torch.Generator().manual_seed(2)
    vectors = torch.randn(3, f.dim, generator=gen, dtype=F64)
    weights = torch.randn(3, 6, generator=gen, dtype=F64)
    torch.testing.assert_close(f.dots(vectors), vectors @ dense.T)
    torch.testing.assert_close(f.gram(), dense @ dense.T)
    expected = vectors + weights @ dense
    out = f.add_weighted_(vectors.clone(), weights)
    torch.testing.assert_close(out, expected)
    rows = torch.tensor([4, 1])
    torch.testing.assert_close(f.rows(rows).dense(), dense[rows])
    assert f.to(F64) is f and f.to(torch.float32).dtype == torch.float32


def test_blocks_are_validated():
    with pytest.raises(ValueError, match="blocks"):
        FactoredGrads([])
    with pytest.raises(ValueError, match="same batch size"):
        FactoredGrads([Dense(torch.zeros(3, 2)), Dense(torch.zeros(4, 2))])
    with pytest.raises(ValueError, match="floating-point"):
        FactoredGrads([Dense(torch.zeros(3, 2, dtype=torch.int64))])


# ----------------------------------------------------------------------------- the orders

ORDERS = [("grab", {}), ("prob", {}), ("pair", {}), ("recursive", {"depth": 2}), ("recursive", {"depth": 7}),
          ("herding", {}), ("grab", {"projection": "sparse_jl", "dim": 8}), ("cdgrab", {})]


def _run(name, options, n, batch, factored, epochs=4):
    order = rto.make(name, n=n, d=_dim(), **options)
    state = order.init(torch.Generator().manual_seed(3))
    perms, seed = [], 0
    for epoch in range(epochs):
        perm, state = order.epoch(state)
        perms.append(perm)
        stop = n - 3 if epoch == 1 else n  # a partial epoch
        for start in range(0, stop, batch):
            idx = perm[start:start + batch]
            if epoch == 2 and start == batch:  # a step that repeats examples
                idx = torch.cat([idx, idx[:2]])
            seed += 1
            f = _factored(len(idx), seed=seed)
            state = order.observe(state, idx, f if factored else f.dense())
    perms.append(order.epoch(state)[0])
    return perms, state


@pytest.mark.parametrize("batch", [1, 6, 8])
@pytest.mark.parametrize("name,options", ORDERS)
def test_factored_input_gives_the_orders_of_the_formed_gradients(name, options, batch):
    n = 41  # odd: pair balance leaves one example waiting
    got, s_got = _run(name, options, n, batch, factored=True)
    want, s_want = _run(name, options, n, batch, factored=False)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    for key, value in s_want.buffers.items():
        if key == "pending" and s_want.buffers["pending_idx"][0] < 0:
            continue  # the waiting slot's stale contents mean nothing
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            np.testing.assert_allclose(s_got.buffers[key], value, rtol=1e-10, atol=1e-10)
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(s_got.buffers[key], value)


def test_float32_factors_balance_as_well_as_float64():
    # float32 products may break a near-tie the other way; the balanced order stays balanced
    n, batch = 256, 16
    z = _factored(n, seed=9, dtype=torch.float32, layers=[(4, 3)])
    vectors = z.dense().double()
    order = rto.make("grab", n=n, d=z.dim)
    state = order.init(torch.Generator().manual_seed(0))
    for _ in range(4):
        perm, state = order.epoch(state)
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            state = order.observe(state, idx, z.rows(idx))
    perm = order.epoch(state)[0]

    def discrepancy(p):
        return (vectors - vectors.mean(0))[p].cumsum(0).abs().max().item()
    gen = torch.Generator().manual_seed(1)
    rr = min(discrepancy(torch.randperm(n, generator=gen)) for _ in range(50))
    assert discrepancy(perm) < 0.5 * rr


def test_wrong_batch_or_dim_is_refused():
    order = rto.make("grab", n=10, d=_dim())
    state = order.init(torch.Generator().manual_seed(0))
    perm, state = order.epoch(state)
    with pytest.raises(ValueError, match="grads"):
        order.observe(state, perm[:3], _factored(4))
    with pytest.raises(ValueError, match="grads"):
        order.observe(state, perm[:3], _factored(3, layers=[(2, 2)]))


# ----------------------------------------------------------------------------- LinearGrads

def _reference(model, x, y, reduction="mean"):
    """Per example i: the gradient of its own loss term through the batch's one forward pass."""
    out = model(x)
    losses = nn.functional.cross_entropy(out, y, reduction="none")
    params = [p for p in model.parameters() if p.requires_grad]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], params, retain_graph=True)])
            for i in range(x.shape[0])]
    return torch.stack(rows)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_grads_are_each_examples_gradient(inplace, reduction):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=inplace), nn.Linear(8, 8, bias=False), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    model[0].weight.requires_grad_(False)  # a frozen weight is left out, as by per_example_grads
    x, y = torch.randn(9, 6, dtype=F64), torch.randint(3, (9,))
    rec = rto.LinearGrads(model, reduction=reduction)
    with rec:
        loss = nn.functional.cross_entropy(model(x), y, reduction=reduction)
        loss.backward()
        with torch.no_grad():
            model(x)  # an evaluation pass inside the block is not recorded
    grads = rec.grads()
    want = _reference(model, x, y)
    torch.testing.assert_close(grads.dense(), want)
    total = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(grads.dense().sum(0) / (9 if reduction == "mean" else 1), total)


class _InplaceFrom(nn.Module):
    """ReLU that runs in place from step ``start`` on (a model whose in-place ops change)."""

    def __init__(self, start):
        super().__init__()
        self.start, self.calls = start, 0

    def forward(self, x):
        self.calls += 1
        return x.relu_() if self.calls > self.start else x.relu()


def test_linear_grads_over_many_steps_take_each_layers_gradient_before_an_in_place_op():
    """A layer followed by an in-place op and one that is not, over several steps:
    each step's gradients are each example's, the way each layer's is read settled on step one."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    rec = rto.LinearGrads(model)
    for step in range(3):
        x, y = torch.randn(8, 5, dtype=F64), torch.randint(3, (8,))
        with rec:
            nn.functional.cross_entropy(model(x), y).backward()
        torch.testing.assert_close(rec.grads().dense(), _reference(model, x, y))
    assert rec._on_node == {model[0]: True, model[2]: False, model[4]: False}


def test_linear_grads_refuses_an_in_place_op_that_appears_after_the_first_step():
    model = nn.Sequential(nn.Linear(4, 5), _InplaceFrom(start=1), nn.Linear(5, 2)).double()
    x, y = torch.randn(6, 4, dtype=F64), torch.randint(2, (6,))
    with rto.LinearGrads(model) as rec:
        nn.functional.cross_entropy(model(x), y).backward()
        rec.grads()  # step one: no in-place op after the first layer
        nn.functional.cross_entropy(model(x), y).backward()
        with pytest.raises(RuntimeError, match="in-place op changed its output"):
            rec.grads()


def test_linear_grads_with_dropout_match_the_same_forward_pass():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)).double()
    x, y = torch.randn(7, 4, dtype=F64), torch.randint(2, (7,))
    torch.manual_seed(5)
    want = _reference(model, x, y)
    torch.manual_seed(5)  # the same dropout masks
    with rto.LinearGrads(model) as rec:
        nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(rec.grads().dense(), want)


def test_grab_trains_the_same_with_linear_grads_as_with_per_example_grads():
    def run(factored):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
        gen = torch.Generator().manual_seed(1)
        X, Y = torch.randn(30, 5, generator=gen, dtype=F64), torch.randint(3, (30,), generator=gen)
        order = rto.make("grab", n=30, d=sum(p.numel() for p in model.parameters()))
        state, opt = order.init(torch.Generator().manual_seed(2)), torch.optim.SGD(model.parameters(), lr=0.1)
        perms = []
        for _ in range(4):
            perm, state = order.epoch(state)
            perms.append(perm)
            for start in range(0, 30, 8):
                idx = perm[start:start + 8]
                opt.zero_grad()
                if factored:
                    with rto.LinearGrads(model) as rec:
                        nn.functional.cross_entropy(model(X[idx]), Y[idx]).backward()
                    grads = rec.grads()
                else:
                    _, grads = rto.per_example_grads(model, nn.functional.cross_entropy, X[idx], Y[idx])
                    rto.set_grads_(model, grads.mean(0))
                state = order.observe(state, idx, grads)
                opt.step()
        return perms
    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)


def test_linear_grads_refuses_what_it_cannot_factor():
    with pytest.raises(ValueError, match=r"parameter '1.weight' of a LayerNorm"):
        rto.LinearGrads(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    with pytest.raises(ValueError, match="reduction"):
        rto.LinearGrads(nn.Linear(3, 3), reduction="max")
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False), nn.Linear(4, 2))
    with rto.LinearGrads(bn) as rec:
        bn(torch.randn(5, 3)).sum().backward()
    with pytest.raises(ValueError, match="BatchNorm1d in train mode"):
        rec.grads()
    layer = nn.Linear(3, 3)
    shared = nn.Sequential(layer, nn.Tanh(), layer)
    with rto.LinearGrads(shared) as rec:
        shared(torch.randn(4, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="ran 2 times"):
        rec.grads()
    model = nn.Linear(3, 2)
    with rto.LinearGrads(model) as rec:
        model(torch.randn(4, 3))
    with pytest.raises(RuntimeError, match="backward"):
        rec.grads()
    with rto.LinearGrads(model) as rec:
        model(torch.randn(4, 5, 3)).sum().backward()
    with pytest.raises(ValueError, match=r"\[batch, features\]"):
        rec.grads()
    with pytest.raises(RuntimeError, match="no forward pass"):
        rec.grads()
