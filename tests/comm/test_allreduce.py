"""Compressed all-reduce and DataParallel on a 4-rank gloo world (and a 3-rank subgroup)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from relaxtorch import formats
from relaxtorch.comm import (Cast, CommStats, Compose, DataParallel, ErrorFeedback, QSGD,
                             RandomK, Sign, TopK, allreduce, parse_link)
from relaxtorch.comm.allreduce import ring_allgather_bytes, ring_allreduce_bytes

from ._world import shared_world

WORLD = 4
COMPRESSORS = {
    "quantize": QSGD(4, 8),
    "topk": TopK(0.3),
    "cocktail": Compose(RandomK(0.5, seed=3), TopK(0.5), QSGD(3, 4)),
    "sign": Sign(5),
    "fp8": Cast(formats.FP8_E4M3, "stochastic"),
    "bf16": Cast(torch.bfloat16),
}
NUMEL = 37


@pytest.fixture(scope="module")
def world():
    return shared_world(WORLD)


def _local(rank: int) -> torch.Tensor:
    return torch.randn(NUMEL, generator=torch.Generator().manual_seed(1000 + rank))


# ------------------------------------------------------------------------------------------ ring bytes
def _simulated_ring(numel: int, world: int) -> list[int]:
    """Elements each rank sends in a ring all-reduce, by walking the schedule step by step."""
    sizes = [numel // world + (1 if j < numel % world else 0) for j in range(world)]
    sent = [0] * world
    for phase in range(2):  # reduce-scatter, then all-gather
        for s in range(world - 1):
            for r in range(world):
                chunk = (r - s + phase) % world  # rank r forwards this chunk to r+1
                sent[r] += sizes[chunk]
    return sent


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("numel", [0, 1, 5, 37, 1000])
def test_ring_allreduce_bytes(world_size, numel):
    want = _simulated_ring(numel, world_size)
    got = [ring_allreduce_bytes(numel, 4, world_size, r) for r in range(world_size)]
    assert [b for b, _ in got] == [4 * w for w in want]
    assert sum(b for b, _ in got) == 4 * 2 * (world_size - 1) * numel
    assert all(m == 2 * (world_size - 1) for _, m in got)
    assert ring_allgather_bytes(10, world_size) == (10 * (world_size - 1), world_size - 1)


# ------------------------------------------------------------------------------------------ allreduce
def _allreduce_ranks(rank, size):
    link = parse_link("100Mbps,1ms")
    x = _local(rank)
    x0 = x.clone()
    out = {}
    stats = CommStats()
    out["identity"] = allreduce(x, group=None, link=link, stats=stats)
    out["identity_sum"] = allreduce(x, op="sum")
    out["identity_stats"] = stats.as_dict()
    for name, comp in COMPRESSORS.items():
        st = CommStats()
        out[name] = allreduce(x, comp, stats=st, link=link, generator=torch.Generator().manual_seed(7 + rank),
                              step=5)
        out[name + "_stats"] = st.as_dict()
    ef = ErrorFeedback(TopK(0.2))
    out["ef"] = [allreduce(x * (t + 1), ef, key="k", step=t) for t in range(3)]
    out["ef_residual"] = ef.residual("k")
    sub = dist.new_group([0, 1, 2])
    if rank < 3:
        out["sub_identity"] = allreduce(x, group=sub)
        st = CommStats()
        out["sub_quantize"] = allreduce(x, QSGD(4, 8), group=sub, stats=st,
                                        generator=torch.Generator().manual_seed(7 + rank), step=5)
        out["sub_stats"] = st.as_dict()
    assert torch.equal(x, x0)
    return out


@pytest.fixture(scope="module")
def reduced(world):
    return world.run(_allreduce_ranks)


def test_identity_is_the_mean(reduced):
    xs = torch.stack([_local(r) for r in range(WORLD)]).double()
    for r in range(WORLD):
        torch.testing.assert_close(reduced[r]["identity"].double(), xs.mean(0), rtol=0, atol=1e-6)
        torch.testing.assert_close(reduced[r]["identity_sum"].double(), xs.sum(0), rtol=0, atol=1e-5)
    sub = xs[:3].mean(0)
    for r in range(3):
        torch.testing.assert_close(reduced[r]["sub_identity"].double(), sub, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressed_is_the_mean_of_each_ranks_decompression(reduced, name):
    comp = COMPRESSORS[name]
    want = torch.stack([comp.roundtrip(_local(r), generator=torch.Generator().manual_seed(7 + r), step=5)
                        for r in range(WORLD)]).double().mean(0)
    for r in range(WORLD):
        torch.testing.assert_close(reduced[r][name].double(), want, rtol=0, atol=1e-6)
        assert torch.equal(reduced[r][name], reduced[0][name])  # every rank holds the same bits
    wire = comp.wire_bytes(NUMEL)
    for r in range(WORLD):
        st = reduced[r][name + "_stats"]
        assert st["bytes_sent"] == (WORLD - 1) * wire
        assert st["messages_sent"] == WORLD - 1
        assert st["float32_bytes"] == ring_allreduce_bytes(NUMEL, 4, WORLD, r)[0]
        assert st["simulated_comm_s"] == pytest.approx((WORLD - 1) * 1e-3 + 8 * st["bytes_sent"] / 100e6)


def test_subgroup_quantize(reduced):
    comp = QSGD(4, 8)
    want = torch.stack([comp.roundtrip(_local(r), generator=torch.Generator().manual_seed(7 + r), step=5)
                        for r in range(3)]).double().mean(0)
    for r in range(3):
        torch.testing.assert_close(reduced[r]["sub_quantize"].double(), want, rtol=0, atol=1e-6)
        assert reduced[r]["sub_stats"]["bytes_sent"] == 2 * comp.wire_bytes(NUMEL)
        assert reduced[r]["sub_stats"]["float32_bytes"] == ring_allreduce_bytes(NUMEL, 4, 3, r)[0]
    assert "sub_identity" not in reduced[3]


def test_identity_bytes(reduced):
    per_rank = [reduced[r]["identity_stats"] for r in range(WORLD)]
    assert sum(s["bytes_sent"] for s in per_rank) == 2 * (WORLD - 1) * 4 * NUMEL
    for r, s in enumerate(per_rank):
        assert s["bytes_sent"] == s["float32_bytes"] == ring_allreduce_bytes(NUMEL, 4, WORLD, r)[0]
        assert s["compression_ratio"] == 1.0 and s["messages_sent"] == 2 * (WORLD - 1)


def test_error_feedback_allreduce(reduced):
    """Each rank's residual is its own; averaged messages follow the same telescoping sum."""
    comp = TopK(0.2)
    local = []
    for r in range(WORLD):
        ef = ErrorFeedback(comp)
        sent = [ef.decompress(ef.compress(_local(r) * (t + 1))) for t in range(3)]
        local.append((sent, ef.residual()))
    for t in range(3):
        want = torch.stack([local[r][0][t] for r in range(WORLD)]).mean(0)
        torch.testing.assert_close(reduced[0]["ef"][t], want, rtol=0, atol=1e-6)
    for r in range(WORLD):
        torch.testing.assert_close(reduced[r]["ef_residual"], local[r][1], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ DataParallel
def _lsq(world: int, n: int = 32, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(world * n, d, generator=g)
    b = A @ torch.randn(d, generator=g) + 0.3 * torch.randn(world * n, generator=g)
    return A, b


def _model(d: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # test-only: different starting points per rank, fixed by the broadcast
    return torch.nn.Linear(d, 1)


def _dp_baseline_ranks(rank, size, steps, lr, momentum):
    A, b = _lsq(size)
    n = A.shape[0] // size
    Ai, bi = A[rank * n:(rank + 1) * n], b[rank * n:(rank + 1) * n]
    model = _model(A.shape[1], seed=rank)
    opt = DataParallel(torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum), bucket_numel=4)
    for _ in range(steps):
        opt.zero_grad()
        ((model(Ai).squeeze(1) - bi) ** 2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt.stats.as_dict()


def test_data_parallel_equals_full_batch_sgd(world):
    """Identity DataParallel (3 buckets splitting a parameter) == one process, full batch, float64 loop."""
    steps, lr, momentum = 6, 0.1, 0.9
    results = world.run(_dp_baseline_ranks, steps, lr, momentum)
    A, b = _lsq(WORLD)
    A, b = A.double(), b.double()
    init = _model(A.shape[1], seed=0)  # rank 0's start, broadcast to all
    w, c = init.weight.detach().double().reshape(-1).clone(), float(init.bias.detach())
    vw, vc = torch.zeros_like(w), 0.0
    for _ in range(steps):
        r = A @ w + c - b
        gw, gc = 2 * A.T @ r / len(b), float(2 * r.mean())
        vw, vc = momentum * vw + gw, momentum * vc + gc
        w, c = w - lr * vw, c - lr * vc
    for params, stats in results:
        torch.testing.assert_close(params[0].double().reshape(-1), w, rtol=0, atol=1e-5)
        assert abs(float(params[1]) - c) < 1e-5
        assert stats["steps"] == steps and stats["compression_ratio"] == 1.0
    assert all(torch.equal(p[0][0], results[0][0][0]) for p in results)


def _dp_converge_ranks(rank, size, compressor, steps, lr):
    A, b = _lsq(size, n=64, d=20, seed=1)
    n = A.shape[0] // size
    Ai, bi = A[rank * n:(rank + 1) * n], b[rank * n:(rank + 1) * n]
    model = _model(A.shape[1], seed=rank)
    opt = DataParallel(torch.optim.SGD(model.parameters(), lr=lr), compressor, seed=3)
    with torch.no_grad():
        start = float(((model(A).squeeze(1) - b) ** 2).mean())
    for t in range(steps):
        opt.zero_grad()
        ((model(Ai).squeeze(1) - bi) ** 2).mean().backward()
        opt.step()
        if t == steps // 2:
            state = copy.deepcopy(opt.state_dict())
            snapshot = [p.detach().clone() for p in model.parameters()]
    final = [p.detach().clone() for p in model.parameters()]
    # resume from the checkpoint: identical remaining steps
    model2 = _model(A.shape[1], seed=99)
    opt2 = DataParallel(torch.optim.SGD(model2.parameters(), lr=lr), ErrorFeedback(compressor.compressor)
                        if isinstance(compressor, ErrorFeedback) else compressor, seed=3, broadcast=False)
    with torch.no_grad():
        for p, s in zip(model2.parameters(), snapshot):
            p.copy_(s)
    opt2.load_state_dict(state)
    for _ in range(steps // 2 + 1, steps):
        opt2.zero_grad()
        ((model2(Ai).squeeze(1) - bi) ** 2).mean().backward()
        opt2.step()
    resumed = all(torch.equal(p, q) for p, q in zip(model2.parameters(), final))
    with torch.no_grad():
        end = float(((model(A).squeeze(1) - b) ** 2).mean())
    return start, end, resumed, opt.stats.compression_ratio


def test_one_bit_sgd_with_error_feedback_converges(world):
    A, b = _lsq(WORLD, n=64, d=20, seed=1)
    Ab = torch.cat([A, torch.ones(len(b), 1)], 1).double()
    best = float(((Ab @ torch.linalg.lstsq(Ab, b.double().unsqueeze(1)).solution).squeeze(1) - b).pow(2).mean())
    results = world.run(_dp_converge_ranks, ErrorFeedback(Sign()), 120, 0.05)
    for start, end, resumed, ratio in results:
        assert end - best < 0.02 * (start - best), (start, end, best)
        assert resumed
        assert ratio > 5  # 21 floats -> 3 bits bytes + 4-byte scale
    assert len({r[1] for r in results}) == 1  # the ranks agree
