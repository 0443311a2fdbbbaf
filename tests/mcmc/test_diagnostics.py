"""ESS, R-hat, MCSE and autocorrelation against ArviZ (the independent reference), against
the closed form for AR(1) chains, and on the edge cases where they are undefined."""
import math
import warnings

import numpy as np
import pytest
import torch

from relaxtorch._seeding import numpy_rng
from relaxtorch.mcmc import diagnostics
from relaxtorch.mcmc.diagnostics import autocorrelation, ess, mcse, rhat

scipy_signal = pytest.importorskip("scipy.signal")


def ar1(seed, chains, draws, rho, event=()):
    """Stationary Gaussian AR(1) chains x_t = rho x_{t-1} + e_t, e_t ~ N(0, 1), float64 numpy."""
    k = int(np.prod(event)) if event else 1
    rng = numpy_rng(seed, "ar1", chains, draws, k)
    e = rng.normal(size=(chains, k, draws))
    e[..., 0] /= math.sqrt(1 - rho ** 2)  # start in the stationary distribution
    x = scipy_signal.lfilter([1.0], [1.0, -rho], e, axis=-1)
    return np.moveaxis(x, -1, 1).reshape(chains, draws, *event)


# ---------------------------------------------------------------- ArviZ, the reference

CASES = [  # (chains, draws, rho, event): multi-dimensional events, one chain, odd draws, rho < 0
    (4, 1000, 0.9, ()),
    (1, 2001, 0.5, (3,)),
    (3, 501, -0.3, (2, 2)),
    (8, 200, 0.99, (5,)),
    (2, 64, 0.0, (2, 3, 2)),
]


def _arviz():
    az = pytest.importorskip("arviz_stats.base").array_stats
    return az


def _reference(az, x, what):
    kw = dict(chain_axis=0, draw_axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ's own 0/0 for R-hat of constants
        return {
            "bulk": lambda: az.ess(x, **kw),
            "tail": lambda: az.ess(x, method="tail", prob=0.05, **kw),
            "mean": lambda: az.ess(x, method="mean", **kw),
            "rhat": lambda: az.rhat(x, **kw),
            "mcse": lambda: az.mcse(x, **kw),
            "mcse_sd": lambda: az.mcse(x, method="sd", **kw),
        }[what]()


def _ours(t, what):
    return {
        "bulk": lambda: ess(t),
        "tail": lambda: ess(t, method="tail"),
        "mean": lambda: ess(t, method="mean"),
        "rhat": lambda: rhat(t),
        "mcse": lambda: mcse(t),
        "mcse_sd": lambda: mcse(t, stat="sd"),
    }[what]()


WHAT = ["bulk", "tail", "mean", "rhat", "mcse", "mcse_sd"]


@pytest.mark.parametrize("what", WHAT)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_agrees_with_arviz(case, what):
    """The issue asks for 1%; the same algorithm in float64 agrees to rounding, so 1e-9."""
    az = _arviz()
    chains, draws, rho, event = case
    x = ar1(1, chains, draws, rho, event)
    ours = _ours(torch.from_numpy(x), what)
    ref = np.asarray(_reference(az, x, what))
    assert ours.shape == event and ours.dtype == torch.float64
    assert ref.shape == event
    if what == "rhat" and chains == 1:
        assert torch.isnan(ours).all() and np.isnan(ref).all()
        return
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-9, atol=0)


def test_autocorrelation_agrees_with_arviz():
    az = _arviz()
    x = ar1(2, 3, 301, 0.7, (2,))
    ours = autocorrelation(torch.from_numpy(x))
    ref = az.autocorr(x, axis=1)
    assert ours.shape == x.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


def test_autocorrelation_is_the_slow_sum():
    """The FFT against the definition: sum_t (x_t - m)(x_{t+k} - m) / sum_t (x_t - m)^2, per chain."""
    x = ar1(3, 2, 50, 0.6)
    ours = autocorrelation(torch.from_numpy(x)).numpy()
    for c in range(2):
        y = x[c] - x[c].mean()
        slow = [sum(y[t] * y[t + k] for t in range(50 - k)) / sum(v * v for v in y) for k in range(50)]
        np.testing.assert_allclose(ours[c], slow, rtol=0, atol=1e-12)


