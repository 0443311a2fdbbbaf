"""quantize() invariants: shapes (0-d, empty, non-contiguous), dtype kept, input not
mutated, identity format returns the input, and argument errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.formats import ALL, FP8_E4M3, MXFP4, MXFP8_E4M3

MODES = rt.ROUNDINGS
FORMATS = [f for name, f in ALL.items() if name != "FP32"] + [
    rt.FloatFormat(3, 2, subnormals=False), rt.FloatFormat(4, 3, specials="fn", overflow="nan"),
    rt.FixedPoint(8, 4), rt.FixedPoint(6, 5, signed=False), rt.BlockFloat(6, dim=0), rt.BlockFloat(6, dim=1),
    rt.BlockFloat(5, dim=-1), rt.MXFormat(rt.formats.FP6_E2M3, 7, "ceil"), rt.MXFormat(FP8_E4M3, 16, "even")]


def _x(shape=(37, 45), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.exp2(torch.randint(-6, 6, shape, generator=g).float())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, any NaN matching any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    an, bn = torch.isnan(a), torch.isnan(b)
    return torch.equal(an, bn) and torch.equal(a[~an].view(torch.int32), b[~bn].view(torch.int32))


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_non_contiguous_inputs_match_their_contiguous_copy(fmt):
    base = _x((45, 37)).t()  # transposed view
    assert not base.is_contiguous()
    sliced = _x((60, 90), 1)[::3, 1::2]  # strided slice
    expanded = _x((1, 37), 2).expand(5, 37)  # stride 0
    for x in (base, sliced, expanded):
        for mode in MODES:
            want = rt.quantize(x.contiguous(), fmt, mode, generator=9)
            got = rt.quantize(x, fmt, mode, generator=9)
            assert got.shape == x.shape and _same(got, want), (fmt, mode, x.stride())


def _dim_fits(fmt, ndim: int) -> bool:
    return not isinstance(fmt, rt.BlockFloat) or fmt.dim is None or -ndim <= fmt.dim < ndim


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_zero_dim_and_empty(fmt):
    for mode in MODES:
        if _dim_fits(fmt, 0):  # a 0-d tensor rounds like a one-element tensor
            for v in (0.3, -2.7, 0.0, 100.0):
                x = torch.tensor(v)
                got = rt.quantize(x, fmt, mode, generator=1)
                assert got.shape == () and got.dtype == torch.float32
                one = rt.quantize(x.reshape(1), fmt, mode, generator=1)
                assert _same(got.reshape(1), one), (fmt, mode, v)
        for shape in [(0,), (3, 0), (0, 5), (2, 0, 4)]:
            if not _dim_fits(fmt, len(shape)):
                continue
            x = torch.empty(shape)
            got = rt.quantize(x, fmt, mode, generator=1)
            assert got.shape == shape and got.dtype == torch.float32


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_shape_dtype_kept_and_input_not_mutated(fmt):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for shape in ((7,), (6, 35), (2, 3, 40)):
            if not _dim_fits(fmt, len(shape)):
                continue
            x = _x(shape, 3).to(dtype)
            x.view(-1)[0] = float("nan")
            before = x.clone()
            for mode in MODES:
                out = rt.quantize(x, fmt, mode, generator=2)
                assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
                assert out.data_ptr() != x.data_ptr()
                assert torch.equal(x.view(torch.int16 if dtype != torch.float32 else torch.int32),
                                   before.view(torch.int16 if dtype != torch.float32 else torch.int32))


def test_returns_a_new_tensor_even_when_nothing_changes():
    x = torch.tensor([1.0, 2.0, 0.5])
    out = rt.quantize(x, FP8_E4M3)
    assert torch.equal(out, x)
    out[0] = 7.0
    assert x[0].item() == 1.0


def test_fp32_format_is_the_identity_on_float32():
    """The identity setting returns the input exactly (every finite pattern, signed zeros, inf)."""
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31, (1 << 20,), generator=g, dtype=torch.int64).to(torch.int32)
    x = torch.cat([bits.view(torch.float32),
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-45, -1e-45, 3.4028235e38])])
    for mode in MODES:
        out = rt.quantize(x, rt.formats.FP32, mode, generator=0)
        assert _same(out, x), mode


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool,
                                   torch.complex64, torch.float64], ids=str)
def test_unsupported_dtypes_raise_typeerror(dtype):
    x = torch.zeros(4, dtype=dtype)
    for fmt in (FP8_E4M3, rt.FixedPoint(8, 4), rt.BlockFloat(8), MXFP4):
        with pytest.raises(TypeError, match="dtype"):
            rt.quantize(x, fmt)


@pytest.mark.parametrize("x", [[1.0, 2.0], 1.5, np.ones(3, np.float32), None, "1.0"], ids=repr)
def test_non_tensor_input_raises_typeerror(x):
    with pytest.raises(TypeError):
        rt.quantize(x, FP8_E4M3)


@pytest.mark.parametrize("rounding", ["Nearest", "round", "stochastic ", "", "ceil", "half_even"], ids=repr)
def test_bad_rounding_raises_valueerror(rounding):
    with pytest.raises(ValueError, match="rounding"):
        rt.quantize(torch.ones(3), FP8_E4M3, rounding)


@pytest.mark.parametrize("fmt", ["FP8_E4M3", None, torch.float16, 8, rt.finfo(FP8_E4M3), (4, 3)], ids=repr)
def test_non_format_raises_typeerror(fmt):
    with pytest.raises(TypeError, match="fmt"):
        rt.quantize(torch.ones(3), fmt)


def test_bad_generator_raises_typeerror():
    for gen in ("seed", 1.5, np.random.default_rng(0)):
        with pytest.raises(TypeError, match="generator"):
            rt.quantize(torch.ones(3) / 3, FP8_E4M3, "stochastic", generator=gen)


@pytest.mark.parametrize("dim,shape", [(2, (3, 4)), (-3, (3, 4)), (1, (5,)), (3, (2, 3, 4)), (-4, (2, 3, 4))])
def test_block_float_dim_out_of_range_raises_valueerror(dim, shape):
    with pytest.raises(ValueError, match="dim"):
        rt.quantize(torch.ones(shape), rt.BlockFloat(8, dim=dim))


def test_block_float_dim_in_range_is_accepted():
    x = _x((3, 4, 5))
    for dim in (0, 1, 2, -1, -2, -3):
        assert rt.quantize(x, rt.BlockFloat(8, dim=dim)).shape == x.shape


def test_errors_do_not_depend_on_the_mode_or_emptiness():
    for mode in MODES:
        with pytest.raises(TypeError):
            rt.quantize(torch.zeros(0, dtype=torch.int32), MXFP8_E4M3, mode)
        with pytest.raises(TypeError):
            rt.quantize(torch.zeros(0, dtype=torch.float64), FP8_E4M3, mode)


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_in_place_quantize_gives_the_same_bits(fmt):
    """quantize_ writes quantize's result into x: contiguous float32 in place, other layouts and
    dtypes through a copy; the same seed draws the same bits either way."""
    makers = [lambda: _x(), lambda: _x((45, 37)).t(), lambda: _x((60, 90), 1)[::3, 1::2],
              lambda: _x().to(torch.bfloat16), lambda: _x().half()]
    for make in makers:
        for mode in MODES:
            want = rt.quantize(make(), fmt, mode, generator=9)
            y = make()  # a fresh tensor (for views, a fresh base): quantize_ must write through
            ptr = y.data_ptr()
            out = rt.quantize_(y, fmt, mode, generator=9)
            assert out is y and y.data_ptr() == ptr
            assert y.dtype == want.dtype and _same(y.float(), want.float()), (fmt, mode, y.dtype, y.stride())


def test_in_place_quantize_bumps_the_version_autograd_checks():
    w = torch.randn(8, requires_grad=True)
    y = (w * w).sum()  # saves w for backward
    with torch.no_grad():
        rt.quantize_(w, FP8_E4M3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_in_place_quantize_validates_like_quantize():
    with pytest.raises(TypeError, match="Invalid x"):
        rt.quantize_(torch.arange(3), FP8_E4M3)
    with pytest.raises(ValueError, match="Invalid rounding"):
        rt.quantize_(torch.randn(3), FP8_E4M3, "sideways")
    empty = torch.empty(0)
    assert rt.quantize_(empty, MXFP4) is empty


def test_values_beyond_the_output_dtype_warn_instead_of_silently_becoming_inf():
    from relaxtorch.formats import BF16, FP8_E4M3
    x = torch.tensor([65504.0, 1.0], dtype=torch.float16)  # BF16 rounds 65504 to 65536 > float16's max
    with pytest.warns(RuntimeWarning, match="1 value.*exceed torch.float16's range"):
        y = rt.quantize(x, BF16)
    assert torch.isinf(y[0]) and y[1] == 1.0
    with pytest.warns(RuntimeWarning, match="exceed"):
        rt.quantize_(x.clone(), BF16)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rt.quantize(torch.tensor([60000.0], dtype=torch.float16), FP8_E4M3).item() == 448.0
        rt.quantize(torch.tensor([3.0e38]), BF16)  # float32 holds every BF16 value: no check at all
