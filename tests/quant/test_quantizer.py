"""quantizer / Quantizer: forward = quantize(x), backward = quantize(upstream grad), identity when off."""
import copy
import pickle

import pytest
import torch

import relaxtorch as rt

from relaxtorch.numbers import BlockFloat, FixedPoint, FloatFormat, quantize
from relaxtorch.numbers import presets as P
from relaxtorch.quant import Quantizer, quantizer

FP32_EQUIV = FloatFormat(8, 23)
# (forward, backward): one row per kind of format, so no kind skips the checks
FORMATS = [
    (P.FP8_E4M3, P.FP8_E5M2),
    (P.FP4_E2M1, P.BF16),
    (FixedPoint(8, 4), FixedPoint(8, 7)),
    (P.BFP8, BlockFloat(8, dim=0)),
    (P.MXFP8_E4M3, P.MXFP4),
    (P.FP16, None),
    (None, P.FP8_E5M2),
]
ROUNDINGS = [("nearest", "stochastic"), ("stochastic", "stochastic"), ("toward_zero", "up")]


def _data(shape=(6, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    up = torch.randn(shape, generator=g) * 1e-2
    return x, up


def _make(kind, *args, **kw):
    return quantizer(*args, **kw) if kind == "function" else Quantizer(*args, **kw)


@pytest.mark.parametrize("kind", ["function", "module"])
@pytest.mark.parametrize("fwd,bwd", FORMATS, ids=repr)
@pytest.mark.parametrize("fr,br", ROUNDINGS)
def test_forward_and_backward_match_quantize_by_hand(kind, fwd, bwd, fr, br):
    x, up = _data()
    q = _make(kind, fwd, bwd, fr, br, generator=torch.Generator().manual_seed(7))
    xr = x.clone().requires_grad_()
    y = q(xr)
    y.backward(up)
    ref = torch.Generator().manual_seed(7)  # the same draws in the same order: forward, then backward
    want_y = x if fwd is None else quantize(x, fwd, fr, generator=ref)
    want_g = up if bwd is None else quantize(up, bwd, br, generator=ref)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.equal(y.detach(), want_y)
    assert torch.equal(xr.grad, want_g)


@pytest.mark.parametrize("kind", ["function", "module"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_identity_when_formats_are_none(kind, dtype):
    x, up = _data()
    x, up = x.to(dtype), up.to(dtype)
    q = _make(kind)
    xr = x.clone().requires_grad_()
    y = q(xr)
    assert y is xr  # nothing inserted into the graph
    y.backward(up)
    assert torch.equal(xr.grad, up)


@pytest.mark.parametrize("kind", ["function", "module"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic", "down"])
def test_fp32_equivalent_format_is_exact_identity(kind, rounding):
    """FloatFormat(8, 23) holds every float32: forward and backward are the identity, bit for bit."""
    g = torch.Generator().manual_seed(1)
    scales = torch.tensor([1e-42, 1e-39, 1e-20, 1.0, 1e20, 1e37])  # subnormals up to near max
    x = (torch.randn(6, 50, generator=g) * scales[:, None]).flatten()
    up = (torch.randn(6, 50, generator=g) * scales.flip(0)[:, None]).flatten()
    q = _make(kind, FP32_EQUIV, FP32_EQUIV, rounding, rounding, generator=3)
    xr = x.clone().requires_grad_()
    y = q(xr)
    y.backward(up)
    assert torch.equal(y.detach(), x) and torch.equal(xr.grad, up)


def test_composes_inside_a_graph():
    """Gradient through q(w * x) is quantize(upstream) * x: the quantizer is straight-through."""
    x, up = _data((50,))
    w = torch.full((50,), 2.0, requires_grad=True)
    q = quantizer(P.FP8_E4M3, P.FP8_E5M2, generator=5)
    (q(w * x) * 1.0).backward(up)
    want = quantize(up, P.FP8_E5M2, "stochastic", generator=torch.Generator().manual_seed(5)) * x
    assert torch.equal(w.grad, want)


def test_int_seed_becomes_one_generator():
    """The same seed gives the same bits; successive calls draw fresh bits (not the same seed again)."""
    x, _ = _data()
    a, b = (Quantizer(P.FP4_E2M1, None, "stochastic", generator=11) for _ in range(2))
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, a(x))


def test_module_repr_copy_and_pickle():
    q = Quantizer(P.FP8_E4M3, FixedPoint(8, 7), "nearest", "stochastic", generator=2)
    assert repr(q) == ("Quantizer(forward=FP8_E4M3 (nearest), "
                       "backward=FixedPoint(wl=8, fl=7) (stochastic))")
    assert repr(Quantizer()) == "Quantizer(forward=None, backward=None)"
    x, _ = _data()
    for other in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert torch.equal(other(x), q(x))
    assert pickle.loads(pickle.dumps(quantizer(P.FP16)))(x).equal(quantize(x, P.FP16))


def test_default_rounding_nearest_forward_stochastic_backward():
    q = Quantizer(P.FP8_E4M3, P.FP8_E5M2)
    assert (q.forward_rounding, q.backward_rounding) == ("nearest", "stochastic")


@pytest.mark.parametrize("kind", ["function", "module"])
@pytest.mark.parametrize("args,kwargs,exc,name", [
    (("fp8",), {}, TypeError, "Invalid forward: 'fp8'"),
    ((None, torch.float16), {}, TypeError, "Invalid backward"),
    ((P.FP16, None, "round"), {}, ValueError, "Invalid forward_rounding: 'round'"),
    ((P.FP16, None, "nearest", "Stochastic"), {}, ValueError, "Invalid backward_rounding"),
    ((P.FP16,), {"generator": "seed"}, TypeError, "Invalid generator"),
    ((P.FP16,), {"generator": True}, TypeError, "Invalid generator"),
])
def test_bad_arguments_fail_at_construction(kind, args, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        _make(kind, *args, **kwargs)


def test_clamping_grad_zero_zeroes_the_gradient_where_the_forward_pass_saturated():
    fmt = rt.FixedPoint(4, 2)  # values -2 .. 1.75 in steps of 0.25
    x = torch.tensor([0.3, 5.0, -2.0, -2.1, 1.75, 1.8, -float("inf"), 1.74], requires_grad=True)
    q = rt.quantizer(fmt, None, clamping_grad_zero=True)
    y = q(x)
    assert y.tolist() == [0.25, 1.75, -2.0, -2.0, 1.75, 1.75, -2.0, 1.75]
    y.backward(torch.tensor([0.3, 1.0, 0.6, 1.0, 0.2, 1.0, 1.0, 0.9]))
    # beyond the range (5, -2.1, 1.8, -inf): zero; in range (1.74 included): passed on
    assert x.grad.tolist() == pytest.approx([0.3, 0.0, 0.6, 0.0, 0.2, 0.0, 0.0, 0.9])
    x.grad = None
    rt.quantizer(fmt, fmt, backward_rounding="nearest", clamping_grad_zero=True)(x).backward(torch.full((8,), 0.3))
    assert x.grad.tolist() == [0.25, 0.0, 0.25, 0.0, 0.25, 0.0, 0.0, 0.25]  # 0.3 rounds to 0.25, then masked
    x.grad = None
    rt.quantizer(fmt, None)(x).backward(torch.ones(8))
    assert x.grad.tolist() == [1.0] * 8  # default: straight through


def test_clamping_grad_zero_in_mx_blocks_and_ieee_overflow():
    x = torch.tensor([957.0, 900.0, 890.0] + [1.0] * 29, requires_grad=True)  # floor scale 2: max 896
    rt.Quantizer(rt.formats.MXFP8_E4M3, None, clamping_grad_zero=True)(x).sum().backward()
    assert x.grad[:4].tolist() == [0.0, 0.0, 1.0, 1.0]
    h = torch.tensor([70000.0, 1.0], requires_grad=True)  # FP16 overflows to inf: nothing clamped
    rt.quantizer(rt.formats.FP16, None, clamping_grad_zero=True)(h).sum().backward()
    assert h.grad.tolist() == [1.0, 1.0]
    m = rt.Quantizer(rt.formats.INT8, clamping_grad_zero=True)
    assert "clamping_grad_zero=True" in repr(m) and m.key != rt.Quantizer(rt.formats.INT8).key
    with pytest.raises(ValueError, match="clamping_grad_zero"):
        rt.quantizer(rt.formats.INT8, clamping_grad_zero=1)
