"""Where one rank's CocktailSGD compression time goes: each stage of a step, timed in one process.

One rank of a ``world``-rank CocktailSGD step on the real parameter shapes of a model, the
exchange replaced by copies of this rank's own payloads (same sizes, same work):

  subsets   the random subset of every chunk (a permutation per cycle, amortised over its steps)
  gather    the model delta at the subset positions (parameters minus anchor)
  top-K     top-K within each chunk's subset (values, bitmask)
  quantize  QSGD of the survivors: noise, scale, rounding, packing, decoded values
  worker EF what this rank's payloads decode to, scattered over the subset (its residual)
  server    decode the chunk's other world - 1 payloads, average with its own, add the server
            residual, re-compress
  updates   decode the world updates
  apply     add the update to the anchor and (minus what was sent) to the parameters (CocktailSGD
            does it in the next step's gather pass, ``_kernels.apply_and_gather``; apart here)

Each stage is timed per step in CPU seconds of the thread (steady on a shared machine; the
stages never wait).  The current code ("compiled": ``relaxtorch.comm._kernels``) and the
previous one ("previous": torch.randperm per cycle with each window sorted, the model
flattened before the gather, torch.topk, QSGD/bitmask/index_add in torch ops, i.e.
``_kernels.disabled()`` and the old subset and top-K code kept here) run in turns, a whole
cycle of steps each, with torch on one intra-op thread as a rank of the job has.
"""
from __future__ import annotations

import contextlib
import statistics
import time

import torch

STAGES = ("subsets", "gather", "top-K", "quantize", "worker EF", "server", "updates", "apply")
# where each stage runs in CocktailSGD(overlap=True) with an exchange thread (a spare core per rank);
# without one (ranks sharing the cores) every stage runs on the main thread; all count as compress_s
WHERE = {"subsets": "main", "gather": "main", "top-K": "main", "quantize": "main", "worker EF": "main",
         "server": "exchange", "updates": "exchange", "apply": "main"}


def _setup(shapes, world: int, random_ratio: float, topk_ratio: float, bits: int, bucket: int, seed: int = 0):
    from relaxtorch._seeding import derive, generator
    from relaxtorch.comm import QSGD, Compose, RandomK, TopK

    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) * 0.05 for s in shapes]
    anchor = torch.cat([p.reshape(-1) for p in params]) + 1e-3 * torch.randn(sum(p.numel() for p in params),
                                                                             generator=g)
    n = anchor.numel()
    base, extra = divmod(n, world)
    sizes = [base + (1 if j < extra else 0) for j in range(world)]
    bounds = [(sum(sizes[:j]), sum(sizes[:j + 1])) for j in range(world)]
    return {
        "params": params, "anchor": anchor, "bounds": bounds,
        "offsets": torch.tensor([0] + [p.numel() for p in params]).cumsum(0),
        "samplers": [RandomK(random_ratio, seed=derive(seed, "chunk", j), cycle=True) for j in range(world)],
        "inner": Compose(TopK(topk_ratio), QSGD(bits, bucket)),
        "server_error": torch.zeros(sizes[0]), "gen": generator(seed, "worker rounding", 0),
        "cycle": int(1 / random_ratio),
    }


