"""Formats are values: validated at construction, frozen, hashable, equal by value;
finfo() against closed forms, torch/numpy/ml_dtypes finfo, and the enumerated value sets."""
import dataclasses
import math

import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.formats import ALL, BF16, BFP8, FP4_E2M1, FP8_E4M3, FP8_E5M2, FP16, INT8, MXFP4, MXFP8_E4M3, MXINT8

from . import reference as R

ldexp = math.ldexp


# ----------------------------------------------------------------------------- validation

BAD = [
    # (constructor, kwargs, parameter named in the error)
    (rt.FloatFormat, dict(exp=0, man=3), "exp"),
    (rt.FloatFormat, dict(exp=9, man=3), "exp"),
    (rt.FloatFormat, dict(exp=-1, man=3), "exp"),
    (rt.FloatFormat, dict(exp=4.0, man=3), "exp"),
    (rt.FloatFormat, dict(exp="4", man=3), "exp"),
    (rt.FloatFormat, dict(exp=True, man=3), "exp"),
    (rt.FloatFormat, dict(exp=1, man=3), "exp"),  # IEEE: the only exponent field is reserved
    (rt.FloatFormat, dict(exp=4, man=-1), "man"),
    (rt.FloatFormat, dict(exp=4, man=24), "man"),
    (rt.FloatFormat, dict(exp=4, man=2.5), "man"),
    (rt.FloatFormat, dict(exp=4, man=3, bias=2.5), "bias"),
    (rt.FloatFormat, dict(exp=4, man=3, bias="7"), "bias"),
    (rt.FloatFormat, dict(exp=4, man=3, bias=200), "bias"),  # grid finer than 2**-149
    (rt.FloatFormat, dict(exp=4, man=3, bias=-200), "bias"),  # beyond float32's range
    (rt.FloatFormat, dict(exp=8, man=7, bias=126), "bias"),  # max 2**129
    (rt.FloatFormat, dict(exp=4, man=3, specials="IEEE"), "specials"),
    (rt.FloatFormat, dict(exp=4, man=3, specials="fnuz"), "specials"),
    (rt.FloatFormat, dict(exp=4, man=3, specials=None), "specials"),
    (rt.FloatFormat, dict(exp=4, man=3, subnormals=1), "subnormals"),
    (rt.FloatFormat, dict(exp=4, man=3, subnormals="no"), "subnormals"),
    (rt.FloatFormat, dict(exp=4, man=3, overflow="clamp"), "overflow"),
    (rt.FloatFormat, dict(exp=4, man=3, overflow="Saturate"), "overflow"),
    (rt.FloatFormat, dict(exp=4, man=3, specials="fn", overflow="inf"), "overflow"),
    (rt.FloatFormat, dict(exp=4, man=3, specials="none", overflow="inf"), "overflow"),
    (rt.FloatFormat, dict(exp=4, man=3, specials="none", overflow="nan"), "overflow"),
    (rt.FixedPoint, dict(wl=0, fl=0), "wl"),
    (rt.FixedPoint, dict(wl=1, fl=0), "wl"),  # signed needs a sign bit and a value bit
    (rt.FixedPoint, dict(wl=-8, fl=0), "wl"),
    (rt.FixedPoint, dict(wl=25, fl=0), "wl"),
    (rt.FixedPoint, dict(wl=8.0, fl=4), "wl"),
    (rt.FixedPoint, dict(wl=8, fl=4.0), "fl"),
    (rt.FixedPoint, dict(wl=8, fl=150), "fl"),  # step below 2**-149
    (rt.FixedPoint, dict(wl=8, fl=-140), "fl"),  # beyond float32's range
    (rt.FixedPoint, dict(wl=8, fl=4, signed="yes"), "signed"),
    (rt.BlockFloat, dict(wl=1), "wl"),
    (rt.BlockFloat, dict(wl=0), "wl"),
    (rt.BlockFloat, dict(wl=25), "wl"),
    (rt.BlockFloat, dict(wl=8.0), "wl"),
    (rt.BlockFloat, dict(wl=8, dim=1.0), "dim"),
    (rt.BlockFloat, dict(wl=8, dim="0"), "dim"),
    (rt.MXFormat, dict(elem="fp8"), "elem"),
    (rt.MXFormat, dict(elem=BFP8), "elem"),
    (rt.MXFormat, dict(elem=MXFP4), "elem"),
    (rt.MXFormat, dict(elem=FP8_E4M3, block=0), "block"),
    (rt.MXFormat, dict(elem=FP8_E4M3, block=-32), "block"),
    (rt.MXFormat, dict(elem=FP8_E4M3, block=32.0), "block"),
    (rt.MXFormat, dict(elem=FP8_E4M3, scale_mode="round"), "scale_mode"),
    (rt.MXFormat, dict(elem=FP8_E4M3, scale_mode="FLOOR"), "scale_mode"),
    (rt.MXFormat, dict(elem=FP8_E4M3, scale_mode=None), "scale_mode"),
]


