"""The compiled CPU kernels agree bit for bit with the portable torch-ops path
(which is what runs on CUDA), in every mode, stochastic rounding included."""
import numpy as np
import pytest
import torch

import relaxtorch as rt
from relaxtorch.numbers import _grid, _reference, rounding as qmod
from relaxtorch.numbers._modes import ROUNDING_CODES
from relaxtorch.numbers.formats import FloatFormat, FixedPoint, MXFormat
from relaxtorch.numbers.rounding import quantize

pytestmark = pytest.mark.skipif(qmod._cpu is None, reason="numba kernels unavailable")

FLAT = [rt.formats.FP16, rt.formats.BF16, rt.formats.FP8_E4M3, rt.formats.FP8_E5M2, rt.formats.FP4_E2M1,
        FloatFormat(3, 2, subnormals=False), FloatFormat(4, 3, specials="fn", overflow="nan"),
        FloatFormat(8, 4, bias=140), FloatFormat(8, 7, subnormals=False), FloatFormat(8, 3), FixedPoint(8, 4), FixedPoint(12, -3), FixedPoint(6, 5, signed=False), FixedPoint(8, 4, symmetric=True)]
BLOCKED = [rt.formats.MXFP8_E4M3, rt.formats.MXFP4, rt.formats.MXINT8, MXFormat(rt.formats.FP6_E2M3, 7, scale_mode="ceil"),
           MXFormat(rt.formats.FP8_E4M3, 16, scale_mode="even"), rt.BlockFloat(6), rt.BlockFloat(5, dim=1),
           rt.formats.MXINT8_SM, MXFormat(rt.formats.FP8_E4M3, 8, scale_mode="ceil", axis=0),
           MXFormat(rt.formats.INT8, 5, scale_mode="ceil")]
F32_MAX = float.fromhex("0x1.fffffep127")


def near_f32_max(x):
    """Rows of ``x`` whose blocks reach float32's maximum: -2**128 codes and ceil/even scales of 2**128."""
    x[30, :] = F32_MAX * torch.linspace(-1, 1, x.shape[1])
    x[31, :] = -F32_MAX
    x[32, ::3] = 3.3e38
    x[33, :] = torch.linspace(-3.4e38, 3.0e38, x.shape[1])
    return x
MODES = list(rt.ROUNDINGS)  # every mode, so a new one is checked here


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    mags = torch.exp2(torch.empty(3000).uniform_(-160, 130, generator=g))
    signs = torch.where(torch.rand(3000, generator=g) < 0.5, -1.0, 1.0)
    bits = torch.randint(0, 2**32, (3000,), generator=g, dtype=torch.int64)
    raw = (bits - 2**31).to(torch.int32).view(torch.float32)  # every kind of pattern, NaNs too
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 957.0, 1e-45, -3e38])
    return torch.cat([mags * signs, raw, special, torch.randn(1000, generator=g)]).float()


def _same_bits(a, b):
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FLAT, ids=repr)
def test_flat_kernel_matches_portable_path(fmt, mode):
    x = _inputs()
    fast = quantize(x, fmt, mode, generator=7)
    seeds = qmod._draw_seeds(7, "cpu") if mode == "stochastic" else (0, 0)
    slow = _reference.round_flat(x, _grid.element_grid(fmt), ROUNDING_CODES[mode], seeds, qmod._AWAY[mode])
    assert _same_bits(fast, slow)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", BLOCKED, ids=repr)
def test_block_kernel_matches_portable_path(fmt, mode, monkeypatch):
    x = _inputs(1)[:7000].reshape(70, 100)
    x[3, 5] = float("inf")
    x[10, 40] = float("nan")
    x[20, :50] = 0.0
    x = near_f32_max(x)
    fast = quantize(x, fmt, mode, generator=3)
    assert not torch.isinf(fast).any()  # saturating formats are finite
    monkeypatch.setattr(qmod, "_cpu", None)
    slow = quantize(x, fmt, mode, generator=3)
    assert _same_bits(fast, slow)


