"""The fast CPU noise and fused SGLD update (mcmc._noise): the numba kernels match their own Python
reference (``py_func``) bit for bit; the normals pass a KS test and have the moments of N(0, 1)
within a few standard errors (including the tail beyond the ziggurat's base layer); the same
generator gives the same bits; the fused in-place update equals the out-of-place one bit for bit
and refuses to write when one entry would overflow float32 by the smallest margin."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from relaxtorch.mcmc import _noise as Z


M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def normals_reference(n, seed, offset, side):
    """The ziggurat of mcmc._noise written with Python ints and floats, one draw at a time."""
    ki, wi, fi = [int(k) for k in Z.KI], [float(w) for w in Z.WI], [float(f) for f in Z.FI]

    def uniform():
        nonlocal side
        side = (side + GOLDEN) & M64
        return (mix(side) >> 11) * 2.0 ** -53

    out = []
    for i in range(n):
        z = mix((seed + (offset + i + 1) * GOLDEN) & M64)
        while True:
            idx, rabs = z & 0xFF, (z >> 9) & ((1 << 52) - 1)
            x = rabs * wi[idx] * (-1.0 if (z >> 8) & 1 else 1.0)
            if rabs < ki[idx]:
                break
            if idx == 0:
                while True:
                    xx = -math.log1p(-uniform()) / Z._R
                    yy = -math.log1p(-uniform())
                    if yy + yy > xx * xx:
                        break
                x = -(Z._R + xx) if x < 0 else Z._R + xx
                break
            if (fi[idx - 1] - fi[idx]) * uniform() + fi[idx] < math.exp(-0.5 * x * x):
                break
            side = (side + GOLDEN) & M64
            z = mix(side)
        out.append(x)
    return np.array(out), side


def test_kernels_match_python_reference():
    for dtype in (np.float32, np.float64):
        fast, slow = np.empty(3000, dtype), np.empty(3000, dtype)
        s1 = Z.normal_fill(fast, np.uint64(12345), 7, np.uint64(99), Z.KI, Z.WI, Z.FI)
        slow, s2 = normals_reference(3000, 12345, 7, 99)
        assert np.array_equal(fast, slow.astype(dtype)) and int(s1) == s2
        x = np.linspace(-2, 2, 3000).astype(dtype)
        g = np.cos(np.arange(3000)).astype(dtype)
        a, noise = np.empty(3000, dtype), np.empty(3000, dtype)
        scale = dtype(-37.0)
        ra = Z.sgld_fill(x, g, scale, a, False, math.inf, np.uint64(5), 0, np.uint64(1), 0.01, 0.3, Z.KI, Z.WI, Z.FI)
        Z.normal_fill(noise, np.uint64(5), 0, np.uint64(1), Z.KI, Z.WI, Z.FI)
        gs = scale * g  # in g's dtype, as torch.mul rounds
        ref = (x.astype(np.float64) + 0.01 * gs.astype(np.float64) + 0.3 * noise.astype(np.float64)).astype(dtype)
        assert np.array_equal(a, ref) and ra[1] is True


def test_normals_have_the_standard_normal_law():
    g = torch.Generator().manual_seed(3)
    z = torch.cat([t.reshape(-1) for t in Z.randn_leaves_fast([torch.zeros(400_000, dtype=torch.float64),
                                                               torch.zeros(3, 5, dtype=torch.float64)], g)]).numpy()
    n = len(z)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    se = {1: 1 / math.sqrt(n), 2: math.sqrt(2 / n), 3: math.sqrt(15 / n), 4: math.sqrt(96 / n)}
    exact = {1: 0.0, 2: 1.0, 3: 0.0, 4: 3.0}
    for k in (1, 2, 3, 4):
        assert abs(np.mean(z ** k) - exact[k]) < 4 * se[k], k
    tail = np.mean(np.abs(z) > Z._R)   # the ziggurat's tail branch: P(|Z| > R)
    p = 2 * stats.norm.sf(Z._R)
    assert abs(tail - p) < 4 * math.sqrt(p / n)


def test_same_generator_same_bits_and_streams_differ():
    like = [torch.zeros(100), torch.zeros(2, 50, dtype=torch.float64)]
    a = Z.randn_leaves_fast(like, torch.Generator().manual_seed(1))
    b = Z.randn_leaves_fast(like, torch.Generator().manual_seed(1))
    c = Z.randn_leaves_fast(like, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0].double(), a[1].reshape(-1)[:100])  # the second leaf continues the stream


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_update_equals_out_of_place(dtype):
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(300, generator=gen, dtype=dtype), torch.randn(4, 7, generator=gen, dtype=dtype).T]
    gs = [torch.randn(x.shape, generator=gen, dtype=dtype) for x in xs]
    new, ok = Z.sgld_new_leaves(xs, [g.mul(-64.0) for g in gs], torch.Generator().manual_seed(9), 1e-3, 0.05)
    targets = [x.clone() for x in xs]
    plan = Z.sgld_plan(targets, gs, torch.Generator().manual_seed(9), 1e-3, 0.05, Z.Scratch(), -64.0)
    Z.sgld_apply_(plan)
    assert ok and all(torch.equal(a, b) for a, b in zip(new, targets))
    assert not targets[1].is_contiguous()  # a strided parameter is written back in place


def test_overflow_by_the_least_margin_is_caught_before_writing():
    fmax = torch.finfo(torch.float32).max
    x = torch.tensor([fmax, 0.0, 1.0])
    g = torch.tensor([fmax, 0.0, 0.0])
    before = x.clone()
    # half = 2^-24: fmax + fmax·2^-24 = (2 - 2^-47)·2^127 lies past the midpoint to 2^128: inf in float32
    plan = Z.sgld_plan([x], [g], torch.Generator().manual_seed(0), 2.0 ** -24, 0.0, Z.Scratch())
    assert plan is None and torch.equal(x, before)
    # half = 2^-25: fmax + fmax·2^-25 lies below that midpoint and rounds back to fmax (finite)
    plan = Z.sgld_plan([x], [g], torch.Generator().manual_seed(0), 2.0 ** -25, 0.0, Z.Scratch())
    assert plan is not None
    Z.sgld_apply_(plan)
    assert x[0].item() == fmax and torch.isfinite(x).all()