EDGES = {
    "constant": lambda rng: np.full((3, 100, 2), 2.5),
    "one constant element": lambda rng: np.stack([np.ones((3, 100)), rng.normal(size=(3, 100))], -1),
    "ties (discrete draws)": lambda rng: rng.integers(0, 3, size=(4, 300, 2)).astype(float),
    "rejections (repeated draws)": lambda rng: np.repeat(rng.normal(size=(2, 50, 1)), 6, axis=1),
    "a NaN draw": lambda rng: np.where(np.arange(100).reshape(2, 50, 1) == 7, np.nan, rng.normal(size=(2, 50, 2))),
    "infinite draws": lambda rng: np.where(rng.random((2, 50, 2)) < 0.05, np.inf, rng.normal(size=(2, 50, 2))),
    "one chain": lambda rng: rng.normal(size=(1, 100, 2)),
    "3 draws": lambda rng: rng.normal(size=(2, 3, 2)),
    "4 draws": lambda rng: rng.normal(size=(2, 4, 2)),
    "5 draws": lambda rng: rng.normal(size=(3, 5, 2)),
    "8 draws": lambda rng: rng.normal(size=(3, 8, 2)),
}


@pytest.mark.parametrize("what", WHAT)
@pytest.mark.parametrize("edge", sorted(EDGES))
def test_edge_cases_as_arviz(edge, what):
    """NaN exactly where ArviZ gives NaN (too few draws, one chain for R-hat, a constant element
    for R-hat, a NaN draw), the same finite values elsewhere (ties ranked on average)."""
    az = _arviz()
    x = EDGES[edge](numpy_rng(0, "edge", edge))
    ours = _ours(torch.from_numpy(x), what).numpy()
    ref = np.asarray(_reference(az, x, what))
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0, equal_nan=True)


def test_documented_edge_values():
    """The values the module docstring promises, independent of ArviZ."""
    const = torch.full((3, 100, 2), 2.5)
    assert ess(const).tolist() == [300.0, 300.0]  # all (split) draws
    assert torch.isnan(rhat(const)).all()
    assert torch.isnan(rhat(torch.randn(1, 100, generator=torch.Generator().manual_seed(0))))
    short = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    for f in (ess, rhat, mcse):
        out = f(short)
        assert out.shape == (4,) and torch.isnan(out).all()


# ---------------------------------------------------------------- closed form (AR(1))

def _tail_tau(rho, p):
    """Integrated autocorrelation time of I(x_t <= q_p) for a Gaussian AR(1) with coefficient rho.
    Cov(I_0, I_k) = Phi2(q, q; rho^k) - p^2 = int_0^{rho^k} exp(-q^2 / (1 + s)) / (2 pi sqrt(1 - s^2)) ds."""
    from scipy import integrate, stats
    q = stats.norm.ppf(p)
    tau = 1.0
    for k in range(1, 200):
        r = rho ** k
        cov = integrate.quad(lambda s: math.exp(-q * q / (1 + s)) / (2 * math.pi * math.sqrt(1 - s * s)), 0, r)[0]
        tau += 2 * cov / (p * (1 - p))
    return tau


RUNS, CHAINS, DRAWS = 32, 4, 25_000  # 32 independent runs of 10^5 draws


def _ratios(seed, rho, **kwargs):
    """ESS/N of RUNS independent runs, as RUNS event elements of one array (one call)."""
    x = torch.from_numpy(ar1(seed, CHAINS, DRAWS, rho, (RUNS,)))
    return ess(x, **kwargs).numpy() / (CHAINS * DRAWS)


# Geyer's truncation adds the positive noise pairs before the first negative one to tau: an
# upward bias of tau of order 1/sqrt(N) (about 0.4% at N = 4 x 10^4 for independent draws,
# measured).  The bands allow 2/sqrt(N) relative on top of 3 standard errors.
BIAS = 2 / math.sqrt(CHAINS * DRAWS)


@pytest.mark.parametrize("rho", [-0.3, 0.0, 0.5, 0.9])
def test_bulk_ess_of_ar1_is_the_closed_form(rho):
    """ESS/N -> (1 - rho) / (1 + rho) for AR(1) chains: the mean over the runs within 3 standard
    errors (the spread of the runs) plus the truncation bias allowance."""
    ratios = _ratios(100, rho)
    se = ratios.std(ddof=1) / math.sqrt(RUNS)
    expected = (1 - rho) / (1 + rho)
    assert abs(ratios.mean() - expected) < 3 * se + BIAS * expected, (ratios.mean(), expected, se)
    assert 3 * se + BIAS * expected < 0.05 * expected  # the test is sharp enough to fail


