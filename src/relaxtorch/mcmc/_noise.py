"""Fast Gaussian noise and the fused SGLD update on CPU tensors (numba).

``torch.randn`` with a generator draws through a scalar Mersenne twister and Box–Muller: on an
MLP of 1.1M parameters it alone costs a fifth of a forward+backward pass, so an SGLD step could
not stay near an SGD step.  Here each call draws **one** 63-bit seed from the user's
``torch.Generator`` (randomness stays explicit: same generator, same bits) and expands it with
splitmix64 (Steele, Lea & Flood, OOPSLA 2014) into standard normals by the 256-layer ziggurat
(Marsaglia & Tsang, "The ziggurat method for generating random variables", J. Stat. Softw.
2000; the 64-bit layout of NumPy's ``Generator.standard_normal``: 8 bits pick the layer, one the
sign, 52 the abscissa; a float32 normal takes one 32-bit half of a draw, 23 bits of abscissa, so
a pair shares the draw's cost).  Draw i of a call is a function of the seed and i alone: the ~1% of
draws that miss their layer's rectangle finish from a side stream of their own, so the kernels run
in parallel chunks with the same bits on any number of threads.  The leaves of one call continue
one counter.

The SGLD update θ + (ε/2) g + σ ξ is fused with the noise, one pass of cache-sized chunks per
leaf: :func:`sgld_new_leaves` writes new tensors (the kernel); :func:`sgld_plan` computes the new
values into scratch buffers and checks that every one is finite, and :func:`sgld_apply_` then
copies them into the parameters (the shell), so a non-finite update raises before anything is
written.  Both evaluate the same expression element by element (no fused multiply-add), so the
kernel and the shell agree bit for bit.  The tests compare the kernels with a Python reference
that draws one normal at a time.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np
import torch

from numba import prange

from .._numba import njit

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
_KI32, _WI32, _ = _tables(23)   # float32 draws: the same layout in each 32-bit half of a word
KI32, WI32 = _KI32.astype(np.uint32), _WI32.astype(np.float32)


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
def _layer32(w):
    """(layer, 23-bit abscissa, signed float32 x) of the 32-bit draw ``w`` (in a uint64)."""
    idx = w & np.uint64(0xFF)
    r = (w >> np.uint64(9)) & np.uint64(0x7FFFFF)
    x = np.float32(np.int32(r)) * WI32[idx]
    sign = np.float32(np.int32((w >> np.uint64(8)) & np.uint64(1)))
    return idx, r, x - np.float32(2.0) * sign * x


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
def _finish32(w, state):
    """:func:`_finish` for a 32-bit draw; fresh draws are the high halves of the side stream's."""
    while True:
        idx, r, x = _layer32(w)
        if r < KI32[idx]:
            return x
        if idx == 0:
            return np.float32(_tail(state, x < 0))
        state, u = _uniform(state)
        xd = np.float64(x)
        if (FI[idx - 1] - FI[idx]) * u + FI[idx] < math.exp(-0.5 * xd * xd):
            return x
        state, z = _next(state)
        w = z >> np.uint64(32)


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


@njit(inline="always")
def _half32(out, i, w, slow, k):
    idx, r, x = _layer32(w)
    out[i] = x
    if r >= KI32[idx]:
        slow[k] = i
        return k + 1
    return k


@njit(cache=True)
def _fast32(out, base, slow):
    """:func:`_fast64` for float32, two normals per 64-bit draw: with m = ceil(n/2), element j is
    the low half of draw j and element m + j its high half."""
    n = out.shape[0]
    m = (n + 1) // 2
    k = 0
    lo = np.uint64(0xFFFFFFFF)
    for j in range(n - m):
        z = _mix(base + np.uint64(j + 1) * _GOLDEN)
        k = _half32(out, j, z & lo, slow, k)
        k = _half32(out, m + j, z >> np.uint64(32), slow, k)
    if m > n - m:                                  # odd n: the last draw's low half alone
        k = _half32(out, m - 1, _mix(base + np.uint64(m) * _GOLDEN) & lo, slow, k)
    return k


_CHUNK = 8192  # elements per work item: even, and small enough to stay in cache between passes


@njit(cache=True)
def _fill(chunk, at, key, slow):
    """Standard normals into ``chunk`` (at most ``_CHUNK`` long) from counter state ``at``: the fast
    pass, then the slow draws it left."""
    if chunk.itemsize == 4:
        m = (chunk.shape[0] + 1) // 2
        for t in range(_fast32(chunk, at, slow)):
            i = slow[t]
            s = at + np.uint64((i if i < m else i - m) + 1) * _GOLDEN
            w = _mix(s)
            chunk[i] = _finish32(w & np.uint64(0xFFFFFFFF) if i < m else w >> np.uint64(32), _mix(s ^ key))
    else:
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
    slow = np.empty(_CHUNK, np.int64)
    n = out.shape[0]
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        _fill(out[lo:hi], _chunk_at(base, lo, out.itemsize), key, slow)


@njit(parallel=True, nogil=True, cache=True)
def normal_fill(out, seed, offset):
    """Fill the 1-D float32/float64 array ``out`` with standard normals, from counter ``offset`` of
    ``seed`` on: a float64 normal is one splitmix64 draw, a float32 pair shares one (:func:`_fast32`,
    per chunk of ``_CHUNK``), and a draw outside its ziggurat rectangle finishes from its own side
    stream (:func:`side_key`), so the bits are the same on any number of threads."""
    base, key = seed + np.uint64(offset) * _GOLDEN, side_key(seed)
    n = out.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        _fill(out[lo:hi], _chunk_at(base, lo, out.itemsize), key, np.empty(_CHUNK, np.int64))


@njit(parallel=True, nogil=True, cache=True)
def sgld_fill(x, g, gscale, out, limit, seed, offset, half, sd):
    """The SGLD update with fresh noise, 1-D arrays: out[i] = x[i] + half·(gscale·g[i]) + sd·ξ_i,
    with gscale·g in g's dtype (``gscale`` is of that dtype; 1 leaves g as it is) and ξ the normals
    of :func:`normal_fill`.  Returns whether every entry is finite in x's dtype, that is |v| <
    ``limit`` (the least magnitude that rounds to inf there).  One parallel pass of chunks: the
    noise is drawn into a chunk of ``out`` and overwritten there by the update while in cache."""
    base, key = seed + np.uint64(offset) * _GOLDEN, side_key(seed)
    n = out.shape[0]
    bad = 0
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        chunk = out[lo:hi]
        _fill(chunk, _chunk_at(base, lo, out.itemsize), key, np.empty(_CHUNK, np.int64))
        bad += _update(x[lo:hi], g[lo:hi], gscale, chunk, limit, half, sd)
    return bad == 0


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
    """The new values x + half·r(gscale·g) + sd·ξ of every CPU float leaf, computed into scratch
    buffers and checked finite, writing nothing: the plan for :func:`sgld_apply_`, or None if an
    entry would not be finite.  Bit for bit :func:`sgld_new_leaves` on the same generator when
    r(gscale·g) is the g given there (gscale = -N: the shell's gradient convention, folded in)."""
    stream, plan = Stream(generator), []
    for x, g in zip(xs, gs):
        new = scratch.take(x.dtype, x.numel())
        if not stream.sgld(x.detach().contiguous(), g.contiguous(), gscale, new, half, sd):
            return None
        plan.append((x, new))
    return plan


def sgld_apply_(plan) -> None:
    """Write a plan of :func:`sgld_plan` into its tensors."""
    for x, new in plan:
        x.detach().copy_(torch.from_numpy(new).view(x.shape))