@pytest.mark.parametrize("cls,kwargs,param", BAD,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v!r}' for k, v in kw.items())}" for c, kw, _ in BAD])
def test_bad_arguments_raise_valueerror_naming_the_parameter(cls, kwargs, param):
    with pytest.raises(ValueError, match=rf"^Invalid {param}\b"):
        cls(**kwargs)


GOOD = [
    rt.FloatFormat(1, 3, specials="none"), rt.FloatFormat(1, 0, specials="none"), rt.FloatFormat(2, 0),
    rt.FloatFormat(8, 23), rt.FloatFormat(8, 7), rt.FloatFormat(4, 3, bias=0), rt.FloatFormat(4, 3, bias=-100),
    rt.FloatFormat(3, 2, specials="fn", overflow="nan"), rt.FloatFormat(5, 2, overflow="saturate"),
    rt.FloatFormat(5, 2, overflow="nan"), rt.FloatFormat(4, 3, subnormals=False),
    rt.FixedPoint(2, 0), rt.FixedPoint(1, 0, signed=False), rt.FixedPoint(24, 149), rt.FixedPoint(8, -100),
    rt.BlockFloat(2), rt.BlockFloat(24, dim=-1), rt.MXFormat(INT8, block=1), rt.MXFormat(FP16, 7, "even"),
]


@pytest.mark.parametrize("fmt", GOOD, ids=repr)
def test_valid_edge_formats_construct(fmt):
    assert rt.finfo(fmt).max > 0


def test_defaults_are_filled_in():
    f = rt.FloatFormat(4, 3)
    assert f.bias == 7 and f.specials == "ieee" and f.subnormals is True and f.overflow == "inf"
    assert rt.FloatFormat(4, 3, specials="fn").overflow == "saturate"
    assert rt.FloatFormat(4, 3, specials="none").overflow == "saturate"
    assert rt.FloatFormat(6, 1).bias == 31
    assert rt.FixedPoint(8, 4).signed is True
    assert rt.BlockFloat(8).dim is None
    m = rt.MXFormat(FP8_E4M3)
    assert m.block == 32 and m.scale_mode == "floor"


# ----------------------------------------------------------------------------- values

SAMPLES = [rt.FloatFormat(4, 3), rt.FixedPoint(8, 4), rt.BlockFloat(8, dim=1), rt.MXFormat(FP4_E2M1, 16)]


@pytest.mark.parametrize("fmt", SAMPLES + list(ALL.values()), ids=repr)
def test_frozen(fmt):
    field = dataclasses.fields(fmt)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fmt, field, getattr(fmt, field))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fmt.name = "renamed"


def test_equal_and_hash_by_value():
    pairs = [
        (rt.FloatFormat(4, 3, specials="fn"), FP8_E4M3),  # the preset's name does not count
        (rt.FloatFormat(4, 3), rt.FloatFormat(4, 3, bias=7, specials="ieee", subnormals=True, overflow="inf")),
        (rt.FloatFormat(5, 10), FP16),
        (rt.FloatFormat(8, 7), BF16),
        (rt.FixedPoint(8, 6), INT8),
        (rt.FixedPoint(8, 4, signed=True), rt.FixedPoint(8, 4)),
        (rt.BlockFloat(8), BFP8),
        (rt.MXFormat(rt.FloatFormat(4, 3, specials="fn")), MXFP8_E4M3),
        (rt.MXFormat(rt.FixedPoint(8, 6), 32, "floor"), MXINT8),
    ]
    for a, b in pairs:
        assert a == b and hash(a) == hash(b), (a, b)
        assert a is not b or a is b
    table = {a: i for i, (a, _) in enumerate(pairs)}
    for i, (_, b) in enumerate(pairs):
        assert table[b] == i


def test_different_values_are_different():
    distinct = [
        rt.FloatFormat(4, 3), rt.FloatFormat(4, 3, specials="fn"), rt.FloatFormat(4, 3, specials="none"),
        rt.FloatFormat(4, 3, bias=8), rt.FloatFormat(4, 3, subnormals=False), rt.FloatFormat(4, 3, overflow="nan"),
        rt.FloatFormat(4, 3, overflow="saturate"), rt.FloatFormat(3, 4), rt.FloatFormat(4, 2),
        rt.FixedPoint(8, 4), rt.FixedPoint(8, 4, signed=False), rt.FixedPoint(8, 3), rt.FixedPoint(7, 4),
        rt.BlockFloat(8), rt.BlockFloat(8, dim=0), rt.BlockFloat(7),
        rt.MXFormat(FP8_E4M3), rt.MXFormat(FP8_E4M3, 16), rt.MXFormat(FP8_E4M3, scale_mode="ceil"),
        rt.MXFormat(FP8_E5M2), rt.MXFormat(INT8),
    ]
    assert len(set(distinct)) == len(distinct)
    for i, a in enumerate(distinct):
        for b in distinct[i + 1:]:
            assert a != b, (a, b)


