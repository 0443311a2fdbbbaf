"""quantize() against the independent float64 reference (tests/numbers/reference.py), exactly.

Every representable value maps to itself; midpoints, values a hair either side of
them, values beyond the range, tiny values, signed zeros, infinities, NaN and
~20k random float32 values round exactly as the reference says, for every
deterministic mode; stochastic results are always one of the reference's two
neighbours.  Floating point, fixed point, block floating point and MX formats.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.formats import (BF16, FP4_E2M1, FP6_E2M3, FP6_E3M2, FP8_E4M3, FP8_E5M2, FP16, INT8, MXFP4,
                                MXFP6_E2M3, MXFP6_E3M2, MXFP8_E4M3, MXFP8_E5M2, MXINT8)

from . import reference as R

F32 = np.float32
MODES = R.DETERMINISTIC


def _quantize(x: np.ndarray, fmt, mode: str, seed: int = 0) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=F32))
    out = rt.quantize(t, fmt, mode, generator=seed if mode == "stochastic" else None)
    assert out.dtype == torch.float32 and out.shape == t.shape
    return out.numpy()


def _assert_matches(x, got, want, fmt, mode, signed_zero):
    bad, report = R.mismatches(x, got, want, signed_zero)
    assert len(bad) == 0, f"{fmt!r}, rounding={mode!r}: {report}"


def _check_modes(fmt, x, reference, signed_zero, modes=MODES):
    """Compare every deterministic mode; report all failing modes at once."""
    failures = []
    for mode in modes:
        bad, report = R.mismatches(x, _quantize(x, fmt, mode), reference(mode), signed_zero)
        if len(bad):
            failures.append(f"{fmt!r}, rounding={mode!r}: {report}")
    assert not failures, "\n".join(failures)


def _assert_one_of(x, got, a, b, fmt):
    """Stochastic results are one of the two candidates (NaN matching NaN)."""
    x = np.asarray(x, F32).reshape(-1)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        got = np.asarray(got, np.float64).reshape(-1)
    a, b = a.reshape(-1), b.reshape(-1)
    ok = (got == a) | (got == b) | (np.isnan(got) & (np.isnan(a) | np.isnan(b)))
    bad = np.flatnonzero(~ok)
    lines = [f"x={R.f32_hex(x[i])}: got {R.f32_hex(got[i])}, allowed {R.f32_hex(a[i])} or {R.f32_hex(b[i])}"
             for i in bad[:12]]
    assert len(bad) == 0, f"{fmt!r} stochastic: {len(bad)} results off the two neighbours\n" + "\n".join(lines)


def _f32(values) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(F32)


def _hairs(points32: np.ndarray) -> np.ndarray:
    return np.concatenate([np.nextafter(points32, F32(np.inf)), np.nextafter(points32, F32(-np.inf))])


SPECIAL_INPUTS = _f32([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 2.0**-149, -(2.0**-149), 2.0**-126,
                       -(2.0**-126), 3 * 2.0**-149, float(np.finfo(F32).max), -float(np.finfo(F32).max), 1.0,
                       -1.0, 957.0, 1e-30, -1e-30, 1e30, -1e30])


def _grid_inputs(vs: R.ValueSet, seed: int, n_random: int = 20000) -> np.ndarray:
    """Values, midpoints (and a hair either side), beyond-range, tiny, special and random inputs."""
    grid = np.concatenate([[vs.lo_ext], vs.values, [vs.hi_ext]])
    mids = _f32((grid[:-1] + grid[1:]) / 2)
    quarter = _f32(np.concatenate([grid[:-1] + (grid[1:] - grid[:-1]) / 4, grid[:-1] + (grid[1:] - grid[:-1]) * .75]))
    vmax = vs.max
    pos = vs.values[vs.values > 0]
    small = float(pos[0])
    beyond = np.array([vmax * 1.0001, vs.hi_ext, vs.hi_ext * 1.5, 2 * vmax, 4 * vmax, vmax * 2.0**10,
                       (vmax + vs.hi_ext) / 2])
    tiny = small * np.array([0.5, 0.25, 0.75, 1.5, 1 / 1024, 1 - 2.0**-20])
    edge = _f32(np.concatenate([beyond, -beyond, tiny, -tiny, [vs.min * 1.0001, vs.lo_ext, vs.lo_ext * 2]]))
    rng = np.random.default_rng(seed)
    lo_e, hi_e = np.log2(small) - 6, np.log2(vmax) + 4
    mags = np.exp2(rng.uniform(lo_e, hi_e, n_random))
    signs = np.where(rng.random(n_random) < 0.5, -1.0, 1.0)
    raw = rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(F32)
    parts = [_f32(vs.values), _f32(-vs.values), mids, _hairs(mids), quarter, edge, _hairs(edge),
             SPECIAL_INPUTS, _f32(mags * signs), raw]
    return np.concatenate(parts).astype(F32)


# ----------------------------------------------------------------------------- FloatFormat

FLOAT_PRESETS = [FP16, BF16, FP8_E5M2, FP8_E4M3, FP6_E3M2, FP6_E2M3, FP4_E2M1]
OVERFLOWS = {"ieee": ("inf", "saturate", "nan"), "fn": ("saturate", "nan"), "none": ("saturate",)}


def _custom_floats():
    out = []
    for exp, man, specials, subnormals in itertools.product(range(2, 6), range(0, 5), OVERFLOWS, (True, False)):
        for overflow in OVERFLOWS[specials]:
            out.append(rt.FloatFormat(exp, man, specials=specials, subnormals=subnormals, overflow=overflow))
    out += [
        rt.FloatFormat(4, 3, bias=0), rt.FloatFormat(3, 2, bias=-2, specials="none"),
        rt.FloatFormat(5, 2, bias=20, overflow="saturate"), rt.FloatFormat(2, 1, bias=5, specials="none"),
        rt.FloatFormat(8, 4, bias=140), rt.FloatFormat(8, 4, bias=140, subnormals=False),  # grid down to 2**-143
        rt.FloatFormat(8, 3, bias=130, specials="fn"), rt.FloatFormat(4, 3, bias=-113),  # max 1.875 * 2**127
        rt.FloatFormat(4, 3, bias=-113, overflow="saturate"), rt.FloatFormat(6, 7, bias=-65, overflow="nan"),
        rt.FloatFormat(1, 2, specials="none"), rt.FloatFormat(1, 0, specials="none"),
        rt.FloatFormat(3, 10), rt.FloatFormat(6, 9, specials="fn"), rt.FloatFormat(8, 2, subnormals=False),
    ]
    return out


FLOAT_FORMATS = FLOAT_PRESETS + _custom_floats()


@functools.lru_cache(maxsize=None)
def _float_case(fmt):
    vs = R.float_set(fmt)
    return vs, _grid_inputs(vs, seed=hash((fmt.exp, fmt.man, fmt.bias)) % 2**32)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=repr)
def test_float_representable_values_are_fixed_points(fmt):
    vs = R.float_set(fmt)
    x = np.concatenate([_f32(vs.values), _f32(-vs.values)])
    for mode in R.ALL_MODES:
        got = _quantize(x, fmt, mode, seed=1)
        assert np.array_equal(got.view(np.uint32), x.view(np.uint32)), (
            f"{fmt!r} {mode}: " + R.mismatches(x, got, x.astype(np.float64), True)[1])


@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=repr)
def test_float_format_matches_reference(fmt):
    vs, x = _float_case(fmt)
    _check_modes(fmt, x, lambda mode: R.round_to_set(x, vs, mode), signed_zero=True)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS[:7] + FLOAT_FORMATS[7::9], ids=repr)
def test_float_stochastic_stays_on_the_two_neighbours(fmt):
    vs, x = _float_case(fmt)
    a, b = R.stochastic_pair(x, vs)
    _assert_one_of(x, _quantize(x, fmt, "stochastic", seed=11), a, b, fmt)


def test_reference_ties_to_even_is_mantissa_lsb():
    """Self-check of the reference: for man >= 1 the tie rule picks the even mantissa."""
    vs = R.float_set(rt.FloatFormat(4, 3))
    assert R.round_to_set([1.0625, 1.1875, 15.5, 248.0, 2.0**-10, 3 * 2.0**-10], vs, "nearest").tolist() == \
        [1.0, 1.25, 16.0, np.inf, 0.0, 2.0**-8]
    vs = R.float_set(rt.FloatFormat(4, 3, subnormals=False))
    assert R.round_to_set([2.0**-7, 2.0**-7 * 1.01, -(2.0**-7)], vs, "nearest").tolist() == [0.0, 2.0**-6, -0.0]
    vs = R.fixed_set(8, 0)
    assert R.round_to_set([0.5, 1.5, -0.5, -1.5, 2.5, 126.5, 127.5, -128.5], vs, "nearest").tolist() == \
        [0, 2, 0, -2, 2, 126, 127, -128]


KNOWN = [  # (format, mode, input, expected) worked out by hand from the spec
    (FP8_E4M3, "nearest", 464.0, 448.0),  # tie between 448 (even) and 480 -> 448
    (FP8_E4M3, "nearest", 465.0, 448.0),  # rounds to 480 > max: saturates
    (FP8_E4M3, "up", 449.0, 448.0),
    (FP8_E4M3, "nearest", float("inf"), 448.0),
    (rt.FloatFormat(4, 3, specials="fn", overflow="nan"), "nearest", 464.0, 448.0),
    (rt.FloatFormat(4, 3, specials="fn", overflow="nan"), "nearest", 465.0, float("nan")),
    (rt.FloatFormat(4, 3, specials="fn", overflow="nan"), "toward_zero", 1e6, 448.0),
    (rt.FloatFormat(4, 3, specials="fn", overflow="nan"), "up", -1e6, -448.0),
    (rt.FloatFormat(4, 3, specials="fn", overflow="nan"), "down", -1e6, float("nan")),
    (rt.FloatFormat(4, 3), "nearest", 247.0, 240.0),
    (rt.FloatFormat(4, 3), "nearest", 248.0, float("inf")),  # tie with 256 (even) -> overflow
    (rt.FloatFormat(4, 3), "down", 1e6, 240.0),
    (rt.FloatFormat(4, 3), "up", 240.5, float("inf")),
    (rt.FloatFormat(4, 3), "down", -240.5, -float("inf")),
    (rt.FloatFormat(4, 3), "up", -1e6, -240.0),
    (rt.FloatFormat(4, 3), "toward_zero", -1e6, -240.0),
    (rt.FloatFormat(4, 3), "up", -float("inf"), -float("inf")),
    (rt.FloatFormat(4, 3, specials="none"), "nearest", 500.0, 480.0),
    (rt.FloatFormat(4, 3, subnormals=False), "nearest", 2.0**-7, 0.0),
    (rt.FloatFormat(4, 3, subnormals=False), "up", 2.0**-20, 2.0**-6),
    (FP4_E2M1, "nearest", 5.0, 4.0), (FP4_E2M1, "nearest", 0.25, 0.0), (FP4_E2M1, "nearest", 0.75, 1.0),
    (FP4_E2M1, "nearest", 2.5, 2.0), (FP4_E2M1, "nearest", 1e9, 6.0), (FP4_E2M1, "up", 4.01, 6.0),
    (FP6_E2M3, "nearest", 7.75, 7.5), (FP6_E3M2, "nearest", 30.0, 28.0),
    (FP8_E5M2, "nearest", 61440.0, float("inf")), (FP8_E5M2, "nearest", 61439.0, 57344.0),
    (FP16, "nearest", 65520.0, float("inf")), (FP16, "nearest", 65519.0, 65504.0),
    (FP16, "nearest", 2.0**-25, 0.0), (FP16, "nearest", 2.0**-25 * 1.5, 2.0**-24),
    (INT8, "nearest", 1.0 + 1 / 128, 1.0), (INT8, "nearest", 1.0 + 3 / 128, 1.0 + 4 / 128),
    (INT8, "nearest", 5.0, 127 / 64),
    (INT8, "nearest", -5.0, -2.0), (rt.FixedPoint(4, 0, signed=False), "nearest", -3.0, 0.0),
    (rt.FixedPoint(4, 0, signed=False), "up", 14.5, 15.0), (rt.FixedPoint(4, 0, signed=False), "up", 15.5, 15.0),
    # float32 subnormal inputs: the format's grid reaches below 2**-126 (bias 140: down to 2**-143) ...
    (rt.FloatFormat(8, 4, bias=140), "nearest", -float.fromhex("0x1.fp-127"), -float.fromhex("0x1.fp-127")),
    (rt.FloatFormat(8, 4, bias=140), "nearest", float.fromhex("0x1.1p-135"), float.fromhex("0x1.1p-135")),
    # ... or the format has no subnormals and its smallest normal is 2**-126
    (rt.FloatFormat(8, 2, subnormals=False), "nearest", 2.0**-127, 0.0),  # tie -> 0
    (rt.FloatFormat(8, 2, subnormals=False), "nearest", 1.5 * 2.0**-127, 2.0**-126),
    (rt.FloatFormat(8, 7, subnormals=False), "up", 2.0**-140, 2.0**-126),
    (rt.FloatFormat(8, 7, subnormals=False), "toward_zero", 2.0**-127, 0.0),
]


@pytest.mark.parametrize("fmt,mode,x,want", KNOWN, ids=[f"{f!r}-{m}-{x}" for f, m, x, _ in KNOWN])
def test_known_values(fmt, mode, x, want):
    got = float(rt.quantize(torch.tensor([x]), fmt, mode)[0])
    assert got == want or (np.isnan(got) and np.isnan(want)), (fmt, mode, x, want, got)
    vs = R.value_set(fmt)
    ref = float(R.round_to_set([x], vs, mode)[0])
    assert ref == want or (np.isnan(ref) and np.isnan(want))  # the reference agrees with the hand result


def test_signed_zero_results():
    """Zero results of a floating-point format keep the input's sign (as IEEE and torch casts do)."""
    for fmt in (FP8_E4M3, FP16, BF16, FP4_E2M1, rt.FloatFormat(4, 3, subnormals=False)):
        tiny = rt.finfo(fmt).smallest_subnormal / 4
        x = torch.tensor([-tiny, tiny, -0.0, 0.0])
        for mode in ("nearest", "toward_zero", "up", "stochastic"):
            got = rt.quantize(x, fmt, mode, generator=0)
            if mode == "up":  # -tiny rounds up to -0; +tiny to the smallest positive value
                assert got[0].item() == 0 and torch.signbit(got[0]), (fmt, mode, got)
                assert torch.signbit(got[2]) and not torch.signbit(got[3])
                continue
            assert torch.equal(torch.signbit(got), torch.tensor([True, False, True, False])), (fmt, mode, got)
            assert torch.all(got[2:] == 0)


