"""quantize() against independent implementations of the same formats: torch's own
float16/bfloat16 casts (bit for bit, over a dense sweep of float32 patterns, and all
2**32 with RELAXTORCH_EXHAUSTIVE=1) and ml_dtypes' FP8/FP6/FP4 casts."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.formats import BF16, FP4_E2M1, FP6_E2M3, FP6_E3M2, FP8_E4M3, FP8_E5M2, FP16

from . import reference as R

CASTS = [(FP16, torch.float16), (BF16, torch.bfloat16)]
LOW_BYTES = (0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF)


def _as_f32(bits: torch.Tensor) -> torch.Tensor:
    """int64 bit patterns in [0, 2**32) -> float32 tensor."""
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def _check_cast(x: torch.Tensor, fmt, dtype) -> None:
    got = rt.quantize(x, fmt)
    want = x.to(dtype).float()
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), _report(x, got, want, torch.isnan(got) != nan, fmt)
    same = got.view(torch.int32) == want.view(torch.int32)
    bad = ~(same | nan)
    assert not bad.any(), _report(x, got, want, bad, fmt)


def _report(x, got, want, bad, fmt) -> str:
    idx = torch.nonzero(bad.reshape(-1)).reshape(-1)
    xs, gs, ws = (t.reshape(-1).view(torch.int32) for t in (x, got, want))
    lines = [f"x=0x{int(xs[i]) & 0xFFFFFFFF:08x} ({float(x.reshape(-1)[i])!r}): "
             f"expected 0x{int(ws[i]) & 0xFFFFFFFF:08x} ({float(want.reshape(-1)[i])!r}), "
             f"got 0x{int(gs[i]) & 0xFFFFFFFF:08x} ({float(got.reshape(-1)[i])!r})" for i in idx[:12]]
    return f"{fmt!r}: {len(idx)} patterns differ from the torch cast\n" + "\n".join(lines)


@pytest.mark.parametrize("fmt,dtype", CASTS, ids=["FP16", "BF16"])
def test_nearest_equals_torch_cast_dense_sweep(fmt, dtype):
    """Both signs x all 256 exponents x every top-15-bit mantissa x 6 low bytes (~1e8 patterns).

    Every rounding boundary of float16 (13 dropped bits) and bfloat16 (16 dropped
    bits) is hit exactly, one ulp below and one ulp above."""
    mant = ((torch.arange(2**15, dtype=torch.int64) << 8)[:, None] |
            torch.tensor(LOW_BYTES, dtype=torch.int64)[None, :]).reshape(-1)
    for sign in (0, 1):
        for e0 in range(0, 256, 32):
            exps = torch.arange(e0, e0 + 32, dtype=torch.int64)
            bits = (sign << 31) | (exps[:, None] << 23) | mant[None, :]
            _check_cast(_as_f32(bits.reshape(-1)), fmt, dtype)


@pytest.mark.parametrize("fmt,dtype", CASTS, ids=["FP16", "BF16"])
def test_nearest_equals_torch_cast_random_patterns(fmt, dtype):
    g = torch.Generator().manual_seed(1234)
    bits = torch.randint(0, 2**32, (1 << 22,), generator=g, dtype=torch.int64)
    _check_cast(_as_f32(bits), fmt, dtype)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RELAXTORCH_EXHAUSTIVE") != "1", reason="set RELAXTORCH_EXHAUSTIVE=1")
@pytest.mark.parametrize("fmt,dtype", CASTS, ids=["FP16", "BF16"])
def test_nearest_equals_torch_cast_all_2_32_patterns(fmt, dtype):
    chunk = 1 << 24
    for start in range(0, 2**32, chunk):
        _check_cast(_as_f32(torch.arange(start, start + chunk, dtype=torch.int64)), fmt, dtype)


@pytest.mark.parametrize("fmt,dtype", CASTS + [(FP8_E4M3, torch.float16), (FP8_E5M2, torch.bfloat16)],
                         ids=["FP16-f16", "BF16-bf16", "E4M3-f16", "E5M2-bf16"])
def test_half_and_bfloat16_inputs_come_back_in_their_dtype(fmt, dtype):
    """A float16/bfloat16 input is rounded as its exact float32 value and returned in its dtype."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(4096, generator=g) * torch.exp2(torch.randint(-20, 20, (4096,), generator=g).float())).to(dtype)
    x[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), -0.0]).to(dtype)
    for mode in ("nearest", "toward_zero", "down", "up", "stochastic"):
        got = rt.quantize(x, fmt, mode, generator=3)
        assert got.dtype == dtype and got.shape == x.shape
        want = rt.quantize(x.float(), fmt, mode, generator=3)
        ok = ~want.isnan()
        assert torch.equal(want[ok].to(dtype).float(), want[ok])  # the format's values fit in dtype
        assert torch.equal(got.float().isnan(), want.isnan())
        assert torch.equal(got.float()[ok].view(torch.int32), want[ok].view(torch.int32)), (fmt, mode)
    # the format equal to the dtype is the identity on that dtype's values
    if (fmt, dtype) in CASTS:
        for mode in ("nearest", "toward_zero", "down", "up", "stochastic"):
            got = rt.quantize(x, fmt, mode, generator=4)
            assert torch.equal(got[~x.isnan()].view(torch.int16), x[~x.isnan()].view(torch.int16))


