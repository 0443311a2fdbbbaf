"""An independent float64 reference for relaxtorch's number formats (test helper, not a test file).

Written from the specification, not from the kernels: a format's finite values are
found by decoding every bit pattern, and a value is rounded by looking up its two
neighbours in that sorted set (``np.searchsorted``) and choosing between them.
Element rounding never shifts bits or computes an exponent of the input; only the
block scales (BlockFloat, MX) are computed from the block's largest magnitude, by
the spec's formulas, in exact float64/Python integer arithmetic.

Specification summary (what this module implements):

* FloatFormat(exp, man, bias, specials, subnormals, overflow): pattern (s, E, M) is
  ``(-1)**s * M * 2**(1-bias-man)`` for E = 0 (only M = 0 when subnormals=False) and
  ``(-1)**s * (2**man + M) * 2**(E-bias-man)`` otherwise; with specials="ieee" E all
  ones is inf/NaN, with "fn" only E and M all ones is NaN, with "none" all are finite.
* FixedPoint(wl, fl, signed, symmetric): integer codes ``-2**(wl-1) .. 2**(wl-1)-1``
  (symmetric: from ``-(2**(wl-1)-1)``; unsigned: ``0 .. 2**wl-1``) times ``2**-fl``; saturates.
* Rounding is done on the unbounded grid (the value set continued by one more
  grid step past each end); a result beyond the largest (smallest) value is an
  overflow: "saturate" gives +-max, "inf" +-inf, "nan" NaN, except that directed
  rounding toward the smaller magnitude gives +-max (IEEE 754 section 7.4).
  Input +-inf follows the policy without that exception; NaN stays NaN.
* Ties to even: between neighbours ``lo < hi`` the result is the one that is an
  even multiple of ``hi - lo`` (the grid step there).  For ``man >= 1`` this is
  "mantissa LSB 0"; for fixed point it is "integer code even"; it also covers
  ``man = 0`` and the tie at ``smallest_normal / 2`` without subnormals (-> 0).
* Ties away ("nearest_away"): between neighbours ``lo < hi`` a tie goes to the one of
  larger magnitude.
* A block's values (BlockFloat, MX) are the element values times the block scale that
  are finite in float32 (|v| <= 0x1.fffffep127); the rest are dropped, so the block
  saturates at the largest remaining value.
* Zero results of a floating-point format carry the sign of the input (IEEE).
* BlockFloat(wl, dim) and MXFormat(elem, block, scale_mode) as in the spec.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

DETERMINISTIC = ("nearest", "toward_zero", "down", "up", "nearest_away")
F32_MAX = float.fromhex("0x1.fffffep127")
ALL_MODES = DETERMINISTIC + ("stochastic",)


@dataclass(frozen=True)
class ValueSet:
    values: np.ndarray  # sorted, unique, finite float64 values (0 once)
    lo_ext: float  # the unbounded grid's value just below values[0]
    hi_ext: float  # the unbounded grid's value just above values[-1]
    overflow: str  # "saturate" | "inf" | "nan"
    signed_zero: bool  # a floating-point format: zero results keep the input's sign
    even_man: int = 0  # mantissa width (used by the MX "even" scale mode)

    @property
    def max(self) -> float:
        return float(self.values[-1])

    @property
    def min(self) -> float:
        return float(self.values[0])

    def replace(self, **kw) -> "ValueSet":
        d = dict(self.__dict__)
        d.update(kw)
        return ValueSet(**d)


def floor_log2(v: float) -> int:
    """floor(log2(v)) for a positive finite float64, exactly."""
    m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= m < 1
    return e - 1


# ---------------------------------------------------------------------------- value sets

@functools.lru_cache(maxsize=None)
def float_values(exp: int, man: int, bias: int, specials: str, subnormals: bool) -> np.ndarray:
    """Sorted unique finite values of a binary float format, by decoding every bit pattern."""
    vals = []
    top = 2**exp - 1
    for sign in (0, 1):
        for e_field in range(2**exp):
            for m_field in range(2**man):
                if specials == "ieee" and e_field == top:
                    continue  # inf / NaN
                if specials == "fn" and e_field == top and m_field == 2**man - 1:
                    continue  # the single NaN pattern
                if e_field == 0:
                    if m_field != 0 and not subnormals:
                        continue
                    v = math.ldexp(m_field, 1 - bias - man)
                else:
                    v = math.ldexp(2**man + m_field, e_field - bias - man)
                vals.append(-v if sign else v)
    values = np.unique(np.array(vals, dtype=np.float64))  # -0.0 and 0.0 collapse
    values.flags.writeable = False
    return values


def float_set(fmt) -> ValueSet:
    """ValueSet of a relaxtorch FloatFormat (reads only its declared fields)."""
    bias = fmt.bias if fmt.bias is not None else 2 ** (fmt.exp - 1) - 1
    overflow = fmt.overflow or ("inf" if fmt.specials == "ieee" else "saturate")
    values = float_values(fmt.exp, fmt.man, bias, fmt.specials, fmt.subnormals)
    vmax = float(values[-1])
    ulp = math.ldexp(1.0, floor_log2(vmax) - fmt.man)  # the unbounded grid's step at max
    return ValueSet(values, -(vmax + ulp), vmax + ulp, overflow, True, fmt.man)


def fixed_set(wl: int, fl: int, signed: bool = True, symmetric: bool = False) -> ValueSet:
    lo, hi = (-(2 ** (wl - 1)) + int(symmetric), 2 ** (wl - 1) - 1) if signed else (0, 2**wl - 1)
    step = math.ldexp(1.0, -fl)
    codes = np.arange(lo, hi + 1, dtype=np.float64)
    return ValueSet(codes * step, (lo - 1) * step, (hi + 1) * step, "saturate", False, max(wl - 2, 0))


def value_set(fmt) -> ValueSet:
    """ValueSet of an element format (FloatFormat or FixedPoint), by its class name."""
    kind = type(fmt).__name__
    if kind == "FloatFormat":
        return float_set(fmt)
    if kind == "FixedPoint":
        return fixed_set(fmt.wl, fmt.fl, fmt.signed, getattr(fmt, "symmetric", False))
    raise TypeError(f"not an element format: {fmt!r}")


# ---------------------------------------------------------------------------- rounding

def _toward_smaller_magnitude(mode: str, x: np.ndarray) -> np.ndarray:
    if mode == "toward_zero":
        return np.ones(x.shape, bool)
    if mode == "down":
        return x > 0
    if mode == "up":
        return x < 0
    return np.zeros(x.shape, bool)


def neighbours(x: np.ndarray, vs: ValueSet):
    """For finite x: (lo, hi, inside) with lo <= x <= hi neighbours on the extended grid.

    ``inside`` is False where x lies beyond the extended grid (then lo/hi are
    meaningless; every neighbour there is an overflow)."""
    grid = np.concatenate([[vs.lo_ext], vs.values, [vs.hi_ext]])
    inside = (x >= grid[0]) & (x <= grid[-1])
    i = np.searchsorted(grid, x, side="right") - 1
    i = np.clip(i, 0, len(grid) - 1)
    lo = grid[i]
    hi = grid[np.minimum(i + 1, len(grid) - 1)]
    exact = x == lo
    hi = np.where(exact, lo, hi)
    return lo, hi, inside


def round_to_set(x, vs: ValueSet, mode: str, u=None) -> np.ndarray:
    """Round float64 values to ``vs`` in ``mode``; ``u`` (uniform in [0, 1)) drives "stochastic".

    Returns float64 (every finite result is a value of the set; +-inf or NaN by policy)."""
    with np.errstate(invalid="ignore"):  # signalling NaN inputs
        x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)
    out = np.full(x.shape, np.nan)
    fin = np.isfinite(x)
    xf = x[fin]
    lo, hi, inside = neighbours(xf, vs)
    step = hi - lo
    if mode == "nearest":
        dlo, dhi = xf - lo, hi - xf
        with np.errstate(invalid="ignore", divide="ignore"):
            lo_even = np.fmod(lo / np.where(step > 0, step, 1.0), 2.0) == 0
        r = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo_even, lo, hi)))
    elif mode == "nearest_away":
        dlo, dhi = xf - lo, hi - xf
        r = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(np.abs(lo) > np.abs(hi), lo, hi)))
    elif mode == "down":
        r = lo
    elif mode == "up":
        r = hi
    elif mode == "toward_zero":
        r = np.where(xf > 0, lo, hi)
    elif mode == "stochastic":
        uf = np.asarray(u, dtype=np.float64).reshape(-1)[fin]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(step > 0, (xf - lo) / np.where(step > 0, step, 1.0), 0.0)
        r = np.where(uf < p, hi, lo)
    else:
        raise ValueError(mode)
    r = np.where(inside, r, np.where(xf > 0, np.inf, -np.inf))
    over = (r > vs.max) | (r < vs.min)
    big = np.where(xf > 0, vs.max, vs.min)  # saturated value on the overflow side
    if vs.overflow == "saturate":
        policy = big
    elif vs.overflow == "inf":
        policy = np.where(xf > 0, np.inf, -np.inf)
    else:
        policy = np.full(xf.shape, np.nan)
    r = np.where(over, np.where(_toward_smaller_magnitude(mode, xf), big, policy), r)
    if vs.signed_zero:
        r = np.where(r == 0, np.copysign(0.0, xf), r)
    out[fin] = r
    # non-finite inputs: NaN stays NaN; +-inf follows the overflow policy
    xi = x[np.isinf(x)]
    if vs.overflow == "saturate":
        out[np.isinf(x)] = np.where(xi > 0, vs.max, vs.min)
    elif vs.overflow == "inf":
        out[np.isinf(x)] = xi
    return out.reshape(shape)


def stochastic_pair(x, vs: ValueSet):
    """The two possible stochastic results (equal where x is on the grid)."""
    with np.errstate(invalid="ignore"):
        x = np.asarray(x, dtype=np.float64)
    return (round_to_set(x, vs, "stochastic", np.ones(x.shape)),
            round_to_set(x, vs, "stochastic", np.zeros(x.shape)))


# ---------------------------------------------------------------------------- block formats

def f32_finite(vs: ValueSet, s: int) -> ValueSet:
    """``vs`` for a block of scale ``2**s``: only values whose scaled magnitude float32 can hold."""
    limit = math.ldexp(F32_MAX, -s)
    keep = np.abs(vs.values) <= limit
    if keep.all():
        return vs
    vals, dropped = vs.values[keep], vs.values[~keep]
    lo_ext = float(dropped[dropped < 0].max()) if (dropped < 0).any() else vs.lo_ext
    hi_ext = float(dropped[dropped > 0].min()) if (dropped > 0).any() else vs.hi_ext
    return vs.replace(values=vals, lo_ext=lo_ext, hi_ext=hi_ext)


def mx_scale(amax: float, elem: ValueSet, scale_mode: str) -> int:
    """The E8M0 exponent of one MX block, from its largest magnitude (finite, >= 0)."""
    if amax == 0:
        return -127
    emax_elem = floor_log2(elem.max)
    if scale_mode == "floor":
        s = floor_log2(amax) - emax_elem
    elif scale_mode == "ceil":
        s = floor_log2(amax) - floor_log2(elem.max) - 2
        while amax > math.ldexp(elem.max, s):
            s += 1
    elif scale_mode == "even":
        bits = int(np.array([amax], dtype=np.float32).view(np.uint32)[0])
        bits = (bits + (1 << (22 - elem.even_man))) & 0x7F800000
        field = bits >> 23
        s = -(10**9) if field == 0 else (field - 127) - emax_elem
    else:
        raise ValueError(scale_mode)
    return min(max(s, -127), 127)


def mx_reference(x, elem_fmt, block: int, scale_mode: str, mode: str, u=None, axis: int = -1) -> np.ndarray:
    """OCP MX rounding of a float32 array along dimension ``axis`` (float64 result)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim and axis % x.ndim != x.ndim - 1:
        uu = None if u is None else np.moveaxis(np.asarray(u), axis, -1)
        return np.moveaxis(mx_reference(np.moveaxis(x, axis, -1), elem_fmt, block, scale_mode, mode, uu), -1, axis)
    shape = x.shape
    rows = x.reshape(-1, shape[-1]) if x.ndim else x.reshape(1, 1)
    rows = rows.astype(np.float64)
    urows = None if u is None else np.asarray(u, dtype=np.float64).reshape(rows.shape)
    elem = value_set(elem_fmt).replace(overflow="saturate")  # MX elements saturate
    scales = np.zeros_like(rows)
    bad = np.zeros(rows.shape, bool)
    for r in range(rows.shape[0]):
        for c0 in range(0, rows.shape[1], block):
            blk = rows[r, c0:c0 + block]
            if not np.all(np.isfinite(blk)):
                bad[r, c0:c0 + block] = True
                continue
            s = mx_scale(float(np.max(np.abs(blk))), elem, scale_mode)
            scales[r, c0:c0 + block] = s
    safe = np.where(bad, 0.0, rows)
    scaled = np.ldexp(safe, (-scales).astype(np.int64))
    q = round_to_set(scaled, elem, mode, urows)
    for r in range(rows.shape[0]):  # blocks whose largest values float32 cannot hold
        for c0 in range(0, rows.shape[1], block):
            s = int(scales[r, c0])
            fin = f32_finite(elem, s)
            if fin is not elem and not bad[r, c0]:
                sl = slice(c0, c0 + block)
                q[r, sl] = round_to_set(scaled[r, sl], fin, mode, None if urows is None else urows[r, sl])
    out = np.ldexp(q, scales.astype(np.int64))
    out[bad] = np.nan
    return out.reshape(shape)


