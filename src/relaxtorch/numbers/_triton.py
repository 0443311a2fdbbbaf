"""Triton GPU kernels: the integer rounding algorithm of ``_cpu.py``, one fused pass.

Used for CUDA tensors when Triton is installed.  Tests run these kernels in
Triton's interpreter (TRITON_INTERPRET=1) on the CPU and compare them bit for
bit with the portable torch path, so they are checked on machines with no GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _modes

# the mode codes as compile-time constants (Triton kernels read only constexpr globals)
NEAREST = tl.constexpr(_modes.NEAREST)
STOCHASTIC = tl.constexpr(_modes.STOCHASTIC)
DIRECTED = tl.constexpr(_modes.DIRECTED)
NEAREST_AWAY = tl.constexpr(_modes.NEAREST_AWAY)
F32_MAX_BITS = tl.constexpr(_modes.F32_MAX_BITS)
CEIL = tl.constexpr(_modes.CEIL)
EVEN = tl.constexpr(_modes.EVEN)
_FLAT_BLOCK = 2048


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _random_bits(idx, seed_lo, seed_hi):
    lo = (idx & 0xFFFFFFFF).to(tl.uint32)
    hi = (idx >> 32).to(tl.uint32)
    h = _mix32(lo * 0x9E3779B9 + seed_lo.to(tl.uint32))
    return _mix32(h ^ (hi * 0x85EBCA6B) ^ seed_hi.to(tl.uint32))


@triton.jit
def _pow2(k):
    k = tl.minimum(tl.maximum(k, -149), 127)
    normal = ((k + 127) << 23).to(tl.uint32)
    sub = (tl.full(k.shape, 1, tl.int32) << tl.maximum(k + 149, 0)).to(tl.uint32)
    return tl.where(k >= -126, normal, sub).to(tl.float32, bitcast=True)


@triton.jit
def _round(u, rnd, MODE: tl.constexpr, away_pos, away_neg, man, emin, k_low, max_pos, max_neg, overflow):
    a = u & 0x7FFFFFFF
    neg = (u >> 31) != 0
    be = (a >> 23).to(tl.int32)
    e = tl.maximum(be, 1) - 127
    sig = ((a & 0x7FFFFF) | tl.where(be > 0, 0x800000, 0).to(tl.uint32)).to(tl.int64)
    mant_exp = ((a & 0x7FFFFF).to(tl.float32).to(tl.uint32, bitcast=True) >> 23).to(tl.int32) - 127 - 149
    e_true = tl.where(be > 0, e, mant_exp)
    k = tl.where(e_true >= emin, e_true - man, k_low)
    shift = k - e + 23
    sh = tl.minimum(tl.maximum(shift, 0), 31).to(tl.int64)
    one = tl.full(sh.shape, 1, tl.int64)
    if MODE == NEAREST:
        inc = tl.where(sh > 0, ((one << sh) >> 1) - 1 + ((sig >> sh) & 1), 0)
    elif MODE == NEAREST_AWAY:
        inc = (one << sh) >> 1
    elif MODE == STOCHASTIC:
        sig = tl.where(shift > 31, sig >> tl.minimum(tl.maximum(shift - 31, 0), 31).to(tl.int64), sig)
        inc = ((rnd >> 1).to(tl.int64)) >> (31 - sh)
    else:
        away = tl.where(neg, away_neg, away_pos) != 0
        inc = tl.where(away, (one << sh) - 1, 0)
    rs = (sig + inc) >> sh
    res = rs.to(tl.float32) * _pow2(k)
    rbits = tl.where(shift <= 0, a, res.to(tl.uint32, bitcast=True))
    mx = tl.where(neg, max_neg, max_pos)
    special = tl.where(overflow == 1, 0x7F800000, 0x7FC00000).to(tl.uint32)
    if MODE == DIRECTED:
        toward_max = (overflow == 0) | (tl.where(neg, away_neg, away_pos) == 0)
    else:
        toward_max = overflow == 0
    rbits = tl.where(rbits > mx, tl.where(toward_max, mx, special), rbits)
    rbits = tl.where(a == 0x7F800000, tl.where(overflow == 0, mx, special), rbits)
    rbits = tl.where(a > 0x7F800000, a, rbits)
    return rbits | (u & 0x80000000)


@triton.jit
def _flat_kernel(src, dst, n, seed_lo, seed_hi, away_pos, away_neg, man, emin, k_low,
                 max_pos, max_neg, overflow, MODE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    u = tl.load(src + offs, mask=mask, other=0)
    rnd = tl.zeros(offs.shape, tl.uint32)
    if MODE == STOCHASTIC:
        rnd = _random_bits(offs, seed_lo, seed_hi)
    out = _round(u, rnd, MODE, away_pos, away_neg, man, emin, k_low,
                 max_pos.to(tl.uint32), max_neg.to(tl.uint32), overflow)
    tl.store(dst + offs, out, mask=mask)


@triton.jit
def _block_kernel(src, dst, rows, cols, nb, seed_lo, seed_hi, away_pos, away_neg, block,
                  scale_mode, elem_emax, even_man, scale_lo, scale_hi, man, emin, k_low,
                  elem_max_pos, elem_max_neg, overflow,
                  MODE: tl.constexpr, TILE: tl.constexpr, BLOCK_P2: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)  # global block ids
    r = blk // nb
    c0 = (blk % nb) * block
    j = tl.arange(0, BLOCK_P2)
    col = c0[:, None] + j[None, :]
    mask = (j[None, :] < block) & (col < cols) & (r[:, None] < rows)
    offs = r[:, None] * cols + col
    u = tl.load(src + offs, mask=mask, other=0)
    amax = tl.max(u & 0x7FFFFFFF, axis=1)
    # shared scale exponent (see _cpu.block_scale)
    bits = amax
    if scale_mode == EVEN:
        bits = (bits + (1 << tl.maximum(22 - even_man, 0)).to(tl.uint32)) & 0x7F800000
    be = (bits >> 23).to(tl.int32)
    sub_e = ((bits.to(tl.float32).to(tl.uint32, bitcast=True) >> 23).to(tl.int32)) - 127 - 149
    s = tl.where(be > 0, be - 127, sub_e) - elem_emax
    if scale_mode == CEIL:
        s = s + (bits.to(tl.float32, bitcast=True) > elem_max_pos * _pow2(s)).to(tl.int32)
    s = tl.where(amax == 0, scale_lo, s)
    s = tl.minimum(tl.maximum(s, scale_lo), scale_hi)
    scale = _pow2(s)
    # a block's values are those float32 can hold (see _cpu.finite_cap)
    k_top = tl.where(emin + s <= 127, 127 - man, k_low + s)
    cap = (F32_MAX_BITS & ~((tl.full(s.shape, 1, tl.int64) << tl.minimum(tl.maximum(k_top - 104, 0), 23)) - 1))
    cap = tl.where(k_top > 127, 0, cap).to(tl.uint32)
    mp = tl.minimum((elem_max_pos * scale).to(tl.uint32, bitcast=True), cap)
    mn = tl.minimum((elem_max_neg * scale).to(tl.uint32, bitcast=True), cap)
    rnd = tl.zeros(offs.shape, tl.uint32)
    if MODE == STOCHASTIC:
        rnd = _random_bits(offs, seed_lo, seed_hi)
    out = _round(u, rnd, MODE, away_pos, away_neg, man, (emin + s)[:, None], (k_low + s)[:, None],
                 mp[:, None], mn[:, None], overflow)
    out = tl.where((amax >= 0x7F800000)[:, None], 0x7FC00000, out)
    tl.store(dst + offs, out, mask=mask)


def _u32(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32).view(torch.uint32) if hasattr(torch, "uint32") else x.view(torch.int32)


def round_flat(x32, grid, mode, seeds, away, max_pos_bits, max_neg_bits) -> torch.Tensor:
    out = torch.empty_like(x32)
    n = x32.numel()
    _flat_kernel[(triton.cdiv(n, _FLAT_BLOCK),)](
        _u32(x32), _u32(out), n, seeds[0], seeds[1], int(away[0]), int(away[1]), grid.man, grid.emin,
        grid.k_low, max_pos_bits, max_neg_bits, grid.overflow, MODE=mode, BLOCK=_FLAT_BLOCK)
    return out


def round_blocks(rows2d, block, grid, mode, scale_mode, elem_emax, even_man, scale_range, seeds, away):
    out = torch.empty_like(rows2d)
    rows, cols = rows2d.shape
    nb = triton.cdiv(cols, block)
    block_p2 = triton.next_power_of_2(block)
    tile = max(1, 2048 // block_p2)
    _block_kernel[(triton.cdiv(rows * nb, tile),)](
        _u32(rows2d), _u32(out), rows, cols, nb, seeds[0], seeds[1], int(away[0]), int(away[1]), block,
        scale_mode, elem_emax, even_man, scale_range[0], scale_range[1], grid.man, grid.emin, grid.k_low,
        float(grid.max_pos), float(grid.max_neg), grid.overflow, MODE=mode, TILE=tile, BLOCK_P2=block_p2)
    return out