# ----------------------------------------------------------------------------- FixedPoint

FIXED = [rt.FixedPoint(8, 4), INT8, rt.FixedPoint(4, 0), rt.FixedPoint(2, 0), rt.FixedPoint(2, 5),
         rt.FixedPoint(12, -3), rt.FixedPoint(6, 5, signed=False), rt.FixedPoint(1, 0, signed=False),
         rt.FixedPoint(16, 12), rt.FixedPoint(10, 20), rt.FixedPoint(8, 140), rt.FixedPoint(8, -100),
         rt.FixedPoint(16, 0, signed=False), rt.FixedPoint(5, 3, signed=False)]


@functools.lru_cache(maxsize=None)
def _fixed_case(fmt):
    vs = R.fixed_set(fmt.wl, fmt.fl, fmt.signed)
    return vs, _grid_inputs(vs, seed=fmt.wl * 1000 + fmt.fl % 1000)


@pytest.mark.parametrize("fmt", FIXED, ids=repr)
def test_fixed_representable_values_are_fixed_points(fmt):
    vs = R.fixed_set(fmt.wl, fmt.fl, fmt.signed)
    x = _f32(vs.values)
    for mode in R.ALL_MODES:
        got = _quantize(x, fmt, mode, seed=2)
        _assert_matches(x, got, vs.values, fmt, mode, signed_zero=False)


