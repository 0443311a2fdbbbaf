"""Random projections: linear, norm-preserving in expectation, and a projected sorter is the
plain sorter run on the projected gradients; sorter memory is O(d) (herding's is n x d)."""
from __future__ import annotations

import pytest
import torch

from relaxtorch import order as rto
from relaxtorch.order import _reference as ref
from relaxtorch.order.projection import make_projection, project, projected_dim

D, DIM = 300, 40


@pytest.mark.parametrize("kind", ["sparse_jl", "kronecker"])
def test_linear_and_norm_preserving_in_expectation(kind):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, D, generator=gen)
    ratios = []
    for seed in range(60):
        p = make_projection(kind, D, DIM, torch.Generator().manual_seed(seed))
        y = project(kind, p, x)
        assert y.shape == (2, projected_dim(kind, D, DIM))
        torch.testing.assert_close(project(kind, p, x[:1] + 2 * x[1:]), y[:1] + 2 * y[1:], rtol=1e-5, atol=1e-4)
        ratios.append(y.pow(2).sum(1) / x.pow(2).sum(1))
    r = torch.cat(ratios).double()
    # E ||Px||^2 = ||x||^2; 120 draws, relative sd of one draw about sqrt(2 / DIM) -> s.e. ~ 2%
    assert abs(r.mean().item() - 1) < 5 * r.std().item() / len(r) ** 0.5


@pytest.mark.parametrize("kind", ["sparse_jl", "kronecker"])
def test_projected_sorter_equals_sorter_on_projected_gradients(kind):
    n = 24
    table = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    projected = rto.GraB(n, D, projection=kind, dim=DIM)
    state = projected.init(torch.Generator().manual_seed(2))
    reference = ref.MeanBalance(projected.balanced_dim)
    small = project(kind, state.buffers, table)
    perm, state = projected.epoch(state)
    for _ in range(3):
        for i in range(0, n, 5):
            state = projected.observe(state, perm[i:i + 5], table[perm[i:i + 5]])
            reference.step(perm[i:i + 5], small[perm[i:i + 5]])
        expected = reference.next_perm(perm)
        perm, state = projected.epoch(state)
        assert perm.tolist() == expected


def test_bad_projection_options():
    with pytest.raises(ValueError, match="Invalid projection"):
        rto.GraB(4, 8, projection="dense")
    with pytest.raises(ValueError, match="Invalid dim"):
        rto.GraB(4, 8, projection="kronecker")


@pytest.mark.parametrize("name", ["grab", "pair", "prob", "recursive"])
def test_sorter_state_is_O_d_and_herding_is_n_times_d(name):
    def bytes_for(name, n, d, **kw):
        order = rto.make(name, n, d=d, **kw)
        state = order.init(torch.Generator())
        perm, state = order.epoch(state)
        state = order.observe(state, perm, torch.randn(n, d))
        return order.state_bytes(state)

    n, d = 50, 4000
    per_example = 8 * 4  # slots / group / seq (int64), perm (int64), seen (uint8): O(n) integers
    small = bytes_for(name, n, d)
    assert small <= 64 * 8 * d + per_example * n  # a bounded number of float64 d-vectors
    assert bytes_for(name, n, 2 * d) - small == 2 * (small - bytes_for(name, n, d // 2))  # linear in d
    herding = bytes_for("herding", n, d)
    assert herding >= 8 * n * d
    assert bytes_for(name, n, d, projection="kronecker", dim=64) < small / 4