def test_tail_ess_of_ar1_is_the_closed_form():
    """Tail ESS/N -> 1/tau of the 5% indicator (tau from the bivariate normal orthant integral).
    ESS(tail) is the minimum of two estimates, each with spread s: its mean lies up to s/sqrt(pi)
    (the expected minimum of two normals) below 1/tau, and the band is widened by that much."""
    rho, p = 0.5, 0.05
    ratios = _ratios(200, rho, method="tail", prob=p)
    s = ratios.std(ddof=1)
    se = s / math.sqrt(RUNS)
    expected = 1 / _tail_tau(rho, p)
    lo = expected * (1 - BIAS) - s / math.sqrt(math.pi) - 3 * se
    assert lo < ratios.mean() < expected * (1 + BIAS) + 3 * se, (ratios.mean(), expected, s)
    bulk = (1 - rho) / (1 + rho)
    assert abs(bulk - expected) > 5 * (expected - lo)  # the tail is a different quantity from the bulk: the test can tell


def test_mcse_of_ar1_is_the_closed_form():
    """MCSE of the mean -> sd * sqrt(tau / N), tau = (1 + rho) / (1 - rho), sd = 1 / sqrt(1 - rho^2)."""
    rho = 0.8
    x = torch.from_numpy(ar1(300, 4, 25_000, rho))
    expected = math.sqrt((1 + rho) / (1 - rho) / x.numel()) / math.sqrt(1 - rho ** 2)
    assert abs(mcse(x).item() / expected - 1) < 0.05
    # and it is the spread of the chain mean over independent runs
    means = [torch.from_numpy(ar1(400 + r, 4, 25_000, rho)).mean().item() for r in range(16)]
    assert 0.6 < np.std(means, ddof=1) / expected < 1.4  # 16 runs: the sd's own relative error is ~18%


# ---------------------------------------------------------------- behaviour

def test_rhat_detects_unmixed_chains():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1000, generator=g, dtype=torch.float64)
    assert rhat(x) < 1.01
    assert rhat(x + torch.tensor([0.0, 0.0, 0.0, 1.0])[:, None]) > 1.05  # one chain shifted
    assert rhat(x * torch.tensor([1.0, 1.0, 1.0, 3.0])[:, None]) > 1.05  # one chain 3x wider: the folded part


def test_dtypes_and_inputs():
    x64 = torch.from_numpy(ar1(5, 3, 400, 0.5, (2,)))
    x32 = x64.float()
    before = x32.clone()
    for f in (ess, rhat, mcse):
        out = f(x32)
        assert out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), f(x32.double()).numpy(), rtol=1e-12)
    assert torch.equal(x32, before)  # not mutated
    ints = torch.randint(0, 5, (2, 100), generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(ess(ints).item(), ess(ints.double()).item())
    assert ess(x64.requires_grad_()).shape == (2,)  # detached


def test_chunks_give_the_same_result(monkeypatch):
    x = torch.from_numpy(ar1(6, 3, 200, 0.5, (7,)))
    whole = [ess(x), ess(x, method="tail"), rhat(x), mcse(x), autocorrelation(x)]
    monkeypatch.setattr(diagnostics, "_CHUNK", 3 * 200 * 2)  # two columns at a time
    parts = [ess(x), ess(x, method="tail"), rhat(x), mcse(x), autocorrelation(x)]
    for a, b in zip(whole, parts):  # FFTs of other batch sizes may round differently
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-15)


def test_fast_len():
    smooth = [m for m in range(1, 2000) if all(q in (2, 3, 5) for q in _factors(m))]  # 2·3·5-smooth
    for n in range(1, 1000):
        assert diagnostics._fast_len(n) == min(m for m in smooth if m >= n)


def _factors(m):
    out, p = [], 2
    while m > 1:
        while m % p == 0:
            out.append(p)
            m //= p
        p += 1
    return out


@pytest.mark.parametrize("bad, kwargs, match", [
    ([[1.0, 2.0]], {}, "Invalid samples"),
    (torch.zeros(5), {}, "Invalid samples"),
    (torch.zeros(0, 5), {}, "Invalid samples"),
    (torch.zeros(2, 0), {}, "Invalid samples"),
    (torch.zeros(2, 5, dtype=torch.complex64), {}, "Invalid samples"),
    (torch.zeros(2, 5), {"method": "median"}, "Invalid method"),
    (torch.zeros(2, 5), {"prob": 0.0}, "Invalid prob"),
    (torch.zeros(2, 5), {"prob": 1.5}, "Invalid prob"),
])
def test_bad_arguments(bad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ess(bad, **kwargs)
    if not kwargs:
        for f in (rhat, mcse, autocorrelation):
            with pytest.raises(ValueError, match=match):
                f(bad)


def test_bad_stat():
    with pytest.raises(ValueError, match="Invalid stat"):
        mcse(torch.zeros(2, 5), stat="median")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.from_numpy(ar1(7, 4, 1001, 0.8, (3,)))
    for f in (ess, lambda t: ess(t, method="tail"), rhat, mcse, autocorrelation):
        cpu, gpu = f(x), f(x.cuda())
        assert gpu.device.type == "cuda"
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-9)