def block_float_reference(x, wl: int, dim, mode: str, u=None) -> np.ndarray:
    """QPyTorch block floating point of a float32 array (finite inputs), float64 result."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    uu = None if u is None else np.asarray(u, dtype=np.float64)
    if dim is None:
        return _block_float_slice(x, wl, mode, uu)
    moved = np.moveaxis(x, dim, 0)
    umoved = None if uu is None else np.moveaxis(uu, dim, 0)
    out = np.stack([_block_float_slice(moved[i], wl, mode, None if uu is None else umoved[i])
                    for i in range(moved.shape[0])]) if moved.shape[0] else moved.copy()
    return np.moveaxis(out, 0, dim)


def _block_float_slice(x: np.ndarray, wl: int, mode: str, u) -> np.ndarray:
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    if amax == 0:
        return x.copy()
    e = floor_log2(amax)
    return round_to_set(x, f32_finite(fixed_set(wl, wl - 2 - e, True), 0), mode, u)


# ---------------------------------------------------------------------------- comparison helpers

def f32_hex(v) -> str:
    v = float(np.float32(v))
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{np.float32(v).view(np.uint32):#010x} ({float(v).hex()}, {v!r})"


def mismatches(x, got, want, signed_zero: bool, limit: int = 12):
    """Indices and a readable report where float32 ``got`` differs from float64 ``want``.

    Finite values compare by value (and by sign of zero when ``signed_zero``);
    NaN matches NaN; infinities match by sign."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        got = np.asarray(got, dtype=np.float32).reshape(-1).astype(np.float64)
        want = np.asarray(want, dtype=np.float64).reshape(-1)
        want32 = want.astype(np.float32).astype(np.float64)
    finite = np.isfinite(want)
    assert np.array_equal(want32[finite], want[finite]), "reference produced a non-float32 value"
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if signed_zero:
        same &= ~((got == 0) & (want == 0) & (np.signbit(got) != np.signbit(want)))
    bad = np.flatnonzero(~same)
    lines = [f"x={f32_hex(x[i])}: expected {f32_hex(want[i])}, got {f32_hex(got[i])}" for i in bad[:limit]]
    return bad, "\n".join([f"{len(bad)} mismatches of {x.size}"] + lines)
