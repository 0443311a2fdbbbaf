"""Gossip on 4 gloo ranks: W @ X against a local float64 reference, averages kept, consensus
shrinking at the spectral-gap rate, compressed messages, and exact byte accounting."""
import math

import pytest
import torch

from relaxtorch.comm import (Cast, CommStats, LinkModel, QSGD, complete, consensus_distance, gossip, ring,
                             topology, torus)

from ._gossip_world import shared_world

N, D = 4, 7
NAMES = ["ring", "torus", "exp", "one-peer-exp", "complete"]


def _gamma(n: int, dtype=torch.float64) -> float:
    """Higham's gamma_n = n u / (1 - n u): a sum of n products rounded in any order (fused or not)
    is within gamma_n * sum |w_j x_j| of the exact value."""
    u = torch.finfo(dtype).eps / 2
    return n * u / (1 - n * u)


def _models(seed=0, dtype=torch.float64):
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.fixture(scope="module")
def world():
    return shared_world(N)


# -- rank functions (module level: they run in the spawned ranks) ---------------------------------
def _gossip_steps(rank, size, name, steps, dtype):
    top = topology(name, size)
    x = _models(dtype=dtype)[rank]
    before = x.clone()
    stats = CommStats()
    link = LinkModel(1e6, 1e-3)
    outs = [gossip(x, top, step=s, stats=stats, link=link) for s in steps]
    assert torch.equal(x, before)  # the input is not mutated
    return outs, stats.as_dict()


def _repeated(rank, size, name, rounds):
    top = topology(name, size)
    x = _models(seed=3)[rank]
    dists = [consensus_distance(x)]
    for t in range(rounds):
        x = gossip(x, top, step=t)
        dists.append(consensus_distance([x[:3], x[3:]]))
    return x, dists


def _compressed(rank, size, compressor_kind, seed):
    top = ring(size)
    x = _models(seed=5, dtype=torch.float32)[rank]
    comp = Cast(torch.float16) if compressor_kind == "cast" else (
        QSGD(bits=4, bucket=4) if compressor_kind == "quantize" else _TensorHalf())
    stats = CommStats()
    gen = torch.Generator().manual_seed(seed * 100 + rank)
    out = gossip(x, top, step=0, compressor=comp, stats=stats, generator=gen)
    own_payload = comp.compress(x, generator=torch.Generator().manual_seed(seed * 100 + rank), step=0)
    return out, comp.decompress(own_payload), stats.as_dict()


def _wrong_size(rank, size):
    with pytest.raises(ValueError, match="built for 3 workers, the group has 4"):
        gossip(torch.zeros(2), ring(3))
    return True


class _TensorHalf:
    """A compressor whose payload is a plain tensor (float16): it travels as that tensor."""

    def compress(self, x, *, generator=None, step=0):
        return x.to(torch.float16)

    def decompress(self, p):
        return p.to(torch.float32)


class _Half:
    """A payload of no known layout."""

    def __init__(self, t):
        self.t = t
        self.nbytes = 2 * t.numel()


class _ObjectHalf(_TensorHalf):
    def compress(self, x, *, generator=None, step=0):
        return _Half(x.to(torch.float16))

    def decompress(self, p):
        return p.t.to(torch.float32)


def _object_payload(rank, size):
    """A payload that is neither a tensor nor of a fixed layout is refused on every rank, before
    anything is sent (nothing is ever unpickled); a plain round then still works."""
    with pytest.raises(ValueError, match="Invalid compressor payload: _Half .*nothing a peer sends is unpickled"):
        gossip(torch.ones(D), ring(size), compressor=_ObjectHalf())
    return gossip(torch.full((D,), float(rank)), ring(size))


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_gossip_equals_w_times_x(world, name):
    steps = [0, 1, 2, 3, 7]
    results = world.run(_gossip_steps, name, steps, torch.float64)
    top = topology(name, N)
    x = _models()
    for k, s in enumerate(steps):
        got = torch.stack([r[0][k] for r in results])
        w = top.matrix(s)
        ref = w @ x  # float64 reference, computed here (BLAS: another order than the ranks' sums)
        # each of got and ref is a sum of at most N products in some order: within gamma_N (|W| |X|)
        # of W X, elementwise, so within twice that of each other
        assert ((got - ref).abs() <= 2 * _gamma(N) * (w.abs() @ x.abs())).all(), (got - ref).abs().max()
    for rank, (_, stats) in enumerate(results):
        fanout = sum(top.n - 1 if name == "complete" else len(top.out_neighbors(rank, s)) for s in steps)
        assert stats["messages_sent"] == fanout
        assert stats["bytes_sent"] == fanout * 8 * D and stats["float32_bytes"] == fanout * 4 * D
        assert stats["simulated_comm_s"] == pytest.approx(LinkModel(1e6, 1e-3).seconds(fanout * 8 * D, fanout))
        assert stats["comm_s"] > 0


