"""Partitions across ranks (IID and label-skewed) and the per-step minibatch schedule."""
import math

import pytest
import torch

from relaxtorch.data import load_dataset
from relaxtorch.jobs.distributed import BatchSchedule, partition


@pytest.fixture(scope="module")
def digits_labels():
    return load_dataset("digits").y_train


def _check_is_partition(parts, n):
    allidx = torch.cat(parts)
    assert allidx.numel() == n and torch.equal(allidx.sort().values, torch.arange(n))  # each example once
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", ["iid", "label"])
@pytest.mark.parametrize("world", [1, 3, 4, 7])
def test_partition_covers_every_example_once_with_balanced_sizes(digits_labels, scheme, world):
    for skew in (0.0, 0.37, 1.0):
        _check_is_partition(partition(digits_labels, world, scheme=scheme, skew=skew, seed=5), len(digits_labels))


def test_partition_is_seeded_and_uses_no_global_rng(digits_labels):
    state = torch.random.get_rng_state()
    a = partition(digits_labels, 4, seed=1)
    torch.manual_seed(123)  # the global RNG must not matter
    b = partition(digits_labels, 4, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = partition(digits_labels, 4, seed=2)
    d = partition(digits_labels, 4, seed=1, epoch=1)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])
    torch.random.set_rng_state(state)


def test_full_label_skew_gives_each_rank_a_contiguous_range_of_labels(digits_labels):
    parts = partition(digits_labels, 4, scheme="label", skew=1.0, seed=0)
    ranges = [(int(digits_labels[p].min()), int(digits_labels[p].max())) for p in parts]
    for (lo0, hi0), (lo1, hi1) in zip(ranges, ranges[1:]):
        assert hi0 <= lo1  # shards of the label-sorted order: ranks share at most a boundary label
    for (lo, hi), p in zip(ranges, parts):
        assert hi - lo <= 3 and torch.equal(digits_labels[p].unique(), torch.arange(lo, hi + 1))


@pytest.mark.parametrize("skew", [0.0, 0.5, 0.9, 1.0])
def test_label_skew_matches_the_asked_fraction(skew):
    # Two balanced classes, two ranks: rank 0 gets the first half of the label-sorted fraction
    # (all class 0) plus an IID share, so its class-0 fraction is skew + (1 - skew) / 2.
    n = 20_000
    labels = torch.arange(n) % 2
    parts = partition(labels, 2, scheme="label", skew=skew, seed=3)
    frac0 = float((labels[parts[0]] == 0).double().mean())
    expect = skew + (1 - skew) / 2
    se = math.sqrt(0.25 / (n / 2))  # binomial standard error of a fraction of n/2 draws (an upper bound)
    assert abs(frac0 - expect) < 4 * se, (frac0, expect)
    assert abs(float((labels[parts[1]] == 1).double().mean()) - expect) < 4 * se


def test_partition_rejects_bad_arguments(digits_labels):
    for kwargs, word in [({"world": 0}, "Invalid world: 0"), ({"world": 10_000}, "Invalid world: 10000"),
                         ({"world": 2, "scheme": "dirichlet"}, "Invalid scheme"),
                         ({"world": 2, "skew": 1.5}, "Invalid skew")]:
        with pytest.raises(ValueError, match=word):
            partition(digits_labels, **kwargs)


@pytest.mark.parametrize("scheme, reshuffle", [("iid", False), ("iid", True), ("label", False)])
def test_an_epoch_of_batches_visits_every_example(digits_labels, scheme, reshuffle):
    world, batch = 4, 32
    scheds = [BatchSchedule(digits_labels, world, r, batch, scheme=scheme, skew=0.9, reshuffle=reshuffle, seed=7)
              for r in range(world)]
    spe = scheds[0].steps_per_epoch
    assert spe == math.ceil(len(digits_labels) / (world * batch))
    for epoch in range(2):
        seen = []
        for r, s in enumerate(scheds):
            idx = torch.cat([s.indices(epoch * spe + i) for i in range(spe)])
            assert idx.numel() == spe * batch
            part = s.part(epoch)
            assert torch.isin(idx, part).all()  # only the rank's own examples
            assert torch.equal(idx.unique(), part.sort().values)  # and every one of them
            seen.append(part)
        _check_is_partition(seen, len(digits_labels))
    if reshuffle:
        assert not torch.equal(scheds[0].part(0), scheds[0].part(1))
    else:
        assert torch.equal(scheds[0].part(0), scheds[0].part(5))


def test_schedule_is_a_pure_function_of_seed_rank_and_step(digits_labels):
    a = BatchSchedule(digits_labels, 2, 1, 16, seed=4)
    b = BatchSchedule(digits_labels, 2, 1, 16, seed=4)
    late = [b.indices(t) for t in (57, 3, 12)]  # any order of questions gets the same answers
    assert all(torch.equal(x, a.indices(t)) for x, t in zip(late, (57, 3, 12)))
    assert not torch.equal(a.indices(3), a.indices(4))
    with pytest.raises(ValueError, match="Invalid rank: 2"):
        BatchSchedule(digits_labels, 2, 2, 16)
