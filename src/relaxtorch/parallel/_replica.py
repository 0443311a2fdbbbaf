"""Model replication (DimmWitted, Zhang & Ré, VLDB 2014): one private model per worker.

With ``replication="per-worker"`` every worker runs the unchanged compiled kernel on
its own private copy of the model (process-local memory: no cache line is shared
while it trains) and, every ``sync_every`` of its updates and at the end of each
epoch, pushes what it changed into the central model and reads the central model
back.  The push is a *delta* into a shared accumulator, so workers never wait for
each other:

    d = local - base            (what this worker did since its last read-back)
    central += alpha * d        (alpha = 1: "sum", alpha = 1/workers: "average")
    local = base = central      (read back, including the other workers' pushes)

``merge="sum"`` adds every worker's progress in full (Hogwild! with a bounded
delay of about ``sync_every`` updates per worker); ``merge="average"`` is
DimmWitted's model averaging (each worker's step counts ``1/workers``).

``sync="full"`` (the default) pushes the whole model (dense problems always do);
``sync="touched"`` pushes only the blocks of coordinates the worker wrote since
the last sync: 64-byte cache lines for linear models, which the sparse kernel
marks itself as it writes them (``dirty`` argument; a separate pass over the
examples' indices cost 20-120% of the kernel), and factor rows for matrix
completion, marked from the examples processed.  Marking costs the sparse kernel
4-22%, and on the benchmark's problems an interval of 16384 updates or more
touches nearly every line, so "full" is the faster scheme there.

A replica's kernel runs with no other writers (``writers = 0``): it never reads
another worker's update counter, whose cache line would otherwise move between
the cores every few updates.

A fixed-point (Buckwild!) replica keeps its ``M``-bit codes, so the kernels run as
before; the central model is a wider accumulator with 8 more fraction bits
(int16 codes of ``FixedPoint(16, fl + 8)`` for an 8-bit model, int32 of
``FixedPoint(24, fl + 8)`` for a 16-bit one; the same range), the integer delta is
added exactly ("sum") or scaled and rounded stochastically ("average"), and the
read-back rounds the accumulator stochastically to the replica's grid, so neither
step is biased and no fraction is lost in the accumulator.

With one worker and ``merge="sum"`` a sync reproduces the replica exactly (float:
the central value is replaced by the local one when nobody else changed it;
fixed point: integer arithmetic), so ``per-worker`` at ``sync_every=1`` trains
bit for bit like ``shared``.  Concurrent pushes to one coordinate are not atomic
(like Hogwild!'s writes): a push can be lost only while two syncs overlap on it.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .._numba import njit
from ..numbers._cpu_ir import random_bits_i32
from ..numbers.formats import FixedPoint
from . import _kernels as K
from ._kernels import _nz
from .shared import code_range

REPLICATIONS = ("shared", "per-worker")
SYNCS = ("touched", "full")
MERGES = ("sum", "average")
WIDE_BITS = 8  # extra fraction bits of the central accumulator of a fixed-point model
_WIDE = {8: (16, torch.int16), 16: (24, torch.int32)}

# per-worker row of the shared sync statistics (int64, one 64-byte line per worker)
S_SYNCS, S_BLOCKS, S_LAG_SUM, S_LAG_MAX, S_NS, S_CPU_NS, SSTRIDE = 0, 1, 2, 3, 4, 5, 8

_M32 = np.uint64(0xFFFFFFFF)
_WEYL = np.uint64(0x9E3779B9)


def wide_format(fmt: FixedPoint) -> FixedPoint:
    """The central accumulator's format: same range, ``WIDE_BITS`` more fraction bits."""
    return FixedPoint(_WIDE[fmt.wl][0], fmt.fl + WIDE_BITS)


# ---- compiled marking and syncing --------------------------------------------------------

@njit(nogil=True, cache=True)
def mark_sparse(indptr, indices, values, order, dirty, shift):
    """dirty[j >> shift] = 1 for every feature j of the examples in ``order``."""
    for t in range(order.size):
        i = np.uint64(order[t])
        for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            dirty[_nz(indices, values, k)[0] >> np.uint32(shift)] = 1


@njit(nogil=True, cache=True)
def mark_rows(index, order, dirty):
    """dirty[index[e]] = 1 for every entry e in ``order`` (matrix-completion factor rows)."""
    for t in range(order.size):
        dirty[index[order[t]]] = 1


