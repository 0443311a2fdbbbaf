"""Moniqua (wrapping torch.optim.SGD): bit packing (comm._bits, its wire code), the modulo code's
decoding window, unbiased rounding, the update on 4 gloo ranks against a float64 simulation
that uses the true grid indices (so any decoding error shows), with and without SGD momentum,
exact byte counts, and convergence with 1- and 2-bit messages."""
import math

import pytest
import torch

from relaxtorch._seeding import generator

from relaxtorch.comm import Moniqua, ring, topology
from relaxtorch.comm._bits import pack as pack_bits, unpack as unpack_bits
from relaxtorch.comm.moniqua import consensus_bound_factor, modulo_decode

from ._gossip_world import shared_world
from .test_decentralized import _data, _grad, _init, _loss, _optimum, _split

N = 4
NUMEL = 8  # the least-squares model of test_decentralized: W (3 x 2) and b (2)


@pytest.fixture(scope="module")
def world():
    return shared_world(N)


# -- the code ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip(bits):
    for numel in (0, 1, 7, 8, 9, 1000):
        codes = torch.randint(2 ** bits, (numel,), generator=torch.Generator().manual_seed(numel))
        packed = pack_bits(codes, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel * bits / 8)
        assert torch.equal(unpack_bits(packed, bits, numel), codes)
    all_codes = torch.arange(2 ** bits)  # every code, bit by bit: code c sits at bits [c*b, (c+1)*b)
    bitstring = "".join(format(c, f"0{bits}b")[::-1] for c in range(2 ** bits))
    bitstring += "0" * (-len(bitstring) % 8)
    expected = [int(bitstring[i:i + 8][::-1], 2) for i in range(0, len(bitstring), 8)]
    assert pack_bits(all_codes, bits).tolist() == expected


@pytest.mark.parametrize("bits, mode", [(b, m) for b in (1, 2, 3, 8) for m in ("shared", "private", "nearest")
                                         if (b, m) != (1, "private")])  # private dithers need 2 bits
def test_modulo_decoding_is_exact_inside_the_window_and_the_window_is_tight(bits, mode):
    g = torch.Generator().manual_seed(bits)
    levels, theta, n = 2 ** bits, 0.37, 20000
    s = 2 * theta / (levels - (2 if mode == "private" else 1))  # B = 2 theta / (1 - c / L), s = B / L
    xi = 50 * torch.randn(n, generator=g, dtype=torch.float64)
    offset = theta * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * (1 - 1e-9)
    offset[:4] = torch.tensor([0.999999, -0.999999, 0.0, 0.5]) * theta
    xj = xi + offset
    uj = torch.rand(n, generator=g, dtype=torch.float64) if mode != "nearest" else torch.full((n,), 0.5)
    kj = torch.floor(xj / s + uj)  # what j rounds to; it sends kj mod L
    known = uj if mode in ("shared", "nearest") else 0.0  # the dither the receiver knows
    got = modulo_decode(torch.remainder(kj, levels).long(), xi, theta, s, known, bits)
    assert torch.equal(got, kj)
    far = xi + 1.3 * theta * torch.sign(offset)  # beyond theta the window (exactly L wide) fails
    kf = torch.floor(far / s + uj)
    wrong = modulo_decode(torch.remainder(kf, levels).long(), xi, theta, s, known, bits) != kf
    assert 0.01 < wrong.double().mean() < 1.0


def test_stochastic_rounding_on_the_grid_is_unbiased():
    g = torch.Generator().manual_seed(3)
    x = torch.tensor([0.1234, -3.71, 2.0, 5e-3], dtype=torch.float64)
    s, n = 0.25, 200_000
    k = torch.floor(x / s + torch.rand(n, 4, generator=g, dtype=torch.float64))
    frac = x / s - torch.floor(x / s)
    se = s * torch.sqrt(frac * (1 - frac) / n)  # Bernoulli rounding: var = s^2 p (1 - p)
    assert ((k * s).mean(0) - x).abs().le(4 * se + 1e-15).all()
    assert ((k * s - x).abs() < s).all()


