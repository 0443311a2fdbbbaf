"""Compressors: one table through the same invariants, plus references for each kind."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relaxtorch import formats
from relaxtorch.comm import (Cast, Compose, Compressor, ErrorFeedback, Identity, QSGD, RandomK, Sign,
                             StatefulCompressor, TopK)
from relaxtorch.comm import _bits
from relaxtorch.comm.compressors import _code_table, _decode, _encode
from relaxtorch.numbers import quantize
from tests.numbers.reference import float_values

COCKTAIL = Compose(RandomK(0.1), TopK(0.2), QSGD(4, 128))

TABLE = {
    "identity": Identity(),
    "cast_fp16": Cast(torch.float16),
    "cast_bf16": Cast(torch.bfloat16),
    "cast_f8_torch": Cast(torch.float8_e4m3fn),
    "cast_fp8": Cast(formats.FP8_E4M3),
    "cast_fp8_sr": Cast(formats.FP8_E4M3, "stochastic"),
    "cast_e5m2_sr": Cast(formats.FP8_E5M2, "stochastic"),
    "cast_fp4": Cast(formats.FP4_E2M1),
    "cast_int8_sr": Cast(formats.INT8, "stochastic"),
    "quantize4": QSGD(4, 128),
    "quantize3_b7": QSGD(3, 7),
    "quantize8_nearest": QSGD(8, 16, "nearest"),
    "quantize2": QSGD(2, 5),
    "sign": Sign(),
    "sign_b10": Sign(10),
    "randomk": RandomK(0.1),
    "randomk_scaled": RandomK(0.3, scale=True, seed=5),
    "randomk_cycle_scaled": RandomK(0.25, scale=True, seed=2, cycle=True),
    "topk_idx": TopK(0.05),
    "topk_mask": TopK(0.4),
    "cocktail": COCKTAIL,
    "randk_quant_unbiased": Compose(RandomK(0.5, scale=True), QSGD(4, 8)),
    "randk_sign": Compose(RandomK(0.5), Sign(4)),
    "topk_cast": Compose(TopK(0.5), Cast(torch.bfloat16)),
    "compose_empty": Compose(),
}

EXACT = {  # settings that must return the input exactly
    "identity": Identity(),
    "cast_f32": Cast(torch.float32),
    "cast_f64": Cast(torch.float64),
    "randomk_all": RandomK(1.0),
    "randomk_all_scaled": RandomK(1.0, scale=True),
    "topk_all": TopK(1.0),
    "compose_all": Compose(RandomK(1.0), TopK(1.0)),
    "compose_empty": Compose(),
    "ef_identity": ErrorFeedback(Identity()),
}

UNBIASED = {k: c for k, c in TABLE.items() if c.unbiased}
SIZES = [1, 7, 128, 1000, 1031]


def _x(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * torch.rand(n, generator=g) * 3).to(dtype)


def test_table_is_complete():
    kinds = {type(c) for c in TABLE.values()}
    assert kinds == {Identity, Cast, QSGD, Sign, RandomK, TopK, Compose}
    assert set(UNBIASED) >= {"identity", "cast_fp8_sr", "quantize4", "randomk_scaled", "randomk_cycle_scaled",
                             "randk_quant_unbiased"}


@pytest.mark.parametrize("name", TABLE)
@pytest.mark.parametrize("n", SIZES)
def test_invariants(name, n):
    """Shape/dtype kept, input untouched, bytes exact (three ways), bytes on the wire decode the same."""
    c = TABLE[name]
    x = _x(n, seed=n).reshape(-1, 1) if n % 2 else _x(n, seed=n)
    x0 = x.clone()
    p = c.compress(x, generator=torch.Generator().manual_seed(1), step=3)
    y = c.decompress(p)
    assert torch.equal(x, x0)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert p.shape == x.shape and p.dtype == x.dtype
    sent = sum(t.numel() * t.element_size() for t in p.tensors.values())
    assert p.nbytes == sent == c.wire_bytes(n, x.dtype)
    buf = p.to_bytes()
    assert buf.dtype == torch.uint8 and buf.numel() == p.nbytes
    assert torch.equal(c.decompress(p.from_bytes(buf)), y)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["identity", "quantize4", "sign_b10", "topk_idx", "cocktail", "cast_fp8_sr"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(name, dtype):
    c = TABLE[name]
    x = _x(300, dtype=dtype)
    p = c.compress(x, generator=torch.Generator().manual_seed(0))
    y = c.decompress(p)
    assert y.dtype == dtype and y.shape == x.shape
    assert p.nbytes == c.wire_bytes(300, dtype) == p.to_bytes().numel()


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_settings(name, dtype):
    x = _x(257, seed=2, dtype=dtype).reshape(257, 1)
    c = EXACT[name]
    c = ErrorFeedback(c.compressor) if isinstance(c, ErrorFeedback) else c  # fresh residuals
    y = c.roundtrip(x, generator=torch.Generator().manual_seed(0), step=9)
    assert y.dtype == dtype and torch.equal(y, x)


def test_quantize_exact_on_its_grid():
    """Values already on the grid (a bucket's max at L) come back exactly, at any bits."""
    for bits in (2, 3, 4, 8):
        L = 2 ** (bits - 1) - 1
        g = torch.Generator().manual_seed(bits)
        q = torch.randint(-L, L + 1, (40, 16), generator=g).float()
        q[:, 0] = L
        x = (q * 0.375).reshape(-1)
        for rounding in ("stochastic", "nearest"):
            assert torch.equal(QSGD(bits, 16, rounding).roundtrip(x, generator=g), x)


def _draws(c: Compressor, x: torch.Tensor, draws: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(42)
    return torch.stack([c.roundtrip(x, generator=g, step=s).double() for s in range(draws)])


def _mean_and_tol(ys: torch.Tensor, k: float = 5.0):
    """Mean, standard error, and a tolerance of k standard errors plus k/draws of the largest
    observed jump (an element next to a level may show no jump at all in a finite sample)."""
    mean, se = ys.mean(0), ys.std(0) / math.sqrt(ys.shape[0])
    jump = (ys.max(0).values - ys.min(0).values).max()
    return mean, se, k * se + k * jump / ys.shape[0]


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased(name):
    """Per element within 5 standard errors of x; the pooled scale (regression of the mean on
    x) within 5 standard errors of 1, tight enough that a 5% scale error would fail."""
    c = TABLE[name]
    x = _x(256, seed=7)
    x = (x / x.abs().max() * 1.9)  # inside every format's range (INT8 saturates at 1.98)
    ys = _draws(c, x, 2000)
    x = x.double()
    if name == "identity":
        # exact in any summation order: 2000 float64 copies of a 24-bit float32 value sum without
        # rounding (at most 24 + 11 significant bits), and dividing 2000 x by 2000 gives x back
        assert torch.equal(ys.mean(0), x)
        return
    mean, se, tol = _mean_and_tol(ys)
    assert ((mean - x).abs() <= tol).all(), ((mean - x).abs() / tol).max()
    sxx = (x * x).sum()
    slope, slope_se = (mean * x).sum() / sxx, (x * x * se * se).sum().sqrt() / sxx
    assert abs(slope - 1) <= 5 * slope_se + 1e-7
    assert abs(1.05 * slope - 1) > 5 * slope_se  # the check has the power to see a scale error


def test_randomk_unscaled_mean_is_ratio_times_x():
    """Biased RandomK keeps each element with probability k/n: E = (k/n) x (closed form)."""
    c = RandomK(0.25)
    x = _x(64, seed=3)
    mean, se, tol = _mean_and_tol(_draws(c, x, 2000))
    want = x.double() * (c.kept(64) / 64)
    assert ((mean - want).abs() <= tol).all()
    assert ((mean - x.double()).abs() > tol).any()
    assert not c.unbiased and RandomK(0.25, scale=True).unbiased


def test_randomk_cycle_visits_every_position_once_per_cycle():
    c = RandomK(0.1, seed=4, cycle=True)
    for numel, cycle in ((1000, 10), (1005, 10)):
        for epoch in range(3):
            windows = [c.indices(numel, epoch * cycle + w) for w in range(cycle)]
            seen = torch.cat(windows)
            assert seen.numel() == seen.unique().numel() == cycle * c.kept(numel)  # disjoint windows
        assert not torch.equal(c.indices(numel, 0), c.indices(numel, cycle))  # a new permutation
    assert torch.equal(c.indices(1000, 7), RandomK(0.1, seed=4, cycle=True).indices(1000, 7))


def test_randomk_positions_shared_and_seeded():
    x = _x(1000)
    a = RandomK(0.1, seed=1).compress(x, generator=torch.Generator().manual_seed(0), step=5)
    b = RandomK(0.1, seed=1).compress(x, generator=torch.Generator().manual_seed(99), step=5)
    assert torch.equal(a.tensors["values"], b.tensors["values"])  # rank generators do not matter
    c = RandomK(0.1, seed=1).compress(x, step=6)
    d = RandomK(0.1, seed=2).compress(x, step=5)
    assert not torch.equal(a.tensors["values"], c.tensors["values"])
    assert not torch.equal(a.tensors["values"], d.tensors["values"])
    idx = RandomK(0.1, seed=1).indices(1000, 5)
    assert idx.numel() == 100 == idx.unique().numel()
    assert torch.equal(a.tensors["values"], x[idx])


@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.3, 0.9])
def test_topk_keeps_exactly_the_largest(ratio):
    n = 1000
    x = torch.randperm(n, generator=torch.Generator().manual_seed(1)).float() - 500.5  # distinct |x|
    c = TopK(ratio)
    y = c.roundtrip(x)
    k = c.kept(n)
    ref = sorted(range(n), key=lambda i: -abs(float(x[i])))[:k]
    want = torch.zeros(n)
    want[ref] = x[ref]
    assert torch.equal(y, want)
    assert c.uses_mask(n) == (n <= k * 10)
    assert c.index_bytes(n) == (math.ceil(n / 8) if c.uses_mask(n) else math.ceil(k * 10 / 8))


