"""The fused FixedPoint kernels of low-precision SGLD against the torch path (their reference).

The fused path draws other bits than the torch path, so the two are compared in distribution:
exact grid membership and saturation, the mean and variance of many independent elements
against the closed form of Zhang, Wilson & De Sa (ICML 2022, Algorithm 2) and against the torch
path's sample, within a few standard errors at fixed seeds; the narrow (fallback) branch's pmf
against its closed form cell by cell.  Bit for bit: same seed -> same bits, the numba kernels
against their ``py_func`` (slow Python reference), and leaf splitting (counters continue).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relaxtorch.mcmc import lowprec
from relaxtorch.mcmc import _lowprec_kernels as K
from relaxtorch.numbers import FixedPoint

CONFIGS = [("full", False), ("low", False), ("low", True)]  # SGLDLP-F, naive SGLDLP-L, VC SGLDLP-L
FX = FixedPoint(8, 4)  # gap 1/16, range [-8, 7.9375]
GAP = FX.eps


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _fused(mu, var, acc, vc, seed=0, fmt=FX, dtype=torch.float32):
    x = torch.as_tensor(mu, dtype=dtype)
    return lowprec._lp_update_fused([x], [torch.zeros_like(x)], _gen(seed), 0.5, var, fmt, acc, vc)


def _torch(mu, var, acc, vc, seed=0, fmt=FX, dtype=torch.float32):
    x = torch.as_tensor(mu, dtype=dtype).float()  # the torch path rounds in float32 (quantize takes no float64)
    return lowprec._lp_update_torch([x], [torch.zeros_like(x)], _gen(seed), 0.5, var, fmt, acc, vc, None)


def _on_grid(z, fmt=FX):
    z = z.double()
    k = z / fmt.eps
    return bool(torch.all(k == torch.round(k))) and bool(torch.all((z >= fmt.min) & (z <= fmt.max)))


def _close(a, b, se, k=5.0):
    assert abs(a - b) <= k * se, (a, b, se)


def _moments(z):
    z = z.double()
    m, v = z.mean().item(), z.var().item()
    m4 = ((z - m) ** 4).mean().item()
    n = z.numel()
    return m, v, math.sqrt(v / n), math.sqrt(max(m4 - v * v, 1e-30) / n)


def test_dispatch_takes_the_fused_path_for_fixed_point_on_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(lowprec, "_lp_update_fused", lambda *a: calls.append(a) or ([], [], [], True))
    x = torch.zeros(3)
    lowprec.lp_update([x], [x], _gen(), 0.1, 1.0, FX)
    lowprec.lp_update([x.double()], [x.double()], _gen(), 0.1, 1.0, FX)
    assert len(calls) == 2
    lowprec.lp_update([x.half()], [x.half()], _gen(), 0.1, 1.0, FX)  # float16: the torch path
    lowprec.lp_update([x], [x], None, 0.1, 1.0, FX)  # torch's default generator: the torch path
    assert len(calls) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("acc,vc", CONFIGS)
@pytest.mark.parametrize("var", [0.0, 1e-4, GAP * GAP / 4, 0.05])
def test_grid_mean_and_variance_match_closed_form_and_torch_path(acc, vc, var, dtype):
    n, mu = 200_000, 0.3 + GAP / 3  # off the grid, f = 0.8 - 0.333.. = fractional position
    pos_f, w_f, mean_f, _ = _fused(torch.full((n,), mu, dtype=dtype), var, acc, vc, dtype=dtype)
    pos_t, w_t, _ = _torch(torch.full((n,), mu, dtype=dtype), var, acc, vc, dtype=dtype)
    assert pos_f[0].dtype == dtype and w_f[0].dtype == dtype and pos_f[0].shape == (n,)
    assert _on_grid(w_f[0]) and torch.equal(mean_f[0], torch.full((n,), mu, dtype=dtype))
    m_in = torch.tensor(mu, dtype=dtype).item()  # the mean in the leaf's dtype
    f = m_in / GAP - math.floor(m_in / GAP)
    v_sr = f * (1 - f) * GAP * GAP
    if vc:
        expected_var = var if var >= GAP * GAP / 4 else max(var, v_sr)
    else:  # naive: noise, then stochastic rounding (adds E[v_sr(y)] <= gap²/4): compare with the torch path
        expected_var = None
    m, v, se_m, se_v = _moments(w_f[0])
    mt, vt, se_mt, se_vt = _moments(w_t[0])
    _close(m, m_in, se_m + 1e-12)
    _close(m, mt, math.hypot(se_m, se_mt) + 1e-12)
    _close(v, vt, math.hypot(se_v, se_vt) + 1e-12)
    if expected_var is not None:
        _close(v, expected_var, se_v + 1e-12)
    if acc == "full":  # the accumulator is the float noisy value; the weights round it stochastically
        p = pos_f[0].double()
        pm, pv, pse_m, pse_v = _moments(p)
        _close(pm, m_in, pse_m + 1e-12)
        _close(pv, var, pse_v + 1e-12)
        lo = torch.floor(p / GAP) * GAP
        assert bool(torch.all((w_f[0].double() == lo) | (w_f[0].double() == lo + GAP)))
        d = (w_f[0].double() - p)
        _close(d.mean().item(), 0.0, d.std().item() / math.sqrt(n) + 1e-12)


@pytest.mark.parametrize("f,var", [(0.25, 0.0), (0.25, 0.5 * GAP * GAP / 4), (0.5, 0.9 * GAP * GAP / 4),
                                   (0.0, 0.1 * GAP * GAP / 4), (0.9, 0.95 * GAP * GAP / 4)])
def test_narrow_branch_pmf(f, var):
    n, lo = 400_000, 5
    mu = (lo + f) * GAP
    z = _fused(torch.full((n,), mu), var, "low", True, seed=3)[0][0].double() / GAP - lo
    p = max(var - f * (1 - f) * GAP * GAP, 0.0) / (2 * GAP * GAP)
    pmf = {-1: (1 - f) * p, 0: (1 - f) * (1 - 2 * p) + f * p, 1: f * (1 - 2 * p) + (1 - f) * p, 2: f * p}
    assert set(torch.unique(z).tolist()) <= set(pmf)
    for k, pk in pmf.items():
        c = (z == k).double().mean().item()
        _close(c, pk, math.sqrt(max(pk * (1 - pk), 1e-12) / n))


@pytest.mark.parametrize("acc,vc", CONFIGS)
def test_saturation_matches_the_torch_path(acc, vc):
    n, mu, var = 200_000, FX.max - GAP / 2, 0.02
    w_f = _fused(torch.full((n,), mu), var, acc, vc, seed=5)[1][0]
    w_t = _torch(torch.full((n,), mu), var, acc, vc, seed=5)[1][0]
    assert _on_grid(w_f) and float(w_f.max()) == FX.max
    pf, pt = (w_f == FX.max).double().mean().item(), (w_t == FX.max).double().mean().item()
    _close(pf, pt, math.sqrt(2 * pt * (1 - pt) / n))
    low = _fused(torch.full((n,), FX.min + GAP / 3), var, acc, vc, seed=6)[1][0]
    assert float(low.min()) == FX.min and _on_grid(low)


@pytest.mark.parametrize("acc,vc", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_seed_same_bits_and_leaves_continue_the_stream(acc, vc, dtype):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(10_000, generator=g, dtype=dtype)
    gr = torch.randn(10_000, generator=g, dtype=dtype)
    a = lowprec._lp_update_fused([x], [gr], _gen(1), 0.01, 0.02, FX, acc, vc)
    b = lowprec._lp_update_fused([x], [gr], _gen(1), 0.01, 0.02, FX, acc, vc)
    c = lowprec._lp_update_fused([x], [gr], _gen(2), 0.01, 0.02, FX, acc, vc)
    split = lowprec._lp_update_fused([x[:4000], x[4000:].reshape(3, 2000, 1)],
                                     [gr[:4000], gr[4000:].reshape(3, 2000, 1)], _gen(1), 0.01, 0.02, FX, acc, vc)
    assert a[3] is True and split[3] is True
    scaled = lowprec._lp_update_fused([x], [gr.mul(-7.0)], _gen(1), 0.01, 0.02, FX, acc, vc)
    folded = lowprec._lp_update_fused([x], [gr], _gen(1), 0.01, 0.02, FX, acc, vc, -7.0)  # the shell's gscale
    for i in range(3):
        assert torch.equal(scaled[i][0], folded[i][0])
        assert torch.equal(a[i][0], b[i][0]) and not a[i][0].isnan().any()
        if dtype == torch.float64:  # one normal per draw: leaves continue the counter element by element
            assert torch.equal(torch.cat([split[i][0], split[i][1].reshape(-1)]), a[i][0])
    assert not torch.equal(a[1][0], c[1][0])
    assert not torch.equal(split[1][1].reshape(-1)[:4000], split[1][0])  # the second leaf draws fresh noise
    assert torch.equal(x, torch.randn(10_000, generator=torch.Generator().manual_seed(9), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("var", [1e-4, 0.05])
def test_numba_kernels_match_their_python_reference(var, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(3000) * 3).astype(dtype)
    x[:5] = [np.inf, -np.inf, np.nan, 7.99, -8.2]
    g = rng.standard_normal(3000).astype(dtype)
    seed = np.uint64(12345)
    lim = (GAP, FX.min, FX.max)
    outs = []
    with np.errstate(all="ignore"):  # the py_func references compute on the inf/nan entries in numpy
        _run_kernels(outs, x, g, dtype, var, seed, lim)
    for a, b in (outs[:2], outs[2:]):
        for u, v in zip(a[:-1], b[:-1]):
            assert np.array_equal(u, v, equal_nan=True)
        assert a[-1] == b[-1] and a[-1] is False  # the inf/nan means are reported
    vc_out = outs[0][0]
    assert np.isnan(vc_out[:3]).all() and not np.isnan(vc_out[3:]).any()  # non-finite means give NaN
    assert np.isnan(outs[2][0][:3]).all()


def _run_kernels(outs, x, g, dtype, var, seed, lim):
    for fn in (K.vc_fixed, K.vc_fixed.py_func):
        out, mean = np.empty_like(x), np.empty_like(x)
        s = fn(x, g, dtype(1.0), dtype(0.05), var, *lim, out, mean, seed, 7)
        outs.append((out, mean, s))
    for fn in (K.naive_fixed, K.naive_fixed.py_func):
        out, pos, mean = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        s = fn(x, g, dtype(-3.0), dtype(0.05), dtype(math.sqrt(var)), *lim, out, pos, mean, seed, 7)
        outs.append((out, pos, mean, s))


@pytest.mark.parametrize("acc,vc", CONFIGS)
def test_fused_shell_raises_on_non_finite_and_writes_nothing(acc, vc):
    p = torch.nn.Parameter(torch.zeros(5))
    opt = lowprec.SGLDLP([p], lr=0.1, data_size=10, fmt=FX, accumulator=acc, variance_correction=vc)
    p.grad = torch.tensor([0.0, 0.0, math.inf, 0.0, 0.0])
    with pytest.raises(FloatingPointError, match="at step 1"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(5))
