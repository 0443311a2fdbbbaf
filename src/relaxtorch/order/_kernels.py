"""Compiled (numba) balancing kernels: one call per step, one loop over its examples inside.

Each kernel updates the sorter's buffers in place.  Signs follow the balancing rule of GraB
(Lu, Guo & De Sa, NeurIPS 2022): the vector ``c`` joins the running sum ``s`` with ``+`` when
``<s, c> <= 0`` (that is ``||s + c|| <= ||s - c||``), else with ``-``; the probabilistic rule
(Alweiss, Liu & Sawhney, STOC 2021) takes ``+`` when ``u <= 1/2 - <s, c> / (2 c_scale)`` for a
uniform ``u``.  Examples already seen this epoch (``seen[j]``) are skipped.  Sums are float64
in index order; dot products float64 in four interleaved partial sums (a fixed order, so the
same bits on every machine, and a dependency chain a quarter as long).  The slow references
are in ``_reference.py``.
"""
from __future__ import annotations

import numpy as np

from .._numba import njit


@njit(cache=True)
def _plus(dot, uniforms, i, c_scale):
    if uniforms.shape[0] == 0:
        return dot <= 0.0
    return uniforms[i] <= 0.5 - dot / (2.0 * c_scale)


@njit(cache=True, inline="always")
def _dot_centered(u, x, y):
    """``Σ_k u[k] (x[k] - y[k])`` in float64: partial sums over k mod 4, added as (0 + 1) + (2 + 3)."""
    d = u.shape[0]
    a0 = a1 = a2 = a3 = 0.0
    k = 0
    while k + 4 <= d:
        a0 += u[k] * (x[k] - y[k])
        a1 += u[k + 1] * (x[k + 1] - y[k + 1])
        a2 += u[k + 2] * (x[k + 2] - y[k + 2])
        a3 += u[k + 3] * (x[k + 3] - y[k + 3])
        k += 4
    while k < d:
        a0 += u[k] * (x[k] - y[k])
        k += 1
    return (a0 + a1) + (a2 + a3)


@njit(cache=True, inline="always")
def _dot(u, x):
    """``Σ_k u[k] x[k]`` in float64, summed as :func:`_dot_centered` (so ``_dot(u, x - y)`` is
    bit for bit ``_dot_centered(u, x, y)``)."""
    d = u.shape[0]
    a0 = a1 = a2 = a3 = 0.0
    k = 0
    while k + 4 <= d:
        a0 += u[k] * x[k]
        a1 += u[k + 1] * x[k + 1]
        a2 += u[k + 2] * x[k + 2]
        a3 += u[k + 3] * x[k + 3]
        k += 4
    while k < d:
        a0 += u[k] * x[k]
        k += 1
    return (a0 + a1) + (a2 + a3)


@njit(cache=True)
def mean_balance_(grads, idx, center, s, next_sum, seen, slots, ptr, uniforms, c_scale):
    """Mean balance: ``c = g - center``; ``+`` sends the example to the front (``slots[ptr[0]]``,
    ascending), ``-`` to the back (``slots[ptr[1]]``, descending).  ``next_sum`` gathers the
    raw gradients for the next stale mean; ``ptr[2]`` counts them."""
    b, d = grads.shape
    c = np.empty(d)  # the centered vector, formed once for the dot product and the update
    for i in range(b):
        j = idx[i]
        if seen[j]:
            continue
        seen[j] = 1
        g = grads[i]
        for k in range(d):
            c[k] = g[k] - center[k]
        dot = _dot(s, c)
        sign = 1.0 if _plus(dot, uniforms, i, c_scale) else -1.0
        for k in range(d):
            s[k] += sign * c[k]
        for k in range(d):
            next_sum[k] += g[k]
        if sign > 0:
            slots[ptr[0]] = j
            ptr[0] += 1
        else:
            slots[ptr[1]] = j
            ptr[1] -= 1
        ptr[2] += 1