@njit(nogil=True, cache=True)
def sync_float(local, base, central, dirty, block, alpha, full):
    """Push ``alpha * (local - base)`` into ``central`` for the dirty blocks, read back.

    Returns the number of blocks synced.  With ``alpha == 1`` and no other writer
    (``central == base``) the central value becomes the local one exactly.  A run of
    consecutive dirty blocks is one loop with unsigned indices (no negative-index
    wrap checks), which the compiler vectorises: 0.4 ns per coordinate against 1.3 ns
    block by block with signed indices (same results, bit for bit)."""
    n = local.size
    done = 0
    exact = alpha == 1.0
    a = np.float64(alpha)
    nb = dirty.size
    b = 0
    while b < nb:
        if not (full or dirty[b] != 0):
            b += 1
            continue
        e = b
        while e < nb and (full or dirty[e] != 0):
            dirty[e] = 0
            e += 1
        for j in range(np.uint64(b * block), np.uint64(min(e * block, n))):
            c, loc, s = central[j], local[j], base[j]
            # in float64, rounded once to float32: the float64 reference's value
            v = loc if (exact and c == s) else np.float32(np.float64(c) + a * (np.float64(loc) - np.float64(s)))
            central[j] = v
            local[j] = v
            base[j] = v
        done += e - b
        b = e
    return done


@njit(nogil=True, cache=True)
def sync_fixed(local, base, central, dirty, block, scale, full, wlo, whi, clo, chi, counter, seed_lo, seed_hi):
    """Fixed point: ``central += SR(scale * (local - base))`` in the wide accumulator (``scale`` is
    ``2**WIDE_BITS * alpha``), then ``local = base = SR(central / 2**WIDE_BITS)``; SR is stochastic
    rounding with counter-based bits.  Returns the number of blocks synced.

    The Weyl sequence of each block is in closed form (element m of a block uses
    ``r0 + (2m + 1) W`` for the push, ``r0 + (2m + 2) W`` for the read-back), so the loop
    has no carried dependency and vectorises; with ``scale == 2**WIDE_BITS`` ("sum") the
    push is the exact integer ``d << WIDE_BITS`` (floor(256 d + u) for u in [0, 1), exact in
    float64).  Same bits as the sequential form."""
    n = local.size
    done = 0
    sh = np.int64(WIDE_BITS)
    exact = scale == np.float64(1 << WIDE_BITS)
    w2 = np.uint64(2) * _WEYL
    for b in range(dirty.size):
        if full or dirty[b] != 0:
            dirty[b] = 0
            lo = b * block
            m_end = np.uint64(min(lo + block, n) - lo)
            r0 = np.uint64(random_bits_i32(np.int64(counter) * np.int64(dirty.size) + b, seed_lo, seed_hi))
            for m in range(np.uint64(0), m_end):  # unsigned: no negative-index checks
                j = np.uint64(lo) + m
                d = np.int64(local[j]) - np.int64(base[j])
                if exact:
                    add = d << sh
                else:
                    r = (r0 + m * w2 + _WEYL) & _M32
                    add = np.int64(np.floor(np.float64(d) * scale + np.float64(r) * (1.0 / 4294967296.0)))
                c = min(max(np.int64(central[j]) + add, clo), chi)
                central[j] = c
                r = (r0 + m * w2 + w2) & _M32
                v = min(max((c + np.int64(r >> np.uint64(32 - WIDE_BITS))) >> sh, wlo), whi)
                local[j] = v
                base[j] = v
            done += 1
    return done


@njit(nogil=True, cache=True)
def read_fixed(central, out, wlo, whi, counter, seed_lo, seed_hi):
    """out = SR(central / 2**WIDE_BITS), clamped: a replica's first read-back."""
    sh = np.int64(WIDE_BITS)
    r = np.uint64(random_bits_i32(np.int64(counter), seed_lo, seed_hi))
    for j in range(central.size):
        r = (r + _WEYL) & _M32
        out[j] = min(max((np.int64(central[j]) + np.int64(r >> np.uint64(32 - WIDE_BITS))) >> sh, wlo), whi)


# ---- the parent's side --------------------------------------------------------------------

