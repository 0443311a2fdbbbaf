"""Stochastic rounding: unbiased, only the two neighbours, the right probability,
grid values fixed, reproducible from a seed, independent between elements.

Tolerances are 4 standard errors of the two-point distribution at N = 20000
draws, at fixed seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.formats import BF16, FP4_E2M1, FP8_E4M3, FP8_E5M2, FP16, INT8, MXFP4, MXFP8_E4M3, MXINT8

from . import reference as R

N = 20000
FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4, 7 / 8, 1 / 3, 0.01)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_columns(x_cols: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray, label: str) -> None:
    """x_cols: (K,) targets; q: (N, K) draws; a/b: (K,) lower and upper neighbour."""
    problems = []
    n = q.shape[0]
    for k in range(len(x_cols)):
        x, lo, hi, col = float(x_cols[k]), float(a[k]), float(b[k]), q[:, k]
        assert lo < x < hi, (label, x, lo, hi)  # the test's own set-up: x strictly between neighbours
        others = col[(col != lo) & (col != hi)]
        if others.size:
            problems.append(f"x={R.f32_hex(x)}: values other than {lo!r}/{hi!r}: {np.unique(others)[:5]}")
            continue
        p = (x - lo) / (hi - lo)
        p_hat = float(np.mean(col == hi))
        se_p = math.sqrt(p * (1 - p) / n)
        if abs(p_hat - p) > 4 * se_p:
            problems.append(f"x={R.f32_hex(x)} in ({lo!r}, {hi!r}): "
                            f"P(up)={p_hat:.5f}, expected {p:.5f} +- {4 * se_p:.5f}")
        mean, se_mean = float(np.mean(col)), (hi - lo) * se_p
        if abs(mean - x) > 4 * se_mean:
            problems.append(f"x={R.f32_hex(x)}: mean {mean!r} vs {x!r} (4 SE = {4 * se_mean!r})")
    assert not problems, f"{label}:\n" + "\n".join(problems)


def _between(values: np.ndarray, starts, fractions=FRACTIONS) -> np.ndarray:
    """float32 points strictly inside the gaps that begin at the given grid values."""
    out = []
    for s in starts:
        i = int(np.searchsorted(values, s))
        lo, hi = values[i], values[i + 1]
        for f in fractions:
            v = np.float32(lo + f * (hi - lo))
            if lo < v < hi:
                out.append(v)
    return np.array(out, dtype=np.float32)


FLAT_CASES = [
    (FP8_E4M3, [1.0, 0.0, 2.0**-7, 96.0, -3.0, 416.0, -(2.0**-9)]),
    (FP4_E2M1, [0.0, 0.5, 1.5, 2.0, 4.0, -6.0, -1.0]),
    (FP8_E5M2, [1.0, 2.0**-16, -40960.0, 3.0]),
    (BF16, [1.0, -1.5, 2.0**-133, 2.0**100]),
    (FP16, [1.0, 2.0**-24, -(2.0**-14), 60000.0]),
    (rt.FloatFormat(4, 3, subnormals=False), [0.0, 2.0**-6, -(2.0**-6)]),  # flushed gap (0, 2**-6)
    (rt.FloatFormat(3, 0, specials="none"), [1.0, 2.0, 0.25]),
    (rt.FixedPoint(8, 4), [0.0, 1.0, -8.0, 7.5, -0.0625]),
    (INT8, [0.0, 1.0, -2.0, -(2.0**-6)]),
    (rt.FixedPoint(6, 5, signed=False), [0.0, 1.0, 1.9375]),
    (rt.FixedPoint(12, -3), [0.0, 8.0, -16384.0]),
]


@pytest.mark.parametrize("fmt,starts", FLAT_CASES, ids=[repr(f) for f, _ in FLAT_CASES])
def test_flat_unbiased_two_neighbours_right_probability(fmt, starts):
    vs = R.value_set(fmt)
    x = _between(vs.values, starts)
    a, b = R.stochastic_pair(x.astype(np.float64), vs)
    X = torch.from_numpy(np.tile(x, (N, 1)))  # (N, K): column k repeats x[k]
    q = rt.quantize(X, fmt, "stochastic", generator=_gen(100)).double().numpy()
    _check_columns(x, q, a, b, repr(fmt))


def test_a_wrong_probability_would_be_caught():
    """Self-check of the tolerance: P(up) = 1/8 is distinguishable from 1/4 or 1/2 at N draws."""
    se = math.sqrt(1 / 8 * 7 / 8 / N)
    assert 4 * se < (1 / 4 - 1 / 8) / 4 and 4 * se < 0.01


MX_CASES = [  # (format, anchor placed in column 0 fixing the block scale)
    (MXFP4, 6.0),  # floor: s = 2 - 2 = 0
    (MXFP4, 6.0 * 2.0**-5),  # s = -5
    (rt.MXFormat(FP4_E2M1, 32, "ceil"), 4.0),  # ceil: 3 < 4 <= 6 * 2**0
    (MXFP8_E4M3, 448.0 * 8),  # s = 3
    (MXINT8, 1.5),  # s = 0: step 1/64
    (rt.MXFormat(FP8_E4M3, 16, "even"), 112.0),  # 1.75 * 2**6 rounds to 2**6 at 3 bits: s = -2
]


@pytest.mark.parametrize("fmt,anchor", MX_CASES, ids=[f"{f!r}-{a}" for f, a in MX_CASES])
def test_mx_unbiased_two_neighbours_right_probability(fmt, anchor):
    """Each row is one block whose largest element (the anchor) fixes the scale."""
    scale_x = R.mx_reference(np.array([anchor], np.float32), fmt.elem, fmt.block, fmt.scale_mode, "nearest")
    assert scale_x[0] == anchor  # the anchor itself is on the grid
    elem_vals = R.value_set(fmt.elem).values
    s = R.mx_scale(anchor, R.value_set(fmt.elem), fmt.scale_mode)
    grid = elem_vals * 2.0**s
    inner = grid[(np.abs(grid) < anchor) & (np.abs(grid) > 0)]
    starts = list(inner[:: max(1, len(inner) // 8)][:8]) + [0.0]
    x = _between(grid, starts, (1 / 8, 1 / 2, 0.8))[: fmt.block - 1]
    row = np.concatenate([[anchor], x, np.zeros(fmt.block - 1 - len(x))]).astype(np.float32)
    X = np.tile(row, (N, 1))
    q = rt.quantize(torch.from_numpy(X), fmt, "stochastic", generator=_gen(200)).double().numpy()
    assert np.all(q[:, 0] == anchor)
    a = R.mx_reference(row[None, :], fmt.elem, fmt.block, fmt.scale_mode, "stochastic", np.ones((1, fmt.block)))[0]
    b = R.mx_reference(row[None, :], fmt.elem, fmt.block, fmt.scale_mode, "stochastic", np.zeros((1, fmt.block)))[0]
    k = 1 + len(x)
    _check_columns(row[1:k], q[:, 1:k], a[1:k], b[1:k], repr(fmt))


@pytest.mark.parametrize("wl", [4, 6, 8])
def test_block_float_unbiased_two_neighbours_right_probability(wl):
    """BlockFloat(dim=0) on (N, K): each row is a slice; the anchor 1.0 fixes e = 0."""
    step = 2.0 ** -(wl - 2)
    lo_codes = [0, 1, 3, -2, 2 ** (wl - 1) - 2, -(2 ** (wl - 1))]
    x = np.array([(c + f) * step for c in lo_codes for f in (1 / 8, 1 / 2, 0.75)], np.float32)
    row = np.concatenate([[1.0], x]).astype(np.float32)
    X = np.tile(row, (N, 1))
    fmt = rt.BlockFloat(wl, dim=0)
    q = rt.quantize(torch.from_numpy(X), fmt, "stochastic", generator=_gen(300)).double().numpy()
    a = R.block_float_reference(row[None, :], wl, 0, "stochastic", np.ones((1, row.size)))[0]
    b = R.block_float_reference(row[None, :], wl, 0, "stochastic", np.zeros((1, row.size)))[0]
    _check_columns(row[1:], q[:, 1:], a[1:], b[1:], repr(fmt))


# ----------------------------------------------------------------------------- grid values stay put

FORMATS = [FP8_E4M3, FP4_E2M1, BF16, INT8, rt.FixedPoint(6, 5, signed=False), MXFP8_E4M3, MXFP4, MXINT8,
           rt.BlockFloat(8), rt.BlockFloat(6, dim=1)]


def _on_grid(fmt) -> torch.Tensor:
    """A (200, 32) tensor of exact grid values (each row's first entry fixes block scales)."""
    rng = np.random.default_rng(0)
    if isinstance(fmt, rt.BlockFloat):
        vals = np.arange(1 - 2 ** (fmt.wl - 1), 2 ** (fmt.wl - 1)) * 2.0 ** -(fmt.wl - 2)  # |v| < 2
        x = rng.choice(vals, (200, 32))
        x[:, 0] = 1.0  # the shared exponent is 0 for the tensor and for every row
        return torch.from_numpy(x.astype(np.float32))
    elem = fmt.elem if isinstance(fmt, rt.MXFormat) else fmt
    vals = R.value_set(elem).values
    vals = vals[np.abs(vals) <= vals[-1]]  # (fixed point's -2**(wl-1) would change an MX scale)
    x = rng.choice(vals, (200, 32))
    if isinstance(fmt, rt.MXFormat):
        x[:, 0] = vals[-1]  # elem max: every scale mode gives scale 1
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_grid_values_never_move(fmt):
    x = _on_grid(fmt)
    for seed in range(5):
        got = rt.quantize(x, fmt, "stochastic", generator=seed)
        assert torch.equal(got, x), (fmt, seed, x[got != x][:5], got[got != x][:5])


# ----------------------------------------------------------------------------- seeds

def _off_grid(n=100_000) -> torch.Tensor:
    return torch.randn(n, generator=_gen(42)) * 0.5


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_same_seed_same_bits_different_seed_different_bits(fmt):
    x = _off_grid().reshape(-1, 100)
    a = rt.quantize(x, fmt, "stochastic", generator=7)
    b = rt.quantize(x, fmt, "stochastic", generator=7)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    c = rt.quantize(x, fmt, "stochastic", generator=_gen(7))
    d = rt.quantize(x, fmt, "stochastic", generator=_gen(7))
    assert torch.equal(c.view(torch.int32), d.view(torch.int32))
    e = rt.quantize(x, fmt, "stochastic", generator=8)
    differ = (a != e).double().mean().item()
    assert differ > 0.05, (fmt, differ)  # seeds 7 and 8 disagree on many elements


@pytest.mark.parametrize("fmt", [FP8_E4M3, MXFP4, INT8, rt.BlockFloat(8)], ids=repr)
def test_a_generator_advances(fmt):
    x = _off_grid().reshape(-1, 100)
    g = _gen(11)
    a = rt.quantize(x, fmt, "stochastic", generator=g)
    b = rt.quantize(x, fmt, "stochastic", generator=g)
    assert (a != b).double().mean().item() > 0.05
    g2 = _gen(11)
    assert torch.equal(rt.quantize(x, fmt, "stochastic", generator=g2), a)  # replays from the same seed
    assert torch.equal(rt.quantize(x, fmt, "stochastic", generator=g2), b)


def test_explicit_generator_leaves_the_global_rng_alone():
    x = _off_grid()
    state = torch.get_rng_state()
    rt.quantize(x, FP8_E4M3, "stochastic", generator=_gen(1))
    rt.quantize(x, FP8_E4M3, "stochastic", generator=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_no_generator_draws_from_the_default_generator():
    x = _off_grid()
    state = torch.get_rng_state()
    try:
        torch.manual_seed(123)
        a = rt.quantize(x, FP8_E4M3, "stochastic")
        torch.manual_seed(123)
        b = rt.quantize(x, FP8_E4M3, "stochastic")
        c = rt.quantize(x, FP8_E4M3, "stochastic")
    finally:
        torch.set_rng_state(state)
    assert torch.equal(a, b) and not torch.equal(b, c)


# ----------------------------------------------------------------------------- independence

def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return float((u * v).sum() / math.sqrt((u * u).sum() * (v * v).sum()))


@pytest.mark.parametrize("fmt,x0", [(FP8_E4M3, 1.0625), (INT8, 1 / 128), (rt.FixedPoint(8, 0), 0.5),
                                    (BF16, 1.0 + 2.0**-8)], ids=["E4M3", "INT8", "fixed8", "BF16"])
def test_rounding_decisions_are_uncorrelated(fmt, x0):
    """x0 is a midpoint (p = 1/2): decisions of neighbouring elements, rows and calls are uncorrelated."""
    tol = 4 / math.sqrt(N)
    X = torch.full((4, N), x0)
    g = _gen(21)
    d = (rt.quantize(X, fmt, "stochastic", generator=g).double().numpy() > x0).astype(float)
    d2 = (rt.quantize(X, fmt, "stochastic", generator=g).double().numpy() > x0).astype(float)
    checks = {
        "lag 1": _corr(d[0, :-1], d[0, 1:]),
        "lag 2": _corr(d[0, :-2], d[0, 2:]),
        "lag 32": _corr(d[0, :-32], d[0, 32:]),
        "lag 1024": _corr(d[1, :-1024], d[1, 1024:]),
        "rows 0/1": _corr(d[0], d[1]),
        "rows 2/3": _corr(d[2], d[3]),
        "two calls": _corr(d[0], d2[0]),
    }
    bad = {k: v for k, v in checks.items() if abs(v) >= tol}
    assert not bad, (fmt, bad, tol)
    assert abs(d.mean() - 0.5) < 4 * 0.5 / math.sqrt(d.size)


def test_mx_decisions_uncorrelated_within_and_across_blocks():
    """MXFP4 blocks of 32, anchor 6 (scale 1), other entries 2.5 (p = 1/2 between 2 and 3)."""
    tol = 4 / math.sqrt(N)
    row = np.full(32, 2.5, np.float32)
    row[0] = 6.0
    X = torch.from_numpy(np.tile(row, (N, 1)))
    d = (rt.quantize(X, MXFP4, "stochastic", generator=_gen(31)).double().numpy()[:, 1:] > 2.5).astype(float)
    checks = {"columns 1/2": _corr(d[:, 0], d[:, 1]), "columns 5/30": _corr(d[:, 4], d[:, 29]),
              "next block, same column": _corr(d[:-1, 3], d[1:, 3])}
    bad = {k: v for k, v in checks.items() if abs(v) >= tol}
    assert not bad, (bad, tol)
