"""Portable rounding in plain torch ops (any device): the same integer algorithm as
the compiled kernels in ``_cpu.py``, written tensor-at-a-time.

It is what runs on CUDA and other devices, and the reference the CPU kernels are
tested against bit for bit (stochastic rounding included: both draw the same
counter-based random bits).  All integer work is in int64 so every device has it.
"""
from __future__ import annotations

import torch

from ._grid import Grid
from ._modes import CEIL, DIRECTED, EVEN, F32_MAX_BITS, NEAREST, NEAREST_AWAY, STOCHASTIC

_M32 = 0xFFFFFFFF
_INF = 0x7F800000
_QNAN = 0x7FC00000


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def random_bits(index: torch.Tensor, seed_lo: int, seed_hi: int) -> torch.Tensor:
    h = _mix32((index & _M32) * 0x9E3779B9 + seed_lo)
    return _mix32(h ^ (((index >> 32) * 0x85EBCA6B) & _M32) ^ seed_hi)


def _pow2_bits(k: torch.Tensor) -> torch.Tensor:
    k = k.clamp(-149, 127)
    return torch.where(k >= -126, (k + 127) << 23, torch.ones_like(k) << (k + 149).clamp(min=0))


def _as_float(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int32).view(torch.float32)


def _as_bits(f: torch.Tensor) -> torch.Tensor:
    return f.view(torch.int32).to(torch.int64) & _M32


def round_bits(u: torch.Tensor, mode: int, rnd, away_pos: bool, away_neg: bool,
               man, emin, k_low, max_pos_bits, max_neg_bits, overflow: int) -> torch.Tensor:
    """Round float32 bits ``u`` (int64 tensor) onto the grid; grid fields may be tensors."""
    a = u & 0x7FFFFFFF
    neg = (u >> 31) != 0
    be = a >> 23
    e = be.clamp(min=1) - 127
    sig = (a & 0x7FFFFF) | torch.where(be > 0, 0x800000, 0)
    mant_exp = (_as_bits((a & 0x7FFFFF).to(torch.float32)) >> 23) - 127 - 149
    e_true = torch.where(be > 0, e, mant_exp)  # float32 subnormals: their significand's exponent
    k = torch.where(e_true >= emin, e_true - man, k_low)
    shift = k - e + 23
    sh = shift.clamp(0, 31)
    if mode == NEAREST:
        inc = torch.where(sh > 0, ((1 << sh) >> 1) - 1 + ((sig >> sh) & 1), 0)
    elif mode == NEAREST_AWAY:
        inc = (1 << sh) >> 1
    elif mode == STOCHASTIC:
        sig = torch.where(shift > 31, sig >> (shift - 31).clamp(0, 31), sig)
        inc = (rnd >> 1) >> (31 - sh)
    else:
        away = torch.where(neg, away_neg, away_pos)
        inc = torch.where(away, (1 << sh) - 1, 0)
    rs = (sig + inc) >> sh
    res = rs.to(torch.float32) * _as_float(_pow2_bits(k))
    rbits = torch.where(shift <= 0, a, _as_bits(res))
    mx = torch.where(neg, max_neg_bits, max_pos_bits)
    if overflow == 0:
        over_value = mx
    else:
        special = _INF if overflow == 1 else _QNAN
        toward_max = torch.zeros_like(neg) if mode != DIRECTED else ~torch.where(neg, away_neg, away_pos)
        over_value = torch.where(toward_max, mx, special)
    rbits = torch.where(rbits > mx, over_value, rbits)
    is_inf = a == _INF
    rbits = torch.where(is_inf, mx if overflow == 0 else (_INF if overflow == 1 else _QNAN), rbits)
    rbits = torch.where(a > _INF, a, rbits)
    return rbits | (u & 0x80000000)


def _bits_of(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32).to(torch.int64) & _M32


def _from_bits(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int32).view(torch.float32)


