"""vc_quantize (Zhang, Wilson & De Sa, ICML 2022, Algorithm 2): grid values only, exact mean and
variance, the fallback below gap**2/4, and the exact distribution, against independent references
(the format's value set decoded from every bit pattern; float64 quadrature of the construction)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from relaxtorch.mcmc import grid_gap, vc_quantize
from relaxtorch.numbers import BlockFloat, FixedPoint, FloatFormat, quantize

from ..numbers.reference import fixed_set, value_set

N = 1 << 21  # samples per moment check
K = 5.0  # tolerance in standard errors


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _moment_check(y: torch.Tensor, mean: float, var: float):
    """|sample mean - mean| and |sample variance - var| within K standard errors (float64)."""
    y = y.double()
    n = y.numel()
    m = y.mean().item()
    d = y - m
    s2 = (d * d).mean().item()
    m4 = (d**4).mean().item()
    se_mean = math.sqrt(s2 / n)
    se_var = math.sqrt(max(m4 - s2 * s2, 0.0) / n)
    assert abs(m - mean) <= K * se_mean + 1e-12, (m, mean, se_mean)
    assert abs(s2 - var) <= K * se_var + 1e-12, (s2, var, se_var)
    return m, s2, se_var


def _sr_var(mu: float, gap: float) -> float:
    f = mu / gap - math.floor(mu / gap)
    return f * (1 - f) * gap * gap


# ---------------------------------------------------------------- grid membership

def _block_members(y: torch.Tensor, fmt: BlockFloat) -> bool:
    """Every block of y is one of the block's value sets: codes -2**(wl-1)..2**(wl-1)-1 times
    2**(e - (wl - 2)) for some shared exponent e (enumerated in float64).  e is that of the block's
    largest magnitude, or one less where that magnitude is the most negative code -2**(e+1)."""
    blocks = [y] if fmt.dim is None else list(y.movedim(fmt.dim, 0))
    codes = fixed_set(fmt.wl, fmt.wl - 2).values  # the element grid at exponent 0
    for b in blocks:
        b = b.double().numpy().ravel()
        amax = np.abs(b).max()
        if amax == 0:
            continue
        e = math.frexp(amax)[1] - 1
        if not any(np.isin(b, codes * 2.0**s).all() for s in (e, e - 1)):
            return False
    return True


FORMATS = [FixedPoint(8, 4), FixedPoint(6, 3), FixedPoint(8, 6, symmetric=True), BlockFloat(8), BlockFloat(6, dim=0),
           FloatFormat(4, 3, specials="fn"), FloatFormat(5, 2), FloatFormat(3, 2, specials="none", subnormals=False)]


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@pytest.mark.parametrize("var", [0.0, 1e-6, 3e-4, 4e-3, 0.05, 1.0])
def test_only_grid_values(fmt, var):
    g = _gen(1)
    mean = torch.cat([torch.randn(4000, generator=g) * 2.0, torch.tensor([0.0, 1.0, -0.5, 1e-9])])
    if isinstance(fmt, BlockFloat) and fmt.dim is not None:
        mean = mean[:4000].reshape(40, 100) * torch.logspace(-3, 1, 40).unsqueeze(1)  # blocks of many scales
    y = vc_quantize(mean, var, fmt, generator=g)
    assert y.shape == mean.shape and y.dtype == mean.dtype and torch.isfinite(y).all()
    if isinstance(fmt, BlockFloat):
        assert _block_members(y, fmt)
    else:
        assert np.isin(y.double().numpy(), value_set(fmt).values).all()


def test_tensor_var_and_zero_block_stay_on_grid():
    fmt = BlockFloat(8, dim=0)
    mean = torch.zeros(3, 50)
    mean[1] = torch.linspace(-1, 1, 50)
    var = torch.full((3, 50), 0.02)
    y = vc_quantize(mean, var, fmt, generator=_gen(2))
    assert _block_members(y, fmt) and y[0].abs().max() > 0  # the zero block got its noise, on a grid


# ---------------------------------------------------------------- exact moments

FIXED = FixedPoint(8, 4)  # gap 1/16, gap**2/4 = 1/1024


@pytest.mark.parametrize("mu,var", [
    (0.3, 0.01),  # wide branch
    (-1.01, 1.0 / 1024),  # exactly gap**2/4: still wide
    (0.5, 0.002),  # on a grid point
    (0.3, 6e-4),  # narrow: v_sr(0.3) = 0.2*0.8/256 = 6.25e-4 > var -> the fallback gives v_sr
    (0.26, 6e-4),  # narrow, var > v_sr(0.26) = 0.16*0.84/256: exact
    (0.5, 1e-4),  # on the grid, narrow: +-gap with probability var/(2 gap**2) each, exact
    (0.3, 0.0),  # plain stochastic rounding
])
def test_fixed_point_moments_exact(mu, var):
    mu32 = float(torch.tensor(mu, dtype=torch.float32))
    y = vc_quantize(torch.full((N,), mu32), var, FIXED, generator=_gen(3))
    want = var if var >= FIXED.eps**2 / 4 else max(var, _sr_var(mu32, FIXED.eps))
    _moment_check(y, mu32, want)


def test_naive_rounding_fails_the_same_check():
    """Gaussian noise then stochastic rounding (naive SGLDLP-L) has variance var + E[v_sr]:
    the moment check above has the power to see it."""
    mu, var = 0.3, 2e-3
    g = _gen(4)
    naive = quantize(mu + math.sqrt(var) * torch.randn(N, generator=g), FIXED, "stochastic", generator=g)
    with pytest.raises(AssertionError):
        _moment_check(naive, mu, var)
    _moment_check(vc_quantize(torch.full((N,), mu), var, FIXED, generator=g), mu, var)


@pytest.mark.parametrize("mu,var,expect_exact", [
    (1.5, 0.01, True),  # E5M2 binade [1, 2), gap 0.25: narrow (< 1/64), on a grid point: exact
    (1.5, 0.02, True),  # wide, 3.5 sd below the binade top
    (1.05, 0.02, True),  # wide, reaches into the finer binade below: still on the grid
    (1.3, 0.005, False),  # narrow, v_sr(1.3) = 0.01 > var: the fallback
    (1.27, 0.005, True),  # narrow, exact
])
def test_float_format_moments(mu, var, expect_exact):
    fmt = FloatFormat(5, 2)
    mu32 = float(torch.tensor(mu, dtype=torch.float32))
    gap = grid_gap(torch.tensor(mu32), fmt).item()
    assert gap == 0.25
    y = vc_quantize(torch.full((N,), mu32), var, fmt, generator=_gen(5))
    want = var if var >= gap**2 / 4 else max(var, _sr_var(mu32, gap))
    assert (want == var) == expect_exact
    _moment_check(y, mu32, want)


def test_block_float_moments_use_the_block_gap():
    fmt = BlockFloat(8)  # one block: its largest magnitude 1.5 sets exponent 0, gap 2**-6
    mean = torch.full((N,), 0.3)
    mean[0] = 1.5
    assert grid_gap(mean, fmt)[1].item() == 2.0**-6
    for var in (0.01, 1e-4, 2e-5):  # wide (>= 2**-14), narrow exact, narrow fallback
        y = vc_quantize(mean, var, fmt, generator=_gen(6))[1:]
        mu32 = float(torch.tensor(0.3))
        want = var if var >= 2.0**-14 else max(var, _sr_var(mu32, 2.0**-6))
        _moment_check(y, mu32, want)


def test_fallback_branch_values():
    """Below gap**2/4 only the two SR neighbours and one gap beyond appear, with the exact pmf."""
    mu, var, gap = 0.255, 9e-4, FIXED.eps
    y = vc_quantize(torch.full((N,), mu), var, FIXED, generator=_gen(7)).double().numpy()
    lo = math.floor(float(torch.tensor(mu)) / gap) * gap
    f = (float(torch.tensor(mu)) - lo) / gap
    p = (var - f * (1 - f) * gap**2) / (2 * gap**2)
    assert var < gap**2 / 4 and 0.05 < p < 0.5
    pts = np.array([lo - gap, lo, lo + gap, lo + 2 * gap])
    pmf = np.array([(1 - f) * p, (1 - f) * (1 - 2 * p) + f * p, f * (1 - 2 * p) + (1 - f) * p, f * p])
    assert np.isin(y, pts).all()
    counts = np.array([(y == v).sum() for v in pts])
    assert stats.chisquare(counts, pmf * N).pvalue > 1e-4


def test_wide_branch_matches_the_exact_distribution():
    """The pmf over the grid against float64 quadrature of Algorithm 2 (an independent derivation:
    for x in the cell of grid point m, P(m + s) with s toward/away from x's residual)."""
    mu, var, gap = 0.3, 0.004, FIXED.eps
    mu = float(torch.tensor(mu))
    sd = math.sqrt(var - gap**2 / 4)
    y = vc_quantize(torch.full((N,), mu), var, FIXED, generator=_gen(8)).double().numpy()
    ks = np.arange(round((mu - 7 * sd) / gap) - 2, round((mu + 7 * sd) / gap) + 3)
    pmf = np.zeros(len(ks))
    for i, m in enumerate(ks):  # x in [m - 1/2, m + 1/2] gaps; r = x - m*gap
        def dens(r, which):
            a = abs(r)
            p_t = (gap / 2 + a) ** 2 / (2 * gap**2)
            p_a = (gap / 2 - a) ** 2 / (2 * gap**2)
            w = {"toward": p_t, "away": p_a, "stay": 1 - p_t - p_a}[which]
            return w * stats.norm.pdf(m * gap + r, mu, sd)
        for which, shift_pos, shift_neg in (("stay", 0, 0), ("toward", 1, -1), ("away", -1, 1)):
            for lo, hi, shift in ((0.0, gap / 2, shift_pos), (-gap / 2, 0.0, shift_neg)):
                j = m + shift - ks[0]
                if 0 <= j < len(ks):
                    pmf[j] += integrate.quad(dens, lo, hi, args=(which,))[0]
    assert abs(pmf.sum() - 1) < 1e-6
    counts = np.array([(np.round(y / gap) == k).sum() for k in ks])
    assert counts.sum() == N
    keep = pmf * N >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(pmf[keep], pmf[~keep].sum()) * N
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


# ---------------------------------------------------------------- invariants

def test_same_generator_same_bits_and_input_kept():
    mean = torch.randn(10000, generator=_gen(9))
    before = mean.clone()
    for fmt in (FIXED, BlockFloat(8), FloatFormat(4, 3)):
        a = vc_quantize(mean, 0.003, fmt, generator=_gen(10))
        b = vc_quantize(mean, 0.003, fmt, generator=_gen(10))
        c = vc_quantize(mean, 0.003, fmt, generator=_gen(11))
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)) and not torch.equal(a, c)
    assert torch.equal(mean, before)


