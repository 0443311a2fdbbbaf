"""The samplers' random numbers inside numba kernels: splitmix64 streams (the project's generator,
:mod:`relaxtorch.mcmc._noise`), uniforms, bounded integers, Poisson draws and alias-table draws.

Each stream is one uint64 state advanced by splitmix64 (Steele, Lea & Flood, OOPSLA 2014): no
allocation, a few integer operations per draw, and the same bits from the kernel and from its
``py_func`` (the plain-Python reference loops call the ``py_func`` of these draws, so a reference
chain and a kernel chain read the same stream).  Poisson: Knuth's product of uniforms below a mean
of 12, else Hörmann's transformed rejection PTRS ("The transformed rejection method for generating
Poisson random variables", Insurance: Mathematics and Economics 1993).
"""
from __future__ import annotations

import math

import numpy as np

from ..._numba import njit
from .._noise import _next

_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53


@njit(nogil=True, cache=True)
def uniform(s):
    """(next state, a uniform double in [0, 1) from 53 bits)."""
    s, z = _next(s)
    return s, np.float64(np.int64(z >> np.uint64(11))) * _DOUBLE


@njit(nogil=True, cache=True)
def below(s, n):
    """(next state, an integer uniform in [0, n)), n < 2**53."""
    s, u = uniform(s)
    k = np.int64(u * n)
    return s, (k if k < n else n - 1)


@njit(nogil=True, cache=True)
def poisson(s, mean):
    """(next state, a Poisson(mean) count); mean >= 0."""
    if mean <= 0.0:
        return s, np.int64(0)
    if mean < 12.0:
        limit = math.exp(-mean)
        k = np.int64(0)
        s, p = uniform(s)
        while p > limit:
            k += 1
            s, u = uniform(s)
            p *= u
        return s, k
    slam = math.sqrt(mean)
    loglam = math.log(mean)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        s, u = uniform(s)
        u -= 0.5
        s, v = uniform(s)
        us = 0.5 - abs(u)
        k = np.int64(math.floor((2.0 * a / us + b) * u + mean + 0.43))
        if us >= 0.07 and v <= vr:
            return s, k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                <= -mean + k * loglam - math.lgamma(k + 1.0)):
            return s, k


@njit(nogil=True, cache=True)
def alias_draw(s, prob, alias, start, size):
    """(next state, an index in [start, start+size)) from the alias columns prob/alias[start:start+size]
    (built by :func:`relaxtorch.mcmc.poisson._vose`; alias entries are relative to start)."""
    s, u = uniform(s)
    t = u * size
    col = np.int64(t)
    if col >= size:
        col = size - 1
    if t - col < prob[start + col]:
        return s, start + col
    return s, start + alias[start + col]


@njit(nogil=True, cache=True)
def categorical(s, logits, k, scratch):
    """(next state, a draw of j < k with P(j) ∝ exp(logits[j])); scratch: float64[>= k]."""
    m = logits[0]
    for j in range(1, k):
        if logits[j] > m:
            m = logits[j]
    total = 0.0
    for j in range(k):
        total += math.exp(logits[j] - m)
        scratch[j] = total
    s, u = uniform(s)
    t = u * total
    for j in range(k - 1):
        if t < scratch[j]:
            return s, np.int64(j)
    return s, np.int64(k - 1)


def seed_state(seed: int) -> np.uint64:
    """A stream's first state from a derived 63-bit seed."""
    return np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
