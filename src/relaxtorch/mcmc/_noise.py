"""Fast Gaussian noise and the fused SGLD update on CPU tensors (numba).

``torch.randn`` with a generator draws through a scalar Mersenne twister and Box–Muller: on an
MLP of 1.1M parameters it alone costs a fifth of a forward+backward pass, so an SGLD step could
not stay near an SGD step.  Here each call draws **one** 63-bit seed from the user's
``torch.Generator`` (randomness stays explicit: same generator, same bits) and expands it with
splitmix64 (Steele, Lea & Flood, OOPSLA 2014) into standard normals by the 256-layer ziggurat
(Marsaglia & Tsang, "The ziggurat method for generating random variables", J. Stat. Softw.
2000; the 64-bit layout of NumPy's ``Generator.standard_normal``: 8 bits pick the layer, one the
sign, 52 the abscissa).  The leaves of one call draw one stream in order.

The SGLD update θ + (ε/2) g + σ ξ is fused with the noise: :func:`sgld_new` writes new tensors
(the kernel); :func:`sgld_inplace_` first draws the noise into a scratch buffer while checking
that every new entry is finite, and only then writes the parameters (the shell), so a
non-finite update raises before anything is written.  Both evaluate the same expression
element by element (no fused multiply-add), so the kernel and the shell agree bit for bit.
Each kernel's ``py_func`` is its slow reference (the tests compare them).
"""
from __future__ import annotations

import math
from typing import List

import numpy as np
import torch

from .._numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_R = 3.6541528853610088          # the base layer's right edge (256 layers)
_V = 4.92867323399e-3            # the area of each layer
_INV_R = 1.0 / _R
_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53


def _tables():
    """Ziggurat tables for 256 layers: ``ki`` (52-bit acceptance thresholds), ``wi`` (abscissa per
    unit of the 52-bit draw), ``fi`` (the density at each layer's edge)."""
    m1 = 2.0 ** 52
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


KI, WI, FI = _tables()


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
def _layer(z, wi):
    """(layer, 52-bit abscissa, signed x) of the 64-bit draw ``z``."""
    idx = z & np.uint64(0xFF)
    rabs = (z >> np.uint64(9)) & np.uint64(0x000FFFFFFFFFFFFF)
    x = np.float64(np.int64(rabs)) * wi[idx]
    sign = np.float64(np.int64((z >> np.uint64(8)) & np.uint64(1)))
    return idx, rabs, x - 2.0 * sign * x     # x or -x, exactly, without a branch


@njit(cache=True)
def _finish(z, state, ki, wi, fi):
    """The ziggurat's slow path for a draw ``z`` outside its layer's rectangle (about 0.7% of
    draws): the tail or the wedge test, else a fresh draw, with uniforms from the side stream
    ``state``; returns (state, the normal)."""
    while True:
        idx, rabs, x = _layer(z, wi)
        if rabs < ki[idx]:
            return state, x
        if idx == 0:                            # the tail beyond R (Marsaglia 1964)
            while True:
                state, u1 = _uniform(state)
                state, u2 = _uniform(state)
                xx = -_INV_R * math.log1p(-u1)
                yy = -math.log1p(-u2)
                if yy + yy > xx * xx:
                    return state, (-(_R + xx) if x < 0 else _R + xx)
        state, u = _uniform(state)
        if (fi[idx - 1] - fi[idx]) * u + fi[idx] < math.exp(-0.5 * x * x):
            return state, x
        state, z = _next(state)


@njit(cache=True)
def _fast_pass(out, base, ki, wi):
    """Branch-free: out[i] = draw i if it falls in its layer's rectangle, else NaN (to finish)."""
    nan = np.float64(np.nan)
    for i in range(out.shape[0]):
        idx, rabs, x = _layer(_mix(base + np.uint64(i + 1) * _GOLDEN), wi)
        out[i] = x if rabs < ki[idx] else nan


@njit(cache=True)
def normal_fill(out, seed, offset, side, ki, wi, fi):
    """Fill the 1-D array ``out`` with standard normals: draw i is splitmix64's output number
    ``offset + i + 1`` from ``seed`` (counter based, so the fast pass carries no state), and the
    rare draws outside the rectangles finish with the side stream ``side``; returns the side stream's
    next state.  Two passes: a branch-free one that marks those draws NaN, then the fix-up."""
    base = seed + np.uint64(offset) * _GOLDEN
    _fast_pass(out, base, ki, wi)
    for i in range(out.shape[0]):
        if out[i] != out[i]:
            side, out[i] = _finish(_mix(base + np.uint64(i + 1) * _GOLDEN), side, ki, wi, fi)
    return side