def test_compose_topk_within_random_subset():
    """Cocktail stack: TopK picks the largest of the random subset; the quantizer sees only those."""
    n, step = 2000, 11
    x = _x(n, seed=4)
    sub = RandomK(0.1, seed=3).indices(n, step)
    vals = x[sub]
    k = TopK(0.2).kept(sub.numel())
    top = sorted(range(sub.numel()), key=lambda i: -abs(float(vals[i])))[:k]
    keep = sub[top]
    exact = Compose(RandomK(0.1, seed=3), TopK(0.2))
    want = torch.zeros(n)
    want[keep] = x[keep]
    assert torch.equal(exact.roundtrip(x, step=step), want)
    quant = Compose(RandomK(0.1, seed=3), TopK(0.2), QSGD(4, 8))
    y = quant.roundtrip(x, step=step, generator=torch.Generator().manual_seed(0))
    assert set(torch.nonzero(y).reshape(-1).tolist()) <= set(keep.tolist())
    # bytes: values of the last stage only; TopK positions relative to the 200-element subset
    assert quant.wire_bytes(n) == TopK(0.2).index_bytes(200) + QSGD(4, 8).wire_bytes(40)
    assert TopK(0.2).index_bytes(200) == 25  # 200-bit mask (40 indices x 8 bits would be 40 bytes)


