"""CocktailSGD on a 4-rank gloo world: exact model averaging with every stage off, byte
counts, convergence, bit-identical resume from a state dict (update in flight included), and
the same bits whether the overlapped exchange runs in a thread or inline."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from relaxtorch.comm import CocktailSGD, Compose, QSGD, RandomK, TopK, parse_link
from relaxtorch.comm.allreduce import ring_allreduce_bytes

from ._world import shared_world

WORLD = 4
SMALL = dict(random_ratio=0.5, topk_ratio=0.5, bits=4, bucket=16)
OFF = dict(random_ratio=1.0, topk_ratio=1.0, bits=None)


@pytest.fixture(scope="module")
def world():
    return shared_world(WORLD)


def _lsq(world: int, n: int = 64, d: int = 20, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(world * n, d, generator=g)
    b = A @ torch.randn(d, generator=g) + 0.3 * torch.randn(world * n, generator=g)
    return A, b


def _shard(rank: int, size: int, A, b):
    n = A.shape[0] // size
    return A[rank * n:(rank + 1) * n], b[rank * n:(rank + 1) * n]


def _model(d: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # test-only: ranks start apart; the constructor broadcasts rank 0's
    return torch.nn.Linear(d, 1)


def _step(model, opt, Ai, bi) -> None:
    opt.zero_grad()
    ((model(Ai).squeeze(1) - bi) ** 2).mean().backward()
    opt.step()


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ------------------------------------------------------------------------------------------ exactness
def _off_ranks(rank, size, steps, lr):
    A, b = _lsq(size, n=16, d=5)
    Ai, bi = _shard(rank, size, A, b)
    model = _model(5, seed=rank)
    opt = CocktailSGD(torch.optim.SGD(model.parameters(), lr=lr), overlap=False, **OFF)
    for _ in range(steps):
        _step(model, opt, Ai, bi)
    return _flat(model), opt.anchor.clone(), opt.stats.as_dict(), repr(opt.compressor)


def test_all_stages_off_is_model_averaging(world):
    """Local SGD step on each shard, then the exact average (float64 loop) - every step."""
    steps, lr = 5, 0.1
    results = world.run(_off_ranks, steps, lr)
    A, b = _lsq(WORLD, n=16, d=5)
    init = _model(5, seed=0)
    w = _flat(init).double()
    for _ in range(steps):
        local = []
        for r in range(WORLD):
            Ai, bi = (t.double() for t in _shard(r, WORLD, A, b))
            res = Ai @ w[:5] + w[5] - bi
            grad = torch.cat([2 * Ai.T @ res / len(bi), (2 * res.mean()).reshape(1)])
            local.append(w - lr * grad)
        w = torch.stack(local).mean(0)
    for params, anchor, stats, comp in results:
        torch.testing.assert_close(params.double(), w, rtol=0, atol=1e-5)
        torch.testing.assert_close(anchor.double(), w, rtol=0, atol=1e-5)
        assert stats["steps"] == steps
        assert comp == "Compose(Identity())"
    # no compression: each rank sends its chunk's delta to 3 servers and its own chunk's update to 3 ranks
    chunks = [2, 2, 1, 1]  # 6 parameters over 4 ranks
    for r, (_, _, stats, _) in enumerate(results):
        per_step = 4 * (sum(chunks) - chunks[r]) + 3 * 4 * chunks[r]
        assert stats["bytes_sent"] == steps * per_step
        assert stats["messages_sent"] == steps * 2 * (WORLD - 1)


# ------------------------------------------------------------------------------------------ bytes
def _bytes_ranks(rank, size, d_in, d_out):
    torch.manual_seed(0)
    model = torch.nn.Linear(d_in, d_out, bias=False)
    opt = CocktailSGD(torch.optim.SGD(model.parameters(), lr=0.01), overlap=False,
                      link=parse_link("500Mbps,1ms"))
    x = torch.randn(8, d_in, generator=torch.Generator().manual_seed(rank))
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return opt.stats.as_dict(), repr(opt.compressor)


def test_default_stack_bytes_and_ratio(world):
    """Exact bytes from the stages' sizes; >= 100x fewer than a float32 ring all-reduce."""
    d_in, d_out = 1000, 40
    n = d_in * d_out
    results = world.run(_bytes_ranks, d_in, d_out)
    inner = Compose(TopK(0.2), QSGD(4, 128))
    chunk = n // WORLD
    k = RandomK(0.1).kept(chunk)
    payload = inner.wire_bytes(k)
    # one chunk: 1000 random -> 200 top-K as a 1000-bit mask (125 B) + 100 B of 4-bit codes + 2 scales
    assert payload == 125 + 100 + 4 * 2
    for r, (stats, comp) in enumerate(results):
        assert comp == ("Compose(RandomK(ratio=0.1, scale=False, seed=0, cycle=True), TopK(ratio=0.2), "
                        "QSGD(bits=4, bucket=128, rounding='stochastic'))")
        assert stats["bytes_sent"] == 2 * (2 * (WORLD - 1) * payload)
        assert stats["float32_bytes"] == 2 * ring_allreduce_bytes(n, 4, WORLD, r)[0]
        assert stats["compression_ratio"] > 100
        # per step two rounds of concurrent messages (to the N-1 servers, then from this one): 2 latencies
        want_s = 2 * (2 * 1e-3 + 8 * 2 * (WORLD - 1) * payload / 500e6)
        assert stats["messages_sent"] == 2 * 2 * (WORLD - 1)
        assert stats["simulated_comm_s"] == pytest.approx(want_s)