def test_presets_table():
    expected = {"FP16", "BF16", "FP8_E5M2", "FP8_E4M3", "FP6_E3M2", "FP6_E2M3", "FP4_E2M1", "INT8",
                "MXFP8_E4M3", "MXFP8_E5M2", "MXFP6_E3M2", "MXFP6_E2M3", "MXFP4", "MXINT8", "BFP8"}
    assert expected <= set(ALL)
    for name, fmt in ALL.items():
        assert fmt.name == name
        assert getattr(rt.formats, name) is fmt
        assert name in repr(fmt)
        assert isinstance(fmt, (rt.FloatFormat, rt.FixedPoint, rt.BlockFloat, rt.MXFormat))
    assert "exp=4" in repr(rt.FloatFormat(4, 3)) and "man=3" in repr(rt.FloatFormat(4, 3))


# ----------------------------------------------------------------------------- finfo, closed forms

def _close(name, bits, mx, mn, tiny, sub, eps, inf, nan):
    return name, dict(bits=bits, max=mx, min=mn, smallest_normal=tiny, smallest_subnormal=sub, eps=eps,
                      has_inf=inf, has_nan=nan)


CLOSED = [
    _close("FP16", 16, 65504.0, -65504.0, ldexp(1, -14), ldexp(1, -24), ldexp(1, -10), True, True),
    _close("BF16", 16, (2 - ldexp(1, -7)) * ldexp(1, 127), -(2 - ldexp(1, -7)) * ldexp(1, 127),
           ldexp(1, -126), ldexp(1, -133), ldexp(1, -7), True, True),
    _close("FP8_E5M2", 8, 57344.0, -57344.0, ldexp(1, -14), ldexp(1, -16), 0.25, True, True),
    _close("FP8_E4M3", 8, 448.0, -448.0, ldexp(1, -6), ldexp(1, -9), 0.125, False, True),
    _close("FP6_E3M2", 6, 28.0, -28.0, 0.25, 0.0625, 0.25, False, False),
    _close("FP6_E2M3", 6, 7.5, -7.5, 1.0, 0.125, 0.125, False, False),
    _close("FP4_E2M1", 4, 6.0, -6.0, 1.0, 0.5, 0.5, False, False),
    _close("INT8", 8, 127 / 64, -2.0, ldexp(1, -6), ldexp(1, -6), ldexp(1, -6), False, False),
    # block formats: a block with scale 1; the 8-bit scale is shared by `block` elements
    _close("MXFP8_E4M3", 8 + 8 / 32, 448.0, -448.0, ldexp(1, -6), ldexp(1, -9), 0.125, False, True),
    _close("MXFP8_E5M2", 8 + 8 / 32, 57344.0, -57344.0, ldexp(1, -14), ldexp(1, -16), 0.25, False, True),
    _close("MXFP6_E3M2", 6 + 8 / 32, 28.0, -28.0, 0.25, 0.0625, 0.25, False, True),
    _close("MXFP6_E2M3", 6 + 8 / 32, 7.5, -7.5, 1.0, 0.125, 0.125, False, True),
    _close("MXFP4", 4 + 8 / 32, 6.0, -6.0, 1.0, 0.5, 0.5, False, True),
    _close("MXINT8", 8 + 8 / 32, 127 / 64, -2.0, ldexp(1, -6), ldexp(1, -6), ldexp(1, -6), False, True),
    _close("BFP8", 8, 127 / 64, -2.0, ldexp(1, -6), ldexp(1, -6), ldexp(1, -6), False, False),
]


@pytest.mark.parametrize("name,want", CLOSED, ids=[c[0] for c in CLOSED])
def test_finfo_presets_closed_form(name, want):
    fi = rt.finfo(ALL[name])
    for key, value in want.items():
        assert getattr(fi, key) == value, (name, key, getattr(fi, key), value)
    assert fi.tiny == fi.smallest_normal