def test_cocktail_stack_bytes_on_a_million():
    n = 1_000_000
    nbytes = COCKTAIL.wire_bytes(n)
    # 100000 random -> 20000 top-K (bitmask of 100000 bits) -> 4-bit codes + a float32 per 128
    assert nbytes == 12500 + 10000 + 4 * math.ceil(20000 / 128)
    assert 4 * n / nbytes > 170


def test_sign_closed_form():
    for bucket in (None, 1, 10, 128):
        x = _x(1031, seed=5)
        x[::17] = 0.0
        y = Sign(bucket).roundtrip(x).double()
        xs = x.double().tolist()
        b = len(xs) if bucket is None else bucket
        want = []
        for start in range(0, len(xs), b):
            chunk = xs[start:start + b]
            scale = sum(abs(v) for v in chunk) / len(chunk)
            want += [scale if v >= 0 else -scale for v in chunk]
        np.testing.assert_allclose(y.numpy(), np.array(want), rtol=2e-6, atol=0)


def test_quantize_reference_loop():
    """Nearest mode against a float64 loop; stochastic mode lands on a neighbouring level."""
    x = _x(300, seed=6)
    for bits, bucket in ((4, 128), (3, 7), (8, 64)):
        L = 2 ** (bits - 1) - 1
        xs = x.double().tolist()
        near = []
        lows, highs = [], []
        for start in range(0, len(xs), bucket):
            chunk = xs[start:start + bucket]
            s = float(np.float32(max(abs(v) for v in chunk)))
            for v in chunk:
                y = v * L / s
                near.append(round(y) * s / L)
                lows.append(math.floor(y) * s / L)
                highs.append(math.ceil(y) * s / L)
        got = QSGD(bits, bucket, "nearest").roundtrip(x).double().numpy()
        np.testing.assert_allclose(got, near, rtol=0, atol=1e-6)
        got = QSGD(bits, bucket).roundtrip(x, generator=torch.Generator().manual_seed(1)).double().numpy()
        on_low = np.isclose(got, lows, rtol=0, atol=1e-6)
        on_high = np.isclose(got, highs, rtol=0, atol=1e-6)
        assert (on_low | on_high).all()
        assert on_low.sum() > 30 and (on_high & ~on_low).sum() > 30


