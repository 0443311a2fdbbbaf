"""The DDP communication hook against DDP's own all-reduce, on a 4-rank gloo world."""
from __future__ import annotations

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from relaxtorch.comm import ErrorFeedback, Identity, Sign, TopK, ddp_comm_hook, parse_link
from relaxtorch.comm.allreduce import ring_allgather_bytes, ring_allreduce_bytes

from ._world import shared_world

WORLD = 4


def _net() -> torch.nn.Module:
    torch.manual_seed(0)  # test-only: the same start on every rank
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _batch(rank: int, step: int):
    g = torch.Generator().manual_seed(100 * rank + step)
    return torch.randn(16, 5, generator=g), torch.randn(16, 2, generator=g)


def _mean_slack(parts: list[torch.Tensor]) -> torch.Tensor:
    """Elementwise bound on the gap between two float32 means of ``parts`` summed in different orders.

    Either sum of n terms is within gamma_(n-1) sum |x_r| of the exact one (gamma_k = k u / (1 - k u),
    u = 2**-24), and dividing by n = 4 is exact, so two means differ by at most 2 gamma_(n-1) sum |x_r| / n.
    """
    n, u = len(parts), torch.finfo(torch.float32).eps / 2
    gamma = (n - 1) * u / (1 - (n - 1) * u)
    return 2 * gamma * torch.stack(parts).abs().sum(0) / n


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _ddp_ranks(rank, size, compressor, steps):
    """Per step: this rank's local gradients (plain backward) and DDP's averaged ones, with the hook."""
    plain, net = _net(), _net()
    ddp = DDP(net, bucket_cap_mb=25)  # one bucket
    state = None
    if compressor is not None:
        state, hook = ddp_comm_hook(compressor, link=parse_link("1Gbps,0.5ms"))
        ddp.register_comm_hook(state, hook)
    out = []
    for step in range(steps):
        x, y = _batch(rank, step)
        plain.zero_grad()
        ((plain(x) - y) ** 2).mean().backward()
        ddp.zero_grad()
        ((ddp(x) - y) ** 2).mean().backward()
        out.append((_grads(plain), _grads(ddp)))
    return out, (state.stats.as_dict() if state is not None else None)


@pytest.fixture(scope="module")
def world():
    return shared_world(WORLD)


def test_identity_hook_equals_ddp_allreduce(world):
    default = world.run(_ddp_ranks, None, 2)
    hooked = world.run(_ddp_ranks, Identity(), 2)
    numel = sum(p.numel() for p in _net().parameters())
    for r in range(WORLD):
        for step in range(2):
            local = [[default[q][0][step][0][i] for q in range(WORLD)] for i in range(len(default[r][0][step][0]))]
            # DDP's all-reduce, the hook's and the stacked mean here each sum the ranks' local
            # gradients in some order: they agree within _mean_slack of each other
            for a, b, parts in zip(default[r][0][step][1], hooked[r][0][step][1], local):
                assert ((a - b).abs() <= _mean_slack(parts)).all(), (a - b).abs().max()
            for parts, b in zip(local, hooked[r][0][step][1]):
                assert ((torch.stack(parts).mean(0) - b).abs() <= _mean_slack(parts)).all()
        stats = hooked[r][1]
        assert stats["steps"] == 2
        assert stats["bytes_sent"] == stats["float32_bytes"] == 2 * ring_allreduce_bytes(numel, 4, WORLD, r)[0]


def test_topk_hook_is_mean_of_sparsified_local_gradients(world):
    """TopK over the whole bucket picks a set independent of the bucket's layout: the reference
    sparsifies each rank's concatenated local gradients, then averages."""
    ratio = 0.25
    results = world.run(_ddp_ranks, TopK(ratio), 1)
    numel = sum(p.numel() for p in _net().parameters())
    k = TopK(ratio).kept(numel)
    sparse = []
    for r in range(WORLD):
        local = results[r][0][0][0]
        flat = torch.cat([g.reshape(-1) for g in local])
        thresh = flat.abs().sort(descending=True).values[k - 1]
        sparse.append([torch.where(g.abs() >= thresh, g, torch.zeros_like(g)) for g in local])
    parts = [[sparse[r][i] for r in range(WORLD)] for i in range(len(sparse[0]))]
    for r in range(WORLD):
        for a, ps in zip(results[r][0][0][1], parts):  # the same mean, maybe summed in another order
            assert ((a - torch.stack(ps).mean(0)).abs() <= _mean_slack(ps)).all()
        stats = results[r][1]
        assert stats["bytes_sent"] == ring_allgather_bytes(TopK(ratio).wire_bytes(numel), WORLD)[0]
        assert stats["float32_bytes"] == ring_allreduce_bytes(numel, 4, WORLD, r)[0]
        assert stats["simulated_comm_s"] > 0


def _ddp_train_ranks(rank, size, steps):
    net = _net()
    ddp = DDP(net)
    state, hook = ddp_comm_hook(ErrorFeedback(Sign()), seed=1)
    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    losses = []
    x, y = _batch(rank, 0)
    target = torch.nn.Linear(5, 2)
    with torch.no_grad():
        target.weight.copy_(torch.linspace(-1, 1, 10).reshape(2, 5))
        y = target(x)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    residual = state.compressor.residual(0)
    return losses, residual is not None and residual.abs().sum() > 0, state.stats.compression_ratio


def test_one_bit_hook_trains(world):
    results = world.run(_ddp_train_ranks, 60)
    for losses, has_residual, ratio in results:
        assert losses[-1] < 0.1 * losses[0]
        assert has_residual and ratio > 10