# ------------------------------------------------------------------------------------------ training
def _train_ranks(rank, size, cfg, steps, lr):
    A, b = _lsq(size)
    Ai, bi = _shard(rank, size, A, b)
    model = _model(A.shape[1], seed=rank)
    opt = CocktailSGD(torch.optim.SGD(model.parameters(), lr=lr), **cfg)
    with torch.no_grad():
        start = float(((model(A).squeeze(1) - b) ** 2).mean())
    for _ in range(steps):
        _step(model, opt, Ai, bi)
    opt.synchronize()
    w = opt.anchor_tensors()
    with torch.no_grad():
        local = float(((model(A).squeeze(1) - b) ** 2).mean())
        anchor = float(((A @ w[0].reshape(-1) + w[1] - b) ** 2).mean())
    return start, local, anchor, opt.stats.compression_ratio


@pytest.mark.parametrize("cfg", [dict(SMALL, overlap=True), dict(overlap=True)], ids=["small", "paper"])
def test_converges_on_least_squares(world, cfg):
    A, b = _lsq(WORLD)
    Ab = torch.cat([A, torch.ones(len(b), 1)], 1).double()
    best = float(((Ab @ torch.linalg.lstsq(Ab, b.double().unsqueeze(1)).solution).squeeze(1) - b).pow(2).mean())
    results = world.run(_train_ranks, cfg, 80, 0.05)
    for start, local, anchor, ratio in results:
        assert anchor - best < 0.03 * (start - best), (start, anchor, best)
        assert local - best < 0.03 * (start - best), (start, local, best)
        assert ratio > 3
    assert len({r[2] for r in results}) == 1  # one global model


# ------------------------------------------------------------------------------------------ resume
def _resume_ranks(rank, size, cfg, first, then):
    A, b = _lsq(size)
    Ai, bi = _shard(rank, size, A, b)
    model = _model(A.shape[1], seed=rank)
    opt = CocktailSGD(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5), seed=11, **cfg)
    for _ in range(first):
        _step(model, opt, Ai, bi)
    state = copy.deepcopy(opt.state_dict())  # as torch.save would: the live momentum keeps changing
    in_flight = state["cocktail"]["pending"] is not None
    for _ in range(then):
        _step(model, opt, Ai, bi)
    opt.synchronize()
    final, anchor = _flat(model), opt.anchor.clone()
    model2 = _model(A.shape[1], seed=50 + rank)
    opt2 = CocktailSGD(torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.5), seed=11, **cfg)
    opt2.load_state_dict(state)
    for _ in range(then):
        _step(model2, opt2, Ai, bi)
    opt2.synchronize()
    return torch.equal(_flat(model2), final), torch.equal(opt2.anchor, anchor), in_flight


@pytest.mark.parametrize("overlap,thread", [(True, True), (True, False), (False, None)],
                         ids=["overlap-thread", "overlap-inline", "no-overlap"])
def test_state_dict_resume_is_bit_identical(world, overlap, thread):
    """Inline, the state dict is taken before the pending exchange ran: state_dict runs it."""
    results = world.run(_resume_ranks, dict(SMALL, overlap=overlap, exchange_thread=thread), 3, 3)
    for same_params, same_anchor, in_flight in results:
        assert same_params and same_anchor
        assert in_flight == overlap


# ------------------------------------------------------------------------------------------ exchange thread
def _thread_ranks(rank, size, cfg, steps):
    A, b = _lsq(size)
    Ai, bi = _shard(rank, size, A, b)
    model = _model(A.shape[1], seed=rank)
    opt = CocktailSGD(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5), seed=3, **cfg)
    for _ in range(steps):
        _step(model, opt, Ai, bi)
    before = _flat(model), opt.anchor.clone()  # the last exchange still pending
    opt.synchronize()
    return before, (_flat(model), opt.anchor.clone()), opt.exchange_thread, opt.stats.bytes_sent


