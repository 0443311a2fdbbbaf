"""relaxtorch.compat.qtorch: QPyTorch's names and semantics, against hand-computed values and
(when /work/qt-venv holds a working qtorch) against real QPyTorch, bit for bit for nearest
rounding, with every difference sorted into a documented class where QPyTorch is wrong."""
from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

import relaxtorch as rt
from relaxtorch.compat import qtorch as Q

QT_PYTHON = Path(os.environ.get("RELAXTORCH_QTORCH_PYTHON", "/work/qt-venv/bin/python"))


def test_float_formats_have_no_inf_nan_codes_and_saturate():
    assert Q.FloatingPoint(4, 3).format == rt.FloatFormat(4, 3, specials="none")
    assert rt.finfo(Q.FloatingPoint(4, 3).format).max == 480.0
    x = torch.tensor([500.0, -1e6, float("inf"), 1.0625, 1.1875, -1.0625, 3.0e38])
    assert Q.float_quantize(x, 4, 3, "nearest").tolist() == [480.0, -480.0, 480.0, 1.125, 1.25, -1.125, 480.0]
    assert Q.float_quantize(torch.tensor([65520.0, 1 + 2.0**-11]), 5, 10, "nearest").tolist() == \
        [65536.0, 1 + 2.0**-10]  # E5M10 without inf: max 131008; ties away
    assert math.isnan(Q.float_quantize(torch.tensor([float("nan")]), 5, 2, "nearest").item())
    assert Q.float_quantize(torch.tensor([3.4e38]), 8, 7, "nearest").item() == math.inf  # exp=8: float32's inf
    assert repr(Q.FloatingPoint(5, 2)) == "FloatingPoint (exponent=5, mantissa=2)"
    with pytest.raises(ValueError):
        Q.FloatingPoint(9, 2)
    with pytest.raises(ValueError, match="rounding"):
        Q.float_quantize(x, 4, 3, "toward_zero")


def test_float_subnormals_round_once():
    # QPyTorch gives -1.19e-07 (= -2 * 2**-24) by rounding twice; the exact nearest is -2**-24
    assert Q.float_quantize(torch.tensor([-8.940439e-08]), 5, 10, "nearest").item() == -(2.0**-24)
    assert Q.float_quantize(torch.tensor([-0.0]), 5, 10, "nearest").view(torch.int32).item() == -2**31


def test_fixed_point_clamp_symmetric_and_ties_away():
    x = torch.tensor([0.125, 0.375, -0.125, 9.0, -9.0, -2.0])
    assert Q.fixed_point_quantize(x, 4, 2, rounding="nearest").tolist() == [0.25, 0.5, -0.25, 1.75, -2.0, -2.0]
    assert Q.fixed_point_quantize(x, 4, 2, symmetric=True, rounding="nearest").tolist() == \
        [0.25, 0.5, -0.25, 1.75, -1.75, -1.75]
    assert Q.fixed_point_quantize(x, 4, 2, clamp=False, rounding="nearest").tolist() == \
        [0.25, 0.5, -0.25, 9.0, -9.0, -2.0]
    assert Q.fixed_point_quantize(torch.tensor([3e38]), 4, 4, clamp=False, rounding="nearest").item() == \
        torch.tensor(3e38).item()  # QPyTorch: inf (3e38 * 16 overflows in its kernel)
    assert Q.FixedPoint(8, 6, symmetric=True).format == rt.formats.INT8_SM


def test_block_quantize_dim_minus_one_is_one_block():
    x = torch.tensor([[3.0, 0.3], [0.01, -0.7]])  # amax 3: exponent 1, wl 4: step 0.5
    assert Q.block_quantize(x, 4, rounding="nearest").tolist() == [[3.0, 0.5], [0.0, -0.5]]
    # dim=0: a block per row; row 1's amax 0.7: exponent -1, step 0.125
    assert Q.block_quantize(x, 4, dim=0, rounding="nearest").tolist() == [[3.0, 0.5], [0.0, -0.75]]
    assert Q.BlockFloatingPoint(8).format == rt.BlockFloat(8)