def test_random_bits_agree_and_are_uniform():
    from relaxtorch.numbers import _cpu_ir
    from numba import njit

    @njit
    def draw(n, lo, hi):
        out = np.empty(n, dtype=np.uint32)
        for i in range(n):
            out[i] = _cpu_ir.random_bits_i32(i, lo, hi)
        return out

    n = 1 << 16
    idx = torch.arange(n) + (1 << 32) * 0
    a = torch.from_numpy(draw(n, np.uint64(12345), np.uint64(678)).astype(np.int64))
    b = _reference.random_bits(idx, 12345, 678)
    assert torch.equal(a, b)
    # each of the top 4 bits is a fair coin, within 4 standard errors
    for bit in range(28, 32):
        p = ((a >> bit) & 1).double().mean().item()
        assert abs(p - 0.5) < 4 * 0.5 / n**0.5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group_elems", [1, 40, 96, 8192])
@pytest.mark.parametrize("shape,fmt", [((13, 100), rt.formats.MXFP8_E4M3), ((5, 75), MXFormat(rt.formats.FP6_E2M3, 7)),
                                       ((1, 1000), rt.formats.MXINT8), ((9, 32), rt.formats.MXFP4),
                                       ((4, 96), rt.formats.MXFP8_E4M3), ((2, 64), rt.formats.MXFP8_E5M2),
                                       ((7, 3), rt.formats.MXFP4), ((1, 1), rt.formats.MXINT8),
                                       ((6, 50, 9), rt.BlockFloat(5, dim=1))], ids=str)