def test_on_grid_mean_with_zero_var_is_unchanged_and_dtype_kept():
    mean = torch.arange(-64, 64, dtype=torch.float32) / 16
    assert torch.equal(vc_quantize(mean, 0.0, FIXED, generator=_gen()), mean)
    half = vc_quantize(mean.half(), 0.01, FIXED, generator=_gen())
    assert half.dtype == torch.float16


def test_saturates_at_the_range():
    fmt = FixedPoint(4, 1)  # [-4, 3.5]
    y = vc_quantize(torch.full((10000,), 3.4), 1.0, fmt, generator=_gen())
    assert y.max().item() == 3.5 and y.min().item() >= -4 and np.isin(y.numpy(), value_set(fmt).values).all()
    big = vc_quantize(torch.full((1000,), 230.0), 1000.0, FloatFormat(4, 3), generator=_gen())  # max 240, no inf
    assert torch.isfinite(big).all() and big.max().item() == FloatFormat(4, 3).max


def test_grid_gap_reference():
    fmt = FloatFormat(5, 2)
    vals = value_set(fmt).values
    x = torch.tensor([0.0, 2.0**-16, 2.0**-14, 1.0, 1.75, -3.0, 57344.0, 1e6])
    want = []
    for v in x.double().numpy():  # the step between the neighbours around |v| in the decoded set
        a = min(abs(v), vals.max())
        i = np.searchsorted(vals, a, side="right")
        want.append(vals[i] - vals[i - 1] if i < len(vals) else vals[-1] - vals[-2])
    assert grid_gap(x, fmt).double().numpy().tolist() == want
    assert grid_gap(torch.tensor([[0.1, 3.0], [0.2, 0.3]]), BlockFloat(8, dim=0)).tolist() == [[2.0**-5] * 2,
                                                                                                 [2.0**-8] * 2]


def test_bad_arguments():
    from relaxtorch.numbers import MXFormat
    with pytest.raises(ValueError, match="Invalid var"):
        vc_quantize(torch.zeros(3), -1.0, FIXED, generator=None)
    with pytest.raises(ValueError, match="Invalid fmt"):
        vc_quantize(torch.zeros(3), 1.0, MXFormat(FloatFormat(4, 3, specials="fn")), generator=None)
    with pytest.raises(TypeError, match="Invalid mean"):
        vc_quantize(torch.zeros(3, dtype=torch.int64), 1.0, FIXED, generator=None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_moments_and_grid():
    g = _gen(12, "cuda")
    y = vc_quantize(torch.full((N,), 0.3, device="cuda"), 0.004, FIXED, generator=g)
    assert y.device.type == "cuda"
    _moment_check(y.cpu(), float(torch.tensor(0.3)), 0.004)
    z = vc_quantize(torch.randn(4096, device="cuda"), 0.01, FloatFormat(4, 3), generator=g)
    assert np.isin(z.cpu().double().numpy(), value_set(FloatFormat(4, 3)).values).all()
