"""Fused CPU kernels (numba) for the low-precision SGLD update on a FixedPoint grid.

The torch path of :func:`~relaxtorch.mcmc.lp_update` (``vc_quantize`` for VC SGLDLP-L, ``randn``
then ``quantize`` for naive SGLDLP-L and SGLDLP-F) runs some 25 element-wise passes over the
parameters.  For a FixedPoint format (one constant gap, the common case) on float32/float64 CPU
tensors the whole update is one pass per leaf here: the mean θ + (ε/2) g, the Gaussian part and
the discrete rounding step of Zhang, Wilson & De Sa ("Low-Precision Stochastic Gradient Langevin
Dynamics", ICML 2022, Algorithm 2), saturation at the format's range, written as grid values.

The distribution is that of the torch path (``_vc.py``: the same branches, probabilities and
saturation), the bits are not: each call draws **one** seed from the user's ``torch.Generator``
and expands it with counter-based splitmix64 streams: the normals those of ``_noise.py``
(Box–Muller for float32, the ziggurat of Marsaglia & Tsang for float64), the uniforms from two
further streams (53-bit doubles).  Inside a call leaf after leaf continue the counters, so the bits do not depend on
how the parameters are split into leaves of equal order.  The rounding arithmetic runs in float64
(the lattice arithmetic is exact there: the gap is a power of two).  Each kernel's ``py_func`` is
its slow reference.
"""
from __future__ import annotations

import math

import numpy as np

from .._numba import njit
from ._noise import _GOLDEN, _mix, fill_serial

_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53
_U1 = np.uint64(0x3C6EF372FE94F82B)  # stream keys (SHA-2 initial values) for the two uniforms
_U2 = np.uint64(0xA54FF53A5F1D36F1)


@njit(cache=True)
def _u(base, i):
    """Uniform [0, 1) number ``i`` of the counter stream ``base`` (53 bits)."""
    return np.float64(np.int64(_mix(base + np.uint64(i + 1) * _GOLDEN) >> np.uint64(11))) * _DOUBLE


@njit(cache=True)
def vc_fixed(x, g, gscale, half, var, gap, lo_lim, hi_lim, out, mean_out, seed, offset):
    """VC SGLDLP-L on the lattice ``gap * Z`` clamped to [lo_lim, hi_lim], 1-D arrays.

    mean_out[i] = x[i] + half·(gscale·g[i]) (in x's dtype; ``gscale``, ``half`` of that dtype; gscale = 1
    leaves g as it is, the shell passes -N to fold its gradient convention in); out[i] = the grid sample
    of expectation mean and variance ``var`` (max(var, v_sr) below gap²/4).  The wide branch
    (var >= gap²/4) uses one normal (counter stream of ``seed``, written to ``out`` first) and one
    uniform, the narrow one two uniforms.  Non-finite means give NaN.  Returns whether every mean is
    finite, so the caller raises without another pass."""
    n = out.shape[0]
    c = 0.25 * gap * gap
    inv_gap = 1.0 / gap
    inv2 = 1.0 / (2.0 * gap * gap)
    b1 = _mix(seed ^ _U1) + np.uint64(offset) * _GOLDEN
    b2 = _mix(seed ^ _U2) + np.uint64(offset) * _GOLDEN
    bad = 0
    if var >= c:
        fill_serial(out, seed, offset)
        s = math.sqrt(var - c)
        hg = 0.5 * gap
        for i in range(n):
            m = x[i] + half * (gscale * g[i])
            mean_out[i] = m
            bad += not abs(m) < math.inf
            xx = np.float64(m) + s * np.float64(out[i])
            q = np.rint(xx * inv_gap) * gap
            r = xx - q
            a = abs(r)
            pt = (hg + a) * (hg + a) * inv2
            pa = (hg - a) * (hg - a) * inv2
            u = _u(b1, i)
            st = 1.0 if u < pt else (-1.0 if u < pt + pa else 0.0)
            z = q + (st if r >= 0 else -st) * gap
            if not abs(xx) < math.inf:
                z = math.nan
            if z < lo_lim:
                z = lo_lim
            elif z > hi_lim:
                z = hi_lim
            out[i] = z
    else:
        for i in range(n):
            m = x[i] + half * (gscale * g[i])
            mean_out[i] = m
            bad += not abs(m) < math.inf
            t = np.float64(m) * inv_gap
            lo = np.floor(t)
            f = t - lo
            base = lo + (1.0 if _u(b1, i) < f else 0.0)
            p = max(var - f * (1.0 - f) * gap * gap, 0.0) * inv2
            u2 = _u(b2, i)
            st = 1.0 if u2 < p else (-1.0 if u2 < 2.0 * p else 0.0)
            z = (base + st) * gap
            if not abs(t) < math.inf:
                z = math.nan
            if z < lo_lim:
                z = lo_lim
            elif z > hi_lim:
                z = hi_lim
            out[i] = z
    return bad == 0


@njit(cache=True)
def naive_fixed(x, g, gscale, half, sd, gap, lo_lim, hi_lim, out, pos_out, mean_out, seed, offset):
    """Naive SGLDLP-L / SGLDLP-F: y = mean + sd·ξ (the mean of :func:`vc_fixed`; in x's dtype;
    ``half``, ``sd`` of that dtype; no noise drawn when sd = 0), then stochastic rounding of y onto the lattice ``gap * Z``
    clamped to [lo_lim, hi_lim] into ``out``; ``pos_out`` (SGLDLP-F's accumulator, may be
    ``out`` itself for SGLDLP-L, then overwritten by the rounded value) receives y first.
    Returns whether every mean and y is finite."""
    n = out.shape[0]
    inv_gap = 1.0 / gap
    b1 = _mix(seed ^ _U1) + np.uint64(offset) * _GOLDEN
    noisy = sd > 0
    bad = 0
    if noisy:
        fill_serial(out, seed, offset)
    for i in range(n):
        m = x[i] + half * (gscale * g[i])
        mean_out[i] = m
        y = m + sd * out[i] if noisy else m
        pos_out[i] = y
        bad += not (abs(m) < math.inf and abs(y) < math.inf)
        t = np.float64(y) * inv_gap
        lo = np.floor(t)
        z = (lo + (1.0 if _u(b1, i) < t - lo else 0.0)) * gap
        if not abs(t) < math.inf:
            z = math.nan
        if z < lo_lim:
            z = lo_lim
        elif z > hi_lim:
            z = hi_lim
        out[i] = z
    return bad == 0
