"""The fast CPU noise and fused SGLD update (mcmc._noise): the numba kernels match a Python reference
that draws one normal at a time bit for bit (the float64 ziggurat with its slow paths, the float32
Box–Muller in numpy float32 scalar arithmetic); the float32 normals are within 1e-6 of the exact
transform of their bits in float64 libm; the normals pass a KS test and have the moments of N(0, 1)
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


def _ziggurat(z, side):
    """One normal from the 64-bit word ``z`` (8 bits layer, 1 sign, 52 abscissa), the slow path reading
    the splitmix64 stream at ``side``; Python ints and floats."""
    bits = 52
    ki = [int(k) for k in Z.KI]
    wi = [float(Z.WI[i]) for i in range(256)]
    fi = [float(f) for f in Z.FI]

    def uniform():
        nonlocal side
        side = (side + GOLDEN) & M64
        return (mix(side) >> 11) * 2.0 ** -53

    while True:
        idx, r = z & 0xFF, (z >> 9) & ((1 << bits) - 1)
        x = r * wi[idx]
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
        z = mix(side)


F = np.float32
LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
         -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]


def bits32(v):
    return int(np.array(v, np.float32).view(np.uint32))


def from_bits32(b):
    return np.array(b, np.uint32).view(np.float32)[()]


def neg_log32(u):
    """Cephes' logf, negated, one numpy float32 operation at a time."""
    b = bits32(u)
    e = (b >> 23) - 126
    m = from_bits32((b & 0x7FFFFF) | 0x3F000000)
    if m < F(0.70710678118654752440):
        e, x = e - 1, (m + m) - F(1)
    else:
        x = m - F(1)
    z = x * x
    p = F(LOG_P[0])
    for c in LOG_P[1:]:
        p = p * x + F(c)
    fe = F(e)
    y = x * z * p + fe * F(-2.12194440e-4) - F(0.5) * z
    return -((x + y) + fe * F(0.693359375))


def box_muller32(w):
    """The two float32 normals of the 64-bit draw ``w`` (module _noise's layout), in numpy float32."""
    lo, hi = w & 0xFFFFFFFF, w >> 32
    u = F(lo) * F(2.0 ** -32) + F(2.0 ** -33)
    rho = np.sqrt(max(neg_log32(u), F(0)))
    t = (F((hi & 0x3FFFFFFF) - (1 << 29)) + F(0.5)) * F(math.pi / 2 * 2.0 ** -30)
    z = t * t
    s = t + t * z * ((F(-1.9515295891e-4) * z + F(8.3321608736e-3)) * z + F(-1.6666654611e-1))
    c = F(1) - F(0.5) * z + z * z * ((F(2.443315711809948e-5) * z + F(-1.388731625493765e-3)) * z
                                     + F(4.166664568298827e-2))
    a, b = rho * (c - s), rho * (c + s)
    return (-a if (hi >> 30) & 1 else a), (-b if (hi >> 31) & 1 else b)