def test_gossip_in_float32_matches_reference(world):
    results = world.run(_gossip_steps, "ring", [0], torch.float32)
    ref = ring(N).matrix() @ _models()
    got = torch.stack([r[0][0] for r in results])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)
    assert results[0][1]["bytes_sent"] == 2 * 4 * D and results[0][1]["compression_ratio"] == 1.0


@pytest.mark.parametrize("name", ["ring", "exp"])
def test_repeated_gossip_keeps_the_average_and_contracts_at_the_spectral_rate(world, name):
    rounds = 12
    results = world.run(_repeated, name, rounds)
    x0 = _models(seed=3)
    final = torch.stack([r[0] for r in results])
    # W is doubly stochastic, so exact rounds keep the column means; each round's rounding moves a
    # rank's entry by at most gamma_N (|W| |X_t|) <= gamma_N max_i |x0_i| (per column, as |X_t| stays
    # below that, to first order in u), and each of the two means adds gamma_(N-1) max_i |x_i| of its own
    bound = (rounds * _gamma(N) + 2 * _gamma(N - 1)) * x0.abs().max(dim=0).values
    assert ((final.mean(dim=0) - x0.mean(dim=0)).abs() <= bound).all()
    dists = results[0][1]
    assert all(r[1] == pytest.approx(dists) for r in results)  # every rank gets the same value
    centred = x0 - x0.mean(dim=0)
    assert dists[0] == pytest.approx(math.sqrt((centred ** 2).sum().item() / N), rel=1e-12)
    w = topology(name, N).matrix()
    # ||(W - J)^t X||_F <= ||W - J||_2^t ||X - xbar||_F; ||W - J||_2 = |lambda_2| when W is symmetric
    rate = torch.linalg.matrix_norm(w - torch.full((N, N), 1 / N, dtype=torch.float64), ord=2).item()
    if name == "ring":
        assert rate == pytest.approx(1 - ring(N).spectral_gap, abs=1e-12)
    for t, d in enumerate(dists):
        assert d <= rate ** t * dists[0] * (1 + 1e-9) + 1e-15
    assert dists[-1] < 1e-4 * dists[0]


def test_one_peer_exponential_reaches_exact_consensus_in_one_period(world):
    results = world.run(_repeated, "one-peer-exp", 2)  # period log2(4) = 2
    x0 = _models(seed=3)
    assert results[0][1][1] > 0.1 * results[0][1][0]  # one round is not enough...
    # each round is 0.5 x_i + 0.5 x_j: exact halvings, one rounded addition (u |x| at most, the
    # error carried over averages), and the test's mean of 4 adds gamma_3 max |x|
    bound = (2 * _gamma(1) + _gamma(N - 1)) * x0.abs().max(dim=0).values
    for r in results:  # ...two are: every rank holds the exact average
        assert ((r[0] - x0.mean(dim=0)).abs() <= bound).all()
        assert r[1][2] < 1e-14


@pytest.mark.parametrize("kind", ["cast", "quantize", "tensor"])
def test_compressed_gossip_mixes_decompressed_neighbours(world, kind):
    results = world.run(_compressed, kind, 1)
    x = _models(seed=5, dtype=torch.float32)
    top = ring(N)
    w = top.matrix()
    decoded = [r[1] for r in results]  # what each rank's message decodes to (same seeds as in gossip)
    for i, (out, _, stats) in enumerate(results):
        ref = w[i, i] * x[i].double() + sum(w[i, j] * decoded[j].double() for j in top.neighbors(i))
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
        assert not torch.allclose(out.double(), (w @ x.double())[i], rtol=0, atol=1e-9)  # it did compress
        per_message = {"cast": 2 * D, "quantize": math.ceil(D * 4 / 8) + 4 * math.ceil(D / 4), "tensor": 2 * D}[kind]
        assert stats["bytes_sent"] == 2 * per_message and stats["messages_sent"] == 2
        assert stats["float32_bytes"] == 2 * 4 * D
        assert stats["compress_s"] > 0


def test_a_payload_of_no_fixed_layout_is_refused(world):
    w = ring(N).matrix()
    for rank, out in enumerate(world.run(_object_payload)):
        torch.testing.assert_close(out, (w @ torch.arange(N, dtype=torch.float64))[rank].float().expand(D))


def test_topology_must_match_the_world(world):
    assert world.run(_wrong_size) == [True] * N


def test_single_process_needs_no_process_group():
    x = torch.arange(3.0)
    assert torch.equal(gossip(x, ring(1)), x) and gossip(x, complete(1)) is not x
    assert consensus_distance(x) == 0.0
    with pytest.raises(ValueError, match="Invalid topology"):
        gossip(x, "ring")
    assert torch.equal(gossip(x, torus(1, 1)), x)