def check(replication, sync_every, sync, merge, kind) -> None:
    """Validate the replication options (``ValueError`` naming the option)."""
    if replication not in REPLICATIONS:
        raise ValueError(f"Invalid replication: {replication!r} (must be one of {REPLICATIONS})")
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"Invalid sync_every: {sync_every!r} (must be an int >= 1: updates per worker between syncs)")
    if sync not in SYNCS:
        raise ValueError(f"Invalid sync: {sync!r} (must be one of {SYNCS})")
    if merge not in MERGES:
        raise ValueError(f"Invalid merge: {merge!r} (must be one of {MERGES})")
    if replication == "per-worker" and kind == "torch":
        raise ValueError("Invalid replication: 'per-worker' (torch models train on the shared parameters; "
                         "use a sparse, dense or matrix-completion problem)")


def replicate(prepared, workers: int, sync_every: int, sync: str, merge: str):
    """Turn a prepared shared-model run into a per-worker one (in place; returns it).

    A fixed-point central model becomes the wide accumulator (codes << WIDE_BITS, the
    same values); ``prepared.formats`` then describes it and ``extra["replica_formats"]``
    keeps the replicas' formats.  The spec gains ``replica`` (what the workers need)."""
    alpha = 1.0 if merge == "sum" else 1.0 / workers
    replica_formats = dict(prepared.formats)
    for name in prepared.model_names:
        fmt = prepared.formats[name]
        if fmt is None:
            continue
        wide = wide_format(fmt)
        codes = prepared.tensors[name].to(torch.int64) << WIDE_BITS
        t = torch.empty(codes.shape, dtype=_WIDE[fmt.wl][1]).share_memory_()
        t.copy_(codes)
        prepared.tensors[name] = t
        prepared.formats[name] = wide
    kind = prepared.kind
    blocks = {}
    for name in prepared.model_names:
        t = prepared.tensors[name]
        if kind == "sparse" and sync == "touched":
            # one 64-byte line of the replica's codes: 16 float32, 64 int8, 32 int16
            fmt = replica_formats[name]
            shift = {None: 4, 8: 6, 16: 5}[fmt.wl if fmt is not None else None]
            blocks[name] = ("sparse", 1 << shift, shift)
        elif kind == "mc" and sync == "touched":
            blocks[name] = ("rows", t.shape[1], 0)
        else:
            blocks[name] = ("full", max(1, min(t.numel(), 4096)), 0)
    prepared.extra["replica_formats"] = replica_formats
    prepared.tensors["replica:stats"] = torch.zeros((workers, SSTRIDE), dtype=torch.int64).share_memory_()
    prepared.spec["replica"] = dict(sync_every=sync_every, sync=sync, merge=merge, alpha=alpha, blocks=blocks,
                                    formats=replica_formats)
    return prepared


def stats(prepared, n: int) -> dict:
    """What the workers' syncs did: counts, blocks pushed, wall and CPU time, and the view lag
    (the other workers' updates a replica had not seen when it pushed)."""
    rows = prepared.tensors["replica:stats"].numpy()[:n]
    syncs = int(rows[:, S_SYNCS].sum())
    return {"syncs": syncs, "blocks": int(rows[:, S_BLOCKS].sum()),
            "seconds": float(rows[:, S_NS].sum()) / 1e9, "cpu_seconds": float(rows[:, S_CPU_NS].sum()) / 1e9,
            "lag_mean": float(rows[:, S_LAG_SUM].sum()) / syncs if syncs else 0.0,
            "lag_max": int(rows[:, S_LAG_MAX].max()) if n else 0}


# ---- the worker's side --------------------------------------------------------------------

