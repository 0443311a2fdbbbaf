"""Fast Gaussian noise and the fused SGLD update on CPU tensors (numba).

``torch.randn`` with a generator draws through a scalar Mersenne twister and Box–Muller: on an
MLP of 1.1M parameters it alone costs a fifth of a forward+backward pass, so an SGLD step could
not stay near an SGD step.  Here each call draws **one** 63-bit seed from the user's
``torch.Generator`` (randomness stays explicit: same generator, same bits) and expands it with
splitmix64 (Steele, Lea & Flood, OOPSLA 2014), a counter-based stream: draw i of a call is a
function of the seed and i alone, so the kernels run in parallel chunks with the same bits on any
number of threads.  The leaves of one call continue one counter.

* float64 normals: one 64-bit draw each, by the 256-layer ziggurat (Marsaglia & Tsang, "The
  ziggurat method for generating random variables", J. Stat. Softw. 2000; the layout of NumPy's
  ``Generator.standard_normal``: 8 bits pick the layer, one the sign, 52 the abscissa).  The ~1% of
  draws that miss their layer's rectangle finish from a side stream of their own.
* float32 normals: a pair per 64-bit draw by the Box–Muller transform (Box & Muller, Ann. Math.
  Stat. 1958) in float32, with polynomial log, sine and cosine (Cephes' single-precision
  coefficients, Moshier 1992) instead of libm calls and no table lookups, so the loop vectorises
  (16 lanes with AVX-512): the low 32 bits give the radius, the high 2 the signs and 30 the angle
  in a quadrant.  Each normal is within 1e-6 of the exact transform of its bits (tested against
  float64 libm), and |z| <= sqrt(66 ln 2) = 6.77 (P(|Z| > 6.77) = 1.3e-11 for a true normal).
  The table lookups of a float32 ziggurat became gathers, which bounded it at 2 ns a normal.

The SGLD update θ + (ε/2) g + σ ξ is fused with the noise, one pass of cache-sized chunks per
leaf: :func:`sgld_new_leaves` writes new tensors (the kernel).  The shell's :func:`sgld_plan` makes
sure that every new value is finite before :func:`sgld_apply_` writes any, so a non-finite update
raises with the parameters untouched: for contiguous float32 leaves a bound proves it (|x| +
|half·g| + sd·6.7703 below float32's overflow threshold, the normals being bounded) and apply
updates in place in one pass, as SGD does; otherwise the new values go to scratch buffers, each
checked, and apply copies them.  Both evaluate the same expression element by element (no fused
multiply-add), so the kernel and the shell agree bit for bit.  The tests compare the kernels with a
Python reference that draws one normal at a time.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np
import torch

from numba import prange

from .._numba import njit
from ..numbers._cpu import _bits_to_f32 as bits_to_f32, _f32_to_bits as f32_to_bits
from ..numbers._cpu_ir import prefer_wide_vectors

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_R = 3.6541528853610088          # the base layer's right edge (256 layers)
_V = 4.92867323399e-3            # the area of each layer
_INV_R = 1.0 / _R
_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53
_SIDE = np.uint64(0x6A09E667F3BCC909)  # side-stream key (a SHA-2 initial value)


def _tables(bits: int):
    """Ziggurat tables for 256 layers and a ``bits``-bit abscissa: ``ki`` (acceptance thresholds),
    ``wi`` (abscissa per unit of the draw), ``fi`` (the density at each layer's edge)."""
    m1 = 2.0 ** bits
    ki, wi, fi = np.zeros(256, np.uint64), np.zeros(256), np.zeros(256)
    dn = tn = _R
    q = _V / math.exp(-0.5 * dn * dn)
    ki[0], ki[1] = np.uint64((dn / q) * m1), 0
    wi[0], wi[255] = q / m1, dn / m1
    fi[0], fi[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_V / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.uint64((dn / tn) * m1)
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


KI, WI, FI = _tables(52)        # float64 draws: 8 bits layer, 1 sign, 52 abscissa of one 64-bit word


@njit(cache=True)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _next(state):
    """splitmix64: the next state and its 64-bit output."""
    state = state + _GOLDEN
    return state, _mix(state)


@njit(cache=True)
def _uniform(state):
    state, z = _next(state)
    return state, np.float64(np.int64(z >> np.uint64(11))) * _DOUBLE


@njit(cache=True)
def _layer(z):
    """(layer, 52-bit abscissa, signed x) of the 64-bit draw ``z``."""
    idx = z & np.uint64(0xFF)
    rabs = (z >> np.uint64(9)) & np.uint64(0x000FFFFFFFFFFFFF)
    x = np.float64(np.int64(rabs)) * WI[idx]
    sign = np.float64(np.int64((z >> np.uint64(8)) & np.uint64(1)))
    return idx, rabs, x - 2.0 * sign * x     # x or -x, exactly, without a branch


@njit(cache=True)
def _tail(state, negative):
    """A normal beyond R (Marsaglia 1964) from the side stream ``state``."""
    while True:
        state, u1 = _uniform(state)
        state, u2 = _uniform(state)
        xx = -_INV_R * math.log1p(-u1)
        yy = -math.log1p(-u2)
        if yy + yy > xx * xx:
            return -(_R + xx) if negative else _R + xx


@njit(cache=True)
def _finish(z, state):
    """The ziggurat's slow path for a 64-bit draw ``z`` outside its layer's rectangle (about 1% of
    draws): the tail or the wedge test, else a fresh draw, all from the side stream ``state``."""
    while True:
        idx, rabs, x = _layer(z)
        if rabs < KI[idx]:
            return x
        if idx == 0:
            return _tail(state, x < 0)
        state, u = _uniform(state)
        if (FI[idx - 1] - FI[idx]) * u + FI[idx] < math.exp(-0.5 * x * x):
            return x
        state, z = _next(state)


@njit(cache=True)
def side_key(seed):
    """The key of ``seed``'s side streams: the slow path of the draw with counter state ``s`` reads
    the splitmix64 stream that starts at ``_mix(s ^ key)``, so every draw's value depends on the seed
    and its own counter alone (not on the draws before it, nor on how the work is split)."""
    return _mix(seed ^ _SIDE)


@njit(cache=True)
def _fast64(out, base, slow):
    """out[i] = draw i (counter state base + (i+1)·golden) where it falls in its layer's rectangle;
    the indices of the others go to slow[:k]; returns k."""
    k = 0
    for i in range(out.shape[0]):
        idx, rabs, x = _layer(_mix(base + np.uint64(i + 1) * _GOLDEN))
        out[i] = x
        if rabs >= KI[idx]:     # a rare, well-predicted branch: cheaper here than a branch-free store
            slow[k] = i
            k += 1
    return k


# Box–Muller in float32 (module docstring).  Cephes' logf on [sqrt(1/2), sqrt(2)), sinf and cosf
# on [-pi/4, pi/4]; ln 2 split in two so that e·ln 2 adds exactly.
_F = np.float32
_LOG_P = tuple(_F(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                3.3333331174e-1))
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)
_SQRT_HALF = _F(0.70710678118654752440)
_SIN_P = (_F(-1.9515295891e-4), _F(8.3321608736e-3), _F(-1.6666654611e-1))
_COS_P = (_F(2.443315711809948e-5), _F(-1.388731625493765e-3), _F(4.166664568298827e-2))
_HALF32, _ONE32, _ZERO32 = _F(0.5), _F(1.0), _F(0.0)
_TWO_M32, _TWO_M33 = _F(2.0 ** -32), _F(2.0 ** -33)
_ANGLE = _F(math.pi / 2 * 2.0 ** -30)   # radians per unit of the 30-bit angle


@njit(inline="always")
def _neg_log(u):
    """-ln(u) for a float32 u in (0, 1] (no libm call: vectorises)."""
    b = np.int32(f32_to_bits(u))
    e = (b >> 23) - 126
    m = bits_to_f32(np.uint32((b & 0x7FFFFF) | 0x3F000000))    # u = m·2^e, m in [1/2, 1)
    small = m < _SQRT_HALF
    e = e - np.int32(small)
    x = (m + m if small else m) - _ONE32                         # u = (1 + x)·2^e, |x| < 0.42
    z = x * x
    p = _LOG_P[0]
    for c in _LOG_P[1:]:
        p = p * x + c
    fe = _F(e)
    y = x * z * p + fe * _LN2_LO - _HALF32 * z
    return -((x + y) + fe * _LN2_HI)


@njit(inline="always")
def _signed(v, bit):
    """v with its sign bit flipped where ``bit`` (0 or 1) is 1."""
    return bits_to_f32(f32_to_bits(v) ^ (np.uint32(bit) << np.uint32(31)))


@njit(inline="always")
def _box_muller(w):
    """Two float32 standard normals from the 64-bit draw ``w``: radius sqrt(-2 ln u), u from the low
    32 bits; angle in a quadrant from 30 high bits, θ = that angle - pi/4, and a sign each from the
    top two (the four reflections of a quadrant cover the circle)."""
    lo = np.int64(w & np.uint64(0xFFFFFFFF))
    hi = np.int64(w >> np.uint64(32))
    u = _F(lo) * _TWO_M32 + _TWO_M33                             # (0, 1]
    rho = np.sqrt(max(_neg_log(u), _ZERO32))                     # radius / sqrt(2)
    t = (_F(np.int32(hi & 0x3FFFFFFF) - np.int32(1 << 29)) + _HALF32) * _ANGLE
    z = t * t
    s = t + t * z * ((_SIN_P[0] * z + _SIN_P[1]) * z + _SIN_P[2])
    c = _ONE32 - _HALF32 * z + z * z * ((_COS_P[0] * z + _COS_P[1]) * z + _COS_P[2])
    # cos(θ + pi/4) = (c - s)/sqrt 2, sin(θ + pi/4) = (c + s)/sqrt 2: the 1/sqrt 2 is in rho
    return _signed(rho * (c - s), (hi >> 30) & 1), _signed(rho * (c + s), (hi >> 31) & 1)


@njit(cache=True)
def _fast32(out, base):
    """Float32 normals into ``out``, two per 64-bit draw (counter state base + (j+1)·golden for draw
    j): with m = ceil(n/2), element j is draw j's first normal and element m + j its second."""
    prefer_wide_vectors()
    n = out.shape[0]
    m = (n + 1) // 2
    first, second = out[:n - m], out[m:]          # whole-array views: the loop below vectorises
    for j in range(second.shape[0]):
        a, b = _box_muller(_mix(base + np.uint64(j + 1) * _GOLDEN))
        first[j] = a
        second[j] = b
    if m > n - m:                                  # odd n: the last draw's first normal alone
        out[m - 1] = _box_muller(_mix(base + np.uint64(m) * _GOLDEN))[0]


_CHUNK = 8192  # elements per work item: even, and small enough to stay in cache between passes


@njit(cache=True)
def _fill(chunk, at, key):
    """Standard normals into ``chunk`` (at most ``_CHUNK`` long) from counter state ``at``: float32 by
    Box–Muller; float64 by the ziggurat's fast pass, then the slow draws it left."""
    if chunk.itemsize == 4:
        _fast32(chunk, at)
    else:
        slow = np.empty(chunk.shape[0], np.int64)
        for t in range(_fast64(chunk, at, slow)):
            i = slow[t]
            s = at + np.uint64(i + 1) * _GOLDEN
            chunk[i] = _finish(_mix(s), _mix(s ^ key))


@njit(cache=True)
def _update(x, g, gscale, out, limit, half, sd):
    """out[i] = x[i] + half·(gscale·g[i]) + sd·out[i]; the count of entries not finite in out's dtype.
    (Loops over whole arrays, views for chunks: an index known non-negative lets LLVM vectorise.)"""
    bad = 0
    for i in range(out.shape[0]):
        v = x[i] + half * (gscale * g[i]) + sd * out[i]
        bad += not (abs(v) < limit)
        out[i] = v
    return bad


@njit(cache=True)
def _chunk_at(base, lo, itemsize):
    """The counter state where the chunk starting at element ``lo`` begins."""
    return base + np.uint64(lo if itemsize == 8 else lo // 2) * _GOLDEN


@njit(cache=True)
def fill_serial(out, seed, offset):
    """:func:`normal_fill` on one thread (for kernels that draw their noise first)."""
    base, key = seed + np.uint64(offset) * _GOLDEN, side_key(seed)
    n = out.shape[0]
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        _fill(out[lo:hi], _chunk_at(base, lo, out.itemsize), key)


@njit(parallel=True, nogil=True, cache=True)
def normal_fill(out, seed, offset):
    """Fill the 1-D float32/float64 array ``out`` with standard normals, from counter ``offset`` of
    ``seed`` on: a float64 normal is one splitmix64 draw (a draw outside its ziggurat rectangle
    finishes from its own side stream, :func:`side_key`), a float32 pair shares one (:func:`_fast32`,
    per chunk of ``_CHUNK``), so the bits are the same on any number of threads."""
    base, key = seed + np.uint64(offset) * _GOLDEN, side_key(seed)
    n = out.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        _fill(out[lo:hi], _chunk_at(base, lo, out.itemsize), key)


@njit(parallel=True, nogil=True, cache=True)
def sgld_fill(x, g, gscale, out, limit, seed, offset, half, sd):
    """The SGLD update with fresh noise, 1-D arrays: out[i] = x[i] + half·(gscale·g[i]) + sd·ξ_i,
    with gscale·g in g's dtype (``gscale`` is of that dtype; 1 leaves g as it is) and ξ the normals
    of :func:`normal_fill`.  Returns whether every entry is finite in x's dtype, that is |v| <
    ``limit`` (the least magnitude that rounds to inf there).  One parallel pass of chunks: the
    noise is drawn into a chunk of ``out`` and overwritten there by the update while in cache (a
    single loop drawing and updating was slower: it no longer vectorises as well)."""
    base, key = seed + np.uint64(offset) * _GOLDEN, side_key(seed)
    n = out.shape[0]
    bad = 0
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        chunk = out[lo:hi]
        _fill(chunk, _chunk_at(base, lo, out.itemsize), key)
        bad += _update(x[lo:hi], g[lo:hi], gscale, chunk, limit, half, sd)
    return bad == 0


Z32_MAX = 6.7703                # above the largest float32 normal, sqrt(66 ln 2) = 6.77024 (tested)


@njit(parallel=True, nogil=True, cache=True)
def surely_finite(x, g, gscale, limit, half, noise_bound):
    """Whether |x[i]| + |half·(gscale·g[i])| + noise_bound < limit for every i (in float64, with room for
    its rounding), so that x + half·(gscale·g) + sd·ξ is finite for any |sd·ξ| <= noise_bound: the
    float32 update is then written in place without a scratch pass.  NaN and inf entries fail."""
    n = x.shape[0]
    room = limit * (1.0 - 1e-12) - noise_bound
    bad = 0
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        bad += _count_over(x[lo:hi], g[lo:hi], gscale, half, room)
    return bad == 0


@njit(cache=True)
def _count_over(x, g, gscale, half, room):
    bad = 0
    for i in range(x.shape[0]):
        bad += not (abs(x[i]) + abs(half * (gscale * g[i])) < room)
    return bad


@njit(parallel=True, nogil=True, cache=True)
def sgld_fill_inplace(x, g, gscale, seed, offset, half, sd):
    """:func:`sgld_fill` writing into ``x`` itself (float32; the caller has checked
    :func:`surely_finite`): the same bits, the noise drawn into a chunk-sized buffer per work item."""
    base, key = seed + np.uint64(offset) * _GOLDEN, side_key(seed)
    n = x.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        z = np.empty(hi - lo, x.dtype)
        _fill(z, _chunk_at(base, lo, x.itemsize), key)
        _update_into(x[lo:hi], g[lo:hi], gscale, z, half, sd)


@njit(cache=True)
def _update_into(x, g, gscale, z, half, sd):
    for i in range(x.shape[0]):
        x[i] = x[i] + half * (gscale * g[i]) + sd * z[i]


_LIMIT = {torch.float32: float.fromhex("0x1.ffffffp127"), torch.float64: math.inf}


def _scale(g: torch.Tensor, gscale: float):
    return np.float32(gscale) if g.dtype == torch.float32 else np.float64(gscale)


# --- torch side ----------------------------------------------------------------------------------

def fast_path(xs: List[torch.Tensor]) -> bool:
    """True when every leaf is a float32/float64 CPU tensor (the numba kernels apply)."""
    return bool(xs) and all(x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) for x in xs)


def draw_seed(generator: torch.Generator) -> np.uint64:
    """One 62-bit seed from ``generator`` (the only draw a call makes from it)."""
    s = torch.randint(0, 2 ** 62, (), generator=generator, dtype=torch.int64, device=generator.device)
    return np.uint64(int(s))


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).numpy()