def test_block_groups_spanning_rows_match_portable_path(shape, fmt, group_elems, mode, monkeypatch):
    """The CPU block kernel hands several blocks to each parallel item (``_BLOCK_GROUP`` elements'
    worth): groups that end mid-row, cross row ends, hold one block, or a row's short last block
    round exactly as the reference does, in every mode (the aligned 32-element path included)."""
    n = int(np.prod(shape))
    x = _inputs(2)[:n].reshape(shape).clone()
    x.view(-1)[::11] *= 2.0 ** -130  # float32 subnormals in some blocks
    x.view(-1)[:32] *= 2.0 ** -140  # a block whose shifted grid reaches below float32's normal range
    for k in range(1, min(n // 32, 9)):  # blocks whose shifted grids start near -126 (the short routine's edge)
        x.view(-1)[32 * k:32 * k + 32] *= 2.0 ** -(112 + k)
    if n > 40:
        x.view(-1)[37] = float("nan")
    monkeypatch.setattr(qmod, "_BLOCK_GROUP", group_elems)
    fast = quantize(x, fmt, mode, generator=5)
    inplace = x.clone()
    rt.quantize_(inplace, fmt, mode, generator=5)
    monkeypatch.setattr(qmod, "_cpu", None)
    slow = quantize(x, fmt, mode, generator=5)
    assert _same_bits(fast, slow)
    assert _same_bits(inplace, slow)


def test_random_bits_at_a_block_offset_are_those_of_the_index():
    """``random_bits_at(base, j)`` (the aligned 32-element MX path) draws ``random_bits(base + j)``,
    next to 2**32 and beyond it too."""
    from numba import njit

    from relaxtorch.numbers import _cpu_ir

    @njit
    def draw(base, lo, hi):
        out = np.empty(32, dtype=np.uint32)
        for j in range(32):
            out[j] = _cpu_ir.random_bits_at(np.uint64(base), j, lo, hi)
        return out

    for base in (0, 32, 2**32 - 32, 2**32, 5 * 2**32 + 2**31 + 64):
        got = torch.from_numpy(draw(base, np.uint64(99), np.uint64(2**32 - 7)).astype(np.int64))
        want = _reference.random_bits(torch.arange(base, base + 32), 99, 2**32 - 7)
        assert torch.equal(got, want), base


@pytest.mark.parametrize("fmt", [rt.formats.FP8_E4M3, rt.formats.BF16, FloatFormat(8, 4, bias=140), FixedPoint(8, 4)],
                         ids=repr)
def test_flat_stochastic_on_many_threads_matches_portable_path(fmt):
    """A tensor large enough for the parallel kernels (and an odd length) draws the reference's
    random bits element for element, in place too."""
    n = 3 * (1 << 16) + 5
    x = _inputs(4).repeat(n // 7008 + 1)[:n] * torch.rand(n, generator=torch.Generator().manual_seed(1))
    fast = quantize(x, fmt, "stochastic", generator=11)
    inplace = x.clone()
    rt.quantize_(inplace, fmt, "stochastic", generator=11)
    seeds = qmod._draw_seeds(11, "cpu")
    slow = _reference.round_flat(x, _grid.element_grid(fmt), ROUNDING_CODES["stochastic"], seeds)
    assert _same_bits(fast, slow)
    assert _same_bits(inplace, slow)


@pytest.mark.parametrize("n", [0, 1, 7, 63, 64, 65, 1000, 4099, 100_003])
def test_abs_max_bits_matches_numpy(n):
    """The parallel abs-max over every kind of float32 pattern (NaN patterns sort above inf), each
    length, the largest value placed in the first, a middle and the last chunk in turn."""
    from relaxtorch.numbers import _cpu
    g = np.random.default_rng(n)
    for where in ("first", "middle", "last", "none"):
        bits = g.integers(0, 2**31, n, dtype=np.uint32) >> np.uint32(g.integers(1, 31))  # small magnitudes
        bits |= g.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)  # random signs
        if n and where != "none":
            k = {"first": 0, "middle": n // 2, "last": n - 1}[where]
            bits[k] = np.uint32(0xFFC00001 if n % 2 else 0x7F800000)  # a negative NaN or +inf
        expect = int((bits & np.uint32(0x7FFFFFFF)).max()) if n else 0
        assert int(_cpu.abs_max_bits(bits)) == expect


def _tie_patterns() -> torch.Tensor:
    """Every sign and float32 exponent x the top 8 mantissa bits x low 15 bits of 0, 2**j and
    2**j +- 1 (exact ties and their neighbours at every cut position), 0x7FFF: 6.0M patterns."""
    low = sorted({0, 0x7FFF} | {v for j in range(15) for v in (1 << j, (1 << j) - 1, (1 << j) + 1)} - {1 << 15})
    top = torch.arange(512, dtype=torch.int64).reshape(-1, 1, 1) << 23
    mid = torch.arange(256, dtype=torch.int64).reshape(1, -1, 1) << 15
    bits = (top | mid | torch.tensor(low, dtype=torch.int64).reshape(1, 1, -1)).reshape(-1)
    return (bits - (bits >> 31 << 32)).to(torch.int32).view(torch.float32)


LEAN = [rt.formats.FP8_E4M3, rt.formats.FP8_E5M2, rt.formats.BF16, rt.formats.FP16, rt.formats.FP4_E2M1,
        FloatFormat(3, 2, subnormals=False), FloatFormat(4, 3, specials="fn", overflow="nan"), FloatFormat(8, 22),
        FloatFormat(5, 2, overflow="inf"), FixedPoint(8, 4), FixedPoint(12, -3), FixedPoint(6, 5, signed=False),
        FixedPoint(8, 4, symmetric=True), FixedPoint(23, 0), FixedPoint(4, 20)]


@pytest.mark.parametrize("fmt", LEAN, ids=repr)
def test_lean_nearest_matches_portable_path_on_every_tie(fmt):
    """The lean nearest routine (``_cpu.lean_ok`` grids) against the torch-ops path on exact
    ties and their neighbours at every exponent and cut position."""
    g = _grid.element_grid(fmt)
    args = qmod._kernel_args(g)
    assert qmod._cpu.short_ok(g.man, g.emin, g.k_low) and qmod._cpu.lean_ok(g.man, g.emin, g.k_low, args[3], args[4])
    x = _tie_patterns()
    slow = _reference.round_flat(x, g, ROUNDING_CODES["nearest"], (0, 0), qmod._AWAY["nearest"])
    assert _same_bits(quantize(x, fmt), slow)


@pytest.mark.parametrize("fmt", [FixedPoint(24, 0), FloatFormat(8, 4, bias=140), FloatFormat(8, 23)], ids=repr)
def test_grids_outside_the_lean_routine_keep_the_short_or_full_one(fmt):
    g = _grid.element_grid(fmt)
    args = qmod._kernel_args(g)
    assert not (qmod._cpu.short_ok(g.man, g.emin, g.k_low) and qmod._cpu.lean_ok(g.man, g.emin, g.k_low, args[3], args[4]))
    x = _tie_patterns()[::7]
    slow = _reference.round_flat(x, g, ROUNDING_CODES["nearest"], (0, 0), qmod._AWAY["nearest"])
    assert _same_bits(quantize(x, fmt), slow)
