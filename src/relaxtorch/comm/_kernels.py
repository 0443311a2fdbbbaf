"""Compiled CPU kernels for the compressors' hot paths (numba: nopython, nogil, serial).

Each kernel does in one pass what its torch reference (in the module that calls it) does in
several, and gives the same bits: ``tests/comm/test_kernels.py`` compares the two.  They are
serial on purpose: the ranks of a job already share the cores (no numba thread pool is
started), and ``nogil`` lets CocktailSGD's exchange thread run one while the main thread
computes.  They are compiled in each process, not loaded from numba's disk cache (whose index
numba unpickles; no rank unpickles anything): ``warm()`` compiles them all once (a few
seconds), so CocktailSGD's constructor, not its first step, pays for it.

Bit streams follow :mod:`._bits`: code ``i`` of ``width`` bits occupies stream bits
``i*width .. i*width+width-1``, bit 0 of a byte first.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from numba import njit

_jit = njit(nogil=True)  # no cache=True: numba unpickles its cache index, and ranks unpickle nothing


_enabled = True


@contextlib.contextmanager
def disabled():
    """Run the torch references instead of the kernels (benchmarks and tests compare the two)."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved


def enabled() -> bool:
    return _enabled


def cpu_f32(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the compiled path (a CPU float32 tensor, kernels not disabled)."""
    return _enabled and x.device.type == "cpu" and x.dtype == torch.float32


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


@_jit
def _splitmix(state):
    """splitmix64: the next state and its 64-bit output."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return state, z ^ (z >> np.uint64(31))


@_jit
def permutation(seed, n, k, out):
    """The first ``k`` entries of a uniformly random permutation of ``0..n-1`` (n < 2**32) into
    ``out[:k]`` (``out`` has n entries; ``k = n`` for all of it): Fisher-Yates (Durstenfeld's
    forward form: position i swaps with a uniform j in ``i..n-1``), driven by splitmix64 from
    ``seed`` and bounded without bias by Lemire's multiply-and-reject on 32-bit draws.  The
    first k entries do not depend on how many more are drawn."""
    for i in range(n):
        out[i] = i
    state = np.uint64(seed)
    for i in range(min(k, n - 1)):
        bound = np.uint64(n - i)
        state, z = _splitmix(state)
        m = (z >> np.uint64(32)) * bound
        low = m & _LOW32
        if low < bound:
            floor = (np.uint64(1 << 32) - bound) % bound
            while low < floor:
                state, z = _splitmix(state)
                m = (z >> np.uint64(32)) * bound
                low = m & _LOW32
        j = i + np.int64(m >> np.uint64(32))
        tmp = out[i]
        out[i] = out[j]
        out[j] = tmp


@_jit
def _bounded(state, r, bound):
    """``r`` (a 32-bit draw) bounded to ``0..bound-1`` without bias (Lemire's multiply and
    reject; a rejected draw is replaced by the high half of the next splitmix64 output)."""
    m = r * bound
    low = m & _LOW32
    if low < bound:
        floor = (np.uint64(1 << 32) - bound) % bound
        while low < floor:
            state, z = _splitmix(state)
            m = (z >> np.uint64(32)) * bound
            low = m & _LOW32
    return state, np.int64(m >> np.uint64(32))


@_jit
def window_labels(seed, nwin, k, labels):
    """A uniformly random assignment of ``labels.shape[0]`` positions to ``nwin`` windows of
    ``k`` each, the ``n - nwin*k`` left over labelled ``nwin``: the labels
    ``0..0, 1..1, ..., nwin..`` shuffled by Fisher-Yates (as :func:`permutation`, but each
    splitmix64 output gives two 32-bit draws, high half first).  The same partition as the
    windows of a random permutation, in distribution, at half the draws and on one byte per
    position (a shuffle that stays in cache)."""
    n = labels.shape[0]
    for j in range(nwin):
        for i in range(j * k, (j + 1) * k):
            labels[i] = j
    for i in range(nwin * k, n):
        labels[i] = nwin
    state = np.uint64(seed)
    i = 0
    while i < n - 1:
        state, z = _splitmix(state)
        for half in range(2):
            if i >= n - 1:
                break
            r = (z >> np.uint64(32)) if half == 0 else (z & _LOW32)
            state, d = _bounded(state, r, np.uint64(n - i))
            j = i + d
            tmp = labels[i]
            labels[i] = labels[j]
            labels[j] = tmp
            i += 1


@_jit
def deal_labels(labels, out):
    """``out[j]`` = the positions labelled ``j``, ascending (``out`` has a row per label, the
    last one for the positions left over; each row as long as its label's count)."""
    fill = np.zeros(out.shape[0], np.int64)
    for pos in range(labels.shape[0]):
        j = labels[pos]
        out[j, fill[j]] = pos
        fill[j] += 1


def sorted_windows(perm: np.ndarray, nwin: int, k: int, out: np.ndarray) -> None:
    """``out[j]`` = positions ``perm[j*k:(j+1)*k]`` in ascending order: each position marked
    with its window, then one pass in position order deals them out (no sort)."""
    window = np.empty(perm.shape[0], np.uint8 if nwin < 255 else np.uint32)  # unsigned: no wraparound checks
    _deal_windows(perm, nwin, k, window, out)


@_jit
def _deal_windows(perm, nwin, k, window, out):
    window[:] = nwin
    for j in range(nwin):
        for i in range(j * k, (j + 1) * k):
            window[perm[i]] = j
    fill = np.zeros(nwin, np.int64)
    for pos in range(perm.shape[0]):
        j = window[pos]
        if j < nwin:
            out[j, fill[j]] = pos
            fill[j] += 1


@_jit
def _key(bits):
    """The bits of ``|x|`` as uint32, which order as ``|x|`` does, every NaN one key above +inf
    (``torch.sort`` ties NaNs and puts them above inf)."""
    key = bits & np.uint32(0x7FFFFFFF)
    return np.uint32(0x7FC00000) if key > np.uint32(0x7F800000) else key


@_jit
def magnitude_keys(x, keys):
    """``keys[i] = _key(x[i])`` for every element."""
    bits = x.view(np.uint32)
    for i in range(x.shape[0]):
        keys[i] = _key(bits[i])


@_jit
def _select_level(keys, count, shift, nbins, k):
    """Histogram of ``(key >> shift) & (nbins - 1)`` over ``keys[:count]``; returns the bin
    holding the ``k``-th largest, how many keys lie in higher bins and how many in it."""
    hist = np.zeros(nbins, np.int64)
    mask = np.uint32(nbins - 1)
    for i in range(count):
        hist[(keys[i] >> np.uint32(shift)) & mask] += 1
    b, above = nbins - 1, 0
    while above + hist[b] < k:
        above += hist[b]
        b -= 1
    return b, above, hist[b]


@_jit
def kth_largest_key(x, k):
    """The ``k``-th largest magnitude key (:func:`_key`) of ``x`` (1 <= k <= n), how many keys
    lie above it and how many equal it: a radix select on the 31-bit keys (10, 11 and 10 bits), one histogram
    pass over ``x`` (four interleaved histograms, so runs of keys in one bin do not wait on
    each other's increments), one pass taking the keys of the threshold's bin, then the same
    on those candidates (linear in n whatever the ties, where a partition degrades on repeated
    keys)."""
    n = x.shape[0]
    bits = x.view(np.uint32)
    hist4 = np.zeros((4, 1024), np.int32)
    s21 = np.uint32(21)
    quads = n >> 2
    for q in range(quads):
        i = q << 2
        hist4[0, _key(bits[i]) >> s21] += 1
        hist4[1, _key(bits[i + 1]) >> s21] += 1
        hist4[2, _key(bits[i + 2]) >> s21] += 1
        hist4[3, _key(bits[i + 3]) >> s21] += 1
    for i in range(quads << 2, n):
        hist4[0, _key(bits[i]) >> s21] += 1
    b, above = 1023, 0
    while True:
        inside = np.int64(hist4[0, b]) + hist4[1, b] + hist4[2, b] + hist4[3, b]
        if above + inside >= k:
            break
        above += inside
        b -= 1
    cand = np.empty(inside + 1, np.uint32)  # branch-free: each key written, kept if in bin b
    count = 0
    ub = np.uint32(b)
    for i in range(n):
        key = _key(bits[i])
        cand[count] = key
        count += np.int64((key >> s21) == ub)
    prefix = ub << s21
    b, more, inside = _select_level(cand, count, 10, 2048, k - above)
    above += more
    prefix |= np.uint32(b) << np.uint32(10)
    kept = 0
    ub = np.uint32(b)
    for i in range(count):  # in place: slot kept <= i
        key = cand[i]
        cand[kept] = key
        kept += np.int64(((key >> np.uint32(10)) & np.uint32(2047)) == ub)
    b, more, inside = _select_level(cand, kept, 0, 1024, k - above)
    return prefix | np.uint32(b), above + more, inside


def topk_select(x: np.ndarray, k: int, mask: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """The ``k`` (>= 1) largest ``|x|`` (NaN largest; ties: lowest positions first), in position
    order: positions into ``idx`` (if not empty), values into ``values``, and (if ``mask`` is
    not empty) the packed bitmask of the positions into ``mask``.  The threshold is a radix
    select (:func:`kth_largest_key`), then one pass takes the elements."""
    _topk_take(x, k, mask, idx, values)


@_jit
def _topk_take(x, k, mask, idx, values):
    """Branch-free, eight elements (one mask byte) at a time: every element is written at slot
    ``j`` of a scratch of k + 8 slots and ``j`` moves on when it is taken; the loop ends at the
    byte holding the k-th."""
    n = x.shape[0]
    t, above, equal = kth_largest_key(x, k)
    ties = k - above  # keys equal to t that fit, lowest positions first
    t = np.int64(t)
    if ties == equal:  # all of them: no count to carry from element to element
        t -= 1
        ties = 0
    bits = x.view(np.uint32)
    want_idx, want_mask = idx.shape[0] > 0, mask.shape[0] > 0
    slot_v = np.empty(k + 8, np.float32)
    slot_i = np.empty(k + 8 if want_idx else 0, np.int64)
    if want_mask:
        mask[:] = 0
    j = 0
    for byte in range((n + 7) >> 3):
        base = byte << 3
        m = 0
        if base + 8 <= n and ties == 0:  # the common case: eight fixed steps, no tie count
            for u in range(8):
                take = np.int64(np.int64(_key(bits[base + u])) > t)
                slot_v[j] = x[base + u]
                if want_idx:
                    slot_i[j] = base + u
                j += take
                m |= take << u
        else:
            for u in range(min(8, n - base)):
                key = np.int64(_key(bits[base + u]))
                tie = np.int64(key == t) & np.int64(ties > 0)
                take = np.int64(key > t) | tie
                ties -= tie
                slot_v[j] = x[base + u]
                if want_idx:
                    slot_i[j] = base + u
                j += take
                m |= take << u
        if want_mask:
            mask[byte] = np.uint8(m)
        if j >= k:
            break
    values[:] = slot_v[:k]
    if want_idx:
        idx[:] = slot_i[:k]


@_jit
def mask_scatter(mask, values, out):
    """``out[i] = values[j]`` for the ``j``-th set bit ``i`` of the packed bitmask, else 0
    (branch-free: a bitmask of random positions defeats branch prediction; a byte at a time,
    its eight bits unrolled, and an all-zero byte as eight zeros)."""
    n, k = out.shape[0], values.shape[0]
    if k == 0:
        out[:] = 0
        return
    j = 0
    zero = np.float32(0.0)
    last = k - 1
    full = n >> 3
    for b in range(full):
        m = np.int64(mask[b])
        base = b << 3
        if m == 0:
            for t in range(8):
                out[base + t] = zero
            continue
        for t in range(8):
            bit = (m >> t) & 1
            v = values[min(j, last)]
            out[base + t] = v if bit else zero
            j += bit
    for i in range(full << 3, n):
        bit = (np.int64(mask[i >> 3]) >> (i & 7)) & 1
        v = values[min(j, last)]
        out[i] = v if bit else zero
        j += bit


@_jit
def gather(src, idx, out):
    """``out[i] = src[idx[i]]``."""
    for i in range(idx.shape[0]):
        out[i] = src[idx[i]]


@_jit
def add_gathered(x, src, idx):
    """``x[i] += src[idx[i]]`` (``x += src[idx]``, without the gathered copy)."""
    for i in range(idx.shape[0]):
        x[i] += src[idx[i]]


@_jit
def scatter(dst, idx, values):
    """``dst[idx[i]] = values[i]`` (positions distinct)."""
    for i in range(idx.shape[0]):
        dst[idx[i]] = values[i]


@_jit
def _put(stream, i, width, code):
    pos = i * width
    b, sh = pos >> 3, pos & 7
    v = np.int64(code) << sh
    nbytes = stream.shape[0]
    while v and b < nbytes:
        stream[b] |= np.uint8(v & 0xFF)
        v >>= 8
        b += 1


@_jit
def _get(stream, i, width):
    pos = i * width
    b, sh = pos >> 3, pos & 7
    v = np.int64(0)
    got = 0
    nbytes = stream.shape[0]
    while got < sh + width and b < nbytes:
        v |= np.int64(stream[b]) << got
        got += 8
        b += 1
    return (v >> sh) & ((np.int64(1) << width) - 1)


@_jit
def qsgd_encode(x, noise, bucket, bits, stochastic, stream, scales, decoded):
    """QSGD in one pass per bucket: scale ``max|x|`` (NaN for a bucket holding a non-finite
    value: its codes are zero), ``x / (scale/L)`` rounded (stochastically with ``noise``, else
    half to even), clamped to ``[-L, L]``, shifted by ``L`` and packed into ``stream``; the
    values the receivers decode go to ``decoded`` (if not empty).  float32 throughout, the
    same operations as the torch reference."""
    n = x.shape[0]
    L = (1 << (bits - 1)) - 1
    fl = np.float32(L)
    stream[:] = 0
    one = np.float32(1.0)
    for b in range(scales.shape[0]):
        lo = b * bucket
        hi = min(n, lo + bucket)
        s = np.float32(0.0)
        finite = True
        for i in range(lo, hi):
            a = abs(x[i])
            if not np.isfinite(a):
                finite = False
            elif a > s:
                s = a
        if not finite:
            scales[b] = np.float32(np.nan)
            for i in range(lo, hi):
                _put(stream, i, bits, L)
                if decoded.shape[0]:
                    decoded[i] = np.float32(np.nan)
            continue
        scales[b] = s
        unit = s / fl
        div = unit if unit > 0 else one
        for i in range(lo, hi):
            y = x[i] / div
            if stochastic:
                y = np.floor(y + noise[i])
            else:
                y = np.rint(y)
            if y > fl:
                y = fl
            elif y < -fl:
                y = -fl
            _put(stream, i, bits, np.int64(y) + L)
            if decoded.shape[0]:
                decoded[i] = y * unit


@_jit
def qsgd_decode(stream, scales, bucket, bits, out):
    """``out[i] = (code_i - L) * (scale/L)`` for the codes packed in ``stream``."""
    n = out.shape[0]
    L = (1 << (bits - 1)) - 1
    fl = np.float32(L)
    for b in range(scales.shape[0]):
        unit = scales[b] / fl
        for i in range(b * bucket, min(n, (b + 1) * bucket)):
            out[i] = np.float32(_get(stream, i, bits) - L) * unit


@_jit
def gather_delta(param, offset, anchor, pos, out):
    """``out[i] = param[pos[i] - offset] - anchor[pos[i]]`` (the model delta at flat positions)."""
    for i in range(pos.shape[0]):
        p = pos[i]
        out[i] = param[p - offset] - anchor[p]


@_jit
def apply_update(param, offset, anchor, pos, update, sent):
    """``anchor[pos] += update`` and ``param[pos - offset] += update - sent`` (positions distinct).

    Zero terms are skipped (most are: each side keeps only its top-K of the subset), so the
    cache lines of the model holding none are not touched; the sums are the same, save that
    an entry -0.0 stays -0.0 where adding +0.0 would have made it +0.0 (equal values)."""
    for i in range(pos.shape[0]):
        u = update[i]
        d = u - sent[i]
        if u != 0:
            anchor[pos[i]] += u
        if d != 0:
            param[pos[i] - offset] += d


@_jit
def apply_and_gather(param, offset, anchor, apos, update, sent, gpos, out):
    """:func:`apply_update` at ``apos`` then :func:`gather_delta` at ``gpos``, merged in position
    order (both sorted), so each cache line of the model is read once for both; at a position
    in both lists the update comes first, as when the two run one after the other."""
    na, ng = apos.shape[0], gpos.shape[0]
    i = j = 0
    while i < na or j < ng:
        if j >= ng or (i < na and apos[i] <= gpos[j]):
            u = update[i]
            d = u - sent[i]
            if u != 0:
                anchor[apos[i]] += u
            if d != 0:
                param[apos[i] - offset] += d
            i += 1
        else:
            g = gpos[j]
            out[j] = param[g - offset] - anchor[g]
            j += 1


_WARM = False


def warm() -> None:
    """Compile every kernel for the types the compressors use (once per process, a few seconds)."""
    global _WARM
    if _WARM:
        return
    f, u8, i64 = np.float32, np.uint8, np.int64
    permutation(1, 5, 5, np.empty(5, np.int32))  # int64 (over 2**31 elements) compiles when needed
    pos = np.arange(2, dtype=np.int64)
    gather_delta(np.ones(3, f), 1, np.ones(3, f), pos + 1, np.empty(2, f))
    apply_update(np.ones(3, f), 1, np.ones(3, f), pos + 1, np.ones(2, f), np.ones(2, f))
    apply_and_gather(np.ones(3, f), 1, np.ones(3, f), pos + 1, np.ones(2, f), np.ones(2, f), pos + 1, np.empty(2, f))
    out = np.empty((2, 2), np.int32)
    sorted_windows(np.arange(5, dtype=np.int32), 2, 2, out)
    labels = np.empty(5, np.uint8)
    window_labels(1, 2, 2, labels)
    deal_labels(labels, np.empty((3, 2), np.int32))
    x = np.arange(5, dtype=f)
    for m in (np.empty(1, u8), np.empty(0, u8)):
        for ix in (np.empty(2, i64), np.empty(0, i64)):
            topk_select(x, 2, m, ix, np.empty(2, f))
    mask_scatter(np.ones(1, u8), x, np.empty(5, f))
    gather(x, pos, np.empty(2, f))
    add_gathered(np.ones(2, f), x, pos)
    scatter(np.ones(5, f), pos, np.ones(2, f))
    for stochastic in (True, False):
        qsgd_encode(x, x, 2, 4, stochastic, np.empty(3, u8), np.empty(3, f), np.empty(5, f))
        qsgd_encode(x, x, 2, 4, stochastic, np.empty(3, u8), np.empty(3, f), np.empty(0, f))
    qsgd_decode(np.zeros(3, u8), np.ones(3, f), 2, 4, np.empty(5, f))
    _WARM = True