@njit(cache=True)
def pair_balance_(grads, idx, s, pending, pending_idx, seen, slots, ptr, uniforms, c_scale):
    """Pair balance: consecutive examples (a, b) pair up across steps; ``c = g_a - g_b``; ``+``
    puts a at the front and b at the back, ``-`` the other way round.  An example waiting for
    its partner sits in ``pending`` / ``pending_idx[0]`` (-1: none)."""
    b, d = grads.shape
    for i in range(b):
        j = idx[i]
        if seen[j]:
            continue
        seen[j] = 1
        if pending_idx[0] < 0:
            for k in range(d):
                pending[k] = grads[i, k]
            pending_idx[0] = j
            continue
        dot = _dot_centered(s, pending, grads[i])
        plus = _plus(dot, uniforms, i, c_scale)
        sign = 1.0 if plus else -1.0
        for k in range(d):
            s[k] += sign * (pending[k] - grads[i, k])
        a = pending_idx[0]
        if plus:
            slots[ptr[0]] = a
            slots[ptr[1]] = j
        else:
            slots[ptr[0]] = j
            slots[ptr[1]] = a
        ptr[0] += 1
        ptr[1] -= 1
        pending_idx[0] = -1


@njit(cache=True)
def recursive_balance_(grads, idx, center, acc, next_sum, seen, group, seq, ptr, depth):
    """Recursive balance: ``c = g - center`` walks down a full binary tree of running sums
    (``acc[node]``, heap layout) from the root, left on ``+`` and right on ``-``; at a leaf it
    lands in the leaf's positives (visit order) or negatives (reverse visit order).
    ``group[j] = 2 * leaf + (sign < 0)`` and ``seq[j]`` record where; ``ptr[0]`` counts."""
    b, d = grads.shape
    for i in range(b):
        j = idx[i]
        if seen[j]:
            continue
        seen[j] = 1
        node = 0
        neg = 0
        for level in range(depth + 1):
            dot = _dot_centered(acc[node], grads[i], center)
            sign = 1.0 if dot <= 0.0 else -1.0
            for k in range(d):
                acc[node, k] += sign * (grads[i, k] - center[k])
            neg = 0 if sign > 0 else 1
            if level < depth:
                node = 2 * node + 1 + neg
        for k in range(d):
            next_sum[k] += grads[i, k]
        leaf = node - ((1 << depth) - 1)
        group[j] = 2 * leaf + neg
        seq[j] = ptr[0]
        ptr[0] += 1


@njit(cache=True)
def herding_order(g):
    """Greedy herding (Welling, ICML 2009; on stale gradients, Lu et al. 2022): visit next the
    row that keeps the running sum of the (centered) rows ``g`` smallest, ``argmin ||s + g_i||``,
    lowest index on ties.  O(m^2 d)."""
    m, d = g.shape
    norms = np.zeros(m)
    dots = np.zeros(m)
    used = np.zeros(m, dtype=np.uint8)
    out = np.empty(m, dtype=np.int64)
    for i in range(m):
        acc = 0.0
        for k in range(d):
            acc += g[i, k] * g[i, k]
        norms[i] = acc
    for t in range(m):
        best = -1
        best_value = np.inf
        for i in range(m):
            if not used[i]:
                value = 2.0 * dots[i] + norms[i]
                if value < best_value:
                    best_value = value
                    best = i
        if best < 0:  # every remaining value is NaN: take the first remaining row
            for i in range(m):
                if not used[i]:
                    best = i
                    break
        used[best] = 1
        out[t] = best
        for i in range(m):
            if not used[i]:
                acc = 0.0
                for k in range(d):
                    acc += g[i, k] * g[best, k]
                dots[i] += acc
    return out


@njit(cache=True)
def take_fresh(seen, idx):
    """Positions in ``idx`` of the examples the kernels above would place (not seen this epoch,
    first occurrence in the step), marking them seen."""
    pos = np.empty(idx.shape[0], dtype=np.int64)
    m = 0
    for i in range(idx.shape[0]):
        j = idx[i]
        if seen[j]:
            continue
        seen[j] = 1
        pos[m] = i
        m += 1
    return pos[:m]