def _old_indices(sampler, numel: int, step: int) -> torch.Tensor:
    """The previous implementation's subsets: torch.randperm per cycle, each window sorted."""
    from relaxtorch._seeding import derive
    k = sampler.kept(numel)
    epoch, window = divmod(step, numel // k)
    key = (sampler.seed, numel, epoch)
    cache = _old_indices.cache
    if key not in cache:
        perm = torch.randperm(numel, generator=torch.Generator().manual_seed(derive(sampler.seed, 0xC1C1E, epoch)),
                              dtype=torch.int32)
        cache.clear() if len(cache) > 16 else None
        cache[key] = perm[: (numel // k) * k].reshape(-1, k).sort(dim=1).values
    return cache[key][window].long()


_old_indices.cache = {}


def _step(st: dict, step: int, t: dict, compiled: bool) -> None:
    """One step of rank 0, adding each stage's seconds to ``t``."""
    from relaxtorch.comm import _kernels
    from relaxtorch.comm.compressors import payload
    clock = time.thread_time  # CPU seconds of this thread: steady on a shared machine
    params, anchor, bounds, offsets = st["params"], st["anchor"], st["bounds"], st["offsets"]
    topk, quant = st["inner"].stages
    world = len(bounds)

    t0 = clock()
    if compiled:
        subsets = [s.indices(hi - lo, step) for s, (lo, hi) in zip(st["samplers"], bounds)]
    else:
        subsets = [_old_indices(s, hi - lo, step) for s, (lo, hi) in zip(st["samplers"], bounds)]
    t1 = clock()
    pos = torch.cat([idx + lo for idx, (lo, _) in zip(subsets, bounds)])
    cuts = torch.searchsorted(pos, offsets).tolist()
    offs = offsets.tolist()
    if compiled:
        delta = torch.empty(pos.numel())
        for i, p in enumerate(params):
            a, b = cuts[i], cuts[i + 1]
            _kernels.gather_delta(p.view(-1).numpy(), offs[i], anchor.numpy(), pos[a:b].numpy(), delta[a:b].numpy())
    else:  # as before: the flat model, then the positions
        x = torch.cat([p.reshape(-1) for p in params])
        delta = x[pos] - anchor[pos]
    chunks = delta.split([idx.numel() for idx in subsets])
    t2 = clock()
    if compiled:
        tops = [topk.compress(v) for v in chunks]
    else:  # as before: torch.topk, sorted positions, a bitmask
        tops = []
        for v in chunks:
            n, k = v.numel(), topk.kept(v.numel())
            idx = torch.topk(v.abs(), k, sorted=False).indices.sort().values
            mask = torch.zeros(n, dtype=torch.uint8)
            mask[idx] = 1
            from relaxtorch.comm import _bits
            tops.append(payload({"values": v[idx], "mask": _bits.pack(mask, 1)}, v.shape, v.dtype))
    t3 = clock()
    quants = [quant.compress_and_decode(p.tensors["values"], generator=st["gen"]) for p in tops]
    t4 = clock()
    sent = torch.cat([topk.decode_values(p, dec) for p, (_, dec) in zip(tops, quants)])
    t5 = clock()
    inner = st["inner"]
    payloads = [{"0.mask": tp.tensors["mask"], "1.codes": qp.tensors["codes"], "1.scales": qp.tensors["scales"]}
                for tp, (qp, _) in zip(tops, quants)]
    mine = payload(payloads[0], chunks[0].shape, torch.float32)
    own = sent[: chunks[0].numel()]
    agg = None
    for r in range(world):  # as CocktailSGD: its own chunk already decoded (``sent``), the others' decompressed
        d = own if r == 0 else inner.decompress(mine)
        agg = d.clone() if agg is None else agg.add_(d)
    agg /= world
    if compiled:
        _kernels.add_gathered(agg.numpy(), st["server_error"].numpy(), subsets[0].numpy())
    else:
        agg += st["server_error"][subsets[0]]
    q, decoded = inner.compress_and_decode(agg, generator=st["gen"])
    if compiled:
        _kernels.scatter(st["server_error"].numpy(), subsets[0].numpy(), agg.sub_(decoded).numpy())
    else:
        st["server_error"][subsets[0]] = agg.sub_(decoded)
    t6 = clock()
    update = torch.cat([decoded] + [inner.decompress(payload(p, c.shape, torch.float32))
                                    for p, c in zip(payloads[1:], chunks[1:])])
    t7 = clock()
    if compiled:
        for i, p in enumerate(params):
            a, b = cuts[i], cuts[i + 1]
            _kernels.apply_update(p.view(-1).numpy(), offs[i], anchor.numpy(), pos[a:b].numpy(),
                                  update[a:b].numpy(), sent[a:b].numpy())
    else:
        anchor.index_add_(0, pos, update)
        diff = update - sent
        for i, p in enumerate(params):
            a, b = cuts[i], cuts[i + 1]
            p.view(-1).index_add_(0, pos[a:b] - offs[i], diff[a:b])
    t8 = clock()
    for name, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7),
                                     (t7, t8))):
        t[name] += b - a


def run(shapes, *, world: int = 4, random_ratio: float = 0.1, topk_ratio: float = 0.2, bits: int = 4,
        bucket: int = 128, reps: int = 5) -> dict:
    """Per stage: the median over ``reps`` cycles of the mean CPU seconds per step, previous and compiled."""
    from relaxtorch.comm import _kernels
    from relaxtorch.comm.sparsify import _cycle_windows

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _kernels.warm()
    try:
        st = _setup(shapes, world, random_ratio, topk_ratio, bits, bucket)
        cycle = st["cycle"]
        samples = {"compiled": {s: [] for s in STAGES}, "previous": {s: [] for s in STAGES}}
        epoch = 0
        for rep in range(reps + 1):  # the first round warms up
            for mode in ("previous", "compiled"):
                t = dict.fromkeys(STAGES, 0.0)
                _cycle_windows.cache_clear()  # a cycle draws its permutations once, as in training
                _old_indices.cache.clear()
                ctx = _kernels.disabled() if mode == "previous" else contextlib.nullcontext()
                with ctx:
                    for s in range(cycle):
                        _step(st, epoch * cycle + s, t, mode == "compiled")
                epoch += 1
                if rep:
                    for name in STAGES:
                        samples[mode][name].append(t[name] / cycle)
    finally:
        torch.set_num_threads(threads)
    out = {mode: {name: statistics.median(v) for name, v in d.items()} for mode, d in samples.items()}
    for mode in out:
        out[mode]["total"] = sum(out[mode][s] for s in STAGES)
    return out



# ------------------------------------------------------------------------------ timeline of the job's ranks
TIMELINE_ENV = "RELAXTORCH_BENCH_TIMELINE"  # folder the ranks write their per-step rows to


def timeline_factory(spec, model, ctx):
    """A ``relaxtorch dist`` factory (``build``) that also makes every rank write its per-step
    measurements (``train._STEP_FIELDS``, in the job's clock) to ``$RELAXTORCH_BENCH_TIMELINE``
    as ``{run}-rank{r}.json`` when the job flushes them: a timeline of each rank."""
    import json
    import os

    from relaxtorch.jobs.distributed import train
    from relaxtorch.jobs.distributed.algorithms import build

    if not getattr(train._Run.flush, "_timeline", False):
        original = train._Run.flush

        def flush(self):
            rows = [list(r) for r in self.pending]
            path = os.path.join(os.environ[TIMELINE_ENV], f"{self.spec.name}-rank{self.rc.rank}.json")
            old = json.load(open(path)) if os.path.exists(path) else []
            with open(path, "w") as f:
                json.dump(old + rows, f)
            original(self)

        flush._timeline = True
        train._Run.flush = flush
    return build(spec, model, ctx)


def read_timeline(folder, name: str, world: int):
    """``t[rank, step, field]`` of run ``name`` (as ``train.simulated_seconds`` takes it)."""
    import json
    import os
    rows = [json.load(open(os.path.join(folder, f"{name}-rank{r}.json"))) for r in range(world)]
    return torch.tensor(rows, dtype=torch.float64)