@pytest.mark.parametrize("cfg", [SMALL, {}], ids=["small", "paper"])
def test_inline_exchange_gives_the_threads_bits(world, cfg):
    """Where the overlapped exchange runs changes no value: the same ops on the same snapshots,
    in the same order (kernels and elementwise torch ops: defined bit for bit).  It moves
    the model (the exchange does something) and stays one step stale (the update arrives
    with the next step or synchronize)."""
    steps = 7
    threaded = world.run(_thread_ranks, dict(cfg, exchange_thread=True), steps)
    inline = world.run(_thread_ranks, dict(cfg, exchange_thread=False), steps)
    exact = world.run(_thread_ranks, dict(cfg, overlap=False), steps)
    for t, i, e in zip(threaded, inline, exact):
        assert t[2] is True and i[2] is False and e[2] is False
        for a, b in zip(t[0] + t[1], i[0] + i[1]):
            assert torch.equal(a, b)
        assert t[3] == i[3] > 0
        assert not torch.equal(t[0][1], t[1][1])  # synchronize applied the pending update to the anchor
        assert not torch.equal(t[1][1], e[1][1])  # one step stale is not the same as no overlap
    assert len({tuple(r[1][1].tolist()) for r in inline}) == 1  # one global model


def test_spare_core_rule(monkeypatch):
    import os

    from relaxtorch.comm.cocktail import spare_core
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores // 2))
    assert spare_core(1000) is (cores // 2 >= 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores // 2 + 1))
    assert spare_core(1) is False
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert spare_core(cores) is False  # every rank local, one core each
    assert spare_core(1) is (cores >= 2)


# ------------------------------------------------------------------------------------------ layouts
def _layout_ranks(rank, size, contiguous, cfg):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 3, generator=g)
    weight = torch.nn.Parameter(base.t().contiguous() if contiguous else base.t())  # (3, 4) either way
    assert weight.is_contiguous() == contiguous
    bias = torch.nn.Parameter(torch.zeros(3))
    opt = CocktailSGD(torch.optim.SGD([weight, bias], lr=0.1), overlap=False, **cfg)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(rank))
    for _ in range(4):
        # The gradient of the least-squares loss at the current weights, formed on a contiguous
        # copy so that both runs feed BLAS the same bits in the same layout (a matmul over a
        # transposed operand may round differently on another CPU or BLAS); it is then stored
        # in the parameter's own layout, as autograd would, so only the optimizer and
        # CocktailSGD see the layout.
        w = weight.detach().contiguous().requires_grad_()
        b = bias.detach().clone().requires_grad_()
        (x @ w.t() + b).pow(2).mean().backward()
        weight.grad = torch.empty_like(weight).copy_(w.grad)  # empty_like keeps the strides
        bias.grad = b.grad
        assert weight.grad.stride() == weight.stride()
        opt.step()
    return weight.detach().clone(), bias.detach().clone()


@pytest.mark.parametrize("cfg", [SMALL, OFF], ids=["small", "off"])
def test_non_contiguous_parameters(world, cfg):
    """A transposed (non-contiguous) parameter takes the same updates as its contiguous copy.

    Given the same gradient values, the path (SGD's elementwise update, CocktailSGD's flatten,
    compress and write-back into a random subset ("small") or every position ("off")) is
    defined bit for bit, so the two runs must agree exactly."""
    a = world.run(_layout_ranks, True, cfg)
    b = world.run(_layout_ranks, False, cfg)
    for (wa, ba), (wb, bb) in zip(a, b):
        assert torch.equal(wa, wb) and torch.equal(ba, bb)
    assert not torch.equal(a[0][0], torch.randn(4, 3, generator=torch.Generator().manual_seed(0)).t())  # it moved


# ------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("kwargs", [dict(random_ratio=0), dict(topk_ratio=1.5), dict(bits=1), dict(bits=33),
                                    dict(bucket=0), dict(bits=None, bucket=-1), dict(overlap="yes"), dict(seed=1.5), dict(link="500Mbps"),
                                    dict(exchange_thread="yes"), dict(exchange_thread=1)])
def test_bad_arguments(kwargs):
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"^Invalid \w+"):
        CocktailSGD(torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_paper_defaults_ratio_on_a_million():
    """Per rank and step at N=4 on 1M parameters: 2(N-1) payloads of a 250k chunk vs the ring."""
    n, world = 1_000_000, 4
    payload = Compose(TopK(0.2), QSGD(4, 128)).wire_bytes(RandomK(0.1).kept(n // world))
    ratio = ring_allreduce_bytes(n, 4, world, 0)[0] / (2 * (world - 1) * payload)
    assert math.floor(ratio) >= 170
