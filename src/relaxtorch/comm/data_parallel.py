"""``DataParallel``: synchronous data-parallel SGD around any torch optimizer, with a compressor.

``DataParallel(SGD(...))`` averages every gradient with a float32 all-reduce before each
step (the exact baseline); ``DataParallel(SGD(...), ErrorFeedback(Sign()))`` is 1-bit SGD
with error feedback (Seide et al., Interspeech 2014; Karimireddy et al., ICML 2019);
any compressor of :mod:`relaxtorch.comm` fits.  Use it without DDP: call ``backward``
on the local batch, then ``step()``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .._wrapped import WrappedOptimizer
from .allreduce import allreduce
from .compressors import Compressor, Identity, StatefulCompressor, _invalid
from .link import LinkModel
from .._seeding import generator
from .stats import CommStats


def rank_generator(seed: int, group=None) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and this rank, so ranks draw independent bits."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _invalid("seed", seed, "an int")
    return generator(seed, "rank", dist.get_rank(group))


@torch.no_grad()
def broadcast_parameters(params, *, group=None) -> None:
    """Copy group rank 0's parameters to every rank (as DDP does at construction)."""
    src = dist.get_global_rank(group, 0) if group is not None else 0
    for p in params:
        dist.broadcast(p.data, src=src, group=group)


class DataParallel(WrappedOptimizer):
    """Average gradients across ranks through ``compressor``, then step ``optimizer``.

    Gradients of every parameter that has one are flattened (per dtype) into buckets of
    ``bucket_numel`` elements (None: one bucket per dtype), each averaged with
    :func:`allreduce`; an ``ErrorFeedback`` compressor keeps one residual per bucket.
    Every rank must produce gradients for the same parameters.  Parameters are
    broadcast from rank 0 at construction (``broadcast=False`` to skip).  ``seed``
    seeds this rank's generator for stochastic compressors (saved by ``state_dict``).
    ``stats`` counts bytes, messages, compression and communication time; the caller
    adds compute time with ``stats.timing("compute")``.
    """

    overlap = False

    def __init__(self, optimizer: torch.optim.Optimizer, compressor: Compressor = Identity(), *, group=None,
                 link: LinkModel | None = None, bucket_numel: int | None = None, seed: int = 0,
                 broadcast: bool = True):
        super().__init__(optimizer)
        if not isinstance(compressor, Compressor):
            raise _invalid("compressor", compressor, "a relaxtorch.comm Compressor")
        if bucket_numel is not None and (isinstance(bucket_numel, bool) or not isinstance(bucket_numel, int)
                                         or bucket_numel < 1):
            raise _invalid("bucket_numel", bucket_numel, "an int >= 1 or None for one bucket per dtype")
        if link is not None and not isinstance(link, LinkModel):
            raise _invalid("link", link, "a LinkModel (see parse_link) or None")
        self.compressor = compressor
        self.group = group
        self.link = link
        self.bucket_numel = bucket_numel
        self.generator = rank_generator(seed, group)
        self.stats = CommStats()
        self._step = 0
        if broadcast:
            broadcast_parameters(self._params(), group=group)

    def _buckets(self, params) -> list[list[tuple[torch.Tensor, int, int]]]:
        """Per bucket, (param, start, stop) pieces of the flattened gradients of one dtype."""
        by_dtype: dict = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        buckets = []
        for ps in by_dtype.values():
            size = sum(p.numel() for p in ps)
            cap = self.bucket_numel or size
            bucket, room = [], cap
            for p in ps:
                start = 0
                while start < p.numel():
                    take = min(room, p.numel() - start)
                    bucket.append((p, start, start + take))
                    start += take
                    room -= take
                    if room == 0:
                        buckets.append(bucket)
                        bucket, room = [], cap
            if bucket:
                buckets.append(bucket)
        return buckets

    @torch.no_grad()
    def step(self, closure=None):
        """Average the gradients across ranks (in place in ``p.grad``), then step the optimizer."""
        loss = self._evaluate(closure)
        params = [p for p in self._params() if p.grad is not None]
        for p in params:
            if not p.grad.is_contiguous():
                p.grad = p.grad.contiguous()
        buckets = self._buckets(params)
        for b, pieces in enumerate(buckets):
            flat = torch.cat([p.grad.reshape(-1)[s:e] for p, s, e in pieces])
            avg = allreduce(flat, self.compressor, group=self.group, link=self.link, stats=self.stats,
                            generator=self.generator, step=self._step * len(buckets) + b, key=b)
            off = 0
            for p, s, e in pieces:
                p.grad.view(-1)[s:e].copy_(avg[off:off + e - s])
                off += e - s
        self._step += 1
        self.stats.steps += 1
        self.optimizer.step()
        return loss

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)
        broadcast_parameters(self.optimizer.param_groups[-1]["params"], group=self.group)

    # -- checkpoints: the wrapped optimizer's state dict plus "data_parallel" (see WrappedOptimizer) ---
    _state_key = "data_parallel"
    _extra_optional = True

    def _extra_state(self) -> dict:
        """Step counter, generator state and, for a stateful compressor, its residuals."""
        extra = {"step": self._step, "generator_state": self.generator.get_state()}
        if isinstance(self.compressor, StatefulCompressor):
            extra["compressor"] = self.compressor.state_dict()
        return extra

    def _load_extra_state(self, extra: dict) -> None:
        self._step = extra.get("step", 0)
        if "generator_state" in extra:
            self.generator.set_state(extra["generator_state"])
        if "compressor" in extra:
            self.compressor.load_state_dict(extra["compressor"])

    def __repr__(self) -> str:
        return f"DataParallel({self.optimizer!r}, compressor={self.compressor!r})"