def test_stochastic_is_seeded_by_torch():
    x = torch.full((1000,), 0.3)
    torch.manual_seed(0)
    a = Q.fixed_point_quantize(x, 8, 2)
    torch.manual_seed(0)
    b = Q.fixed_point_quantize(x, 8, 2)
    assert torch.equal(a, b) and set(a.tolist()) == {0.25, 0.5}
    assert Q.fixed_point_quantize(x, 8, 2, generator=torch.Generator().manual_seed(1)).mean().item() == \
        pytest.approx(0.3, abs=0.25 * 4 / 1000**0.5 / 2)


def test_quantizer_clamping_grad_zero_masks_where_qpytorch_does():
    fmt = Q.FixedPoint(4, 2)  # -2 .. 1.75
    q = Q.quantizer(fmt, Q.FixedPoint(8, 4), "nearest", "nearest", clamping_grad_zero=True,
                    backward_hooks=[lambda g: g * 2])
    x = torch.tensor([0.3, 1.8, 1.9, -2.1, -2.2], requires_grad=True)
    y = q(x)
    # rounded first, then clamped: 1.8 -> 1.75 and -2.1 -> -2.0 are rounding (kept);
    # 1.9 -> 2.0 -> 1.75 and -2.2 -> -2.25 -> -2.0 were clamped
    assert y.tolist() == [0.25, 1.75, 1.75, -2.0, -2.0]
    y.backward(torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1]))
    assert x.grad.tolist() == [0.1875, 0.1875, 0.0, 0.1875, 0.0]  # hook: 0.2, rounded to 3/16
    with pytest.raises(ValueError, match="fixed point"):
        Q.quantizer(Q.FloatingPoint(5, 2), clamping_grad_zero=True)
    with pytest.raises(ValueError, match="clamping"):
        Q.quantizer(Q.FixedPoint(8, 2, clamp=False), clamping_grad_zero=True)


def test_quantizer_module_and_optimlp_sgd_with_accumulator():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), Q.Quantizer(Q.FloatingPoint(5, 2), None, "nearest"))
    y = m(torch.ones(1, 3))
    assert torch.equal(y, Q.float_quantize(m[0](torch.ones(1, 3)), 5, 2, "nearest"))
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.5)
    wq = Q.quantizer(Q.FixedPoint(8, 2), forward_rounding="nearest")
    aq = Q.quantizer(Q.FixedPoint(16, 8), forward_rounding="nearest")
    mq = Q.quantizer(Q.FixedPoint(8, 4), forward_rounding="nearest")
    opt = Q.OptimLP(sgd, weight_quant=wq, grad_scaling=0.5, grad_quant=mq, acc_quant=aq, momentum_quant=mq)
    p.grad = torch.tensor([0.3, -0.3])
    opt.step()
    # grad 0.3 * 0.5 = 0.15 -> 0.125 (1/16 grid); acc 1 - 0.0125 = 0.9875 -> 253/256 (252.8 steps);
    # weight 253/256 -> 1.0 (step 0.25); momentum 0.125 stays
    assert opt.weight_acc[p].tolist() == [253 / 256, -253 / 256] and p.tolist() == [1.0, -1.0]
    assert sgd.state[p]["momentum_buffer"].tolist() == [0.125, -0.125]
    p.grad = torch.tensor([0.3, -0.3])
    Q.OptimLP(torch.optim.SGD([p], lr=0.1), grad_scaling=0.5).step()  # QPyTorch scales only with grad_quant
    assert p.tolist() == pytest.approx([0.97, -0.97], rel=1e-7)  # 1 - 0.1 * 0.3 in float32
    assert isinstance(opt, torch.optim.Optimizer) and repr(opt).startswith("LP Optimizer:")
    with pytest.raises(ValueError, match="grad_scaling"):
        Q.OptimLP(sgd, grad_scaling=0)
    assert Q.quant.quantizer is Q.quantizer and Q.optim.OptimLP is Q.OptimLP


# ----------------------------------------------------------------------------- real QPyTorch

def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    n = 20000
    mags = torch.exp2(torch.empty(n).uniform_(-30, 20, generator=g))
    x = torch.cat([mags * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0), torch.randn(n, generator=g),
                   torch.arange(-600, 600) / 64.0 + 1 / 128,  # fixed-point ties for fl <= 6
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, -8.940439e-08]),
                   # just under midpoints of the E5M10 / E4M3 subnormal grids: QPyTorch's first rounding makes them ties
                   (torch.arange(0, 1000) + 0.5) * 2.0**-24 * (1 - 2.0 ** -torch.randint(14, 23, (1000,), generator=g)),
                   (torch.arange(0, 8) + 0.5) * 2.0**-9 * (1 - 2.0**-20)]).float()
    return {"x": x, "block_x": torch.randn(64, 33, generator=g) * torch.exp2(torch.randint(-8, 8, (64, 1), generator=g).float())}


