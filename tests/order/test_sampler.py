"""The OrderSampler contract: any DataLoader (num_workers > 0 too) visits the order's epochs in
order; partial epochs and drop_last; determinism by generator; pickling."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from relaxtorch import order as rto

N, D = 30, 4
FEATURES = torch.randn(N, D, generator=torch.Generator().manual_seed(0))


def _dataset():
    return rto.WithIndices(TensorDataset(FEATURES))


def _train(sampler, *, batch_size=4, drop_last=False, num_workers=0, epochs=3, stop_after=None):
    """Epochs through a DataLoader, feeding the sampler each batch's rows as 'gradients'."""
    loader = DataLoader(_dataset(), batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                        num_workers=num_workers)
    seen = []
    for _ in range(epochs):
        visited = []
        for step, (idx, x) in enumerate(loader):
            if stop_after is not None and step == stop_after:
                break
            sampler.observe(idx, x)
            visited.append(idx)
        seen.append((sampler.perm.clone(), torch.cat(visited)))
    return seen


@pytest.mark.parametrize("name", ["rr", "grab", "pair", "recursive"])
def test_loader_visits_the_epoch_order_with_workers(name):
    make = lambda: rto.OrderSampler(rto.make(name, N, d=D), torch.Generator().manual_seed(3))  # noqa: E731
    single = _train(make())
    workers = _train(make(), num_workers=2)
    for (perm, visited), (perm_w, visited_w) in zip(single, workers):
        assert visited.tolist() == perm.tolist()
        assert torch.equal(perm, perm_w) and torch.equal(visited, visited_w)


def test_drop_last_and_early_break_keep_every_epoch_a_permutation():
    sampler = rto.OrderSampler(rto.GraB(N, D), torch.Generator().manual_seed(1))
    for perm, visited in _train(sampler, batch_size=4, drop_last=True, epochs=4):
        assert sorted(perm.tolist()) == list(range(N))
        assert visited.tolist() == perm[:28].tolist()
    # dropped examples go to the middle of the next epoch, so they are visited there
    first, second = _train(rto.OrderSampler(rto.GraB(N, D), torch.Generator().manual_seed(1)),
                           batch_size=4, drop_last=True, epochs=2)
    assert set(first[0][28:].tolist()) <= set(second[1].tolist())
    for perm, visited in _train(sampler, stop_after=3, epochs=3):
        assert sorted(perm.tolist()) == list(range(N)) and visited.numel() == 12


def test_deterministic_by_generator_and_distinct_seeds_differ():
    runs = [_train(rto.OrderSampler(rto.GraB(N, D), torch.Generator().manual_seed(s))) for s in (5, 5, 6)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[2]))


def test_pickled_sampler_continues_identically():
    sampler = rto.OrderSampler(rto.PairBalance(N, D), torch.Generator().manual_seed(2))
    _train(sampler, epochs=1)
    clone = pickle.loads(pickle.dumps(sampler))
    a, b = _train(sampler, epochs=2), _train(clone, epochs=2)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert clone.state_bytes() == sampler.state_bytes() > 0


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="Invalid data_source"):
        rto.OrderSampler(rto.GraB(N, D), torch.Generator(), data_source=range(N + 1))
    with pytest.raises(ValueError, match="Invalid generator"):
        rto.OrderSampler(rto.GraB(N, D), 0)
    with pytest.raises(ValueError, match="Invalid order"):
        rto.OrderSampler("grab", torch.Generator())


@pytest.mark.slow
def test_spawned_workers_keep_the_order():
    sampler = rto.OrderSampler(rto.GraB(N, D), torch.Generator().manual_seed(3))
    loader = DataLoader(_dataset(), batch_size=8, sampler=sampler, num_workers=1, multiprocessing_context="spawn")
    for _ in range(2):
        visited = []
        for idx, x in loader:
            sampler.observe(idx, x)
            visited.append(idx)
        assert torch.cat(visited).tolist() == sampler.perm.tolist()
