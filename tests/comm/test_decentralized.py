"""D-PSGD and DeTAG (wrapping torch.optim.SGD, Adam, OptimLP) on 4 gloo ranks: the papers'
update rule simulated here in float64 with the mixing matrices, convergence on heterogeneous
least squares (with SGD and with Adam inside), DeTAG beating D-PSGD on label-skewed data,
bit-identical resumption through torch.load(weights_only=True), byte accounting and
argument checks."""
import io
import math

import pytest
import torch

from relaxtorch import OptimLP
from relaxtorch import formats as rt_formats
from relaxtorch.comm import DPSGD, CommStats, DeTAG, Moniqua, ring, topology

from ._gossip_world import shared_world

N, P, K, M = 4, 3, 2, 12  # ranks, features, outputs, rows per rank


@pytest.fixture(scope="module")
def world():
    return shared_world(N)


# -- the problem: least squares, each rank with its own planted solution (heterogeneous) ----------
def _data(rank):
    g = torch.Generator().manual_seed(100 + rank)
    a = torch.randn(M, P, generator=g, dtype=torch.float64)
    planted = 3.0 * torch.randn(P, K, generator=g, dtype=torch.float64)
    y = a @ planted + 0.1 * torch.randn(M, K, generator=g, dtype=torch.float64) + rank
    return a, y


def _init(rank):
    g = torch.Generator().manual_seed(7 + rank)
    return torch.randn(P * K + K, generator=g, dtype=torch.float64)


def _split(x):
    return x[:P * K].view(P, K), x[P * K:]


def _grad(x, a, y, rows=None):
    """Hand-written gradient of 1/(2m) ||A W + b - Y||^2 at the flat x = (W, b)."""
    if rows is not None:
        a, y = a[rows], y[rows]
    w, b = _split(x)
    r = a @ w + b - y
    return torch.cat([(a.T @ r).reshape(-1), r.sum(0)]) / a.shape[0]


def _loss(x, a, y):
    w, b = _split(x)
    return 0.5 * ((a @ w + b - y) ** 2).sum().item() / a.shape[0]


def _optimum():
    a = torch.cat([_data(i)[0] for i in range(N)])
    y = torch.cat([_data(i)[1] for i in range(N)])
    a1 = torch.cat([a, torch.ones(len(a), 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.solve(a1.T @ a1, a1.T @ y)  # [W; b]
    return torch.cat([sol[:P].reshape(-1), sol[P]])


LOCAL = ("lr", "momentum", "weight_decay")  # the wrapped optimizer's settings in a test's kw


def _make(kind, params, top, kw):
    """``kind`` around ``SGD`` (or ``kw["optim"]``: "adam", "optimlp" = OptimLP(SGD) with no format)."""
    kw = dict(kw)
    optim = kw.pop("optim", "sgd")
    local = {k: kw.pop(k) for k in LOCAL if k in kw}
    if optim == "adam":
        inner = torch.optim.Adam(params, **local)
    else:
        inner = torch.optim.SGD(params, **local)
        if optim == "optimlp":
            inner = OptimLP(inner)
    return {"dpsgd": DPSGD, "detag": DeTAG, "moniqua": Moniqua}[kind](inner, topology=top, **kw)


def _batches(rank, steps, batch):
    if batch is None:
        return [None] * steps
    g = torch.Generator().manual_seed(1000 + rank)
    return [torch.randint(M, (batch,), generator=g) for _ in range(steps)]


# -- rank functions ----------------------------------------------------------------------------
def _train(rank, size, kind, name, steps, kw, batch=None, decay=None, same_start=False):
    a, y = _data(rank)
    x0 = _init(0 if same_start else rank)
    w = torch.nn.Parameter(_split(x0)[0].clone())
    b = torch.nn.Parameter(_split(x0)[1].clone())
    opt = _make(kind, [w, b], topology(name, size), kw)
    sched = None if decay is None else torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t / decay))
    for rows in _batches(rank, steps, batch):
        opt.zero_grad()
        aa, yy = (a, y) if rows is None else (a[rows], y[rows])
        loss = 0.5 * ((aa @ w + b - yy) ** 2).sum() / aa.shape[0]
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    x = torch.cat([w.detach().reshape(-1), b.detach()])
    return x, opt.stats.as_dict(), opt.consensus_distance()


def _resume(rank, size, kind, name, kw, first, then):
    a, y = _data(rank)

    def run(params, opt, batches):
        for rows in batches:
            opt.zero_grad()
            loss = 0.5 * ((a[rows] @ params[0] + params[1] - y[rows]) ** 2).sum() / len(rows)
            loss.backward()
            opt.step()

    batches = _batches(rank, first + then, 5)
    top = topology(name, size)
    start = _init(0 if kind == "moniqua" else rank)  # Moniqua's derived theta needs one starting model
    params = [torch.nn.Parameter(t.clone()) for t in _split(start)]
    opt = _make(kind, params, top, kw)
    run(params, opt, batches[:first])
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "params": [p.detach().clone() for p in params]}, buf)
    run(params, opt, batches[first:])
    straight = [p.detach().clone() for p in params]
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    params2 = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    opt2 = _make(kind, params2, top, kw)
    opt2.load_state_dict(saved["opt"])
    run(params2, opt2, batches[first:])
    return straight, [p.detach().clone() for p in params2]