FLOAT_CASES = [(5, 10), (8, 7), (4, 3), (5, 2), (3, 2), (6, 5)]
FIXED_CASES = [(8, 4, True, False), (8, 6, True, True), (16, 8, True, False), (6, 1, False, False), (12, 3, True, True)]
BLOCK_CASES = [(8, -1), (4, 0), (8, 1), (12, 0)]


def _classify(kind, args, x, ours, theirs):
    """Differences by class; the ones QPyTorch gets wrong are named."""
    same = (ours.view(torch.int32) == theirs.view(torch.int32)) | (torch.isnan(ours) & torch.isnan(theirs))
    classes = {"agree": int(same.sum())}
    signed_zero = ~same & (ours == 0) & (theirs == 0)
    classes["sign of zero only (QPyTorch: -0 -> +0, or incidental for integers)"] = int(signed_zero.sum())
    diff = ~same & ~signed_zero
    if kind == "float":
        emin = 2.0 ** (2 - 2 ** (args[0] - 1))
        nearer = (ours.double() - x.double()).abs() < (theirs.double() - x.double()).abs()
        sub = diff & (x.abs() < emin) & nearer
        classes["subnormal double rounding (QPyTorch wrong)"] = int(sub.sum())
        diff = diff & ~sub
    elif kind == "fixed":
        scaled = x.double() * 2.0 ** args[1]
        tie = diff & (scaled - scaled.floor() == 0.5)
        classes["tie: QPyTorch CPU rounds to even"] = int(tie.sum())
        diff = diff & ~tie
    else:
        farther = diff & ((theirs.double() - x.double()).abs() > (ours.double() - x.double()).abs())
        clipped = farther & (ours < theirs) & (ours < 0) & (ours == ours.amin())
        classes["most negative block code clipped (QPyTorch wrong)"] = int(clipped.sum())
        classes["rounded twice, QPyTorch's result farther from x (QPyTorch wrong)"] = int((farther & ~clipped).sum())
        diff = diff & ~farther
    classes["unexplained"] = int(diff.sum())
    return classes, diff


@pytest.mark.skipif(not QT_PYTHON.exists(), reason="no QPyTorch venv (set RELAXTORCH_QTORCH_PYTHON)")
def test_against_real_qtorch_nearest(tmp_path, capsys):
    spec = _inputs()
    spec["cases"] = ([("float", list(a)) for a in FLOAT_CASES] + [("fixed", list(a)) for a in FIXED_CASES]
                     + [("block", list(a)) for a in BLOCK_CASES])
    torch.save(spec, tmp_path / "in.pt")
    run = subprocess.run([str(QT_PYTHON), str(Path(__file__).with_name("qtorch_side.py")), str(tmp_path / "in.pt"),
                          str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        pytest.skip(f"qtorch did not run: {run.stderr[-300:]}")
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)
    fns = {"float": Q.float_quantize, "fixed": Q.fixed_point_quantize, "block": Q.block_quantize}
    lines, unexplained = [], []
    for (kind, args), t in zip(spec["cases"], theirs):
        x = spec["block_x"] if kind == "block" else spec["x"]
        ours = fns[kind](x, *args, rounding="nearest")
        classes, bad = _classify(kind, args, x, ours, t)
        lines.append(f"{kind}{tuple(args)}: " + ", ".join(f"{k} {v}" for k, v in classes.items() if v))
        if classes["unexplained"]:
            i = bad.nonzero()[0].tolist()
            unexplained.append(f"{kind}{args} x={x[tuple(i)].item()!r}: ours {ours[tuple(i)].item()!r}, "
                               f"qtorch {t[tuple(i)].item()!r}")
    with capsys.disabled():
        print("\nrelaxtorch.compat.qtorch vs QPyTorch (nearest):\n  " + "\n  ".join(lines))
    assert not unexplained, "\n".join(unexplained)