class Stream:
    """Standard normals for the leaves of one call, from one seed of ``generator``: leaf after leaf
    moves the counter on by its size (float32 leaves use half of that range, two normals a draw)."""

    def __init__(self, generator: torch.Generator):
        self.seed = draw_seed(generator)
        self.offset = 0

    def fill(self, out: np.ndarray) -> np.ndarray:
        normal_fill(out, self.seed, self.offset)
        self.offset += out.shape[0]
        return out

    def sgld(self, x, g, gscale, out, half, sd) -> bool:
        ok = sgld_fill(_flat(x), _flat(g), _scale(g, gscale), out, _LIMIT[x.dtype], self.seed, self.offset, half, sd)
        self.offset += out.shape[0]
        return bool(ok)


def randn_leaves_fast(like: List[torch.Tensor], generator: torch.Generator) -> List[torch.Tensor]:
    """Standard normals shaped like each CPU float tensor of ``like``, from one seed of ``generator``.

    >>> g = torch.Generator().manual_seed(0)
    >>> a = randn_leaves_fast([torch.zeros(3)], g)[0]
    >>> torch.equal(a, randn_leaves_fast([torch.zeros(3)], g.manual_seed(0))[0]), a.dtype
    (True, torch.float32)
    """
    stream, out = Stream(generator), []
    for x in like:
        z = torch.empty(x.shape, dtype=x.dtype)
        stream.fill(_flat(z))
        out.append(z)
    return out