# -- float64 references (whole network, matrix form) ---------------------------------------------
def _reference_dpsgd(name, steps, lr, momentum=0.0, weight_decay=0.0, batch=None, optim=None):
    """Lian et al.'s x <- W x - lr u, u <- m u + g(x); weight decay (SGD's) at the mixed W x."""
    top = topology(name, N)
    x = torch.stack([_init(i) for i in range(N)])
    data = [_data(i) for i in range(N)]
    batches = [_batches(i, steps, batch) for i in range(N)]
    u = torch.zeros_like(x)
    for t in range(steps):
        mixed = top.matrix(t) @ x
        g = torch.stack([_grad(x[i], *data[i], batches[i][t]) for i in range(N)]) + weight_decay * mixed
        u = momentum * u + g if t else g
        x = mixed - lr * u
    return x


def _reference_detag(name, steps, lr, rounds, eta, momentum=0.0, batch=None, weight_decay=0.0):
    """Lu & De Sa's y <- AG(y + g - g_prev), m <- m_coef m + y, x <- AG(x - lr m); SGD's weight
    decay, when set, adds to the direction (y + wd x), not to the tracked gradient."""
    top = topology(name, N)
    x = torch.stack([_init(i) for i in range(N)])
    data = [_data(i) for i in range(N)]
    batches = [_batches(i, steps, batch) for i in range(N)]
    y = torch.zeros_like(x)
    g_prev = torch.zeros_like(x)
    m = torch.zeros_like(x)
    clock = 0

    def ag(z):
        nonlocal clock
        prev, cur = z, z
        for _ in range(rounds):
            prev, cur = cur, (1 + eta) * (top.matrix(clock) @ cur) - eta * prev
            clock += 1
        return cur

    for t in range(steps):
        g = torch.stack([_grad(x[i], *data[i], batches[i][t]) for i in range(N)])
        y = ag(y + g - g_prev)
        g_prev = g
        d = y + weight_decay * x
        m = momentum * m + d if t else d
        x = ag(x - lr * m)
    return x


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kw, batch", [
    ("ring", {"lr": 0.1}, None),
    ("exp", {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01}, 4),
    ("one-peer-exp", {"lr": 0.1, "momentum": 0.9}, 5),
    ("ring", {"lr": 0.1, "momentum": 0.9, "optim": "optimlp"}, 5),  # OptimLP with no format is SGD
])
def test_dpsgd_is_the_mixing_matrix_recursion(world, name, kw, batch):
    steps = 25
    results = world.run(_train, "dpsgd", name, steps, kw, batch)
    ref = _reference_dpsgd(name, steps, batch=batch, **kw)
    got = torch.stack([r[0] for r in results])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    top = topology(name, N)
    for rank, (_, stats, dist) in enumerate(results):
        fanout = sum(len(top.out_neighbors(rank, t)) for t in range(steps))
        assert stats["steps"] == steps and stats["messages_sent"] == fanout
        assert stats["bytes_sent"] == fanout * 8 * (P * K + K)  # float64 model, one message per out-neighbour
        assert dist == pytest.approx(math.sqrt(((ref - ref.mean(0)) ** 2).sum().item() / N), rel=1e-9)


