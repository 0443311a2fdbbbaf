"""Slow, obviously-correct float64 loops that the compiled kernels are tested against.

They follow the kernels step by step (same order, same counter-based random bits
for stochastic rounding) but compute in float64 Python floats, one example and
one coordinate at a time.  A fixed-point model is a list of integer codes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..numbers import _grid
from ..numbers import _reference as numref
from ..numbers.formats import FloatFormat

_M32 = 0xFFFFFFFF
_WEYL = 0x9E3779B9


def random_bits(index: int, seed_lo: int, seed_hi: int) -> int:
    """The 32 counter-based random bits of ``numbers._cpu_ir.random_bits_i32``."""
    def mix(x):
        x &= _M32
        x ^= x >> 16
        x = (x * 0x7FEB352D) & _M32
        x ^= x >> 15
        x = (x * 0x846CA68B) & _M32
        return x ^ (x >> 16)
    h = mix((index & _M32) * 0x9E3779B9 + seed_lo)
    return mix(h ^ (((index >> 32) * 0x85EBCA6B) & _M32) ^ seed_hi)


def dloss(kind: str, s: float, y: float) -> float:
    if kind == "logistic":
        return -y / (1.0 + math.exp(y * s))
    if kind == "squared":
        return s - y
    return -y if y * s < 1 else 0.0


def loss(kind: str, s: float, y: float) -> float:
    if kind == "logistic":
        m = y * s
        return math.log1p(math.exp(-m)) if m > 0 else -m + math.log1p(math.exp(m))
    if kind == "squared":
        return 0.5 * (s - y) ** 2
    return max(0.0, 1.0 - y * s)


def round_nearest(x: float, fmt: FloatFormat | None) -> float:
    """x rounded to nearest in ``fmt`` (None: unchanged), through the portable torch reference."""
    if fmt is None:
        return x
    return _round(x, fmt, 0, 0)


def round_stochastic(x: float, fmt: FloatFormat, rnd: int) -> float:
    """x rounded stochastically in ``fmt`` with the given 32 random bits."""
    return _round(x, fmt, 1, rnd)


def _round(x, fmt, mode, rnd):
    grid = _grid.element_grid(fmt)
    u = torch.tensor([x], dtype=torch.float32).view(torch.int32).to(torch.int64) & _M32
    bits = numref.round_bits(u, mode, torch.tensor([rnd], dtype=torch.int64), False, False, grid.man, grid.emin,
                             grid.k_low, _f32_bits(grid.max_pos), _f32_bits(grid.max_neg), grid.overflow)
    return float(bits.to(torch.int32).view(torch.float32)[0])


def _f32_bits(v: float) -> int:
    return int(np.array([v], dtype=np.float32).view(np.uint32)[0])


def _examples_csr(indptr, indices, values):
    def row(i):
        return [(int(indices[k]), float(values[k])) for k in range(indptr[i], indptr[i + 1])]
    return row


def linear_sgd(row, y, order, w, *, loss_kind="logistic", lr=0.1, lam=0.0, vscale=1.0, fixed=None,
               g_fmt=None, c_fmt=None, seeds=(0, 0), start=0):
    """SGD on a linear model; ``row(i)`` gives example i as (feature, value) pairs.

    ``w``: float model (list of floats) or, with ``fixed=(wstep, wlo, whi, qlo, qhi)``,
    a list of integer codes.  Returns the new model (a new list).
    """
    w = list(w)
    seed_lo, seed_hi = seeds
    done = start
    for i in order:
        x = row(int(i))
        yi = float(y[i])
        if fixed is None:
            s = round_nearest(sum(w[j] * v for j, v in x) * vscale, g_fmt)
            c = -lr * round_nearest(dloss(loss_kind, s, yi), g_fmt) * vscale
            r = random_bits(done, seed_lo, seed_hi)
            for j, v in x:
                r = (r + _WEYL) & _M32
                delta = c * v - lr * lam * w[j]
                w[j] += round_stochastic(delta, c_fmt, r) if c_fmt is not None else delta
        else:
            wstep, wlo, whi, qlo, qhi = fixed
            s = round_nearest(sum(w[j] * v for j, v in x) * wstep * vscale, g_fmt)
            a = -lr * round_nearest(dloss(loss_kind, s, yi), g_fmt) * vscale / wstep
            cf = math.floor(a * 65536 + random_bits(done, seed_lo, seed_hi ^ 0x5BD1E995) / 2**32)
            r = random_bits(done, seed_lo, seed_hi)
            for j, v in x:
                r = (r + _WEYL) & _M32
                u16 = cf * v if isinstance(v, int) else math.floor(a * 65536 * v + 0.5)
                if lam:
                    u16 -= math.floor(lr * lam * 65536 * w[j] + 0.5)
                q = (u16 + (r >> 16)) >> 16
                if q:
                    w[j] = min(max(w[j] + min(max(q, qlo), qhi), wlo), whi)
        done += 1
    return w


def sparse_sgd(indptr, indices, values, y, order, w, **kw):
    """``linear_sgd`` on a CSR dataset (integer ``values`` are fixed-point data codes)."""
    integer = np.issubdtype(np.asarray(values).dtype, np.integer)
    cast = int if integer else float

    def row(i):
        return [(int(indices[k]), cast(values[k])) for k in range(indptr[i], indptr[i + 1])]
    return linear_sgd(row, y, order, w, **kw)


def dense_sgd(X, y, order, w, **kw):
    integer = np.issubdtype(np.asarray(X).dtype, np.integer)
    cast = int if integer else float

    def row(i):
        return [(j, cast(v)) for j, v in enumerate(X[i])]
    return linear_sgd(row, y, order, w, **kw)


def mc_sgd(rows, cols, vals, order, L, R, *, lr=0.05, lam=0.0, vscale=1.0, fixed=None, seeds=(0, 0), start=0):
    """SGD for matrix completion; ``L``, ``R``: lists of lists (floats, or integer codes with ``fixed``)."""
    L = [list(r) for r in L]
    R = [list(r) for r in R]
    seed_lo, seed_hi = seeds
    done = start
    for e in order:
        a, b = int(rows[e]), int(cols[e])
        r = random_bits(done, seed_lo, seed_hi)
        if fixed is None:
            err = sum(la * rb for la, rb in zip(L[a], R[b])) - float(vals[e]) * vscale
            for f in range(len(L[a])):
                la, rb = L[a][f], R[b][f]
                L[a][f] = la - lr * (err * rb + lam * la)
                R[b][f] = rb - lr * (err * la + lam * rb)
        else:
            wstep, wlo, whi, qlo, qhi = fixed
            err = sum(la * rb for la, rb in zip(L[a], R[b])) * wstep * wstep - float(vals[e]) * vscale
            for f in range(len(L[a])):
                la, rb = L[a][f], R[b][f]
                r = (r + _WEYL) & _M32
                ql = math.floor(-lr * (err * rb + lam * la) + r / 2**32)
                r = (r + _WEYL) & _M32
                qr = math.floor(-lr * (err * la + lam * rb) + r / 2**32)
                L[a][f] = min(max(la + min(max(ql, qlo), qhi), wlo), whi)
                R[b][f] = min(max(rb + min(max(qr, qlo), qhi), wlo), whi)
        done += 1
    return L, R


def sparse_objective(indptr, indices, values, y, w, loss_kind="logistic", lam=0.0) -> float:
    total = 0.0
    for i in range(len(y)):
        ks = range(indptr[i], indptr[i + 1])
        s = sum(float(w[indices[k]]) * float(values[k]) for k in ks)
        total += loss(loss_kind, s, float(y[i])) + 0.5 * lam * sum(float(w[indices[k]]) ** 2 for k in ks)
    return total / len(y)


def sync_float(local, base, central, dirty, block, alpha, full):
    """``_replica.sync_float`` in float64: push ``alpha * (local - base)``, read back (lists, in place)."""
    blocks = 0
    for b in range(len(dirty)):
        if not (full or dirty[b]):
            continue
        dirty[b] = 0
        for j in range(b * block, min((b + 1) * block, len(local))):
            if alpha == 1.0 and central[j] == base[j]:
                v = local[j]
            else:
                v = float(np.float32(central[j] + alpha * (local[j] - base[j])))
            central[j] = local[j] = base[j] = v
        blocks += 1
    return blocks


def sync_fixed(local, base, central, dirty, block, scale, full, wlo, whi, clo, chi, counter, seed_lo, seed_hi,
               wide_bits=8):
    """``_replica.sync_fixed`` on Python ints: the wide accumulator gains SR(scale * delta), the
    replica reads back SR(accumulator / 2**wide_bits) (lists, in place)."""
    blocks = 0
    for b in range(len(dirty)):
        if not (full or dirty[b]):
            continue
        dirty[b] = 0
        r = random_bits(counter * len(dirty) + b, seed_lo, seed_hi)
        for j in range(b * block, min((b + 1) * block, len(local))):
            r = (r + _WEYL) & _M32
            add = math.floor((local[j] - base[j]) * scale + r / 2**32)
            central[j] = min(max(central[j] + add, clo), chi)
            r = (r + _WEYL) & _M32
            v = math.floor((central[j] + (r >> (32 - wide_bits))) / 2**wide_bits)
            local[j] = base[j] = min(max(v, wlo), whi)
        blocks += 1
    return blocks
