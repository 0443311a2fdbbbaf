"""quantize_model: exact when off, reproduces a hand-placed quantizer chain, no double wrapping."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relaxtorch.numbers import BlockFloat, FixedPoint, quantize
from relaxtorch.numbers import presets as P
from relaxtorch.quant import Quantizer, quantize_model, quantizer

from .helpers import representable


def _seeded(build, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def mlp():
    return _seeded(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 3, stride=2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.Tanh())

    def forward(self, x):
        return self.head(self.features(x))


def cnn():
    return _seeded(SmallCNN)


MODELS = {"mlp": (mlp, (10, 8)), "cnn": (cnn, (10, 1, 8, 8))}
FORMATS = [(P.FP8_E4M3, P.FP8_E4M3, P.FP8_E5M2), (FixedPoint(8, 5), FixedPoint(8, 4), FixedPoint(8, 7)),
           (P.BFP8, BlockFloat(8, dim=0), BlockFloat(8, dim=0)), (P.MXFP8_E4M3, P.MXFP8_E4M3, P.MXFP4)]


def _run(model, x, gen_seed=0):
    x = x.clone().requires_grad_()
    out = model(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(gen_seed)))
    return out.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def _count_quantizers(model):
    return sum(isinstance(m, Quantizer) for m in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_all_formats_none_is_exactly_the_float_model(name):
    build, shape = MODELS[name]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv = quantize_model(model)
    assert conv is not model and _count_quantizers(model) == 0  # the input is not changed
    assert conv.state_dict().keys() == model.state_dict().keys()
    for got, want in zip(_run(conv, x), _run(model, x)):
        for a, b in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            assert torch.equal(a, b)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("w,a,e", FORMATS, ids=lambda f: repr(f))
def test_weights_representable_and_output_close(name, w, a, e):
    build, shape = MODELS[name]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    model = build()
    conv = quantize_model(model, weight=w, activation=a, error=e, generator=3)
    for p in conv.parameters():
        assert representable(p, w)
    out, xgrad, grads = _run(conv, x)
    ref_out, ref_xgrad, _ = _run(model, x)
    assert out.shape == ref_out.shape and all(g is not None for g in grads)
    # 8-bit everything: the output moves by quantization error only (a few grid steps), not more
    assert (out - ref_out).abs().max() < 0.25 * ref_out.abs().max() + 0.05
    assert torch.nn.functional.cosine_similarity(xgrad.flatten(), ref_xgrad.flatten(), dim=0) > 0.8


def _assert_same_as_hand(conv, hand, x, weights):
    """``conv`` and the hand-written ``hand`` give the same output, input gradient and weight gradients."""
    got = _run(conv, x)
    xr = x.clone().requires_grad_()
    out = hand(xr)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(got[0], out.detach())
    assert torch.equal(got[1], xr.grad)
    for g, w in zip(got[2], weights):
        assert torch.equal(g, w.grad)


def test_mlp_matches_hand_placed_quantizers_bit_for_bit():
    """The converted MLP is q(lin2(relu(q(lin1(q(x)))))), forward and backward, same random draws:
    one rounding per boundary (ReLU's and lin2's input quantizers see values already on the grid)."""
    fw, fa, fe = P.FP8_E4M3, FixedPoint(8, 4), P.FP8_E5M2
    model = mlp()
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(4))
    conv = quantize_model(model, weight=fw, activation=fa, error=fe, activation_rounding="stochastic",
                          generator=torch.Generator().manual_seed(9))
    ref_gen = torch.Generator().manual_seed(9)
    ws = [quantize(p.detach(), fw, "nearest").requires_grad_() for p in model.parameters()]  # nearest: no draw
    q = quantizer(fa, fe, "stochastic", "stochastic", generator=ref_gen)

    def hand(x):
        h = q(F.linear(q(x), ws[0], ws[1]))
        return q(F.linear(torch.relu(h), ws[2], ws[3]))

    _assert_same_as_hand(conv, hand, x, ws)


@pytest.mark.parametrize("fa,fe", [(P.FP8_E4M3, P.FP8_E5M2), (FixedPoint(8, 4), FixedPoint(8, 6)),
                                   (P.MXFP8_E4M3, P.MXFP8_E5M2)], ids=repr)
def test_skipped_roundings_change_nothing(fa, fe):
    """With deterministic rounding the converted MLP equals quantizers at every boundary, three
    per layer boundary as placed by hand: the ones it skips would not have moved a value."""
    model = mlp()
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(4))
    conv = quantize_model(model, activation=fa, error=fe, rounding="nearest")
    q = quantizer(fa, fe, "nearest", "nearest")

    def hand(x):
        h = q(F.linear(q(x), *list(model.parameters())[:2]))
        h = q(torch.relu(h))
        return q(F.linear(q(h), *list(model.parameters())[2:]))

    _assert_same_as_hand(conv, hand, x, list(model.parameters()))


def test_input_changed_in_place_is_rounded_again():
    """A quantized value changed in place (here x * 2 ** -9, off the FP8 grid) is not taken as rounded."""
    lin = quantize_model(torch.nn.Linear(4, 4), activation=P.FP8_E4M3)
    q = lin.quant_input
    x = q(torch.tensor([[1.0, 2.0, 3.0, 1.125]]))
    assert q.applied_to(x)
    x.mul_(1 + 2 ** -9)
    assert not q.applied_to(x)
    seen = []
    lin.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    lin(x)
    assert representable(seen[0], P.FP8_E4M3)


def test_no_double_wrapping_and_reconversion_replaces_formats():
    model = cnn()
    once = quantize_model(model, weight=P.FP8_E4M3, activation=P.FP8_E4M3, error=P.FP8_E5M2)
    twice = quantize_model(once, weight=P.FP8_E4M3, activation=P.FP8_E4M3, error=P.FP8_E5M2)
    # 3 weighted layers x (input, output) + 2 activations x output
    assert _count_quantizers(once) == _count_quantizers(twice) == 8
    assert all(len(m._forward_hooks) <= 1 and len(m._forward_pre_hooks) <= 1 for m in twice.modules())
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(once(x), twice(x))  # nearest forward: deterministic
    other = quantize_model(once, activation=P.FP4_E2M1)
    assert _count_quantizers(other) == 8
    assert all(m.forward_format == P.FP4_E2M1 for m in other.modules() if isinstance(m, Quantizer))


def test_nested_and_shared_modules_are_converted():
    act = nn.ReLU()
    inner = nn.Sequential(nn.Linear(4, 4), act)
    model = _seeded(lambda: nn.Sequential(nn.Sequential(inner, nn.Linear(4, 4)), act, nn.Linear(4, 2)))
    conv = quantize_model(model, activation=P.FP8_E4M3)
    layers = [m for m in conv.modules() if isinstance(m, (nn.Linear, nn.ReLU))]
    assert len(layers) == 4 and all(hasattr(m, "quant_output") for m in layers)


def test_converted_model_copies_saves_and_loads():
    model = quantize_model(mlp(), weight=P.FP8_E4M3, activation=P.FP8_E4M3, error=P.FP8_E5M2)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(6))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    plain = mlp()
    plain.load_state_dict(model.state_dict())  # keys unchanged: float checkpoints load both ways
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(model)(x), model(x))
        assert torch.equal(loaded(x), model(x))


def test_rounding_shorthand_and_defaults():
    conv = quantize_model(mlp(), activation=P.FP8_E4M3, error=P.FP8_E5M2, rounding="toward_zero",
                          error_rounding="stochastic")
    qs = [m for m in conv.modules() if isinstance(m, Quantizer)]
    assert {(q.forward_rounding, q.backward_rounding) for q in qs} == {("toward_zero", "stochastic")}
    qs = [m for m in quantize_model(mlp(), activation=P.FP16).modules() if isinstance(m, Quantizer)]
    assert {(q.forward_rounding, q.backward_rounding) for q in qs} == {("nearest", "stochastic")}


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"weight": "fp8"}, TypeError, "Invalid weight: 'fp8'"),
    ({"activation": 8}, TypeError, "Invalid activation"),
    ({"error": torch.float16}, TypeError, "Invalid error"),
    ({"activation_rounding": "round"}, ValueError, "Invalid activation_rounding: 'round'"),
    ({"rounding": "bankers"}, ValueError, "Invalid rounding"),
    ({"generator": 1.5}, TypeError, "Invalid generator"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        quantize_model(mlp(), **kwargs)


def test_bad_model():
    with pytest.raises(TypeError, match="Invalid model"):
        quantize_model(lambda x: x)
    with pytest.raises(ValueError, match="Invalid model: has torch.float64"):
        quantize_model(mlp().double(), weight=P.FP16)