# ----------------------------------------------------------------------------- ml_dtypes

def _ml_inputs(fmt, seed: int) -> np.ndarray:
    """Random float32 around the format's range, a fine linear sweep of [-2 max, 2 max],
    and every midpoint between neighbouring values with the float32 on either side."""
    vs = R.float_set(fmt)
    vmax = vs.max
    grid = np.concatenate([vs.values, [vs.hi_ext, -vs.hi_ext]])
    grid.sort()
    mids = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)
    ties = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
                           grid.astype(np.float32)])
    rng = np.random.default_rng(seed)
    n = 400_000
    mags = np.exp2(rng.uniform(-30, np.log2(vmax) + 3, n))
    x = (mags * np.where(rng.random(n) < 0.5, -1.0, 1.0)).astype(np.float32)
    raw = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    # all float32 in [0, 2*max] with a coarse step, and the ties exactly
    lin = np.linspace(0, 2 * vmax, 200_001, dtype=np.float32)
    return np.concatenate([x, raw, lin, -lin, ties, np.float32([0.0, -0.0, np.inf, -np.inf, np.nan])])


def _compare_ml(x: np.ndarray, fmt, ml_dtype, label: str) -> None:
    with np.errstate(invalid="ignore", over="ignore"):
        want = x.astype(ml_dtype).astype(np.float32)
    got = rt.quantize(torch.from_numpy(x.copy()), fmt).numpy()
    nan_w, nan_g = np.isnan(want), np.isnan(got)
    bad = (nan_w != nan_g) | (~nan_w & (got.view(np.uint32) != want.view(np.uint32)))
    idx = np.flatnonzero(bad)
    lines = [f"x=0x{x.view(np.uint32)[i]:08x} ({float(x[i])!r}): expected {float(want[i])!r} "
             f"(0x{want.view(np.uint32)[i]:08x}), got {float(got[i])!r} (0x{got.view(np.uint32)[i]:08x})"
             for i in idx[:12]]
    assert len(idx) == 0, f"{label}: {len(idx)} differ from ml_dtypes\n" + "\n".join(lines)


def test_fp8_e4m3_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = _ml_inputs(FP8_E4M3, 0)
    # ml_dtypes' float8_e4m3fn turns overflow (and inf) into NaN: the "nan" policy matches it everywhere
    _compare_ml(x, rt.FloatFormat(4, 3, specials="fn", overflow="nan"), ml_dtypes.float8_e4m3fn, "E4M3fn/nan")
    # the saturating preset agrees wherever ml_dtypes does not overflow: |x| <= 448 + half an ulp (464, a tie to 448)
    inside = np.abs(x) <= 464.0
    _compare_ml(x[inside], FP8_E4M3, ml_dtypes.float8_e4m3fn, "FP8_E4M3")


def test_fp8_e5m2_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    _compare_ml(_ml_inputs(FP8_E5M2, 1), FP8_E5M2, ml_dtypes.float8_e5m2, "FP8_E5M2")


@pytest.mark.parametrize("fmt,name", [(FP6_E3M2, "float6_e3m2fn"), (FP6_E2M3, "float6_e2m3fn"),
                                      (FP4_E2M1, "float4_e2m1fn")], ids=["E3M2", "E2M3", "E2M1"])
def test_fp6_fp4_match_ml_dtypes(fmt, name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = getattr(ml_dtypes, name, None)
    if dt is None:
        pytest.skip(f"ml_dtypes has no {name}")
    x = _ml_inputs(fmt, 2)
    x = x[~np.isnan(x)]  # these types have no NaN (ml_dtypes maps NaN to -0)
    _compare_ml(x, fmt, dt, repr(fmt))
