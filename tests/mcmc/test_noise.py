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


SIDE = 0x6A09E667F3BCC909


def _ziggurat(z, side, bits):
    """One normal from the ``bits``-bit word ``z`` (8 bits layer, 1 sign, the rest abscissa), the slow
    path reading the splitmix64 stream at ``side``; Python ints and floats, float32 arithmetic by numpy
    for ``bits`` = 23."""
    f32 = bits == 23
    ki = [int(k) for k in (Z.KI32 if f32 else Z.KI)]
    wi = [Z.WI32[i] if f32 else float(Z.WI[i]) for i in range(256)]
    fi = [float(f) for f in Z.FI]

    def uniform():
        nonlocal side
        side = (side + GOLDEN) & M64
        return (mix(side) >> 11) * 2.0 ** -53

    while True:
        idx, r = z & 0xFF, (z >> 9) & ((1 << bits) - 1)
        x = (np.float32(r) * wi[idx]) if f32 else r * wi[idx]
        x = -x if (z >> 8) & 1 else x
        if r < ki[idx]:
            return x
        if idx == 0:
            while True:
                xx = -math.log1p(-uniform()) / Z._R
                yy = -math.log1p(-uniform())
                if yy + yy > xx * xx:
                    return -(Z._R + xx) if x < 0 else Z._R + xx
        if (fi[idx - 1] - fi[idx]) * uniform() + fi[idx] < math.exp(-0.5 * float(x) * float(x)):
            return x
        side = (side + GOLDEN) & M64
        z = mix(side) >> 32 if f32 else mix(side)


def normals_reference(n, seed, offset, dtype):
    """The normals of mcmc._noise one draw at a time.  float64: element i is draw i (counter state
    seed + (offset + i + 1)·golden).  float32: per chunk of _CHUNK elements, with m = ceil(len/2),
    element j < m is the low half of the chunk's draw j and element m + j its high half.  A draw that
    misses its rectangle goes on with the splitmix64 stream at mix(its state ^ mix(seed ^ SIDE))."""
    key = mix(seed ^ SIDE)
    out = []
    if dtype == np.float64:
        for i in range(n):
            state = (seed + (offset + i + 1) * GOLDEN) & M64
            out.append(_ziggurat(mix(state), mix(state ^ key), 52))
        return np.array(out)
    for lo in range(0, n, Z._CHUNK):
        length = min(Z._CHUNK, n - lo)
        m = (length + 1) // 2
        for i in range(length):
            j, high = (i, False) if i < m else (i - m, True)
            state = (seed + (offset + lo // 2 + j + 1) * GOLDEN) & M64
            w = mix(state)
            out.append(_ziggurat(w >> 32 if high else w & 0xFFFFFFFF, mix(state ^ key), 23))
    return np.array(out, dtype=np.float32)


def test_kernels_match_python_reference():
    for dtype in (np.float32, np.float64):
        for n in (3 * Z._CHUNK + 77, 5):  # several parallel chunks and an odd short one; one short chunk
            fast = np.empty(n, dtype)
            Z.normal_fill(fast, np.uint64(12345), 7)
            slow = normals_reference(n, 12345, 7, dtype)
            assert np.array_equal(fast, slow.astype(dtype))
            serial = np.empty(n, dtype)
            Z.fill_serial(serial, np.uint64(12345), 7)
            assert np.array_equal(serial, fast)
        x = np.linspace(-2, 2, n).astype(dtype)
        g = np.cos(np.arange(n)).astype(dtype)
        a, noise = np.empty(n, dtype), np.empty(n, dtype)
        scale = dtype(-37.0)
        ok = Z.sgld_fill(x, g, scale, a, math.inf, np.uint64(5), 0, 0.01, 0.3)
        Z.normal_fill(noise, np.uint64(5), 0)
        gs = scale * g  # in g's dtype, as torch.mul rounds
        ref = (x.astype(np.float64) + 0.01 * gs.astype(np.float64) + 0.3 * noise.astype(np.float64)).astype(dtype)
        assert np.array_equal(a, ref) and ok is True


def test_the_slow_paths_are_exercised():
    """The reference comparison above covers the wedge and the tail: enough draws miss the rectangles."""
    for dtype in (np.float32, np.float64):
        z = np.empty(3 * Z._CHUNK + 77, dtype)
        Z.normal_fill(z, np.uint64(12345), 7)
        assert np.sum(np.abs(z) > Z._R) >= 3 and np.sum(np.abs(z) < Z._R) > 0


def test_the_bits_do_not_depend_on_the_number_of_threads():
    import numba
    n = 5 * Z._CHUNK + 3
    outs = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            out = np.empty(n)
            Z.normal_fill(out, np.uint64(77), 0)
            outs.append(out)
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs)
    split = np.empty(n)  # leaves continue the counter: two calls at offsets give the one call's draws
    Z.normal_fill(split[:1000], np.uint64(77), 0)
    Z.normal_fill(split[1000:], np.uint64(77), 1000)
    assert np.array_equal(split, outs[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normals_have_the_standard_normal_law(dtype):
    g = torch.Generator().manual_seed(3)
    z = torch.cat([t.reshape(-1) for t in Z.randn_leaves_fast([torch.zeros(400_000, dtype=dtype),
                                                               torch.zeros(3, 5, dtype=dtype)], g)]).double().numpy()
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