class Replicated:
    """Wraps a worker's kernel runner: the kernel writes a private replica, synced every
    ``sync_every`` updates, at each epoch's end and when the worker stops."""

    _ROWS = {"L": "rows", "R": "cols"}

    def __init__(self, runner, spec, tensors, ctl, wid, nworkers, seed):
        from .._seeding import derive
        rep = spec["replica"]
        self.inner, self.ctl, self.wid, self.nworkers = runner, ctl, wid, nworkers
        self.every, self.alpha = rep["sync_every"], rep["alpha"]
        self.names = spec["model_names"]
        self.stats = tensors["replica:stats"].numpy()[wid]
        s = derive(seed, "replica rounding", wid)
        self.seed_lo, self.seed_hi = s & 0xFFFFFFFF, (s >> 32) & 0xFFFFFFFF
        self.counter = 0
        self.central = tuple(tensors[n].numpy() for n in self.names)
        self.items = []  # (central, local, base, dirty, block, how, shift, format)
        for name, central in zip(self.names, self.central):
            how, block, shift = rep["blocks"][name]
            fmt = rep["formats"][name]
            flat_c = central.reshape(-1)
            if fmt is None:
                local = flat_c.copy()
            else:
                local = np.empty(flat_c.size, np.int8 if fmt.wl == 8 else np.int16)
                read_fixed(flat_c, local, *code_range(fmt), self._next(), self.seed_lo, self.seed_hi)
            nblocks = -(-flat_c.size // block)
            self.items.append((flat_c, local, local.copy(), np.zeros(nblocks, np.uint8), block, how, shift, fmt))
        # the kernel computes on the replicas (same shapes as the central model); no other worker
        # writes them, so it never reads another worker's counters (their cache lines stay put)
        runner.model = tuple(it[1].reshape(c.shape) for it, c in zip(self.items, self.central))
        runner.writers = 0
        self.kernel_marks = False
        if len(self.items) == 1 and self.items[0][5] == "sparse":
            # the sparse kernel marks the blocks it writes itself, while the row is in L1: a separate
            # pass over the examples' indices cost 20% (streaming) to 55% (random order) of the kernel
            runner.post = (self.items[0][3],)
            runner.ip[K.I_MARK] = self.items[0][6]
            self.kernel_marks = True
        self.pre = {n: tensors[n].numpy() for n in ("indptr", "indices", "values", "rows", "cols") if n in tensors}
        self.since = 0
        self.seen = self._others()
        self.fmt_params = [code_range(f) + code_range(FixedPoint(_WIDE[f.wl][0], f.fl + WIDE_BITS))
                           if f is not None else None for f in rep["formats"].values()]

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _others(self) -> int:
        rows = self.ctl[: self.nworkers * K.STRIDE].reshape(self.nworkers, K.STRIDE)[:, K.UPDATES]
        return int(rows.sum()) - int(rows[self.wid])

    def warmup(self) -> None:
        self.inner.warmup()
        self._mark(np.zeros(0, np.int64))
        self._sync(count=False, blocks=False)  # compiles/loads the sync kernels; pushes nothing

    def _mark(self, order: np.ndarray) -> None:
        """Mark the blocks the examples in ``order`` wrote, where the kernel does not do it."""
        if self.kernel_marks:
            return
        for name, (_, _, _, dirty, _, how, shift, _) in zip(self.names, self.items):
            if how == "sparse":
                mark_sparse(self.pre["indptr"], self.pre["indices"], self.pre["values"], order, dirty, shift)
            elif how == "rows":
                mark_rows(self.pre[self._ROWS[name]], order, dirty)

    def chunks(self, order: np.ndarray, size: int) -> list:
        """Pieces of at most ``size`` examples that end at every multiple of ``sync_every``."""
        k = self.every
        return [order[c:min(c + size, s + k)] for s in range(0, order.size, k) for c in range(s, min(s + k, order.size), size)]

    def run(self, order: np.ndarray, lr: float) -> None:
        self.inner.run(order, lr)
        self._mark(order)
        self.since += order.size
        if self.since >= self.every:
            self._sync()

    def end_epoch(self) -> None:
        if self.since:
            self._sync()

    finish = end_epoch

    def _sync(self, count: bool = True, blocks: bool = True) -> None:
        t0, c0 = time.monotonic_ns(), time.thread_time_ns()
        others = self._others()
        n = 0
        for (central, local, base, dirty, block, how, _, fmt), prm in zip(self.items, self.fmt_params):
            full = how == "full" and blocks
            if fmt is None:
                n += sync_float(local, base, central, dirty, block, self.alpha, full)
            else:
                wlo, whi, clo, chi = prm
                n += sync_fixed(local, base, central, dirty, block, float(2 ** WIDE_BITS) * self.alpha, full,
                                wlo, whi, clo, chi, self._next(), self.seed_lo, self.seed_hi)
        if not count:
            return
        st = self.stats
        lag = others - self.seen
        self.seen = self._others()
        self.since = 0
        st[S_SYNCS] += 1
        st[S_BLOCKS] += n
        st[S_LAG_SUM] += lag
        st[S_LAG_MAX] = max(int(st[S_LAG_MAX]), lag)
        st[S_NS] += time.monotonic_ns() - t0
        st[S_CPU_NS] += time.thread_time_ns() - c0
