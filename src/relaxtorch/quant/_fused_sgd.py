"""One compiled pass per parameter for ``OptimLP(torch.optim.SGD(...))`` with flat formats.

The unfused path (``OptimLP.step``: round the gradient, ``SGD.step``, round the
accumulator, the weight and the momentum buffer) reads and writes each tensor
about ten times; this kernel does the same arithmetic element by element in one
pass.  It is bit-identical to the unfused path, which is its reference (tests
compare them): torch's CPU kernels compute ``a.add(b, alpha=s)`` as
``fma(b, s, a)`` (one rounding) and ``a.mul(s)`` as one float32 product, with the
scalars cast to float32, so the kernel does exactly that (``_fma`` below; numba
runs without fastmath, so LLVM contracts nothing else).  Stochastic rounding
uses the same counter-based bits as ``quantize_`` with seeds drawn from the
generator in the unfused path's order.
"""
from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._numba import njit
from ..numbers._cpu import _bits_to_f32, _f32_to_bits
from ..numbers._cpu_ir import (prefer_wide_vectors, random_bits_i32, round_directed, round_nearest,
                               round_nearest_away, round_stochastic)
from ..numbers._modes import DIRECTED, NEAREST, NEAREST_AWAY, STOCHASTIC

NONE = -1  # a role without a format


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once to float32 (llvm.fma.f32), as torch's ``add(alpha)`` does."""
    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fn, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


def _rounder(mode):
    """A compiled ``round(bits, index, seeds, args)`` for one mode (``NONE``: the identity)."""
    if mode == NONE:
        @njit(inline="always")
        def rnd(u, i, lo, hi, ap, an, man, emin, k_low, mp, mn, ov):
            return u
    elif mode == NEAREST:
        @njit(inline="always")
        def rnd(u, i, lo, hi, ap, an, man, emin, k_low, mp, mn, ov):
            return round_nearest(u, np.uint32(0), False, False, man, emin, k_low, mp, mn, ov)
    elif mode == NEAREST_AWAY:
        @njit(inline="always")
        def rnd(u, i, lo, hi, ap, an, man, emin, k_low, mp, mn, ov):
            return round_nearest_away(u, np.uint32(0), False, False, man, emin, k_low, mp, mn, ov)
    elif mode == STOCHASTIC:
        @njit(inline="always")
        def rnd(u, i, lo, hi, ap, an, man, emin, k_low, mp, mn, ov):
            return round_stochastic(u, random_bits_i32(i, lo, hi), False, False, man, emin, k_low, mp, mn, ov)
    else:
        assert mode == DIRECTED

        @njit(inline="always")
        def rnd(u, i, lo, hi, ap, an, man, emin, k_low, mp, mn, ov):
            return round_directed(u, np.uint32(0), ap, an, man, emin, k_low, mp, mn, ov)
    return rnd


@functools.lru_cache(maxsize=64)
def sgd_kernel(grad_mode: int, acc_mode: int, weight_mode: int, mom_mode: int, scaled: bool, decay: bool,
               momentum: bool, nesterov: bool, grad_gets_step: bool = False):
    """The fused SGD step for one combination of modes and options (compiled on first use).

    ``grad_gets_step``: the gradient is left holding the nesterov direction, as torch's foreach
    SGD does without weight decay (``_foreach_add_(grads, bufs, alpha=momentum)``)."""
    rg, ra, rw, rm = (_rounder(m) for m in (grad_mode, acc_mode, weight_mode, mom_mode))
    use_acc = acc_mode != NONE

    @njit(parallel=True, nogil=True)
    def step(p, g, buf, acc, first, gs, wd, mom, one_m_damp, neg_lr, G, A, W, M):
        # G, A, W, M: (seed_lo, seed_hi, away_pos, away_neg, man, emin, k_low, max_pos, max_neg, overflow)
        for i in prange(p.size):
            prefer_wide_vectors()
            gf = _bits_to_f32(g[i])
            if scaled:
                gf = gf * gs
            gf = _bits_to_f32(rg(_f32_to_bits(gf), i, G[0], G[1], G[2], G[3], G[4], G[5], G[6], G[7], G[8], G[9]))
            g[i] = _f32_to_bits(gf)
            pw = _bits_to_f32(acc[i]) if use_acc else _bits_to_f32(p[i])
            d = gf
            if decay:
                d = _fma(pw, wd, d)
            if momentum:
                if first:
                    b = d
                else:
                    b = _fma(d, one_m_damp, _bits_to_f32(buf[i]) * mom)
                if nesterov:
                    d = _fma(b, mom, d)
                    if grad_gets_step:
                        g[i] = _f32_to_bits(d)
                else:
                    d = b
                buf[i] = rm(_f32_to_bits(b), i, M[0], M[1], M[2], M[3], M[4], M[5], M[6], M[7], M[8], M[9])
            pn = _f32_to_bits(_fma(d, neg_lr, pw))
            if use_acc:
                pn = ra(pn, i, A[0], A[1], A[2], A[3], A[4], A[5], A[6], A[7], A[8], A[9])
                acc[i] = pn
            p[i] = rw(pn, i, W[0], W[1], W[2], W[3], W[4], W[5], W[6], W[7], W[8], W[9])
    return step
