"""The element rounding routine as LLVM IR in 32-bit integers (a numba intrinsic).

Numba widens every integer operation to 64 bits, which halves the lanes of each
vector instruction and forbids AVX2's int32 conversions.  Emitting the routine
directly as i32 IR lets LLVM vectorise it 8 lanes wide.  The algorithm is the one
documented in ``_cpu.py`` and ``_reference.py``; tests compare all of them bit for bit.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._modes import DIRECTED, NEAREST, NEAREST_AWAY, STOCHASTIC

I32 = ir.IntType(32)


def _c(v: int) -> ir.Constant:
    return ir.Constant(I32, v & 0xFFFFFFFF)


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _smax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _i32(b, v):
    t = v.type
    if t == I32:
        return v
    if isinstance(t, ir.IntType):
        return b.trunc(v, I32) if t.width > 32 else b.zext(v, I32)
    raise TypeError(t)


def _pow2_bits(b, k):
    kc = _smin(b, _smax(b, k, _c(-149)), _c(127))
    normal = b.shl(b.add(kc, _c(127)), _c(23))
    sub = b.shl(_c(1), _smin(b, _smax(b, b.add(kc, _c(149)), _c(0)), _c(31)))
    return b.select(b.icmp_signed(">=", kc, _c(-126)), normal, sub)


def _tiny_threshold(b, mode, k_low):
    """Bits ``t`` such that a magnitude below the grid's smallest step ``2**k_low`` rounds to that
    step exactly when its bits are ``>= t`` (nearest: above half the step, nearest_away: at
    least half; 0 never has a non-zero neighbour).  Loop invariant: LLVM hoists it."""
    half = b.sub(k_low, _c(1))
    half_bits = b.select(b.icmp_signed(">", half, _c(127)), _c(0x7F800000),
                         b.select(b.icmp_signed("<", half, _c(-149)), _c(0), _pow2_bits(b, half)))
    if mode == NEAREST:  # strictly above half: ties go to 0, the even neighbour
        return b.add(half_bits, _c(1))
    return _smax(b, half_bits, _c(1))


def _emit_round(b, mode, u, rnd, away_pos, away_neg, man, emin, k_low, max_pos, max_neg, overflow, full=True,
                finite=False):
    """Round the float32 bits ``u``.  ``full=False`` is the shorter routine for grids with
    ``emin > -126``: every float32 subnormal then lies below the grid's normal range, so its true
    exponent is never needed; or with ``emin == -126`` and ``k_low == emin - man`` (BF16), where
    the -126 binade and the subnormals share one step (``_cpu.short_ok``).  Both agree with
    ``_reference.py`` bit for bit on their domains.  ``finite=True`` leaves out the inf and NaN
    cases, for callers that know ``u`` is finite (a block kernel's blocks with a finite abs-max)."""
    a = b.and_(u, _c(0x7FFFFFFF))
    neg = b.icmp_unsigned("!=", b.lshr(u, _c(31)), _c(0))
    be = b.lshr(a, _c(23))
    is_normal = b.icmp_unsigned(">", be, _c(0))
    e = b.sub(b.select(is_normal, be, _c(1)), _c(127))
    sig = b.or_(b.and_(a, _c(0x7FFFFF)), b.select(is_normal, _c(0x800000), _c(0)))
    if full:  # the grid is chosen by the true exponent (float32 subnormals: that of their integer significand)
        mant_exp = b.sub(b.lshr(b.bitcast(b.sitofp(b.and_(a, _c(0x7FFFFF)), ir.FloatType()), I32), _c(23)),
                         _c(127 + 149))
        e_true = b.select(is_normal, e, mant_exp)
    else:
        e_true = e
    on_normal_grid = b.icmp_signed(">=", e_true, emin)
    # shift = k - e + 23 with k = e_true - man on the normal grid, k_low below it
    shift = b.select(on_normal_grid, b.add(b.sub(e_true, e), b.sub(_c(23), man)),
                     b.sub(b.add(k_low, _c(23)), e))
    sh = _smin(b, _smax(b, shift, _c(0)), _c(31))
    away = b.icmp_unsigned("!=", b.select(neg, away_neg, away_pos), _c(0))
    if mode == NEAREST:  # half a step less one, plus the kept LSB: ties to even (0 when sh == 0)
        half_m1 = b.lshr(b.lshr(_c(0x7FFFFFFF), b.sub(_c(31), sh)), _c(1))
        inc = b.add(half_m1, b.and_(b.lshr(sig, sh), _c(1)))
        inc = b.select(b.icmp_signed(">", sh, _c(0)), inc, _c(0))
    elif mode == NEAREST_AWAY:  # half a step: ties go away from zero
        inc = b.lshr(b.shl(_c(1), sh), _c(1))
    elif mode == STOCHASTIC:
        over31 = b.icmp_signed(">", shift, _c(31))
        sig = b.select(over31, b.lshr(sig, _smin(b, _smax(b, b.sub(shift, _c(31)), _c(0)), _c(31))), sig)
        inc = b.lshr(b.lshr(rnd, _c(1)), b.sub(_c(31), sh))
    else:
        inc = b.select(away, b.sub(b.shl(_c(1), sh), _c(1)), _c(0))
    in_binade = b.icmp_signed("<=", shift, _c(23))
    kept = b.shl(b.lshr(b.add(a, inc), sh), sh)
    # below the binade (shift > 23) the grid step is 2**k_low: the result is 0 or that step
    if mode == STOCHASTIC:
        up = b.icmp_unsigned("!=", b.lshr(b.add(sig, inc), sh), _c(0))
    elif mode == DIRECTED:
        up = b.and_(away, b.icmp_unsigned("!=", a, _c(0)))
    else:
        up = b.icmp_unsigned(">=", a, _tiny_threshold(b, mode, k_low))
    tiny = b.select(up, _pow2_bits(b, k_low), _c(0))
    rbits = b.select(in_binade, kept, tiny)
    mx = b.select(neg, max_neg, max_pos)
    saturate = b.icmp_unsigned("==", overflow, _c(0))
    special = b.select(b.icmp_unsigned("==", overflow, _c(1)), _c(0x7F800000), _c(0x7FC00000))
    toward_max = saturate if mode != DIRECTED else b.or_(saturate, b.not_(away))
    over = b.icmp_unsigned(">", rbits, mx)
    rbits = b.select(over, b.select(toward_max, mx, special), rbits)
    if not finite:
        rbits = b.select(b.icmp_unsigned("==", a, _c(0x7F800000)), b.select(saturate, mx, special), rbits)
        rbits = b.select(b.icmp_unsigned(">", a, _c(0x7F800000)), a, rbits)
    return b.or_(rbits, b.and_(u, _c(0x80000000)))


def _emit_round_nearest_lean(b, u, man, emin, k_low, max_pos, max_neg, overflow):
    """The short routine at nearest (ties to even) in about two thirds of the instructions, for
    grids where every finite magnitude up to the larger maximum is cut at a shift of at least 1
    and no float32 subnormal is cut at 23 (``_cpu.lean_ok``): the kept LSB then comes from
    ``a | 2**23`` (the hidden bit) and the kept bits from one mask, infinities take the overflow
    branch as any magnitude beyond the maximum does, and only NaN needs its own select."""
    a = b.and_(u, _c(0x7FFFFFFF))
    be1 = b.select(b.icmp_unsigned(">", b.lshr(a, _c(23)), _c(1)), b.lshr(a, _c(23)), _c(1))
    # shift = 23 - man on the normal grid (biased exponent >= emin + 127), k_low + 150 - be below
    shift = b.select(b.icmp_signed(">=", be1, b.add(emin, _c(127))), b.sub(_c(23), man),
                     b.sub(b.add(k_low, _c(150)), be1))
    sh = _smin(b, _smax(b, shift, _c(0)), _c(31))
    mask = b.shl(_c(-1), sh)
    half_m1 = b.lshr(b.xor(mask, _c(-1)), _c(1))
    lsb = b.and_(b.lshr(b.or_(a, _c(0x800000)), sh), _c(1))
    kept = b.and_(b.add(b.add(a, half_m1), lsb), mask)
    tiny = b.select(b.icmp_unsigned(">=", a, _tiny_threshold(b, NEAREST, k_low)), _pow2_bits(b, k_low), _c(0))
    rbits = b.select(b.icmp_signed("<=", shift, _c(23)), kept, tiny)
    neg = b.icmp_signed("<", u, _c(0))
    mx = b.select(neg, max_neg, max_pos)
    special = b.select(b.icmp_unsigned("==", overflow, _c(1)), _c(0x7F800000), _c(0x7FC00000))
    limit = b.select(b.icmp_unsigned("==", overflow, _c(0)), mx, special)
    rbits = b.select(b.icmp_unsigned(">", rbits, mx), limit, rbits)
    rbits = b.select(b.icmp_unsigned(">", a, _c(0x7F800000)), a, rbits)
    return b.or_(rbits, b.and_(u, _c(0x80000000)))


@intrinsic
def round_nearest_lean(typingctx, u, man, emin, k_low, max_pos, max_neg, overflow):
    """``round_nearest_short`` on the grids ``_cpu.lean_ok`` admits, bit for bit, in fewer instructions."""
    sig = types.uint32(u, man, emin, k_low, max_pos, max_neg, overflow)

    def codegen(context, builder, signature, args):
        return _emit_round_nearest_lean(builder, *[_i32(builder, v) for v in args])
    return sig, codegen


def _make(mode, full=True, finite=False):
    @intrinsic
    def round_i32(typingctx, u, rnd, away_pos, away_neg, man, emin, k_low, max_pos, max_neg, overflow):
        sig = types.uint32(u, rnd, away_pos, away_neg, man, emin, k_low, max_pos, max_neg, overflow)

        def codegen(context, builder, signature, args):
            vals = [_i32(builder, v) for v in args]
            return _emit_round(builder, mode, *vals, full=full, finite=finite)
        return sig, codegen
    return round_i32


round_nearest = _make(NEAREST)
round_stochastic = _make(STOCHASTIC)
round_directed = _make(DIRECTED)
round_nearest_away = _make(NEAREST_AWAY)
# the shorter routines for grids with emin > -126 (``full=False``)
round_nearest_short = _make(NEAREST, False)
round_stochastic_short = _make(STOCHASTIC, False)
round_directed_short = _make(DIRECTED, False)
round_nearest_away_short = _make(NEAREST_AWAY, False)
# both, for finite inputs only (``finite=True``: the block kernels, whose blocks with inf or NaN never get here)
round_nearest_fin = _make(NEAREST, True, True)
round_stochastic_fin = _make(STOCHASTIC, True, True)
round_directed_fin = _make(DIRECTED, True, True)
round_nearest_away_fin = _make(NEAREST_AWAY, True, True)
round_nearest_short_fin = _make(NEAREST, False, True)
round_stochastic_short_fin = _make(STOCHASTIC, False, True)
round_directed_short_fin = _make(DIRECTED, False, True)
round_nearest_away_short_fin = _make(NEAREST_AWAY, False, True)


@intrinsic
def prefer_wide_vectors(typingctx):
    """Mark the enclosing LLVM function ``"prefer-vector-width"="512"``.

    LLVM's tuning for most AVX-512 CPUs (skylake-avx512 through sapphirerapids; numba names
    some of them ``rocketlake``) prefers 256-bit vectors, which halves the lanes of these
    integer loops; on CPUs without AVX-512 the attribute changes nothing (256 bits is the
    widest legal vector).  Called inside a ``prange`` body it marks the parallel loop's function.
    """
    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')  # a string attribute
        return context.get_dummy_value()
    return types.none(), codegen


def _emit_random_bits(b, lo, hi, seed_lo, seed_hi):
    def mix(x):
        x = b.xor(x, b.lshr(x, _c(16)))
        x = b.mul(x, _c(0x7FEB352D))
        x = b.xor(x, b.lshr(x, _c(15)))
        x = b.mul(x, _c(0x846CA68B))
        return b.xor(x, b.lshr(x, _c(16)))
    h = mix(b.add(b.mul(lo, _c(0x9E3779B9)), _i32(b, seed_lo)))
    return mix(b.xor(b.xor(h, b.mul(hi, _c(0x85EBCA6B))), _i32(b, seed_hi)))


@intrinsic
def random_bits_i32(typingctx, index, seed_lo, seed_hi):
    """The counter-based 32 random bits of ``_reference.random_bits``, in i32 IR."""
    def codegen(context, builder, signature, args):
        b = builder
        idx = args[0]
        lo, hi = b.trunc(idx, I32), b.trunc(b.lshr(idx, ir.Constant(idx.type, 32)), I32)
        return _emit_random_bits(b, lo, hi, args[1], args[2])
    return types.uint32(index, seed_lo, seed_hi), codegen


@intrinsic
def random_bits_at(typingctx, base, j, seed_lo, seed_hi):
    """``random_bits_i32(base + j)`` where adding ``j`` to ``base`` carries nothing into bit 32
    (``base`` a multiple of a power of two above ``j``: an MX block's 32 elements, a flat
    kernel's aligned chunk): the offset goes into the low 32 bits alone, so the high half is
    the block's and LLVM builds the lanes' indices as one vector add."""
    def codegen(context, builder, signature, args):
        b = builder
        idx = args[0]
        lo = b.add(b.trunc(idx, I32), _i32(b, args[1]))
        hi = b.trunc(b.lshr(idx, ir.Constant(idx.type, 32)), I32)
        return _emit_random_bits(b, lo, hi, args[2], args[3])
    return types.uint32(base, j, seed_lo, seed_hi), codegen


@intrinsic
def umax_abs(typingctx, m, u):
    """``max(m, u & 0x7FFFFFFF)`` in i32 (numba would widen it to i64, halving the vector lanes)."""
    def codegen(context, builder, signature, args):
        b = builder
        mm, a = _i32(b, args[0]), b.and_(_i32(b, args[1]), _c(0x7FFFFFFF))
        return b.select(b.icmp_unsigned(">", a, mm), a, mm)
    return types.uint32(m, u), codegen


@intrinsic
def abs_max_32(typingctx, arr, start):
    """``max(arr[start:start + 32] & 0x7FFFFFFF)`` of a uint32 array (the caller guarantees the
    range), as four 8-lane loads and a tree of unsigned maxima.  LLVM fully unrolls a 32-trip
    loop into scalar compares and branches before its vectoriser sees it; this spells out the
    vector code instead."""
    def codegen(context, builder, signature, args):
        b = builder
        data = context.make_array(signature.args[0])(context, b, args[0]).data
        v8 = ir.VectorType(I32, 8)
        base = b.gep(data, [args[1]])
        mask = ir.Constant(v8, [0x7FFFFFFF] * 8)

        def umax(x, y):
            return b.select(b.icmp_unsigned(">", x, y), x, y)
        acc = None
        for k in range(4):
            ptr = b.bitcast(b.gep(base, [ir.Constant(ir.IntType(64), 8 * k)]), v8.as_pointer())
            v = b.and_(b.load(ptr, align=4), mask)
            acc = v if acc is None else umax(acc, v)
        for width in (4, 2, 1):
            hi = b.shuffle_vector(acc, ir.Constant(v8, None), ir.Constant(v8, [width + i if i < width else 0
                                                                          for i in range(8)]))
            acc = umax(acc, hi)
        return b.extract_element(acc, ir.Constant(I32, 0))
    return types.uint32(arr, start), codegen