@njit(cache=True)
def _fix(out, base, side, ki, wi, fi):
    for i in range(out.shape[0]):
        if out[i] != out[i]:
            side, out[i] = _finish(_mix(base + np.uint64(i + 1) * _GOLDEN), side, ki, wi, fi)
    return side


@njit(cache=True)
def sgld_fill(x, g, gscale, out, check_only, limit, seed, offset, side, half, sd, ki, wi, fi):
    """The SGLD update with fresh noise, 1-D arrays: ξ into ``out``, then per entry
    v = x + half·(gscale·g) + sd·ξ, with gscale·g in g's dtype (``gscale`` is of that dtype; 1 leaves
    g as it is).  ``check_only``: ``out`` keeps ξ and v is only checked; else out = v.  v is finite
    in x's dtype iff |v| < ``limit`` (the least magnitude that rounds to inf there).  Returns (the side
    stream's next state, every v finite)."""
    base = seed + np.uint64(offset) * _GOLDEN
    _fast_pass(out, base, ki, wi)
    side = _fix(out, base, side, ki, wi, fi)
    bad = 0
    if check_only:
        for i in range(out.shape[0]):
            v = x[i] + half * (gscale * g[i]) + sd * out[i]
            bad += not (abs(v) < limit)
    else:
        for i in range(out.shape[0]):
            v = x[i] + half * (gscale * g[i]) + sd * out[i]
            bad += not (abs(v) < limit)
            out[i] = v
    return side, bad == 0


@njit(cache=True)
def sgld_write(x, g, gscale, noise, half, sd):
    """x ← x + half·(gscale·g) + sd·ξ in place (the expression of :func:`sgld_fill`)."""
    for i in range(x.shape[0]):
        x[i] = x[i] + half * (gscale * g[i]) + sd * noise[i]


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
    """Standard normals for the leaves of one call, from one seed of ``generator``, in order."""

    def __init__(self, generator: torch.Generator):
        self.seed = draw_seed(generator)
        self.side = np.uint64(_mix(self.seed ^ np.uint64(0x6A09E667F3BCC909)))
        self.offset = 0

    def fill(self, out: np.ndarray) -> np.ndarray:
        self.side = np.uint64(normal_fill(out, self.seed, self.offset, self.side, KI, WI, FI))
        self.offset += out.shape[0]
        return out

    def sgld(self, x, g, gscale, out, check_only, half, sd) -> bool:
        side, ok = sgld_fill(_flat(x), _flat(g), _scale(g, gscale), out, check_only, _LIMIT[x.dtype], self.seed,
                             self.offset, self.side, half, sd, KI, WI, FI)
        self.side, self.offset = np.uint64(side), self.offset + out.shape[0]
        return ok


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
        ok = stream.sgld(x.contiguous(), g.contiguous(), gscale, _flat(new), False, half, sd) and ok
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
    """Draw the noise of x ← x + half·r(gscale·g) + sd·ξ for every CPU float leaf and check that
    every new entry is finite, writing nothing: the plan for :func:`sgld_apply_`, or None if an entry
    would not be finite.  Bit for bit :func:`sgld_new_leaves` on the same generator when
    r(gscale·g) is the g given there (gscale = -N: the shell's gradient convention, folded in)."""
    stream, plan = Stream(generator), []
    for x, g in zip(xs, gs):
        noise = scratch.take(x.dtype, x.numel())
        xc = x.detach() if x.is_contiguous() else x.detach().contiguous()
        gc = g.contiguous()
        if not stream.sgld(xc, gc, gscale, noise, True, half, sd):
            return None
        plan.append((x, xc, gc, gscale, noise, half, sd))
    return plan


def sgld_apply_(plan) -> None:
    """Write a plan of :func:`sgld_plan` into its tensors."""
    for x, xc, gc, gscale, noise, half, sd in plan:
        sgld_write(_flat(xc), _flat(gc), _scale(gc, gscale), noise, half, sd)
        if xc.data_ptr() != x.data_ptr():
            x.detach().copy_(xc)
