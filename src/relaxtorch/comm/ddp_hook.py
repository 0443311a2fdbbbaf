"""A DDP communication hook built from any compressor.

    state, hook = ddp_comm_hook(ErrorFeedback(TopK(0.01)), link=parse_link("500Mbps,1ms"))
    ddp_model.register_comm_hook(state, hook)
    ...
    state.stats.compression_ratio

PyTorch ships fp16/bf16 and PowerSGD hooks (Vogels et al., NeurIPS 2019); this one takes
any :mod:`relaxtorch.comm` compressor.  Each gradient bucket is compressed, the payloads
all-gathered asynchronously, and the decompressed average returned through a future, so
DDP keeps overlapping communication with the rest of the backward pass.  Error feedback
keeps one residual per bucket index, in ``state`` (like ``PowerSGDState``).
"""
import threading
import time

import torch
import torch.distributed as dist

from .allreduce import average_payloads, compress_with, ring_allgather_bytes, ring_allreduce_bytes
from .compressors import Compressor, Identity, StatefulCompressor, _invalid
from .data_parallel import rank_generator
from .feedback import ErrorFeedback
from .link import LinkModel
from .stats import CommStats


class CompressionHookState:
    """What the hook keeps between calls: compressor (and its residuals), generator, counters, stats."""

    def __init__(self, compressor: Compressor, *, group=None, link: LinkModel | None = None, seed: int = 0):
        if not isinstance(compressor, Compressor):
            raise _invalid("compressor", compressor, "a relaxtorch.comm Compressor")
        if link is not None and not isinstance(link, LinkModel):
            raise _invalid("link", link, "a LinkModel (see parse_link) or None")
        self.compressor = compressor
        self.group = group
        self.link = link
        self.generator = rank_generator(seed, group)
        self.stats = CommStats()
        self.calls: dict[int, int] = {}  # per bucket index: how many times it was reduced
        self._lock = threading.Lock()

    def _add(self, field: str, seconds: float) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + seconds)

    def state_dict(self) -> dict:
        sd = {"calls": dict(self.calls), "generator_state": self.generator.get_state()}
        if isinstance(self.compressor, StatefulCompressor):
            sd["compressor"] = self.compressor.state_dict()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.calls = dict(sd["calls"])
        self.generator.set_state(sd["generator_state"])
        if "compressor" in sd:
            self.compressor.load_state_dict(sd["compressor"])

    # CommStats' lock-free counters are shared with DDP's callback thread; keep the lock out of pickles
    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d.pop("_lock")
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()


# no ``from __future__ import annotations`` here: DDP checks the hook's annotations as objects
def compression_hook(state: CompressionHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: average ``bucket``'s gradients through ``state.compressor``."""
    grad = bucket.buffer()
    index = bucket.index()
    group = state.group
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    count = state.calls.get(index, 0)
    state.calls[index] = count + 1
    if bucket.is_last():
        state.stats.steps += 1
    f32_bytes, _ = ring_allreduce_bytes(grad.numel(), 4, world, rank)
    comp = state.compressor
    t0 = time.perf_counter()
    if isinstance(comp, Identity):
        nbytes, messages = ring_allreduce_bytes(grad.numel(), grad.element_size(), world, rank)
        with state._lock:
            state.stats.record_send(nbytes, state.link, messages=messages, float32_bytes=f32_bytes)
        fut = dist.all_reduce(grad, group=group, async_op=True).get_future()

        def done(f):
            state._add("comm_s", time.perf_counter() - t0)
            return f.value()[0].div_(world)

        return fut.then(done)

    if isinstance(comp, ErrorFeedback):
        r = comp.residual(index)
        if r is not None and r.shape != grad.shape:  # DDP rebuilt its buckets after the first step
            comp.reset(index)
    p = compress_with(comp, grad, key=index, generator=state.generator, step=(count << 16) | (index & 0xFFFF))
    buf = p.to_bytes()
    t1 = time.perf_counter()
    state._add("compress_s", t1 - t0)
    bufs = [torch.empty_like(buf) for _ in range(world)]
    nbytes, messages = ring_allgather_bytes(p.nbytes, world)
    with state._lock:
        state.stats.record_send(nbytes, state.link, messages=messages, float32_bytes=f32_bytes)
    fut = dist.all_gather(bufs, buf, group=group, async_op=True).get_future()

    def finish(f):
        f.wait()
        t2 = time.perf_counter()
        state._add("comm_s", t2 - t1)
        payloads = [p if r == rank else p.from_bytes(b) for r, b in enumerate(bufs)]
        out = average_payloads(comp, payloads).to(grad.dtype)
        state._add("compress_s", time.perf_counter() - t2)
        return out

    return fut.then(finish)


def ddp_comm_hook(compressor: Compressor = Identity(), *, group=None, link: LinkModel | None = None,
                  seed: int = 0):
    """``(state, hook)`` for ``ddp_model.register_comm_hook(state, hook)``.

    ``compressor`` is any relaxtorch.comm compressor (wrap it in ``ErrorFeedback`` for
    the biased ones); ``seed`` seeds this rank's generator for stochastic compressors;
    ``link`` adds simulated seconds to ``state.stats``.  With ``Identity`` the hook is
    DDP's own all-reduce.
    """
    return CompressionHookState(compressor, group=group, link=link, seed=seed), compression_hook