@pytest.mark.parametrize("name, kw, batch", [
    ("ring", {"lr": 0.1, "gossip_rounds": 3}, None),
    ("ring", {"lr": 0.05, "momentum": 0.5}, 4),
    ("one-peer-exp", {"lr": 0.1, "gossip_rounds": 3}, 5),
    ("ring", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "optim": "optimlp"}, 4),
])
def test_detag_is_gradient_tracking_with_accelerated_gossip(world, name, kw, batch):
    steps = 20
    results = world.run(_train, "detag", name, steps, kw, batch)
    top = topology(name, N)
    rounds = kw.get("gossip_rounds", math.ceil(1 / math.sqrt(top.spectral_gap)))
    lam = top.second_eigenvalue
    eta = 0.0 if top.time_varying else (1 - math.sqrt(1 - lam ** 2)) / (1 + math.sqrt(1 - lam ** 2))
    assert name != "ring" or eta == pytest.approx(0.0294372515, abs=1e-9)  # lambda_2 = 1/3 on a 4-ring
    ref = _reference_detag(name, steps, kw["lr"], rounds, eta, kw.get("momentum", 0.0), batch,
                           kw.get("weight_decay", 0.0))
    got = torch.stack([r[0] for r in results])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for rank, (_, stats, _) in enumerate(results):  # two accelerated gossips of `rounds` rounds per step
        fanout = sum(len(top.out_neighbors(rank, t)) for t in range(2 * rounds * steps))
        assert stats["messages_sent"] == fanout and stats["bytes_sent"] == fanout * 8 * (P * K + K)


def test_detag_converges_to_the_global_optimum_dpsgd_only_near_it(world):
    steps, lr = 100, 0.3
    opt = _optimum()
    data = [_data(i) for i in range(N)]

    def gap(x):  # global suboptimality of one model
        return sum(_loss(x, *d) for d in data) / N - sum(_loss(opt, *d) for d in data) / N

    start = sum(gap(_init(i)) for i in range(N)) / N
    detag = torch.stack([r[0] for r in world.run(_train, "detag", "ring", steps, {"lr": lr})])
    dpsgd = torch.stack([r[0] for r in world.run(_train, "dpsgd", "ring", steps, {"lr": lr})])
    for i in range(N):  # gradient tracking removes the heterogeneity bias: every worker reaches x*
        torch.testing.assert_close(detag[i], opt, rtol=0, atol=1e-8)
    dp_gap = sum(gap(dpsgd[i]) for i in range(N)) / N
    # D-PSGD with the same constant step stalls at a fixed point biased by the data skew
    assert dp_gap < 0.5 * start and dp_gap > 0.05 * start
    assert max(gap(detag[i]) for i in range(N)) < 1e-12


def _train_shared_data(rank, size, kind, steps, kw):
    """Every rank on rank 0's data (its own minibatches), from one start, lr decaying as 1/(1 + t/50)."""
    a, y = _data(0)
    params = [torch.nn.Parameter(t.clone()) for t in _split(_init(0))]
    opt = _make(kind, params, ring(size), kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t / 50))
    for rows in _batches(rank, steps, 6):
        opt.zero_grad()
        (0.5 * ((a[rows] @ params[0] + params[1] - y[rows]) ** 2).sum() / len(rows)).backward()
        opt.step()
        sched.step()
    return torch.cat([params[0].detach().reshape(-1), params[1].detach()])


