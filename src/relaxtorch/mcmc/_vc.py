"""The variance-corrected quantizer of low-precision SGLD, and the grid gap it needs.

Zhang, Wilson & De Sa, "Low-Precision Stochastic Gradient Langevin Dynamics", ICML 2022
(Algorithm 2).  A Langevin step with a low-precision accumulator wants a sample of
``N(mean, var)`` that lies on the number grid.  Adding the Gaussian noise in full
precision and then rounding stochastically (naive SGLDLP-L) adds the rounding variance
on top of ``var``; when ``var`` is small next to the grid gap (small step sizes, the
regime sampling needs) that extra variance dominates and the chain's distribution is
far too wide.  The variance-corrected quantizer instead samples the grid directly so
that the result has expectation ``mean`` and variance exactly ``var``:

* ``var >= gap**2 / 4``: draw ``x = mean + sqrt(var - gap**2/4) * N(0, 1)``, round it to
  the nearest grid point ``q`` (residual ``r = x - q``, ``|r| <= gap/2``), then move
  one gap towards ``r`` with probability ``(gap/2 + |r|)**2 / (2 gap**2)`` or one gap
  away from it with probability ``(gap/2 - |r|)**2 / (2 gap**2)``.  Given ``x`` this
  three-point step has mean ``x`` and variance exactly ``gap**2/4``, whatever ``x`` is,
  so the total variance is ``var``.
* ``var < gap**2 / 4`` (the paper's fallback): round ``mean`` stochastically (variance
  ``v_sr = f (1 - f) gap**2`` for a fractional position ``f`` between its neighbours),
  then, when ``var > v_sr``, move one gap up or down with probability
  ``(var - v_sr) / (2 gap**2)`` each.  The variance is ``max(var, v_sr)``: exact
  whenever any unbiased grid-valued distribution can reach it (two-point stochastic
  rounding is the least variance an unbiased grid value can have).

``gap`` is the grid gap at ``mean`` (:func:`grid_gap`): the constant step of a
``FixedPoint``; the per-block step ``2**(e - (wl - 2))`` of a ``BlockFloat`` whose shared
exponent ``e`` is that of the block of ``mean``; the gap of the binade containing the
value for a ``FloatFormat``.  The steps above walk the lattice ``gap * Z``, which is on
the grid of a FixedPoint everywhere, and for the other formats wherever the result
stays below the top of the binade (block exponent) of ``mean``.  A result beyond it is
stochastically rounded onto the format's grid (unbiased; it adds the rounding variance
there, which only happens where the noise reaches across a binade boundary).  For a
BlockFloat that rounding hits the whole block whenever its largest magnitude crosses up
into the next power of two, so a large block whose maximum hovers at a power of two sees
extra variance often (tests/mcmc/test_lowprec.py keeps its block maximum inside a binade).
Results beyond the format's range saturate at its largest values (as relaxtorch's
quantize does for fixed point): that clips the distribution, so the moments are exact
away from the range limits.  Everything runs in float32 on the tensor's device.
"""
from __future__ import annotations

import math

import torch

from ..numbers import BlockFloat, FixedPoint, FloatFormat, quantize

__all__ = ["grid_gap", "vc_quantize"]

_VC_FORMATS = (FixedPoint, BlockFloat, FloatFormat)