def normals_reference(n, seed, offset, dtype):
    """The normals of mcmc._noise one draw at a time.  float64: element i is draw i (counter state
    seed + (offset + i + 1)·golden); a draw that misses its rectangle goes on with the splitmix64
    stream at mix(its state ^ mix(seed ^ SIDE)).  float32: per chunk of _CHUNK elements, with m =
    ceil(len/2), element j < m is the first Box–Muller normal of the chunk's draw j and element m + j
    its second."""
    key = mix(seed ^ SIDE)
    out = []
    if dtype == np.float64:
        for i in range(n):
            state = (seed + (offset + i + 1) * GOLDEN) & M64
            out.append(_ziggurat(mix(state), mix(state ^ key)))
        return np.array(out)
    for lo in range(0, n, Z._CHUNK):
        length = min(Z._CHUNK, n - lo)
        m = (length + 1) // 2
        for i in range(length):
            j, high = (i, False) if i < m else (i - m, True)
            state = (seed + (offset + lo // 2 + j + 1) * GOLDEN) & M64
            out.append(box_muller32(mix(state))[1 if high else 0])
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
    """The reference comparison above covers the ziggurat's wedge and tail: enough draws miss the rectangles."""
    z = np.empty(3 * Z._CHUNK + 77)
    Z.normal_fill(z, np.uint64(12345), 7)
    assert np.sum(np.abs(z) > Z._R) >= 3 and np.sum(np.abs(z) < Z._R) > 0


def box_muller_exact(w):
    """Box–Muller in float64 libm on the bits of the 64-bit draws ``w`` (uint64 array), with u in (0, 1]
    formed from the low 32 bits as the kernel forms it (float32(lo)·2^-32 + 2^-33 in float32), the
    angle in a quadrant from 30 high bits."""
    u = (w & np.uint64(0xFFFFFFFF)).astype(np.float32) * np.float32(2.0 ** -32) + np.float32(2.0 ** -33)
    hi = (w >> np.uint64(32)).astype(np.int64)
    r = np.sqrt(-2 * np.log(u.astype(np.float64)))
    phi = ((hi & 0x3FFFFFFF) + 0.5) * 2.0 ** -30 * (math.pi / 2)
    return r * np.cos(phi) * np.where((hi >> 30) & 1, -1, 1), r * np.sin(phi) * np.where((hi >> 31) & 1, -1, 1)


def test_float32_normals_are_the_exact_transform_of_their_bits():
    """The kernel's float32 Box–Muller against float64 libm on the same bits, over 400k draws and
    at u's extremes (lo = 0: the largest radius sqrt(66 ln 2); lo = 2^32 - 1: u rounds to 1, radius
    0), so the polynomials, the quadrant and the signs are checked independently of the float32
    reference above."""
    rng = np.random.default_rng(0)
    w = rng.integers(0, 2 ** 64, 400_000, dtype=np.uint64, endpoint=False)
    w[:4] = np.array([0, 0xFFFFFFFF, (3 << 62) | 0, (1 << 63) | 0xFFFFFFFF], dtype=np.uint64)
    got = np.array([Z._box_muller(v) for v in w], dtype=np.float64).T
    for a, b in zip(got, box_muller_exact(w)):
        assert np.max(np.abs(a - b)) < 1e-6
    assert abs(abs(got[0][0]) - math.sqrt(66 * math.log(2)) * math.cos(0.5 * 2.0 ** -30 * math.pi / 2)) < 1e-5
    assert got[0][1] == 0 and got[1][1] == 0
    assert np.abs(got).max() < Z.Z32_MAX and math.sqrt(66 * math.log(2)) < Z.Z32_MAX  # the in-place bound


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


def test_in_place_float32_path_equals_out_of_place_and_falls_back_near_the_range():
    """Contiguous float32 leaves far from float32's range take the in-place form (no scratch); its bits
    are the kernel's.  Leaves that might overflow for some noise take the checked scratch form, which
    still writes a finite update that only the bound ruled out."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(3 * Z._CHUNK + 5, generator=gen), torch.randn(33, 3, generator=gen)]
    gs = [torch.randn(x.shape, generator=gen) for x in xs]
    new, ok = Z.sgld_new_leaves(xs, [g.mul(-64.0) for g in gs], torch.Generator().manual_seed(9), 1e-3, 0.05)
    targets = [x.clone() for x in xs]
    plan = Z.sgld_plan(targets, gs, torch.Generator().manual_seed(9), 1e-3, 0.05, Z.Scratch(), -64.0)
    assert plan[0] == "in_place" and all(torch.equal(t, x) for t, x in zip(targets, xs))  # nothing written yet
    Z.sgld_apply_(plan)
    assert ok and all(torch.equal(a, b) for a, b in zip(new, targets))
    fmax = torch.finfo(torch.float32).max
    x = torch.tensor([fmax * 0.9999, 1.0])   # 6e33·6.7703 > fmax·1e-4: within the bound's margin; |ξ| < 5.6 here
    plan = Z.sgld_plan([x], [torch.zeros(2)], torch.Generator().manual_seed(0), 1e-3, 6e33, Z.Scratch())
    assert plan[0] == "copy"
    expect, _ = Z.sgld_new_leaves([x], [torch.zeros(2)], torch.Generator().manual_seed(0), 1e-3, 6e33)
    Z.sgld_apply_(plan)
    assert torch.equal(x, expect[0]) and torch.isfinite(x).all()


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