def sgld_new_leaves(xs, gs, generator, half: float, sd: float, gscale: float = 1.0):
    """(new tensors x + half·g + sd·ξ, all finite) for CPU float leaves; inputs untouched."""
    stream, ok, out = Stream(generator), True, []
    for x, g in zip(xs, gs):
        new = torch.empty(x.shape, dtype=x.dtype)
        ok = stream.sgld(x.contiguous(), g.contiguous(), gscale, _flat(new), half, sd) and ok
        out.append(new)
    return out, ok


class Scratch:
    """Reusable flat noise buffers per dtype, handed out in order within a step (``reset()`` starts a
    step), so an optimizer's steps do not allocate."""

    def __init__(self):
        self._bufs, self._used = {}, {}

    def reset(self) -> None:
        self._used = {}

    def take(self, dtype, n: int) -> np.ndarray:
        start = self._used.get(dtype, 0)
        buf = self._bufs.get(dtype)
        if buf is None or buf.numel() < start + n:
            buf = self._bufs[dtype] = torch.empty(max(start + n, 2 * (0 if buf is None else buf.numel())),
                                                  dtype=dtype)
            start = 0  # earlier slices keep the old buffer alive
        self._used[dtype] = start + n
        return buf.narrow(0, start, n).numpy()


def sgld_plan(xs, gs, generator, half: float, sd: float, scratch: Scratch, gscale: float = 1.0):
    """The new values x + half·r(gscale·g) + sd·ξ of every CPU float leaf, checked finite, writing
    nothing: the plan for :func:`sgld_apply_`, or None if an entry would not be finite.  Bit for bit
    :func:`sgld_new_leaves` on the same generator when r(gscale·g) is the g given there (gscale = -N:
    the shell's gradient convention, folded in).

    Contiguous float32 leaves whose update is finite whatever the noise (:func:`surely_finite`, the
    noise being bounded by :data:`Z32_MAX`) are updated in place at apply time, one pass as for SGD;
    otherwise (float64, strided, or near float32's range) the new values are computed into scratch
    buffers now and copied at apply time."""
    stream = Stream(generator)
    if all(x.dtype == torch.float32 and x.is_contiguous() for x in xs):
        flat = [(_flat(x), _flat(g.contiguous()), _scale(g, gscale)) for x, g in zip(xs, gs)]
        limit = _LIMIT[torch.float32]
        if all(surely_finite(x, g, s, limit, half, sd * Z32_MAX) for x, g, s in flat):
            return ("in_place", stream, flat, half, sd)
    plan = []
    for x, g in zip(xs, gs):
        new = scratch.take(x.dtype, x.numel())
        if not stream.sgld(x.detach().contiguous(), g.contiguous(), gscale, new, half, sd):
            return None
        plan.append((x, new))
    return ("copy", plan)


def sgld_apply_(plan) -> None:
    """Write a plan of :func:`sgld_plan` into its tensors."""
    if plan[0] == "in_place":
        _, stream, flat, half, sd = plan
        for x, g, s in flat:
            sgld_fill_inplace(x, g, s, stream.seed, stream.offset, half, sd)
            stream.offset += x.shape[0]
        return
    for x, new in plan[1]:
        x.detach().copy_(torch.from_numpy(new).view(x.shape))