@pytest.mark.parametrize("fmt", FIXED, ids=repr)
def test_fixed_point_matches_reference(fmt):
    vs, x = _fixed_case(fmt)
    _check_modes(fmt, x, lambda mode: R.round_to_set(x, vs, mode), signed_zero=False)


@pytest.mark.parametrize("fmt", FIXED, ids=repr)
def test_fixed_stochastic_stays_on_the_two_neighbours(fmt):
    vs, x = _fixed_case(fmt)
    a, b = R.stochastic_pair(x, vs)
    _assert_one_of(x, _quantize(x, fmt, "stochastic", seed=12), a, b, fmt)


# ----------------------------------------------------------------------------- BlockFloat

def _block_float_input(shape, dim, wl, seed) -> np.ndarray:
    """Slices with their own magnitudes; entries on the slice's grid, on midpoints and random.

    The slice's largest entry is chosen first, so the shared exponent e is known and
    grid points / ties of step 2**(e - wl + 2) can be planted."""
    rng = np.random.default_rng(seed)
    if dim is None:
        moved = np.empty((1, int(np.prod(shape))))
    else:
        moved = np.empty((shape[dim], int(np.prod(shape)) // shape[dim]))
    for i in range(moved.shape[0]):
        sl = moved[i]
        kind = i % 5
        if kind == 4 and dim is not None:
            sl[:] = 0.0  # an all-zero slice
            sl[::3] = -0.0
            continue
        e = int(rng.integers(-140, 120)) if kind == 3 else int(rng.integers(-20, 20))
        step = 2.0 ** (e - wl + 2)
        n = sl.size
        codes = rng.integers(-(2 ** (wl - 1)), 2 ** (wl - 1), n).astype(np.float64)
        frac = rng.choice([0.0, 0.5, 0.25, 0.75, 0.5, 0.5], n)
        sl[:] = (codes + frac) * step
        rand = rng.random(n) < 0.3
        sl[rand] = rng.standard_normal(rand.sum()) * 2.0**e / 3
        sl[:] = np.clip(sl, -(2.0 ** (e + 1)) * 0.999, 2.0 ** (e + 1) * 0.999)
        # the slice's largest magnitude fixes e: sometimes just below 2**(e+1) (rounds past the top code)
        top = [1.5 * 2.0**e, 2.0 ** (e + 1) - step / 2, -(2.0 ** (e + 1)) + step / 2, 2.0**e,
               2.0 ** (e + 1) - step / 4][i % 5]
        sl[int(rng.integers(0, n))] = top
        if n > 4:
            sl[int(rng.integers(0, n))] = 0.0
    if dim is None:
        return _f32(moved.reshape(shape))
    rest = tuple(d for k, d in enumerate(shape) if k != dim % len(shape))
    out = _f32(np.moveaxis(moved.reshape((shape[dim],) + rest), 0, dim))
    assert out.shape == tuple(shape) and np.all(np.isfinite(out))
    return out


BLOCK_FLOAT_CASES = [  # (wl, dim, shape)
    (8, None, (3000,)), (4, None, (50, 60)), (2, None, (200,)), (12, None, (7, 9, 11)),
    (8, 0, (40, 50)), (6, 1, (40, 50)), (5, -1, (40, 50)), (8, -2, (40, 50)),
    (3, 0, (6, 7, 40)), (8, 1, (6, 7, 40)), (10, 2, (6, 7, 40)), (7, 0, (64,)),
]


@pytest.mark.parametrize("wl,dim,shape", BLOCK_FLOAT_CASES, ids=[f"wl{w}-dim{d}-{s}" for w, d, s in BLOCK_FLOAT_CASES])
def test_block_float_matches_reference(wl, dim, shape):
    fmt = rt.BlockFloat(wl, dim=dim)
    x = _block_float_input(shape, dim, wl, seed=wl * 100 + len(shape))
    _check_modes(fmt, x, lambda mode: R.block_float_reference(x, wl, dim, mode), signed_zero=False)
    a = R.block_float_reference(x, wl, dim, "stochastic", np.ones(x.shape))
    b = R.block_float_reference(x, wl, dim, "stochastic", np.zeros(x.shape))
    _assert_one_of(x, _quantize(x, fmt, "stochastic", seed=13), a, b, fmt)


def test_block_float_preset_and_zero_tensor():
    x = _f32([0.3, -1.7, 0.01, 0.5])  # e = 0, step 2**-6 for BFP8
    got = _quantize(x, rt.formats.BFP8, "nearest")
    assert got.tolist() == [19 / 64, -109 / 64, 1 / 64, 0.5]
    z = np.zeros((3, 4), F32)
    for mode in R.ALL_MODES:
        assert np.array_equal(_quantize(z, rt.BlockFloat(8, dim=1), mode), z)
        assert np.array_equal(_quantize(z, rt.BlockFloat(8), mode), z)


# ----------------------------------------------------------------------------- MXFormat

MX_PRESETS = [MXFP8_E4M3, MXFP8_E5M2, MXFP6_E3M2, MXFP6_E2M3, MXFP4, MXINT8]


def _mx_input(elem, block: int, shape, seed: int, tiny: bool = False) -> np.ndarray:
    """Rows of blocks with varied scales: random, planted grid points and ties, zeros, inf, NaN.

    ``tiny=True`` gives blocks whose largest magnitude is near or below float32's
    smallest normal 2**-126, where the scale clamps at 2**-127 and the elements
    are float32 subnormals."""
    rng = np.random.default_rng(seed)
    ev = R.value_set(elem)
    grid = ev.values
    mids = (grid[:-1] + grid[1:]) / 2
    emax = R.floor_log2(ev.max)
    rows = np.zeros((int(np.prod(shape[:-1])), shape[-1]))
    for r in range(rows.shape[0]):
        for c0 in range(0, shape[-1], block):
            n = min(block, shape[-1] - c0)
            blk = rows[r, c0:c0 + n]
            kind = int(rng.integers(0, 10))
            s = int(rng.integers(-30, 30))
            if tiny:
                t = rng.choice([2.0**-135, 2.0**-130, 2.0**-128, 2.0**-126, 2.0**-140 * 3, 2.0**-120])
                blk[:] = t * rng.uniform(-1, 1, n)
                blk[int(rng.integers(0, n))] = t
            elif kind <= 3:  # planted: the block's amax is elem.max * 2**s, so every scale mode picks s
                vals = np.concatenate([grid, mids, mids])
                blk[:] = rng.choice(vals, n) * 2.0**s
                blk[int(rng.integers(0, n))] = ev.max * 2.0**s * rng.choice([1, -1])
            elif kind <= 6:  # random magnitudes within ~2**12 of the block's largest
                top = 2.0 ** (s + emax) * rng.uniform(1, 2)
                blk[:] = top * np.exp2(-rng.uniform(0, 12, n)) * np.where(rng.random(n) < 0.5, -1, 1)
                if rng.random() < 0.3:
                    blk[int(rng.integers(0, n))] = 2.0 ** (s + emax + 1) * (1 - 2.0**-20)  # just under a power of 2
            elif kind == 7:  # very large blocks
                blk[:] = rng.choice([2.0**90, 2.0**100, 2.0**120]) * rng.uniform(-1, 1, n)
            elif kind == 8:
                blk[:] = 0.0
                if n > 1:
                    blk[1] = -0.0
            else:  # a non-finite element poisons its block
                blk[:] = rng.standard_normal(n)
                blk[int(rng.integers(0, n))] = rng.choice([np.inf, -np.inf, np.nan])
    return _f32(rows.reshape(shape))


MX_CASES = [(fmt, block, mode) for fmt in MX_PRESETS for block in (32, 16, 7) for mode in ("floor", "ceil", "even")]


@pytest.mark.parametrize("fmt", [rt.MXFormat(f.elem, b, s, name=f"{f.name}-b{b}-{s}") for f, b, s in MX_CASES],
                         ids=repr)
def test_mx_matches_reference(fmt):
    shape = (3, 10, 100) if fmt.block == 7 else (40, 100)  # 100 % block != 0: ragged last block
    x = _mx_input(fmt.elem, fmt.block, shape, seed=fmt.block + 7 * len(fmt.scale_mode))
    signed_zero = isinstance(fmt.elem, rt.FloatFormat)
    _check_modes(fmt, x, lambda mode: R.mx_reference(x, fmt.elem, fmt.block, fmt.scale_mode, mode), signed_zero)
    a = R.mx_reference(x, fmt.elem, fmt.block, fmt.scale_mode, "stochastic", np.ones(x.shape))
    b = R.mx_reference(x, fmt.elem, fmt.block, fmt.scale_mode, "stochastic", np.zeros(x.shape))
    _assert_one_of(x, _quantize(x, fmt, "stochastic", seed=14), a, b, fmt)


MX_EXTRA = [rt.MXFormat(FP8_E5M2), rt.MXFormat(rt.FloatFormat(4, 3), 8),
            rt.MXFormat(rt.FloatFormat(3, 2, subnormals=False), 5),
            rt.MXFormat(rt.FixedPoint(6, 4), 9, "ceil"), rt.MXFormat(rt.FixedPoint(8, 6), 4, "even"),
            rt.MXFormat(FP4_E2M1, 1), rt.MXFormat(FP6_E2M3, 64, "even"), rt.MXFormat(rt.FloatFormat(5, 4), 32, "ceil"),
            rt.MXFormat(rt.FloatFormat(3, 0, specials="none"), 3)]


@pytest.mark.parametrize("fmt", MX_EXTRA, ids=repr)
def test_mx_custom_elements_match_reference(fmt):
    """Elements saturate even when the element format itself overflows to inf; odd block sizes."""
    x = _mx_input(fmt.elem, fmt.block, (30, 64), seed=fmt.block)
    _check_modes(fmt, x, lambda mode: R.mx_reference(x, fmt.elem, fmt.block, fmt.scale_mode, mode),
                 isinstance(fmt.elem, rt.FloatFormat))


@pytest.mark.parametrize("fmt", MX_PRESETS + [rt.MXFormat(rt.FloatFormat(3, 2, subnormals=False), 5)], ids=repr)
def test_mx_tiny_blocks_match_reference(fmt):
    """Blocks whose largest magnitude is near 2**-126: the scale clamps at 2**-127 and
    the inputs (and results) are float32 subnormals."""
    for scale_mode in ("floor", "ceil", "even"):
        f = rt.MXFormat(fmt.elem, fmt.block, scale_mode)
        x = _mx_input(f.elem, f.block, (12, 70), seed=5, tiny=True)
        _check_modes(f, x, lambda mode: R.mx_reference(x, f.elem, f.block, f.scale_mode, mode),
                     isinstance(f.elem, rt.FloatFormat))


@pytest.mark.parametrize("shape", [(), (1,), (5,), (33,), (2, 3, 5), (4, 1)], ids=str)
def test_mx_small_and_odd_shapes(shape):
    rng = np.random.default_rng(len(shape))
    x = _f32(rng.standard_normal(shape) * 10)
    for fmt in (MXFP8_E4M3, MXFP4, rt.MXFormat(FP6_E3M2, 2, "ceil")):
        _check_modes(fmt, x, lambda mode: R.mx_reference(x, fmt.elem, fmt.block, fmt.scale_mode, mode), True)


def test_mx_957_floor_and_ceil():
    x = torch.tensor([957.0] + [1.0] * 31)
    assert rt.quantize(x, MXFP8_E4M3)[0].item() == 896.0  # floor: scale 2, 478.5 saturates to 448
    assert rt.quantize(x, rt.MXFormat(FP8_E4M3, scale_mode="ceil"))[0].item() == 960.0  # scale 4, 239.25 -> 240
    assert rt.quantize(x, rt.MXFormat(FP8_E4M3, scale_mode="even"))[0].item() == 896.0  # 957 -> 1.875*2**9: scale 2
    y = torch.tensor([1000.0] + [1.0] * 31)
    assert rt.quantize(y, MXFP8_E4M3)[0].item() == 896.0
    assert rt.quantize(y, rt.MXFormat(FP8_E4M3, scale_mode="even"))[0].item() == 1024.0  # 1000 -> 2**10: scale 4
    assert rt.quantize(y, rt.MXFormat(FP8_E4M3, scale_mode="ceil"))[0].item() == 1024.0
    for v, mode in ((957.0, "floor"), (957.0, "ceil"), (1000.0, "even")):
        ref = R.mx_reference(np.array([v] + [1.0] * 31), FP8_E4M3, 32, mode, "nearest")[0]
        assert ref == {("floor", 957.0): 896.0, ("ceil", 957.0): 960.0, ("even", 1000.0): 1024.0}[(mode, v)]


def test_mx_tiny_block_known_values():
    """A block below float32's normal range: the scale clamps at 2**-127 and elements stay on
    the element grid times 2**-127."""
    x = torch.tensor([2.0**-130, float.fromhex("0x1.ff6p-137")])  # E4M3: 2**-3 and ~2**-9 times 2**-127
    assert rt.quantize(x, MXFP8_E4M3).tolist() == [2.0**-130, 2.0**-136]
    assert rt.quantize(torch.tensor([2.0**-128]), MXFP4).tolist() == [2.0**-128]  # 0.5 * 2**-127
    assert R.mx_reference(np.array([2.0**-128]), FP4_E2M1, 32, "floor", "nearest").tolist() == [2.0**-128]


def test_mx_blocks_are_independent_and_nonfinite_blocks_are_nan():
    x = torch.ones(2, 40)
    x[0, 3] = float("inf")
    x[1, 35] = float("nan")
    x[1, 0] = 1000.0
    got = rt.quantize(x, MXFP8_E4M3)
    assert torch.isnan(got[0, :32]).all() and torch.equal(got[0, 32:], torch.ones(8))
    assert torch.isnan(got[1, 32:]).all() and not torch.isnan(got[1, :32]).any()
    assert got[1, 0].item() == 896.0 and torch.equal(got[1, 1:32], torch.ones(31))
    z = torch.zeros(3, 64)
    z[1, 40] = -0.0
    for fmt in MX_PRESETS:
        assert torch.equal(rt.quantize(z, fmt), z)