def _consensus_deviation(top, gamma, grads, lr=1.0):
    """max_i |x_i - xbar| after D-PSGD's recursion with mixing (1 - gamma) I + gamma W_t, from consensus."""
    n = top.n
    e = torch.zeros(n, dtype=torch.float64)
    avg = torch.full((n, n), 1 / n, dtype=torch.float64)
    for t, g in enumerate(grads):
        mix = (1 - gamma) * torch.eye(n, dtype=torch.float64) + gamma * top.matrix(t)
        e = (mix - avg) @ e - lr * (g - g.mean())
    return e.abs().max().item()


@pytest.mark.parametrize("top, gamma", [(ring(4), 1.0), (ring(4), 1 / 6), (ring(7), 0.5), (topology("exp", 8), 1.0),
                                        (topology("one-peer-exp", 4), 1.0), (topology("one-peer-exp", 8), 0.3)])
def test_consensus_bound_factor_is_the_worst_case_of_the_recursion(top, gamma):
    c = consensus_bound_factor(top, gamma)
    g = torch.Generator().manual_seed(0)
    steps = 200
    for _ in range(10):  # random gradients with |g| <= 1 never exceed it...
        grads = [2 * torch.rand(top.n, generator=g, dtype=torch.float64) - 1 for _ in range(steps)]
        assert _consensus_deviation(top, gamma, grads) <= c * (1 + 1e-9)
    # ...and gradients of signs chosen against a worker reach it: g_{T-1-s} = sign of row i of the s-th term
    n = top.n
    avg = torch.full((n, n), 1 / n, dtype=torch.float64)
    best = 0.0
    for phase in range(top.period):  # the recursion ends at a step of this phase
        terms, prod = [], torch.eye(n, dtype=torch.float64) - avg
        for s in range(steps):
            terms.append(prod)
            mix = (1 - gamma) * torch.eye(n, dtype=torch.float64) + gamma * top.matrix(phase + s)
            prod = (mix - avg) @ prod
        for i in range(n):  # the sum of |row i| of the terms, one gradient per term
            best = max(best, sum(t[i].abs().sum().item() for t in terms))
    assert best == pytest.approx(c, rel=1e-5)


def test_consensus_bound_factor_closed_forms():
    for n in (2, 3, 5):
        assert consensus_bound_factor(topology("complete", n), 1.0) == pytest.approx(2 * (n - 1) / n)
    for gamma in (1.0, 0.5, 0.1):  # ring(2) mixes to the average: (M - J)^s (I - J) = (1 - gamma)^s (I - J)
        assert consensus_bound_factor(ring(2), gamma) == pytest.approx(1 / gamma, rel=1e-5)
    assert consensus_bound_factor(ring(1)) == 0.0
    big = consensus_bound_factor(ring(40), 1.0)  # beyond max_n: the spectral estimate
    assert big == pytest.approx(1.5 / ring(40).spectral_gap)


# -- on 4 ranks ---------------------------------------------------------------------------------
def _train(rank, size, kw, steps, name="ring", lr_decay=None, every=None, init_rank=0):
    a, y = _data(rank)  # heterogeneous data, the same starting model everywhere (unless init_rank is None)
    params = [torch.nn.Parameter(t.clone()) for t in _split(_init(rank if init_rank is None else init_rank))]
    kw = dict(kw)
    sgd = torch.optim.SGD(params, lr=kw.pop("lr"), momentum=kw.pop("momentum", 0.0))
    opt = Moniqua(sgd, topology=topology(name, size), **kw)
    snaps, thetas = [], []
    for t in range(steps):
        if lr_decay:
            for group in opt.param_groups:
                group["lr"] = sgd.defaults["lr"] / (1 + t / lr_decay)
        opt.zero_grad()
        (0.5 * ((a @ params[0] + params[1] - y) ** 2).sum() / a.shape[0]).backward()
        opt.step()
        thetas.append(opt.last_theta)
        if every and (t + 1) % every == 0:
            snaps.append(torch.cat([params[0].detach().reshape(-1), params[1].detach()]))
    x = torch.cat([params[0].detach().reshape(-1), params[1].detach()])
    return x, opt.stats.as_dict(), thetas, snaps, opt.gamma