@pytest.mark.parametrize("kind, kw", [("dpsgd", {}), ("detag", {}), ("moniqua", {"theta": 1.0, "bits": 4})])
def test_adam_inside_converges(world, kind, kw):
    a, y = _data(0)
    a1 = torch.cat([a, torch.ones(M, 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.lstsq(a1, y).solution
    best = torch.cat([sol[:P].reshape(-1), sol[P]])
    start = _loss(_init(0), a, y) - _loss(best, a, y)
    models = world.run(_train_shared_data, kind, 300, {"optim": "adam", "lr": 0.1, **kw})
    for x in models:  # Adam's steps (<= lr per coordinate) reach the optimum as the lr decays
        assert _loss(x, a, y) - _loss(best, a, y) < 5e-3 * start


def test_detag_tracks_adam_to_the_global_optimum_on_heterogeneous_data(world):
    # Adam normalises each worker's own gradient: D-PSGD's fixed point is biased when local gradients
    # differ (sum_i m_i / sqrt(v_i) = 0 is not the optimum); DeTAG feeds Adam the tracked global direction
    steps = 300
    detag = world.run(_train, "detag", "ring", steps, {"optim": "adam", "lr": 0.1}, None, 50, True)
    dpsgd = world.run(_train, "dpsgd", "ring", steps, {"optim": "adam", "lr": 0.1}, None, 50, True)
    opt = _optimum()
    data = [_data(i) for i in range(N)]

    def gap(x):
        return sum(_loss(x, *d) for d in data) / N - sum(_loss(opt, *d) for d in data) / N

    start = gap(_init(0))
    assert max(gap(r[0]) for r in detag) < 1e-9 * start
    assert min(gap(r[0]) for r in dpsgd) > 0.05 * start


# label-skewed classification: rank i holds only examples of class i
C, F, PER = 4, 5, 32


def _skewed(rank):
    centres = 2.0 * torch.randn(C, F, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = torch.Generator().manual_seed(50 + rank)
    return centres[rank] + torch.randn(PER, F, generator=g, dtype=torch.float64), torch.full((PER,), rank)


def _train_skewed(rank, size, kind, steps, lr, batch, dtype=torch.float64, extra=None):
    xs, ys = _skewed(rank)
    xs = xs.to(dtype)
    model = torch.nn.Linear(F, C, dtype=dtype)
    torch.nn.init.zeros_(model.weight)  # the same starting model on every rank
    torch.nn.init.zeros_(model.bias)
    opt = _make(kind, model.parameters(), ring(size), {"lr": lr, "weight_decay": 1e-2, **(extra or {})})
    g = torch.Generator().manual_seed(77 + rank)
    for _ in range(steps):
        rows = torch.randint(PER, (batch,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs[rows]), ys[rows]).backward()
        opt.step()
    assert model.weight.dtype == dtype
    return torch.cat([model.weight.detach().reshape(-1), model.bias.detach()]).double()


def _global_loss(flat):
    w, b = flat[:C * F].view(C, F), flat[C * F:]
    xs = torch.cat([_skewed(i)[0] for i in range(N)])
    ys = torch.cat([_skewed(i)[1] for i in range(N)])
    ce = torch.nn.functional.cross_entropy(xs @ w.T + b, ys)
    return (ce + 0.5e-2 * (flat ** 2).sum()).item()


def test_detag_beats_dpsgd_on_label_skewed_data(world):
    # centralized optimum of the same objective (mean CE + weight decay / 2 ||x||^2), by gradient descent
    x = torch.zeros(C * F + C, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        w, b = x[:C * F].view(C, F), x[C * F:]
        xs = torch.cat([_skewed(i)[0] for i in range(N)])
        ys = torch.cat([_skewed(i)[1] for i in range(N)])
        loss = torch.nn.functional.cross_entropy(xs @ w.T + b, ys) + 0.5e-2 * (x ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    best = _global_loss(x.detach())
    start = _global_loss(torch.zeros_like(x))
    steps, lr, batch = 60, 0.5, 8
    subopt = {}
    for kind in ("dpsgd", "detag"):
        models = world.run(_train_skewed, kind, steps, lr, batch)
        subopt[kind] = sum(_global_loss(m) - best for m in models) / N
    assert subopt["detag"] < 0.05 * (start - best)
    assert subopt["detag"] < 0.5 * subopt["dpsgd"], subopt


@pytest.mark.parametrize("kind", ["dpsgd", "detag", "moniqua"])
def test_float32_models_train(world, kind):
    start = _global_loss(torch.zeros(C * F + C, dtype=torch.float64))
    # (Moniqua at 8 bits: this checks dtypes; its constant-step noise floor at 1-2 bits is a separate matter)
    models = world.run(_train_skewed, kind, 40, 0.5, 8, torch.float32, {"bits": 8} if kind == "moniqua" else {})
    assert max(_global_loss(m) for m in models) < 0.5 * start


@pytest.mark.parametrize("kind, name, kw", [
    ("dpsgd", "ring", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    ("detag", "one-peer-exp", {"lr": 0.05, "momentum": 0.5, "gossip_rounds": 3}),
    ("moniqua", "ring", {"lr": 0.05, "bits": 2}),
])
def test_state_dict_resumes_bit_identically(world, kind, name, kw):
    for straight, resumed in world.run(_resume, kind, name, kw, 3, 4):
        assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


# -- single process and argument checks ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["dpsgd", "detag", "moniqua"])
def test_one_worker_is_plain_sgd(kind):
    torch.manual_seed(0)
    a, y = _data(0)
    ref = torch.nn.Parameter(_init(0).clone())
    got = torch.nn.Parameter(_init(0).clone())
    sgd = torch.optim.SGD([ref], lr=0.05)
    opt = _make(kind, [got], ring(1), {"lr": 0.05})
    for _ in range(10):
        for p, o in ((ref, sgd), (got, opt)):
            o.zero_grad()
            w, b = _split(p)
            (0.5 * ((a @ w + b - y) ** 2).sum() / M).backward()
            o.step()
    torch.testing.assert_close(got.detach(), ref.detach(), rtol=1e-14, atol=1e-14)
    assert opt.stats.bytes_sent == 0 and opt.consensus_distance() == 0.0 and opt.overlap is False


@pytest.mark.parametrize("cls, kw, match", [
    (DeTAG, {"gossip_rounds": 0}, "Invalid gossip_rounds: 0"),
    (DeTAG, {"gossip_rounds": 2.0}, "Invalid gossip_rounds"),
    (DeTAG, {"accelerate": "yes"}, "Invalid accelerate"),
])
def test_invalid_hyperparameters(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), topology=ring(4), **kw)


def test_invalid_setups():
    p = torch.nn.Parameter(torch.zeros(2))

    def sgd(*params):
        return torch.optim.SGD(list(params) or [p], lr=0.1)

    with pytest.raises(TypeError, match="Invalid optimizer"):  # parameters instead of an optimizer
        DPSGD([p], topology=ring(1))
    with pytest.raises(ValueError, match="Invalid topology: 'ring'"):
        DPSGD(sgd(), "ring")
    with pytest.raises(ValueError, match="Invalid params"):
        DPSGD(sgd(p, torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))), ring(1))
    with pytest.raises(RuntimeError, match="init_process_group"):
        DPSGD(sgd(), ring(4))
    with pytest.raises(ValueError, match="Invalid link"):
        DeTAG(sgd(), ring(1), link="500Mbps")
    with pytest.raises(ValueError, match="already gossips"):
        DeTAG(OptimLP(DPSGD(sgd(), ring(1))), ring(1))
    with pytest.raises(ValueError, match="acc=None"):
        DPSGD(OptimLP(sgd(), acc=rt_formats.BF16), ring(1))
    opt = DPSGD(sgd(), ring(1))
    with pytest.raises(ValueError, match="Invalid state_dict"):
        opt.load_state_dict(torch.optim.SGD([p], lr=0.1).state_dict())
    with pytest.raises(RuntimeError, match="fixed at construction"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    assert isinstance(opt.stats, CommStats) and isinstance(opt, torch.optim.Optimizer)
    assert repr(opt).startswith("DPSGD(SGD (")


def test_schedulers_step_the_wrapped_optimizer():
    p = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    opt = DeTAG(sgd, ring(1))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.1 / 8)
    assert torch.equal(p.grad, torch.ones(2))  # the local gradient is back in p.grad after the step
    assert set(opt.state_dict()) == {"state", "param_groups", "decentralized"}


def test_detag_defaults():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert DeTAG(torch.optim.SGD(p, lr=0.1), ring(1)).gossip_rounds == 1
    from relaxtorch.comm.decentralized import accelerated_gossip_eta
    assert accelerated_gossip_eta(0.0) == 0.0 and accelerated_gossip_eta(1.0) == 1.0
    assert accelerated_gossip_eta(0.9) == pytest.approx((1 - math.sqrt(0.19)) / (1 + math.sqrt(0.19)))
