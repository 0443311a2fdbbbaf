"""Compiled CPU kernels (numba, parallel, nogil) for rounding float32 bits to a grid.

One element is rounded by integer arithmetic on its float32 bits: the
significand ``sig`` (24 bits with the hidden one) is shifted right by the number
of bits the grid drops, after adding an increment that encodes the rounding mode
(0 toward zero, ``2**shift - 1`` away from zero, half-minus-one plus the kept
LSB for ties-to-even, half for ties-away, ``shift`` random bits for stochastic rounding).  The
portable reference in ``_reference.py`` does the same in torch ops and must
agree bit for bit (tests compare them).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .._numba import njit
from ._modes import CEIL, DIRECTED, EVEN, F32_MAX_BITS, NEAREST, NEAREST_AWAY, STOCHASTIC
from ._cpu_ir import (prefer_wide_vectors, random_bits_i32, round_directed, round_directed_short, round_nearest,
                      round_nearest_lean, round_nearest_away, round_nearest_away_short, round_nearest_short, round_stochastic,
                      round_stochastic_short, umax_abs, abs_max_32, random_bits_at, round_directed_fin,
                      round_directed_short_fin, round_nearest_fin, round_nearest_away_fin,
                      round_nearest_away_short_fin, round_nearest_short_fin, round_stochastic_fin,
                      round_stochastic_short_fin)

_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_QNAN = np.uint32(0x7FC00000)


@intrinsic
def _bits_to_f32(typingctx, b):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@intrinsic
def _f32_to_bits(typingctx, f):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@njit(inline="always")
def _pow2_bits(k):
    """float32 bits of 2**k for k in [-149, 127] (clamped)."""
    k = min(max(k, -149), 127)
    if k >= -126:
        return np.uint32((k + 127) << 23)
    return np.uint32(1 << (k + 149))


# One compiled loop per rounding mode: a mode known at compile time lets LLVM
# drop the other modes' work and vectorise the loop.  Each has two loops: the short
# routine for grids whose normal range starts above float32's (emin > -126: every
# format of float32's exponent width or less) or at it with subnormals (BF16), and
# the full one for the rest.  ``prefer_wide_vectors`` lets AVX-512 CPUs use 16 lanes.
_SHORT_EMIN = -126


@njit(inline="always")
def short_ok(man, emin, k_low):
    """Whether the short routine rounds on this grid exactly as the full one.  It takes a float32
    subnormal's exponent to be -126: right when the grid's normal range starts above that (the value
    is then below it either way), or at -126 with subnormals of the normal step (``k_low == emin -
    man``: the -126 binade's step and the subnormal step are the same, 2**k_low)."""
    return emin > _SHORT_EMIN or (emin == _SHORT_EMIN and k_low == emin - man)
_MX_BLOCK = 32  # the OCP MX block: compiled with a constant trip count


@njit(inline="always")
def _grid_shift(be, man, emin, k_low):
    """The bits the short routine cuts from a magnitude of biased float32 exponent ``be``."""
    be1 = max(be, 1)
    return 23 - man if be1 >= emin + 127 else k_low + 150 - be1


@njit(inline="always")
def lean_ok(man, emin, k_low, max_pos_bits, max_neg_bits):
    """Whether ``round_nearest_lean`` rounds on this (short) grid exactly as the short routine:
    every finite magnitude up to the larger maximum is cut at a shift of at least 1 (so one mask
    and ``half - 1`` do, and larger ones overflow whatever they round to), and float32
    subnormals are not cut at 23 (where the kept LSB is their missing hidden bit)."""
    top = np.int64(max(max_pos_bits, max_neg_bits) >> np.uint32(23))
    return _grid_shift(top, man, emin, k_low) >= 1 and _grid_shift(0, man, emin, k_low) != 23


@njit(parallel=True, nogil=True, cache=True)
def flat_nearest(src, dst, man, emin, k_low, max_pos_bits, max_neg_bits, overflow):
    if short_ok(man, emin, k_low) and lean_ok(man, emin, k_low, max_pos_bits, max_neg_bits):
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_nearest_lean(src[i], man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
    elif short_ok(man, emin, k_low):
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_nearest_short(src[i], np.uint32(0), False, False,
                                         man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
    else:
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_nearest(src[i], np.uint32(0), False, False,
                                   man, emin, k_low, max_pos_bits, max_neg_bits, overflow)


@njit(parallel=True, nogil=True, cache=True)
def flat_nearest_away(src, dst, man, emin, k_low, max_pos_bits, max_neg_bits, overflow):
    if short_ok(man, emin, k_low):
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_nearest_away_short(src[i], np.uint32(0), False, False,
                                              man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
    else:
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_nearest_away(src[i], np.uint32(0), False, False,
                                        man, emin, k_low, max_pos_bits, max_neg_bits, overflow)


@njit(inline="always")
def _stochastic_span(src, dst, i0, n, short, seed_lo, seed_hi, man, emin, k_low, mp, mn, overflow):
    """``dst[i0 + j]`` for ``j < n`` rounded with ``random_bits_at(i0, j)``: the caller keeps
    ``i0 + j`` from carrying into bit 32.  With ``n`` a constant (32) LLVM builds the lanes'
    counters from constants; a loop counter would be a 64-bit vector split every iteration."""
    for j in range(n):
        i = np.uint64(i0) + np.uint64(j)
        rnd = random_bits_at(np.uint64(i0), j, seed_lo, seed_hi)
        if short:
            dst[i] = round_stochastic_short(src[i], rnd, False, False, man, emin, k_low, mp, mn, overflow)
        else:
            dst[i] = round_stochastic(src[i], rnd, False, False, man, emin, k_low, mp, mn, overflow)


@njit(parallel=True, nogil=True, cache=True)
def flat_stochastic(src, dst, seed_lo, seed_hi, man, emin, k_low, max_pos_bits, max_neg_bits, overflow):
    """Element ``i`` rounded with ``random_bits_i32(i)``, computed per aligned span of 32 as
    ``random_bits_at(span start, offset)`` (the same bits), as the MX kernels do: 1.5x faster
    than one loop over 64-bit indices.  Parallel items of 8192 elements."""
    n = src.size
    nitems = (n + 8191) // 8192
    if short_ok(man, emin, k_low):
        for t in prange(nitems):
            prefer_wide_vectors()
            i0 = t * 8192
            full = min(8192, n - i0) // 32
            for b in range(full):
                _stochastic_span(src, dst, i0 + 32 * b, _MX_BLOCK, True, seed_lo, seed_hi,
                                 man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
            if i0 + 32 * full < n:
                _stochastic_span(src, dst, i0 + 32 * full, min(8192, n - i0) - 32 * full, True, seed_lo, seed_hi,
                                 man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
    else:
        for t in prange(nitems):
            prefer_wide_vectors()
            i0 = t * 8192
            full = min(8192, n - i0) // 32
            for b in range(full):
                _stochastic_span(src, dst, i0 + 32 * b, _MX_BLOCK, False, seed_lo, seed_hi,
                                 man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
            if i0 + 32 * full < n:
                _stochastic_span(src, dst, i0 + 32 * full, min(8192, n - i0) - 32 * full, False, seed_lo, seed_hi,
                                 man, emin, k_low, max_pos_bits, max_neg_bits, overflow)


@njit(parallel=True, nogil=True, cache=True)
def flat_directed(src, dst, away_pos, away_neg, man, emin, k_low, max_pos_bits, max_neg_bits, overflow):
    if short_ok(man, emin, k_low):
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_directed_short(src[i], np.uint32(0), away_pos, away_neg,
                                          man, emin, k_low, max_pos_bits, max_neg_bits, overflow)
    else:
        for i in prange(src.size):
            prefer_wide_vectors()
            dst[i] = round_directed(src[i], np.uint32(0), away_pos, away_neg,
                                    man, emin, k_low, max_pos_bits, max_neg_bits, overflow)


@njit(parallel=True, nogil=True, cache=True)
def abs_max_bits(src):
    """Largest ``|x|`` as float32 bits (NaN patterns sort above inf)."""
    nchunks = 64
    chunk = (src.size + nchunks - 1) // nchunks
    partial = np.zeros(nchunks, dtype=np.uint32)
    for c in prange(nchunks):
        prefer_wide_vectors()
        i0 = np.uint64(min(c * chunk, src.size))
        m = np.uint32(0)
        for j in range(np.uint64(min((c + 1) * chunk, src.size)) - i0):  # unsigned: vector loads
            m = umax_abs(m, src[i0 + np.uint64(j)])
        partial[c] = m
    return partial.max()


@njit(inline="always")
def block_scale(amax_bits, scale_mode, elem_emax, even_man, elem_max, scale_lo, scale_hi):
    """Shared scale exponent of a block whose largest magnitude has bits ``amax_bits``."""
    if amax_bits == 0:
        return scale_lo
    if scale_mode == EVEN:  # round amax to the element's mantissa width first
        amax_bits = (amax_bits + np.uint32(1 << max(22 - even_man, 0))) & _INF
    be = np.int64(amax_bits >> np.uint32(23))
    if be > 0:
        e = be - 127
    else:  # subnormal: the exponent of its integer significand, less 149
        e = np.int64(_f32_to_bits(np.float32(amax_bits)) >> np.uint32(23)) - 127 - 149
    s = e - elem_emax
    if scale_mode == CEIL and _bits_to_f32(amax_bits) > elem_max * _bits_to_f32(_pow2_bits(s)):
        s += 1
    return min(max(s, scale_lo), scale_hi)


@njit(inline="always")
def finite_cap(man, emin, k_low):
    """Bits of the largest float32-finite value on a (block-scaled) grid: float32's maximum
    rounded toward zero onto the grid's step at exponent 127 (0 when that step exceeds 2**127)."""
    k = np.int64(127 - man) if np.int64(emin) <= 127 else np.int64(k_low)
    if k > 127:
        return np.uint32(0)
    if k <= 104:
        return np.uint32(F32_MAX_BITS)
    return np.uint32(F32_MAX_BITS) & ~np.uint32((1 << (k - 104)) - 1)


@njit(inline="always")
def _round_elems(src, dst, i0, n, mx32, mode, short, seed_lo, seed_hi, away_pos, away_neg,
                 man, emin, k_low, mp, mn, overflow):
    """``dst[i0 + j] = round(src[i0 + j])`` for ``j < n`` on one (block-shifted) grid.  Indices are
    unsigned (numba adds no negative-index wraparound, which stops LLVM vectorising) and ``n`` is
    a constant when the caller passes one (then the loop has no remainder).  The block holds no inf or
    NaN (the caller sends those blocks to NaN), so the routines without those cases serve."""
    for j in range(n):
        i = np.uint64(i0) + np.uint64(j)
        if mode == NEAREST:
            if short:
                q = round_nearest_short_fin(src[i], np.uint32(0), False, False, man, emin, k_low, mp, mn, overflow)
            else:
                q = round_nearest_fin(src[i], np.uint32(0), False, False, man, emin, k_low, mp, mn, overflow)
        elif mode == NEAREST_AWAY:
            if short:
                q = round_nearest_away_short_fin(src[i], np.uint32(0), False, False, man, emin, k_low, mp, mn,
                                             overflow)
            else:
                q = round_nearest_away_fin(src[i], np.uint32(0), False, False, man, emin, k_low, mp, mn, overflow)
        elif mode == STOCHASTIC:
            if mx32:  # an aligned block of 32
                rnd = random_bits_at(np.uint64(i0), j, seed_lo, seed_hi)
            else:
                rnd = random_bits_i32(i, seed_lo, seed_hi)
            if short:
                q = round_stochastic_short_fin(src[i], rnd, False, False, man, emin, k_low, mp, mn, overflow)
            else:
                q = round_stochastic_fin(src[i], rnd, False, False, man, emin, k_low, mp, mn, overflow)
        else:
            if short:
                q = round_directed_short_fin(src[i], np.uint32(0), away_pos, away_neg, man, emin, k_low, mp, mn,
                                         overflow)
            else:
                q = round_directed_fin(src[i], np.uint32(0), away_pos, away_neg, man, emin, k_low, mp, mn, overflow)
        dst[i] = q


@njit(inline="always")
def _round_span(src, dst, i0, n, mx32, mode, seed_lo, seed_hi, away_pos, away_neg,
                scale_mode, elem_emax, even_man, scale_lo, scale_hi,
                man, emin, k_low, max_pos, max_neg, overflow):
    """Round the block ``src[i0:i0 + n]`` (flat indices) to its shared scale.

    Two passes over a block that stays in L1: a vectorised abs-max, the block's scalar
    parameters, then the vectorised element loop with them hoisted (the short routine when
    the block's grid starts above float32's normal range, as nearly every block's does).
    ``mx32``: the block is ``src[i0:i0 + 32]`` with ``i0 % 32 == 0`` (``n`` is then 32)."""
    if mx32:
        amax = abs_max_32(src, np.uint64(i0))
    else:
        amax = np.uint32(0)
        for j in range(n):
            amax = umax_abs(amax, src[np.uint64(i0) + np.uint64(j)])
    if amax >= _INF:  # a NaN or inf in the block: every element is NaN
        for j in range(n):
            dst[np.uint64(i0) + np.uint64(j)] = _QNAN
        return
    s = block_scale(amax, scale_mode, elem_emax, even_man, max_pos, scale_lo, scale_hi)
    scale = _bits_to_f32(_pow2_bits(s))
    cap = finite_cap(man, emin + s, k_low + s)  # a block's values are those float32 can hold
    mp = min(_f32_to_bits(max_pos * scale), cap)
    mn = min(_f32_to_bits(max_neg * scale), cap)
    es, ks = emin + s, k_low + s
    # short_ok, spelled out: calling it here made in-place rounding (src is dst) 8x slower
    if es > _SHORT_EMIN or (es == _SHORT_EMIN and ks == es - man):
        _round_elems(src, dst, i0, n, mx32, mode, True, seed_lo, seed_hi, away_pos, away_neg,
                     man, emin + s, k_low + s, mp, mn, overflow)
    else:
        _round_elems(src, dst, i0, n, mx32, mode, False, seed_lo, seed_hi, away_pos, away_neg,
                     man, emin + s, k_low + s, mp, mn, overflow)


@njit(inline="always")
def _round_groups(src, dst, cols, block, group, mode, seed_lo, seed_hi, away_pos, away_neg,
                  scale_mode, elem_emax, even_man, scale_lo, scale_hi,
                  man, emin, k_low, max_pos, max_neg, overflow):
    """Blocks of ``block`` along rows of ``cols`` (the flat arrays of a C-contiguous matrix; a
    row's last block may be shorter), ``group`` blocks per parallel item: one item is a few
    thousand elements, so scheduling costs nothing per block and the data stays in cache.
    When rows hold whole blocks of 32, block ``t`` is simply ``[32 t, 32 t + 32)``."""
    nb = (cols + block - 1) // block
    total = (src.size // cols) * nb
    nitems = (total + group - 1) // group
    if block == _MX_BLOCK and cols % _MX_BLOCK == 0:
        for t in prange(nitems):
            prefer_wide_vectors()
            for bi in range(t * group, min(t * group + group, total)):
                _round_span(src, dst, bi * _MX_BLOCK, _MX_BLOCK, True, mode, seed_lo, seed_hi, away_pos, away_neg,
                            scale_mode, elem_emax, even_man, scale_lo, scale_hi,
                            man, emin, k_low, max_pos, max_neg, overflow)
        return
    for t in prange(nitems):
        prefer_wide_vectors()
        b0 = t * group
        b1 = min(b0 + group, total)
        r = b0 // nb
        b = b0 - r * nb
        for _ in range(b0, b1):
            i0 = r * cols + b * block
            _round_span(src, dst, i0, min(block, cols - b * block), False, mode, seed_lo, seed_hi, away_pos, away_neg,
                        scale_mode, elem_emax, even_man, scale_lo, scale_hi,
                        man, emin, k_low, max_pos, max_neg, overflow)
            b += 1
            if b == nb:
                b = 0
                r += 1


@njit(parallel=True, nogil=True, cache=True)
def blocks_nearest(src, dst, cols, block, group, scale_mode, elem_emax, even_man, scale_lo, scale_hi,
                   man, emin, k_low, max_pos, max_neg, overflow):
    _round_groups(src, dst, cols, block, group, NEAREST, np.uint64(0), np.uint64(0), False, False,
                  scale_mode, elem_emax, even_man, scale_lo, scale_hi, man, emin, k_low, max_pos, max_neg, overflow)


@njit(parallel=True, nogil=True, cache=True)
def blocks_nearest_away(src, dst, cols, block, group, scale_mode, elem_emax, even_man, scale_lo, scale_hi,
                        man, emin, k_low, max_pos, max_neg, overflow):
    _round_groups(src, dst, cols, block, group, NEAREST_AWAY, np.uint64(0), np.uint64(0), False, False,
                  scale_mode, elem_emax, even_man, scale_lo, scale_hi, man, emin, k_low, max_pos, max_neg, overflow)


@njit(parallel=True, nogil=True, cache=True)
def blocks_stochastic(src, dst, seed_lo, seed_hi, cols, block, group, scale_mode, elem_emax, even_man,
                      scale_lo, scale_hi, man, emin, k_low, max_pos, max_neg, overflow):
    _round_groups(src, dst, cols, block, group, STOCHASTIC, seed_lo, seed_hi, False, False,
                  scale_mode, elem_emax, even_man, scale_lo, scale_hi, man, emin, k_low, max_pos, max_neg, overflow)


@njit(parallel=True, nogil=True, cache=True)
def blocks_directed(src, dst, away_pos, away_neg, cols, block, group, scale_mode, elem_emax, even_man,
                    scale_lo, scale_hi, man, emin, k_low, max_pos, max_neg, overflow):
    _round_groups(src, dst, cols, block, group, DIRECTED, np.uint64(0), np.uint64(0), away_pos, away_neg,
                  scale_mode, elem_emax, even_man, scale_lo, scale_hi, man, emin, k_low, max_pos, max_neg, overflow)
