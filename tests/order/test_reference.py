"""Each compiled sorter gives exactly the permutations of its slow reference loop (_reference.py)
for the same gradients and generator: full epochs, odd n, partial epochs, repeated indices."""
from __future__ import annotations

import pytest
import torch

from relaxtorch import order as rto
from relaxtorch.order import _reference as ref
from relaxtorch.order._base import own_generator


def _full(perm, batch=4):
    return [perm[i:i + batch] for i in range(0, perm.numel(), batch)]


def _drop_last(perm, batch=4):
    return [perm[i:i + batch] for i in range(0, perm.numel() - batch + 1, batch)]


def _early_break(perm, batch=3):
    return _full(perm, batch)[: max(1, (perm.numel() // batch) * 3 // 5)]


def _repeats(perm, batch=5):
    steps = _full(perm, batch)
    return steps + [perm[:3], perm[2:6].flip(0)]  # a second pass over some examples: ignored


def _shuffled_steps(perm, batch=4):
    # observations need not follow the epoch's order (e.g. a loader with its own order)
    return _full(perm.flip(0), batch)


PLANS = {"full": _full, "drop_last": _drop_last, "break": _early_break, "repeats": _repeats,
         "reversed": _shuffled_steps}

SORTERS = {
    "grab": (lambda n, d: rto.GraB(n, d), lambda d: ref.MeanBalance(d)),
    "prob": (lambda n, d: rto.ProbBalance(n, d, c_scale=2.0), lambda d: ref.MeanBalance(d, prob=True, c_scale=2.0)),
    "pair": (lambda n, d: rto.PairBalance(n, d), lambda d: ref.PairBalance(d)),
    "recursive0": (lambda n, d: rto.RecursiveBalance(n, d, depth=0), lambda d: ref.RecursiveBalance(d, 0)),
    "recursive3": (lambda n, d: rto.RecursiveBalance(n, d, depth=3), lambda d: ref.RecursiveBalance(d, 3)),
    "herding": (lambda n, d: rto.Herding(n, d), lambda d: ref.Herding(d)),
}


def drive(name, n, d, plan, *, seed=0, epochs=4, dtype=torch.float32):
    """Run the compiled order and its reference on the same steps; the two lists of permutations."""
    make_fast, make_ref = SORTERS[name]
    order, reference = make_fast(n, d), make_ref(d)
    table = torch.randn(n, d, generator=torch.Generator().manual_seed(100 + seed), dtype=dtype)
    table += 0.5  # a common component, which the stale mean has to take out
    state = order.init(torch.Generator().manual_seed(seed))
    gen = own_generator(torch.Generator().manual_seed(seed))  # the reference's copy of the order's stream
    expected = torch.randperm(n, generator=gen).tolist()
    fast_perms, ref_perms = [], []
    for _ in range(epochs):
        perm, state = order.epoch(state)
        fast_perms.append(perm.tolist())
        ref_perms.append(expected)
        for idx in plan(perm):
            state = order.observe(state, idx, table[idx])
            u = torch.rand(idx.numel(), generator=gen, dtype=torch.float64) if name == "prob" else None
            reference.step(idx, table[idx], u)
        expected = reference.next_perm(perm)
    return fast_perms, ref_perms


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("name", list(SORTERS))
def test_compiled_sorter_matches_reference_loop(name, plan):
    fast, slow = drive(name, n=37, d=6, plan=PLANS[plan])
    assert fast == slow
    assert all(sorted(p) == list(range(37)) for p in fast)


@pytest.mark.parametrize("name", ["grab", "pair", "recursive3"])
@pytest.mark.parametrize("n", [1, 2, 3, 64])
def test_matches_for_small_and_even_n_and_float64(name, n):
    fast, slow = drive(name, n=n, d=3, plan=_full, seed=n, dtype=torch.float64)
    assert fast == slow


def test_recursive_depth_zero_is_grab():
    a, _ = drive("grab", n=40, d=4, plan=_full, seed=5)
    b, _ = drive("recursive0", n=40, d=4, plan=_full, seed=5)
    assert a == b


def test_balancing_moves_examples():
    # not vacuous: the balanced epochs differ from the first random permutation
    fast, _ = drive("grab", n=37, d=6, plan=_full)
    assert fast[1] != fast[0] and fast[2] != fast[1]