def _check_fmt(fmt) -> None:
    if not isinstance(fmt, _VC_FORMATS):
        raise ValueError(f"Invalid fmt: {fmt!r} (expected a FixedPoint, BlockFloat or FloatFormat; "
                         "MX block formats are not supported by the variance-corrected quantizer)")


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2**e for an integer-valued float32 tensor, exactly (ldexp on the tensor's device)."""
    return torch.ldexp(torch.ones_like(e), e.to(torch.int32))


def _floor_log2(a: torch.Tensor) -> torch.Tensor:
    """floor(log2(a)) of positive finite float32 values, exactly (frexp: a = m 2**k, m in [0.5, 1))."""
    return (torch.frexp(a).exponent - 1).to(torch.float32)


def _block_amax(a: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Each element's block maximum of ``a`` (>= 0), broadcast back to ``a``'s shape."""
    if dim is None or a.dim() == 0:
        return a.amax().expand_as(a)
    if not -a.dim() <= dim < a.dim():
        raise ValueError(f"Invalid dim: {dim} (tensor has {a.dim()} dimensions)")
    others = [d for d in range(a.dim()) if d != dim % a.dim()]
    return (a.amax(dim=others, keepdim=True) if others else a).expand_as(a)


def _block_gap(amax: torch.Tensor, wl: int) -> torch.Tensor:
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    return _pow2(_floor_log2(safe) - (wl - 2))


def grid_gap(x: torch.Tensor, fmt) -> torch.Tensor:
    """The distance between the two grid neighbours of each element of ``x`` in ``fmt``.

    FixedPoint: ``2**-fl`` everywhere.  FloatFormat: the gap of the binade containing the
    value, ``2**(floor(log2|x|) - man)``, with the subnormal step (or ``2**emin`` without
    subnormals) below the smallest normal, and the top binade's gap beyond the largest
    value.  BlockFloat: the step ``2**(e - (wl - 2))`` of each block, ``e`` the block's
    shared exponent ``floor(log2(max |x|))`` (an all-zero block reports the step of
    exponent 0).  Returns a float32 tensor of ``x``'s shape on its device; ``x`` must be finite.

    >>> from relaxtorch.numbers import FloatFormat
    >>> grid_gap(torch.tensor([0.0, 1.0, 1.9, 2.0, -3.0]), FloatFormat(4, 2)).tolist()
    [0.00390625, 0.25, 0.25, 0.5, 0.5]
    """
    _check_fmt(fmt)
    x32 = x.detach().float()
    if isinstance(fmt, FixedPoint):
        return torch.full_like(x32, fmt.eps)
    if isinstance(fmt, BlockFloat):
        return _block_gap(_block_amax(x32.abs(), fmt.dim), fmt.wl)
    a = x32.abs()
    tiny = math.ldexp(1.0, fmt.emin)
    low_gap = math.ldexp(1.0, fmt.emin - fmt.man) if fmt.subnormals else tiny
    e = _floor_log2(torch.where(a >= tiny, a, torch.full_like(a, tiny))).clamp(max=fmt.emax)
    return torch.where(a >= tiny, _pow2(e - fmt.man), torch.full_like(a, low_gap))


def _vc_gap(mu: torch.Tensor, std: torch.Tensor, fmt) -> torch.Tensor:
    """The lattice step used for each element: ``grid_gap(mean)``, except that a BlockFloat
    block whose mean is all zero takes the shared exponent of its largest standard deviation
    (a zero block has no exponent of its own; the noise is what it will hold)."""
    if not isinstance(fmt, BlockFloat):
        return grid_gap(mu, fmt)
    amax = _block_amax(mu.abs(), fmt.dim)
    samax = _block_amax(std, fmt.dim)
    return _block_gap(torch.where(amax > 0, amax, samax), fmt.wl)


def _lattice_sample(mu, v, gap, generator, branch: str | None) -> torch.Tensor:
    """Algorithm 2 on the lattice ``gap * Z`` (unbounded), element by element.

    ``branch`` is "wide" (every ``v >= gap**2/4``), "narrow" (every ``v < gap**2/4``) or None
    (mixed: both computed, selected per element).  The random draws are one Gaussian and
    one uniform for the wide branch, two uniforms for the narrow one, in a fixed order.
    """
    shape, dev = mu.shape, mu.device
    c = gap * gap * 0.25
    z_wide = z_narrow = None
    u1 = torch.rand(shape, generator=generator, device=dev)
    if branch != "narrow":
        xi = torch.randn(shape, generator=generator, device=dev)
        x = mu + torch.sqrt(torch.clamp(v - c, min=0.0)) * xi
        k = torch.round(x / gap)
        # where float32 cannot hold the lattice around x (|x| >= 2**23 gaps), x is on it already
        q = torch.where(k.abs() < 2.0**23, k * gap, x)
        r = x - q
        a = r.abs()
        # the step in gaps, toward r's side (+1 for r = 0) or away: (u1 < p_toward) - (p_toward <= u1 < p_t + p_a)
        sgn = (r >= 0).to(mu.dtype).mul_(2.0).sub_(1.0)
        inv = 1.0 / (2.0 * gap * gap)
        p_toward = (0.5 * gap + a).square_().mul_(inv)
        p_away = (0.5 * gap - a).square_().mul_(inv)
        toward = u1 < p_toward
        away = (u1 < p_toward + p_away) ^ toward
        z_wide = q + (toward.to(mu.dtype) - away.to(mu.dtype)).mul_(sgn).mul_(gap)
        if branch == "wide":
            return z_wide
    u2 = torch.rand(shape, generator=generator, device=dev)
    lo = torch.floor(mu / gap)
    f = mu / gap - lo  # exact: gap is a power of two and mu/gap has at most 24 significant bits
    base = (lo + (u1 < f).to(mu.dtype)) * gap
    v_sr = f * (1.0 - f) * gap * gap
    p = torch.clamp(v - v_sr, min=0.0) / (2.0 * gap * gap)
    up = u2 < p
    down = (u2 < 2.0 * p) ^ up
    z_narrow = base + (up.to(mu.dtype) - down.to(mu.dtype)).mul_(gap)
    if branch == "narrow":
        return z_narrow
    return torch.where(v >= c, z_wide, z_narrow)


def vc_quantize(mean: torch.Tensor, var, fmt, *, generator: torch.Generator | None) -> torch.Tensor:
    """A grid-valued sample with expectation ``mean`` and variance ``var``, element by element.

    The variance-corrected quantization of Zhang, Wilson & De Sa (ICML 2022, Algorithm 2):
    the variance is exactly ``var`` where ``var >= gap**2/4`` (``gap = grid_gap(mean)``);
    below, it is ``max(var, v_sr)`` with ``v_sr`` the variance of stochastic rounding at
    ``mean`` (the paper's fallback).  See the module docstring for the construction and
    where the range limits and binade boundaries of non-uniform formats enter.

    ``mean``: a float tensor (float32, float16 or bfloat16; not modified); ``var``: a
    non-negative float or a tensor broadcastable to ``mean``; ``fmt``: a FixedPoint,
    BlockFloat or FloatFormat; ``generator``: the torch.Generator on ``mean``'s device
    that drives every draw (None: torch's default generator).  Returns a new tensor of
    ``mean``'s dtype and shape.  ``var = 0`` is stochastic rounding of ``mean``.

    >>> from relaxtorch.numbers import FixedPoint
    >>> g = torch.Generator().manual_seed(0)
    >>> y = vc_quantize(torch.full((100_000,), 0.3), 0.01, FixedPoint(8, 4), generator=g)
    >>> bool(torch.all(y * 16 == torch.round(y * 16)))      # multiples of 2**-4
    True
    >>> round(y.mean().item(), 2), round(y.var().item(), 3)
    (0.3, 0.01)
    """
    _check_fmt(fmt)
    if not isinstance(mean, torch.Tensor) or not mean.is_floating_point():
        raise TypeError(f"Invalid mean: expected a floating-point torch.Tensor, got {type(mean).__name__}")
    mu = mean.detach().float()
    if isinstance(var, torch.Tensor):
        v = var.detach().to(device=mu.device, dtype=torch.float32)
        v = v.expand_as(mu) if v.shape != mu.shape else v
        branch = None
    else:
        var = float(var)
        if not var >= 0.0 or math.isinf(var):
            raise ValueError(f"Invalid var: {var!r} (must be a finite number >= 0)")
        v = torch.full_like(mu, var)
        branch = None
        if isinstance(fmt, FixedPoint):  # one gap everywhere: one branch for the whole tensor
            branch = "wide" if var >= fmt.eps * fmt.eps * 0.25 else "narrow"
    if mu.numel() == 0:
        return mean.detach().clone()
    gap = _vc_gap(mu, torch.sqrt(v), fmt)
    z = _lattice_sample(mu, v, gap, generator, branch)
    if isinstance(fmt, FixedPoint):
        z = torch.clamp(z, fmt.min, fmt.max)  # the lattice is the grid: only saturation remains
    else:
        if isinstance(fmt, FloatFormat):
            z = torch.clamp(z, -fmt.max, fmt.max)  # saturate (never round to inf)
        z = quantize(z, fmt, "stochastic", generator=generator)  # identity on grid points
    return z.to(mean.dtype)
