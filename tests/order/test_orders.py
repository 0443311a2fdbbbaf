"""Every order in ORDERS: permutations, determinism by generator, bad input named."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from relaxtorch import order as rto

N, D = 23, 5
OPTIONS = {"blocks": {"k": 4}, "recursive": {"depth": 2}}


def _make(name, n=N):
    return rto.make(name, n=n, d=D, **OPTIONS.get(name, {}))


def _run(order, seed, epochs=4, batch=4, grads_seed=1):
    """Epochs of ``order`` fed with fixed random per-example gradients; the permutations."""
    table = torch.randn(order.n, D, generator=torch.Generator().manual_seed(grads_seed))
    state = order.init(torch.Generator().manual_seed(seed))
    perms = []
    for _ in range(epochs):
        perm, state = order.epoch(state)
        perms.append(perm)
        for start in range(0, order.n, batch):
            idx = perm[start:start + batch]
            state = order.observe(state, idx, table[idx])
    return perms


@pytest.mark.parametrize("name", list(rto.ORDERS))
def test_each_epoch_is_a_permutation_and_deterministic(name):
    order = _make(name)
    perms = _run(order, seed=7)
    for perm in perms:
        assert perm.dtype == torch.int64 and sorted(perm.tolist()) == list(range(N))
    again = _run(order, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(perms, again))
    if name not in ("sequential",):
        other = _run(order, seed=8)
        assert not all(torch.equal(a, b) for a, b in zip(perms, other))


@pytest.mark.parametrize("name", list(rto.ORDERS))
def test_state_pickles_and_continues_identically(name):
    order = _make(name)
    state = order.init(torch.Generator().manual_seed(3))
    perm, state = order.epoch(state)
    state = order.observe(state, perm[:6], torch.randn(6, D))
    copy = pickle.loads(pickle.dumps(state))
    assert torch.equal(order.epoch(state)[0], order.epoch(copy)[0])


@pytest.mark.parametrize("name", list(rto.ORDERS))
def test_bad_input_names_the_argument(name):
    order = _make(name)
    with pytest.raises(ValueError, match="Invalid generator"):
        order.init(3)
    state = order.init(torch.Generator())
    with pytest.raises(ValueError, match="Invalid state"):
        _make(name, n=N + 1).epoch(state)
    perm, state = order.epoch(state)
    if order.needs_gradients:
        with pytest.raises(ValueError, match="Invalid grads"):
            order.observe(state, perm[:3], torch.randn(3, D + 1))
        with pytest.raises(ValueError, match="Invalid grads"):
            order.observe(state, perm[:3], torch.randn(2, D))
        for bad, value in ((torch.tensor([0, N]), N), (torch.tensor([-1, 0], dtype=torch.int32), -1),
                           ([0, 1, N + 5], N + 5), (np.array([2, -3]), -3), (torch.tensor([0.0, 1.0]), None),
                           (torch.tensor([[0, 1]]), None)):
            match = "Invalid indices" if value is None else rf"Invalid indices: {value} \(example indices lie in"
            with pytest.raises(ValueError, match=match):
                order.observe(state, bad, torch.randn(np.asarray(bad).reshape(-1).size, D))
        wide = torch.arange(6)[::2]  # a strided view of indices: read where it lies, never written
        order.observe(state, wide, torch.randn(3, D))
        assert wide.tolist() == [0, 2, 4]


def test_make_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="Invalid name"):
        rto.make("nope", 3)
    with pytest.raises(ValueError, match="Invalid options"):
        rto.make("rr", 3, k=2)
    with pytest.raises(ValueError, match="Invalid d"):
        rto.make("grab", 3)
    with pytest.raises(ValueError, match="Invalid n"):
        rto.make("rr", 0)


@pytest.mark.parametrize("name", ["rr", "grab", "pair", "herding"])
def test_clone_branches_without_touching_the_original(name):
    order = _make(name)
    state = order.init(torch.Generator().manual_seed(4))
    perm, state = order.epoch(state)
    state = order.observe(state, perm[:8], torch.randn(8, D))
    branch = state.clone()
    branch = order.observe(branch, perm[8:], torch.randn(N - 8, D))
    order.epoch(branch)
    assert state.epoch == 1 and torch.equal(state.perm, perm)
    again = state.clone()
    assert torch.equal(order.epoch(state)[0], order.epoch(again)[0])