CUSTOM_CLOSED = [
    # IEEE-style E4M3: top exponent reserved -> max 1.875 * 2**7
    (rt.FloatFormat(4, 3), dict(max=240.0, smallest_normal=ldexp(1, -6), smallest_subnormal=ldexp(1, -9),
                                has_inf=True, has_nan=True, bits=8)),
    (rt.FloatFormat(4, 3, specials="none"), dict(max=480.0, min=-480.0, has_inf=False, has_nan=False)),
    (rt.FloatFormat(4, 3, specials="fn", overflow="nan"), dict(max=448.0, has_inf=False, has_nan=True)),
    (rt.FloatFormat(4, 3, subnormals=False), dict(max=240.0, smallest_normal=ldexp(1, -6),
                                                  smallest_subnormal=ldexp(1, -6))),
    (rt.FloatFormat(5, 2, bias=20), dict(max=1.75 * ldexp(1, 10), smallest_normal=ldexp(1, -19),
                                         smallest_subnormal=ldexp(1, -21))),
    (rt.FloatFormat(3, 0, specials="fn"), dict(max=8.0, smallest_normal=0.25, eps=1.0)),  # 111 is NaN
    (rt.FloatFormat(3, 0, specials="none"), dict(max=16.0)),
    (rt.FloatFormat(3, 0), dict(max=8.0)),
    (rt.FloatFormat(2, 1, specials="fn"), dict(max=4.0)),  # E2M1 with the 11.1 pattern NaN
    (rt.FloatFormat(8, 23), dict(max=float(np.finfo(np.float32).max), smallest_normal=ldexp(1, -126),
                                 smallest_subnormal=ldexp(1, -149), eps=ldexp(1, -23), bits=32)),
    (rt.FixedPoint(8, 4), dict(max=127 / 16, min=-8.0, eps=1 / 16, bits=8, has_inf=False, has_nan=False)),
    (rt.FixedPoint(8, 4, signed=False), dict(max=255 / 16, min=0.0, eps=1 / 16)),
    (rt.FixedPoint(12, -3), dict(max=2047 * 8.0, min=-2048 * 8.0, eps=8.0)),
    (rt.BlockFloat(4), dict(max=7 / 4, min=-2.0, eps=0.25, bits=4)),
    (rt.MXFormat(FP8_E4M3, block=16), dict(bits=8.5, max=448.0)),
]


@pytest.mark.parametrize("fmt,want", CUSTOM_CLOSED, ids=[repr(f) for f, _ in CUSTOM_CLOSED])
def test_finfo_custom_closed_form(fmt, want):
    fi = rt.finfo(fmt)
    for key, value in want.items():
        assert getattr(fi, key) == value, (fmt, key, getattr(fi, key), value)


@pytest.mark.parametrize("fmt,dtype", [(FP16, torch.float16), (BF16, torch.bfloat16),
                                       (rt.FloatFormat(8, 23), torch.float32)], ids=str)
def test_finfo_matches_torch(fmt, dtype):
    fi, ti = rt.finfo(fmt), torch.finfo(dtype)
    assert (fi.bits, fi.max, fi.min, fi.smallest_normal, fi.eps) == (ti.bits, ti.max, ti.min, ti.smallest_normal,
                                                                     ti.eps)


@pytest.mark.parametrize("name,ml", [("FP8_E5M2", "float8_e5m2"), ("FP8_E4M3", "float8_e4m3fn"),
                                     ("FP6_E3M2", "float6_e3m2fn"), ("FP6_E2M3", "float6_e2m3fn"),
                                     ("FP4_E2M1", "float4_e2m1fn")])
def test_finfo_matches_ml_dtypes(name, ml):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    fi, mi = rt.finfo(ALL[name]), ml_dtypes.finfo(getattr(ml_dtypes, ml))
    assert fi.bits == mi.bits
    assert fi.max == float(mi.max) and fi.min == float(mi.min)
    assert fi.smallest_normal == float(mi.smallest_normal)
    assert fi.smallest_subnormal == float(mi.smallest_subnormal)
    assert fi.eps == float(mi.eps)


ENUM_FORMATS = [rt.FloatFormat(e, m, specials=s, subnormals=sub, bias=b)
                for e in (1, 2, 3, 4, 5) for m in (0, 1, 2, 3) for s in ("ieee", "fn", "none")
                for sub in (True, False) for b in (None, 3)
                if not (e == 1 and s != "none")] + [FP16, BF16]


@pytest.mark.parametrize("fmt", ENUM_FORMATS, ids=repr)
def test_finfo_matches_enumerated_values(fmt):
    """finfo agrees with the value set decoded from every bit pattern."""
    vals = R.float_set(fmt).values
    fi = rt.finfo(fmt)
    pos = vals[vals > 0]
    assert fi.max == vals[-1] and fi.min == vals[0] == -vals[-1]
    assert fi.smallest_subnormal == pos[0]
    normal_min = ldexp(1.0, 1 - fmt.bias)
    assert fi.smallest_normal == normal_min
    assert normal_min in pos
    if 1.0 in vals and vals[-1] > 1.0 and normal_min <= 1.0:  # eps: the step just above 1.0 (a normal)
        assert fi.eps == vals[np.searchsorted(vals, 1.0) + 1] - 1.0
    assert fi.has_inf == (fmt.specials == "ieee")
    assert fi.has_nan == (fmt.specials != "none")
    assert fi.bits == 1 + fmt.exp + fmt.man