@pytest.mark.parametrize("fmt", [formats.FP8_E4M3, formats.FP8_E5M2, formats.FP6_E3M2, formats.FP6_E2M3,
                                 formats.FP4_E2M1, formats.FP16, formats.BF16])
def test_cast_bit_patterns_match_reference(fmt):
    """Every bit pattern decodes to a value of the format (the reference enumeration), and
    encoding a value gives back its pattern (both zeros and the NaNs aside)."""
    table = _code_table(fmt)
    assert table.numel() == 2**fmt.bits
    finite = table[torch.isfinite(table)].double().unique().numpy()
    np.testing.assert_array_equal(finite, float_values(fmt.exp, fmt.man, fmt.bias, fmt.specials, fmt.subnormals))
    codes = torch.arange(2**fmt.bits)
    ok = ~torch.isnan(table)
    assert torch.equal(_encode(table[ok], fmt), codes[ok])
    assert torch.equal(_decode(_encode(table, fmt), fmt)[ok], table[ok])


@pytest.mark.parametrize("fmt", [formats.FP8_E4M3, formats.FP8_E5M2, formats.FP4_E2M1, formats.INT8,
                                 formats.BF16])
def test_cast_equals_quantize(fmt):
    """Cast's bit patterns decode to exactly what rt.quantize gives on finite values, signed zeros
    and saturation included; non-finite values stay non-finite (see test_non_finite_*)."""
    x = torch.cat([_x(500, seed=8) * 30, torch.tensor([0.0, -0.0, 1e-9, -1e-9, -1e30, 1e30])])
    want = quantize(x, fmt, "nearest")
    got = Cast(fmt).roundtrip(x)
    assert torch.equal(got, want)
    assert torch.equal(torch.signbit(got), torch.signbit(want)) or fmt is formats.INT8
    p = Cast(fmt).compress(x)
    assert p.nbytes == math.ceil(x.numel() * fmt.bits / 8)


def test_cast_torch_fp8_matches_relaxtorch_fp8():
    x = _x(1000, seed=9) * 50
    assert torch.equal(Cast(torch.float8_e4m3fn).roundtrip(x), Cast(formats.FP8_E4M3).roundtrip(x))


@pytest.mark.parametrize("width", list(range(1, 17)) + [20, 32])
def test_bit_packing_reference(width):
    count = 37
    g = torch.Generator().manual_seed(width)
    codes = torch.randint(0, 2**width, (count,), generator=g, dtype=torch.int64)
    packed = _bits.pack(codes, width)
    assert packed.dtype == torch.uint8 and packed.numel() == _bits.packed_bytes(count, width)
    stream = [(int(c) >> b) & 1 for c in codes for b in range(width)]  # little-endian bit stream
    stream += [0] * (-len(stream) % 8)
    want = [sum(stream[i + j] << j for j in range(8)) for i in range(0, len(stream), 8)]
    assert packed.tolist() == want
    assert torch.equal(_bits.unpack(packed, width, count), codes)