def _reference(name, steps, lr, bits, gamma, theta=None, theta_scale=1.5, shared=True, rounding="stochastic",
               seed=0, momentum=0.0):
    """x <- x + gamma s (W K - K) - lr U with K the true grid indices floor(x / s + u): no decoding;
    U <- momentum U + G (heavy ball, as torch.optim.SGD), theta's bound then / (1 - momentum)."""
    top = topology(name, N)
    data = [_data(i) for i in range(N)]
    x = torch.stack([_init(0) for i in range(N)])
    private = rounding == "stochastic" and not shared
    gens = [generator(seed, "dither") if shared else generator(seed, "dither", i) for i in range(N)]
    levels, g_inf, thetas = 2 ** bits, None, []
    u_heavy = None
    for t in range(steps):
        g = torch.stack([_grad(x[i], *data[i]) for i in range(N)])
        if theta is None:
            g_inf = g.abs().max().item() if g_inf is None else g_inf
            th = theta_scale * 2 * lr * g_inf * consensus_bound_factor(top, gamma) / (1 - momentum)
        else:
            th = theta
        thetas.append(th)
        s = 2.0 * th / (1.0 - (2.0 if private else 1.0) / levels) / levels
        if rounding == "nearest":
            u = torch.full((N, NUMEL), 0.5, dtype=torch.float64)
        else:
            u = torch.stack([torch.rand(NUMEL, generator=gen, dtype=torch.float64) for gen in gens])
        k = torch.floor(x / s + u)
        u_heavy = g if u_heavy is None else momentum * u_heavy + g
        x = x + gamma * s * (top.matrix(t) @ k - k) - lr * u_heavy
    return x, thetas


@pytest.mark.parametrize("name, kw", [
    ("ring", {"lr": 0.1, "bits": 2}),
    ("ring", {"lr": 0.1, "bits": 1}),
    ("ring", {"lr": 0.1, "bits": 3, "shared_randomness": False, "seed": 5}),
    ("ring", {"lr": 0.1, "bits": 2, "rounding": "nearest", "theta": 4.0, "gamma": 0.5}),
    ("one-peer-exp", {"lr": 0.05, "bits": 4, "gamma": 1.0}),
    ("exp", {"lr": 0.05, "bits": 2, "theta": 3.0, "gamma": 0.3}),
    ("ring", {"lr": 0.05, "bits": 2, "momentum": 0.9}),  # SGD's momentum inside: theta allows for it
    ("exp", {"lr": 0.05, "bits": 3, "theta": 3.0, "momentum": 0.5}),
])
def test_moniqua_is_the_exact_index_recursion(world, name, kw):
    steps = 12
    results = world.run(_train, kw, steps, name)
    gamma = results[0][4]
    top = topology(name, N)
    if "gamma" not in kw:  # default: min(1, gap (L - 1) / 4)
        assert gamma == pytest.approx(min(1.0, top.spectral_gap * (2 ** kw["bits"] - 1) / 4))
    ref, thetas = _reference(name, steps, kw["lr"], kw["bits"], gamma, kw.get("theta"),
                             shared=kw.get("shared_randomness", True), rounding=kw.get("rounding", "stochastic"),
                             seed=kw.get("seed", 0), momentum=kw.get("momentum", 0.0))
    got = torch.stack([r[0] for r in results])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for rank, (_, stats, th, _, _) in enumerate(results):
        assert th == pytest.approx(thetas, rel=1e-12)
        fanout = sum(len(top.out_neighbors(rank, t)) for t in range(steps))
        auto = "theta" not in kw  # the one-off all-reduce MAX of the gradient bound and 4 checksums
        per_message = math.ceil(NUMEL * kw["bits"] / 8)
        assert stats["bytes_sent"] == fanout * per_message + 40 * auto
        assert stats["messages_sent"] == fanout + auto
        assert stats["float32_bytes"] == fanout * 4 * NUMEL + 20 * auto