def _f32_bits(value: float, device) -> torch.Tensor:
    return _as_bits(torch.tensor(value, dtype=torch.float32, device=device))


def round_flat(x: torch.Tensor, grid: Grid, mode: int, seeds=(0, 0), away=(False, False)) -> torch.Tensor:
    """Round a float32 tensor onto one grid."""
    u = _bits_of(x).reshape(-1)
    rnd = None
    if mode == STOCHASTIC:
        rnd = random_bits(torch.arange(u.numel(), device=x.device), *seeds)
    out = round_bits(u, mode, rnd, away[0], away[1], grid.man, grid.emin, grid.k_low,
                     _f32_bits(grid.max_pos, x.device), _f32_bits(grid.max_neg, x.device),
                     grid.overflow)
    return _from_bits(out).reshape(x.shape)


def block_scale(amax_bits: torch.Tensor, scale_mode: int, elem_emax: int, even_man: int,
                elem_max: float, scale_lo: int, scale_hi: int) -> torch.Tensor:
    bits = amax_bits
    if scale_mode == EVEN:
        bits = (bits + (1 << max(22 - even_man, 0))) & _INF
    be = bits >> 23
    sub_e = (_as_bits(bits.to(torch.float32)) >> 23) - 127 - 149
    e = torch.where(be > 0, be - 127, sub_e)
    s = e - elem_emax
    if scale_mode == CEIL:
        limit = torch.tensor(elem_max, dtype=torch.float32, device=bits.device) * _as_float(_pow2_bits(s))
        s = s + (_as_float(bits) > limit).to(torch.int64)
    s = torch.where(amax_bits == 0, scale_lo, s)
    return s.clamp(scale_lo, scale_hi)


def finite_cap(man, emin, k_low) -> torch.Tensor:
    """Bits of the largest float32-finite value on the grid (see ``_cpu.finite_cap``)."""
    k = torch.where(torch.as_tensor(emin) <= 127, torch.as_tensor(127 - man), torch.as_tensor(k_low))
    cap = F32_MAX_BITS & ~((1 << (k - 104).clamp(0, 23)) - 1)
    return torch.where(k > 127, 0, cap)


def round_blocks(x2d: torch.Tensor, block: int, grid: Grid, mode: int, scale_mode: int,
                 elem_emax: int, even_man: int, scale_lo: int, scale_hi: int,
                 seeds=(0, 0), away=(False, False)) -> torch.Tensor:
    """Round a 2-D float32 tensor whose rows are cut into blocks sharing a scale."""
    rows, cols = x2d.shape
    nb = -(-cols // block)
    u = _bits_of(x2d)
    padded = torch.nn.functional.pad(u & 0x7FFFFFFF, (0, nb * block - cols))
    amax = padded.reshape(rows, nb, block).amax(dim=2)
    s = block_scale(amax, scale_mode, elem_emax, even_man, grid.max_pos, scale_lo, scale_hi)
    s_el = s.repeat_interleave(block, dim=1)[:, :cols]
    nan_block = (amax >= _INF).repeat_interleave(block, dim=1)[:, :cols]
    scale = _as_float(_pow2_bits(s_el))
    cap = finite_cap(grid.man, grid.emin + s_el, grid.k_low + s_el)  # the values float32 can hold
    max_pos = torch.minimum(_as_bits(torch.tensor(grid.max_pos, dtype=torch.float32, device=x2d.device) * scale), cap)
    max_neg = torch.minimum(_as_bits(torch.tensor(grid.max_neg, dtype=torch.float32, device=x2d.device) * scale), cap)
    rnd = None
    if mode == STOCHASTIC:
        rnd = random_bits(torch.arange(rows * cols, device=x2d.device).reshape(rows, cols), *seeds)
    out = round_bits(u, mode, rnd, away[0], away[1], grid.man, grid.emin + s_el,
                     grid.k_low + s_el, max_pos, max_neg, grid.overflow)
    return _from_bits(torch.where(nan_block, _QNAN, out))
