"""Random reshuffling is not always better (De Sa, NeurIPS 2020): a learning problem where
with-replacement sampling has a smaller expected error than random reshuffling.

De Sa's matrices (a counterexample to the noncommutative AM-GM inequality for n >= 5) were not
reachable here, so this reproduces the claim on a smaller problem of our own: constant-step SGD
on 1-d quadratics f_i(x) = a_i (x - b_i)^2 / 2 with a large step (alpha a_i near the stability
limit 2).  Each step is the affine map x -> c_i x + e_i (c_i = 1 - alpha a_i, e_i = alpha a_i b_i),
so the stationary mean and second moment have closed forms under both samplers:
- with replacement (i.i.d. uniform steps): m1 = E e / (1 - E c), m2 = (2 E[ce] m1 + E e^2) / (1 - E c^2);
- random reshuffling (i.i.d. permutations, error read at epoch ends): the epoch is x -> C x + E_sigma
  with C = prod c_i and E_sigma enumerated over all n! orders; m1 = E E / (1 - C),
  m2 = (2 C m1 E E + E E^2) / (1 - C^2).
The exact values are then checked by simulation through ``relaxtorch.order.RandomReshuffling``.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from relaxtorch import order as rto


def _steps(a, b, alpha):
    c = [1.0 - alpha * ai for ai in a]
    e = [alpha * ai * bi for ai, bi in zip(a, b)]
    optimum = sum(ai * bi for ai, bi in zip(a, b)) / sum(a)
    return c, e, optimum


def stationary_error_with_replacement(a, b, alpha):
    c, e, opt = _steps(a, b, alpha)
    n = len(a)
    mean = lambda xs: sum(xs) / n  # noqa: E731
    m1 = mean(e) / (1 - mean(c))
    m2 = (2 * mean([ci * ei for ci, ei in zip(c, e)]) * m1 + mean([ei * ei for ei in e])) / (1 - mean([ci * ci for ci in c]))
    return m2 - 2 * opt * m1 + opt * opt


def stationary_error_random_reshuffling(a, b, alpha):
    c, e, opt = _steps(a, b, alpha)
    big_c = math.prod(c)
    offsets = []
    for perm in itertools.permutations(range(len(a))):
        x = 0.0
        for i in perm:
            x = c[i] * x + e[i]
        offsets.append(x)
    mean_e = sum(offsets) / len(offsets)
    mean_e2 = sum(v * v for v in offsets) / len(offsets)
    m1 = mean_e / (1 - big_c)
    m2 = (2 * big_c * m1 * mean_e + mean_e2) / (1 - big_c * big_c)
    return m2 - 2 * opt * m1 + opt * opt


PROBLEMS = {
    "two examples": ([1.0, 1.0], [1.0, -1.0], 1.9),
    "three examples": ([1.0, 0.0638, 1.0478], [-0.2188, -1.2459, -0.7323], 1.6458),
    "four examples": ([0.3723, 0.1081, 0.0799, 1.0], [0.3616, 1.3040, 0.9471, -0.7037], 1.8640),
}


def test_two_example_closed_form():
    # c = -0.9, e = (1.9, -1.9): WR 3.61 / 0.19 = 19; RR offsets +-3.61, 13.0321 / (1 - 0.81^2)
    assert stationary_error_with_replacement([1.0, 1.0], [1.0, -1.0], 1.9) == pytest.approx(19.0, rel=1e-12)
    assert stationary_error_random_reshuffling([1.0, 1.0], [1.0, -1.0], 1.9) == pytest.approx(
        13.0321 / (1 - 0.81 ** 2), rel=1e-12)


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_random_reshuffling_has_the_larger_expected_error(problem):
    a, b, alpha = PROBLEMS[problem]
    wr = stationary_error_with_replacement(a, b, alpha)
    rr = stationary_error_random_reshuffling(a, b, alpha)
    assert rr > 1.1 * wr


def _simulate(a, b, alpha, sampler, epochs, burn_in=200):
    c, e, opt = _steps(a, b, alpha)
    x, total = 0.0, 0.0
    for k in range(epochs + burn_in):
        for i in sampler():
            x = c[i] * x + e[i]
        if k >= burn_in:
            total += (x - opt) ** 2
    return total / epochs


def test_simulated_through_the_order_values_matches_the_exact_errors():
    a, b, alpha = PROBLEMS["two examples"]
    gen = torch.Generator().manual_seed(0)
    order = rto.RandomReshuffling(2)
    state = order.init(gen)

    def rr_epoch():
        nonlocal state
        perm, state = order.epoch(state)
        return perm.tolist()

    def wr_epoch():
        return torch.randint(0, 2, (2,), generator=gen).tolist()

    epochs = 20000
    rr, wr = _simulate(a, b, alpha, rr_epoch, epochs), _simulate(a, b, alpha, wr_epoch, epochs)
    # epoch-to-epoch correlation 0.81: ~2000 effective draws, relative s.e. of a second moment ~ 4%
    assert rr == pytest.approx(stationary_error_random_reshuffling(a, b, alpha), rel=0.2)
    assert wr == pytest.approx(stationary_error_with_replacement(a, b, alpha), rel=0.2)
    assert rr > 1.5 * wr