def test_a_theta_below_the_disagreement_breaks_decoding(world):
    # negative control: the same run with theta far below the workers' spread departs from the recursion
    kw = {"lr": 0.1, "bits": 2, "theta": 0.05}
    got = torch.stack([r[0] for r in world.run(_train, kw, 5)])
    ref, _ = _reference("ring", 5, 0.1, 2, min(1.0, ring(N).spectral_gap * 3 / 4), theta=0.05)
    assert (got - ref).abs().max() > 1e-3


@pytest.mark.parametrize("bits, worker_bound, mean_bound", [(2, 0.02, 0.002), (1, 0.15, 0.01)])
def test_moniqua_converges_with_one_and_two_bits(world, bits, worker_bound, mean_bound):
    steps, every = 300, 50
    results = world.run(_train, {"lr": 0.3, "bits": bits}, steps, "ring", 10, every)
    opt = _optimum()
    data = [_data(i) for i in range(N)]

    def gap(x):
        return sum(_loss(x, *d) for d in data) / N - sum(_loss(opt, *d) for d in data) / N

    start = gap(_init(0))
    per_worker = [sum(gap(r[3][k]) for r in results) / N for k in range(steps // every)]
    mean_model = gap(torch.stack([r[0] for r in results]).mean(0))
    assert per_worker[-1] < worker_bound * start, (per_worker, start)
    assert per_worker[-1] < 0.5 * per_worker[0]  # still improving as the step size decays
    assert mean_model < mean_bound * start
    stats = results[0][1]
    assert stats["bytes_sent"] == steps * 2 * math.ceil(NUMEL * bits / 8) + 40
    assert stats["compression_ratio"] == pytest.approx((steps * 2 * 32 + 20) / (steps * 2 * bits + 40))


def _different_starts(rank, size):
    with pytest.raises(ValueError, match="models differ at the first step"):
        _train(rank, size, {"lr": 0.1, "bits": 2}, 1, init_rank=None)
    return _train(rank, size, {"lr": 0.1, "bits": 2, "theta": 10.0}, 1, init_rank=None)[2]


def test_different_starting_models_are_refused_when_theta_is_derived(world):
    assert world.run(_different_starts) == [[10.0]] * N


@pytest.mark.parametrize("kw, match", [
    ({"bits": 0}, "Invalid bits: 0"), ({"bits": 9}, "Invalid bits"), ({"bits": 2.0}, "Invalid bits"),
    ({"bits": True}, "Invalid bits"), ({"rounding": "up"}, "Invalid rounding: 'up'"),
    ({"bits": 1, "shared_randomness": False}, "private stochastic rounding needs >= 2 bits"),
    ({"delta": 0.0}, "Invalid delta"), ({"delta": 1.0}, "Invalid delta"),
    ({"delta": 0.5, "shared_randomness": False}, "Invalid delta"), ({"theta": 0.0}, "Invalid theta: 0.0"),
    ({"theta": -1.0}, "Invalid theta"), ({"theta_scale": 0}, "Invalid theta_scale"),
    ({"gamma": 0.0}, "Invalid gamma"), ({"gamma": 1.5}, "Invalid gamma"), ({"seed": "a"}, "Invalid seed"),
    ({"shared_randomness": 1}, "Invalid shared_randomness"),
])
def test_invalid_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        Moniqua(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), topology=ring(4), **kw)


def test_a_derived_theta_needs_sgd():
    """theta=None bounds SGD's steps (lr * max |g| / (1 - momentum)); other optimizers pass theta."""
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="Invalid theta: None .*Adam: pass theta"):
        Moniqua(torch.optim.Adam(p, lr=0.1), topology=ring(1))
    assert Moniqua(torch.optim.Adam(p, lr=0.1), topology=ring(1), theta=1.0).theta == 1.0
    from relaxtorch import OptimLP
    assert Moniqua(OptimLP(torch.optim.SGD(p, lr=0.1)), topology=ring(1)).theta is None


def test_delta_below_one_grid_step_is_refused():
    """B = 2 theta / (1 - delta) only holds the decoding window when delta >= 2**-bits."""
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="delta"):
        Moniqua(torch.optim.SGD(params, lr=0.1), topology=ring(4), bits=2, delta=0.1)