@njit(cache=True)
def center_(dots, gram, vm, mm):
    """In place, for c_k = g_k - m: rows r < R of ``dots`` [R + 1, b], ``<v_r, g_k>``, become
    ``<v_r, c_k>`` and the Gram matrix of the g's that of the c's, given the last row
    ``<m, g_k>``, ``vm[r] = <v_r, m>`` and ``mm = <m, m>``."""
    rows, b = dots.shape[0] - 1, gram.shape[0]
    for r in range(rows):
        for k in range(b):
            dots[r, k] -= vm[r]
    for j in range(b):
        for k in range(b):
            gram[j, k] += mm - dots[rows, j] - dots[rows, k]


@njit(cache=True)
def gram_signs(u, gram, uniforms, c_scale):
    """Signs of a balancing walk over ``m`` vectors known only through ``u[k] = <s0, c_k>`` (the
    running sum before them) and their Gram matrix: vector k's rule sees
    ``<s0 + Σ_{j<k} ε_j c_j, c_k> = u[k] + Σ_{j<k} ε_j gram[j, k]`` (the factored path of
    ``mean_balance_`` and ``pair_balance_``).  O(m²)."""
    m = u.shape[0]
    r = u.copy()
    eps = np.empty(m)
    for k in range(m):
        sign = 1.0 if _plus(r[k], uniforms, k, c_scale) else -1.0
        eps[k] = sign
        for j in range(k + 1, m):
            r[j] += sign * gram[k, j]
    return eps


@njit(cache=True)
def gram_tree_signs(u, gram, depth):
    """``recursive_balance_`` on vectors known through ``u[node, k] = <acc[node], c_k>`` and their
    Gram matrix: returns (weights [nodes, m]: the sign with which vector k joined node's sum, 0 if
    it did not pass there; leaf [m]; negative [m]: the sign at the leaf was ``-``)."""
    nodes, m = u.shape
    r = u.copy()
    weights = np.zeros((nodes, m))
    leaf = np.empty(m, dtype=np.int64)
    negative = np.empty(m, dtype=np.int64)
    for k in range(m):
        node = 0
        neg = 0
        for level in range(depth + 1):
            sign = 1.0 if r[node, k] <= 0.0 else -1.0
            weights[node, k] = sign
            for j in range(k + 1, m):
                r[node, j] += sign * gram[k, j]
            neg = 0 if sign > 0 else 1
            if level < depth:
                node = 2 * node + 1 + neg
        leaf[k] = node - ((1 << depth) - 1)
        negative[k] = neg
    return weights, leaf, negative


@njit(cache=True)
def kron_sketches(dzs, inputs, ps, qs, q_biases, scale, z):
    """The Kronecker sketches of ``nn.Linear`` layers' per-example gradients, one layer after
    another along ``z``'s columns: layer l's gradient of example i, ``scale · δ_i [a_i, 1]ᵀ``,
    becomes ``(scale · δ_i p) ⊗ (a_i q + q_bias)``, row-major (``p`` [o, k1], ``q`` [in, k2],
    ``q_bias`` [k2]: the map's bias column, zeros for a layer without one; a bias-only block
    passes ``a`` [b, 0], ``q`` [0, 1] and ``q_bias = [1]``).  The products are BLAS calls, so a
    step costs O(b (o k1 + in k2 + k1 k2)) a layer and no per-example gradient is formed.
    Arithmetic in ``z``'s dtype: each factor rounded once, then their product."""
    b = z.shape[0]
    s = z.dtype.type(scale)
    col = 0
    for layer in range(len(dzs)):
        p, q, q_bias = ps[layer], qs[layer], q_biases[layer]
        k1, k2 = p.shape[1], q.shape[1]
        u = np.dot(dzs[layer], p)
        if q.shape[0]:
            v = np.dot(inputs[layer], q)
        else:
            v = np.zeros((b, k2), dtype=z.dtype)
        for i in range(b):
            vi = v[i]
            for c in range(k2):
                vi[c] += q_bias[c]
            for r in range(k1):
                ur = s * u[i, r]
                zi = z[i, col + r * k2:col + (r + 1) * k2]
                for c in range(k2):
                    zi[c] = ur * vi[c]
        col += k1 * k2