def test_error_feedback_telescopes():
    """sum of what was sent + final residual == sum of inputs (float64), for every stack."""
    for comp in (TopK(0.1), Sign(), QSGD(3, 16), COCKTAIL, Compose(RandomK(0.2), Sign(8))):
        ef = ErrorFeedback(comp)
        g = torch.Generator().manual_seed(0)
        total_in = torch.zeros(500, dtype=torch.float64)
        total_out = torch.zeros(500, dtype=torch.float64)
        for step in range(40):
            x = torch.randn(500, generator=g, dtype=torch.float64)
            y = ef.decompress(ef.compress(x, key="a", generator=g, step=step))
            total_in += x
            total_out += y
        torch.testing.assert_close(total_out + ef.residual("a"), total_in, rtol=0, atol=1e-11)
        assert ef.residual("b") is None
        assert ef.residual("a").abs().max() > 0  # it did keep something


def test_error_feedback_keys_state_and_resume():
    ef = ErrorFeedback(TopK(0.1))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(100, generator=g) for _ in range(6)]
    for i, x in enumerate(xs[:3]):
        ef.compress(x, key=i % 2)
    copy = ErrorFeedback(TopK(0.1))
    copy.load_state_dict(ef.state_dict())
    for x in xs[3:]:
        a, b = ef.compress(x, key=1), copy.compress(x, key=1)
        assert torch.equal(ef.decompress(a), copy.decompress(b))
    assert torch.equal(ef.residual(0), copy.residual(0))
    with pytest.raises(ValueError, match="Invalid x"):
        ef.compress(torch.zeros(7), key=0)
    ef.reset(0)
    ef.compress(torch.zeros(7), key=0)
    assert repr(ef) == "ErrorFeedback(TopK(ratio=0.1))"
    assert ef.wire_bytes(100) == TopK(0.1).wire_bytes(100)


@pytest.mark.parametrize("make", [
    lambda: QSGD(1), lambda: QSGD(4, 0), lambda: QSGD(4, 128, "down"), lambda: QSGD(True),
    lambda: Sign(0), lambda: RandomK(0.0), lambda: RandomK(1.5), lambda: RandomK(0.1, scale=1),
    lambda: RandomK(0.1, cycle="yes"), lambda: RandomK(0.1, seed=1.0),
    lambda: TopK(-1), lambda: TopK("0.1"), lambda: Cast(torch.int8), lambda: Cast(formats.MXFP8_E4M3),
    lambda: Cast(formats.FP32), lambda: Cast(torch.float16, "stochastic"), lambda: Cast(formats.FP8_E4M3, "odd"),
    lambda: Compose(QSGD(), TopK(0.1)), lambda: Compose(ErrorFeedback(TopK(0.1))),
    lambda: ErrorFeedback(ErrorFeedback(Sign())), lambda: ErrorFeedback("sign"),
])
def test_bad_arguments(make):
    with pytest.raises(ValueError, match=r"^Invalid \w+"):
        make()


class _Counting(StatefulCompressor):
    """A user's stateful compressor: counts its messages (its state) and sends x as it is."""

    def __init__(self):
        self.count = 0

    def compress(self, x, *, generator=None, step=0):
        self.count += 1
        return Identity().compress(x)

    def decompress(self, p):
        return Identity().decompress(p)


class _Described(Identity):
    """A stateless compressor that merely has a method named state_dict (duck typing misread it)."""

    def state_dict(self) -> dict:
        return {}


def test_state_is_marked_by_type():
    assert isinstance(ErrorFeedback(Sign()), StatefulCompressor)
    assert not any(isinstance(c, StatefulCompressor) for c in (Identity(), Sign(), TopK(0.1), COCKTAIL))
    with pytest.raises(ValueError, match=r"Invalid stages\[1\]: .*stateless"):
        Compose(TopK(0.1), _Counting())
    assert Compose(TopK(0.1), _Described()).stages[1] == _Described()


def test_values_are_readable_and_hashable():
    assert repr(COCKTAIL) == ("Compose(RandomK(ratio=0.1, scale=False, seed=0, cycle=False), TopK(ratio=0.2), "
                              "QSGD(bits=4, bucket=128, rounding='stochastic'))")
    assert Compose(RandomK(0.1), Compose(TopK(0.2), QSGD(4, 128))) == COCKTAIL
    assert len({QSGD(), QSGD(), Sign(), TopK(0.1), TopK(0.1), COCKTAIL}) == 4
    assert repr(Cast(formats.FP8_E4M3)) == "Cast(fmt=FP8_E4M3, rounding='nearest')"


