"""Float32-maximum saturation, "nearest_away", symmetric fixed point and MX blocks along any
axis, against hand-computed values and the float64 reference (tests/numbers/reference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.formats import FP4_E2M1, FP8_E4M3, INT8, INT8_SM, MXFP4, MXFP8_E4M3, MXINT8, MXINT8_SM

from . import reference as R

F32_MAX = float.fromhex("0x1.fffffep127")


def _bits(t):
    return t.view(torch.int32)


# ------------------------------------------------------------------ saturation at float32's maximum

def test_block_float_most_negative_code_at_scale_2_127_saturates_finite():
    got = rt.quantize(torch.tensor([-3.4e38, 1.0, 3.0e38]), rt.BlockFloat(8))
    # shared exponent 127, step 2**121: -128 steps would be -2**128, so -127 steps is the minimum
    assert got.tolist() == [-127 * 2.0**121, 0.0, 113 * 2.0**121]


def test_mxint8_most_negative_code_at_scale_2_127_saturates_finite():
    x = torch.tensor([[-3.4e38, 1.0] + [0.5] * 30])
    got = rt.quantize(x, MXINT8)
    assert got[0, 0].item() == -127 * 2.0**121 and torch.isfinite(got).all()
    assert rt.quantize(-x, MXINT8)[0, 0].item() == 127 * 2.0**121
    for mode in rt.ROUNDINGS:
        assert torch.isfinite(rt.quantize(x, MXINT8, mode, generator=1)).all(), mode


@pytest.mark.parametrize("scale_mode", ["ceil", "even"])
def test_mx_ceil_and_even_scales_past_float32_saturate_at_the_largest_finite_element(scale_mode):
    # amax 3.4e38 = 1.998 * 2**127: E4M3 ceil (and even: amax rounds to 2**128) pick scale 2**120,
    # whose 256 * 2**120 = 2**128 float32 cannot hold; the block's largest finite value is 240 * 2**120
    x = torch.tensor([[-3.4e38, 3.4e38, 2.9e38, 1.0]])  # 2.9e38 = 218.2 * 2**120
    got = rt.quantize(x, rt.MXFormat(FP8_E4M3, scale_mode=scale_mode))
    assert got[0].tolist() == [-240 * 2.0**120, 240 * 2.0**120, 224 * 2.0**120, 0.0]
    floor = rt.quantize(x, MXFP8_E4M3)  # floor: scale 2**119, saturating at 448 * 2**119
    assert floor[0, :2].tolist() == [-448 * 2.0**119, 448 * 2.0**119]


@pytest.mark.parametrize("fmt", [MXINT8, MXINT8_SM, MXFP4, rt.MXFormat(FP8_E4M3, 4, "ceil"),
                                 rt.MXFormat(FP4_E2M1, 3, "even"), rt.MXFormat(INT8, 8, "ceil"),
                                 rt.MXFormat(rt.FloatFormat(3, 0, specials="none"), 4, "ceil")], ids=repr)
def test_blocks_near_float32_max_match_reference(fmt):
    rng = np.random.default_rng(3)
    x = (F32_MAX * rng.uniform(-1, 1, (20, 24))).astype(np.float32)
    x[::2, 0] = -F32_MAX
    x[1::4, 1] = F32_MAX
    for mode in R.DETERMINISTIC:
        got = rt.quantize(torch.from_numpy(x), fmt, mode).numpy()
        want = R.mx_reference(x, fmt.elem, fmt.block, fmt.scale_mode, mode)
        bad, report = R.mismatches(x, got, want, isinstance(fmt.elem, rt.FloatFormat))
        assert len(bad) == 0, f"{fmt!r} {mode}: {report}"
        assert np.isfinite(got).all()


def test_block_float_near_float32_max_matches_reference():
    rng = np.random.default_rng(4)
    x = (F32_MAX * rng.uniform(-1, 1, (6, 40))).astype(np.float32)
    x[:, 0] = -F32_MAX
    for wl, dim in ((8, None), (4, 0), (12, 1)):
        for mode in R.DETERMINISTIC:
            got = rt.quantize(torch.from_numpy(x), rt.BlockFloat(wl, dim=dim), mode).numpy()
            want = R.block_float_reference(x, wl, dim, mode)
            bad, report = R.mismatches(x, got, want, False)
            assert len(bad) == 0, f"wl={wl} dim={dim} {mode}: {report}"


# ------------------------------------------------------------------ nearest_away

@pytest.mark.parametrize("fmt,x,even,away", [
    (rt.FixedPoint(8, 0), [0.5, 1.5, 2.5, -2.5, -0.5, 2.4999998], [0, 2, 2, -2, 0, 2], [1, 2, 3, -3, -1, 2]),
    (FP8_E4M3, [1.0625, -1.0625, 1.1875, 464.0], [1.0, -1.0, 1.25, 448.0], [1.125, -1.125, 1.25, 448.0]),
    (FP4_E2M1, [2.5, 5.0, -5.0, 0.25, 0.75], [2.0, 4.0, -4.0, 0.0, 1.0], [3.0, 6.0, -6.0, 0.5, 1.0]),
    (rt.formats.FP16, [1 + 2.0**-11, 2.0**-25], [1.0, 0.0], [1 + 2.0**-10, 2.0**-24]),
    (INT8, [1 / 128, -3 / 128], [0.0, -2 / 64], [1 / 64, -2 / 64]),
])
def test_nearest_away_known_ties(fmt, x, even, away):
    t = torch.tensor(x)
    assert rt.quantize(t, fmt, "nearest").tolist() == even
    assert rt.quantize(t, fmt, "nearest_away").tolist() == away


def test_nearest_away_in_mx_blocks():
    x = torch.tensor([[5.0, 2.5, -0.25] + [1.0] * 29])  # amax 5: floor scale 2**0 (emax of E2M1 is 2)
    assert rt.quantize(x, MXFP4, "nearest")[0, :3].tolist() == [4.0, 2.0, -0.0]
    assert rt.quantize(x, MXFP4, "nearest_away")[0, :3].tolist() == [6.0, 3.0, -0.5]


# ------------------------------------------------------------------ symmetric fixed point

def test_symmetric_fixed_point_drops_the_most_negative_code():
    fmt = rt.FixedPoint(8, 6, symmetric=True)
    assert fmt == INT8_SM and fmt != INT8 and repr(rt.FixedPoint(4, 1, symmetric=True)) == \
        "FixedPoint(wl=4, fl=1, symmetric=True)"
    assert fmt.min == -127 / 64 and rt.finfo(fmt).min == -127 / 64 and rt.finfo(INT8).min == -2.0
    x = torch.tensor([-2.0, -5.0, -1.99, 1.99, -float("inf")])
    assert rt.quantize(x, fmt).tolist() == [-127 / 64, -127 / 64, -127 / 64, 127 / 64, -127 / 64]
    assert rt.quantize(x, INT8).tolist() == [-2.0, -2.0, -127 / 64, 127 / 64, -2.0]
    with pytest.raises(ValueError, match="symmetric"):
        rt.FixedPoint(8, 6, signed=False, symmetric=True)
    with pytest.raises(ValueError, match="symmetric"):
        rt.FixedPoint(8, 6, symmetric=1)


@pytest.mark.parametrize("fmt", [rt.FixedPoint(8, 6, symmetric=True), rt.FixedPoint(3, 0, symmetric=True),
                                 rt.FixedPoint(12, -2, symmetric=True)], ids=repr)
def test_symmetric_fixed_point_matches_reference(fmt):
    vs = R.value_set(fmt)
    assert vs.min == -vs.max
    rng = np.random.default_rng(fmt.wl)
    mids = (vs.values[:-1] + vs.values[1:]) / 2
    x = np.concatenate([vs.values, mids, rng.uniform(-1.5, 1.5, 2000) * vs.max, [vs.min * 3, np.inf, -np.inf]])
    x = x.astype(np.float32)
    for mode in R.DETERMINISTIC:
        got = rt.quantize(torch.from_numpy(x), fmt, mode).numpy()
        bad, report = R.mismatches(x, got, R.round_to_set(x, vs, mode), False)
        assert len(bad) == 0, f"{fmt!r} {mode}: {report}"


def test_mxint8_sign_magnitude_preset():
    x = torch.tensor([[-2.0, 1.0] + [0.5] * 30])  # amax 2: scale 2**1, -2 is -1 code... -> -1.0 exactly
    assert rt.quantize(x, MXINT8)[0, 0].item() == -2.0
    y = torch.tensor([[-1.999, 1.0] + [0.5] * 30])  # scale 2**0: two's complement has -2, sign-magnitude not
    assert rt.quantize(y, MXINT8)[0, 0].item() == -2.0
    assert rt.quantize(y, MXINT8_SM)[0, 0].item() == -127 / 64


# ------------------------------------------------------------------ MX blocks along any axis

@pytest.mark.parametrize("shape,axis", [((33, 7), 0), ((5, 70), 0), ((9, 13, 5), 0), ((9, 13, 5), 1),
                                        ((9, 13, 5), -2), ((3, 4, 37), 2)], ids=str)
@pytest.mark.parametrize("mode", rt.ROUNDINGS)
def test_mx_axis_is_the_transposed_last_axis(shape, axis, mode):
    g = torch.Generator().manual_seed(len(shape) * 10 + axis)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-20, 20, shape, generator=g).float())
    for fmt in (rt.MXFormat(FP8_E4M3, 8, axis=axis), rt.MXFormat(FP4_E2M1, 5, "ceil", axis=axis)):
        got = rt.quantize(x, fmt, mode, generator=5)
        last = rt.MXFormat(fmt.elem, fmt.block, fmt.scale_mode)
        want = rt.quantize(x.transpose(axis, -1).contiguous(), last, mode, generator=5).transpose(axis, -1)
        assert torch.equal(_bits(got), _bits(want.contiguous())), (fmt, mode)
        if axis % x.dim() == 0 and x.dim() == 2:
            want0 = rt.quantize(x.transpose(0, 1).contiguous(), last, mode, generator=5).transpose(0, 1)
            assert torch.equal(_bits(got), _bits(want0.contiguous()))
        if mode != "stochastic":
            ref = R.mx_reference(x.numpy(), fmt.elem, fmt.block, fmt.scale_mode, mode, axis=axis)
            bad, report = R.mismatches(x.numpy(), got.numpy(), ref, True)
            assert len(bad) == 0, report
    y = x.clone()
    assert rt.quantize_(y, rt.MXFormat(FP8_E4M3, 8, axis=axis), mode, generator=5) is y
    assert torch.equal(_bits(y), _bits(rt.quantize(x, rt.MXFormat(FP8_E4M3, 8, axis=axis), mode, generator=5)))


def test_mx_axis_validation_and_repr():
    fmt = rt.MXFormat(FP8_E4M3, axis=0)
    assert repr(fmt) == "MXFormat(elem=FP8_E4M3, block=32, scale_mode='floor', axis=0)"
    assert rt.MXFormat(FP8_E4M3) == rt.MXFormat(FP8_E4M3, axis=-1) != fmt
    with pytest.raises(ValueError, match="axis"):
        rt.MXFormat(FP8_E4M3, axis=1.0)
    with pytest.raises(ValueError, match="axis"):
        rt.quantize(torch.ones(3, 4), rt.MXFormat(FP8_E4M3, axis=2))
    assert rt.quantize(torch.tensor(3.0), rt.MXFormat(FP8_E4M3, axis=0)).item() == 3.0