def test_quantize_survives_subnormal_bucket_scales():
    """A bucket whose largest magnitude is subnormal: 1/unit would overflow; zeros stay zero and
    every value lands within one grid step (as for any other scale)."""
    x = torch.tensor([3e-39, 0.0, -1e-39, 2e-39], dtype=torch.float32)
    for rounding in ("nearest", "stochastic"):
        q = QSGD(4, 4, rounding=rounding)
        y = q.decompress(q.compress(x, generator=torch.Generator().manual_seed(0)))
        step = 3e-39 / q.levels
        assert torch.isfinite(y).all() and y[1] == 0
        assert torch.all((y - x).abs() <= step * 1.0001), (x, y)


# ------------------------------------------------------------------------------------------ input checks
_CARRIES_NON_FINITE = {name: c for name, c in TABLE.items()
                       if not (isinstance(c, Cast) and not isinstance(c.fmt, torch.dtype)
                               and getattr(c.fmt, "specials", None) not in ("ieee", "fn"))}


@pytest.mark.parametrize("name", TABLE)
def test_integer_tensors_are_refused(name):
    c = TABLE[name]
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        with pytest.raises(ValueError, match="floating-point"):
            c.compress(torch.arange(32).to(dtype), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", _CARRIES_NON_FINITE)
def test_non_finite_never_decodes_as_finite(name):
    """An inf or NaN in the input never comes back as a finite number (nor +inf as -inf): sent as
    is, or its bucket decodes as NaN; finite elements elsewhere keep their usual values."""
    c = TABLE[name]
    for bad in (float("inf"), -float("inf"), float("nan")):
        x = _x(300, seed=11)
        x[[0, 131, 299]] = bad
        g = torch.Generator().manual_seed(0)
        y = c.roundtrip(x, generator=g, step=2)
        kept = y != 0  # sparsifiers may drop an element (sending nothing is not a value)
        bad_in = ~torch.isfinite(x)
        assert not torch.isfinite(y[bad_in & kept]).any(), (name, bad, y[bad_in])
        inf_back = torch.isinf(y) & bad_in
        assert torch.equal(torch.sign(y[inf_back]), torch.sign(x[inf_back]))  # +inf stays +inf
        if isinstance(c, (Identity, TopK, RandomK)) or (isinstance(c, Cast) and c.bits >= 16):
            assert torch.equal(y[bad_in & kept].isnan(), x[bad_in & kept].isnan())


def test_qsgd_probe_inf_is_nan_not_minus_inf():
    """The probe's case: QSGD(bits=4) on [1, 2, inf, 3] gave [nan, nan, -inf, nan]."""
    y = QSGD(bits=4).roundtrip(torch.tensor([1.0, 2.0, float("inf"), 3.0]), generator=torch.Generator())
    assert torch.isnan(y).all()
    y = QSGD(4, 2).roundtrip(torch.tensor([1.0, 2.0, float("inf"), 3.0]), generator=torch.Generator())
    assert torch.isfinite(y[:2]).all() and torch.isnan(y[2:]).all()  # only the bucket holding it


def test_sign_non_finite_bucket_is_nan():
    y = Sign(2).roundtrip(torch.tensor([1.0, -2.0, float("inf"), 3.0, float("nan"), 1.0]))
    assert y[:2].tolist() == [1.5, -1.5] and torch.isnan(y[2:]).all()


def test_cast_non_finite():
    x = torch.tensor([1.0, float("inf"), -float("inf"), float("nan")])
    for fmt in (torch.float16, torch.bfloat16, formats.FP8_E5M2, formats.BF16):
        y = Cast(fmt).roundtrip(x)
        assert y[:3].tolist() == [1.0, float("inf"), -float("inf")] and torch.isnan(y[3]), fmt
    for fmt in (torch.float8_e4m3fn, formats.FP8_E4M3):  # no inf there: NaN, not +-448
        y = Cast(fmt).roundtrip(x)
        assert y[0] == 1 and torch.isnan(y[1:]).all(), fmt
    for fmt in (formats.INT8, formats.FP4_E2M1):  # no inf or NaN to send
        with pytest.raises(ValueError, match="non-finite"):
            Cast(fmt).compress(x)
        assert torch.equal(Cast(fmt).roundtrip(x[:1]), x[:1])
