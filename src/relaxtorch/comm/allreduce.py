"""Compressed all-reduce on torch.distributed (gloo or NCCL), with exact byte accounting.

``allreduce(x, compressor)`` averages ``x`` over the ranks of ``group``.  With ``Identity``
it is ``dist.all_reduce``; with any other compressor every rank compresses its tensor,
the fixed-size payloads are all-gathered as bytes, and every rank decompresses all of them
and averages in rank order, so all ranks hold bit-identical results.

Bytes are counted as the standard ring algorithms send them (Patarasuk & Yuan, JPDC 2009):
a ring all-reduce of ``n`` elements cuts them into ``N`` chunks and each rank sends all
chunks but one in the reduce-scatter and all but one in the all-gather phase, about
``2(N-1)/N`` of the tensor in ``2(N-1)`` messages; a ring all-gather of a ``b``-byte payload
sends ``(N-1) b`` bytes in ``N-1`` messages.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .compressors import Compressor, Identity, Payload, _invalid
from .feedback import ErrorFeedback
from .link import LinkModel
from .stats import CommStats

OPS = ("mean", "sum")


def ring_allreduce_bytes(numel: int, elem_size: int, world: int, rank: int) -> tuple[int, int]:
    """(bytes, messages) rank ``rank`` sends in a ring all-reduce of ``numel`` elements."""
    if world <= 1:
        return 0, 0
    base, extra = divmod(numel, world)

    def chunk(j: int) -> int:
        return base + (1 if j < extra else 0)

    # reduce-scatter: rank r sends every chunk but (r+1) mod N; all-gather: every chunk but (r+2) mod N
    elems = 2 * numel - chunk((rank + 1) % world) - chunk((rank + 2) % world)
    return elems * elem_size, 2 * (world - 1)


def ring_allgather_bytes(nbytes: int, world: int) -> tuple[int, int]:
    """(bytes, messages) each rank sends in a ring all-gather of ``nbytes``-byte blocks."""
    return (world - 1) * nbytes, max(world - 1, 0)


def _check(compressor, op) -> None:
    if not isinstance(compressor, Compressor):
        raise _invalid("compressor", compressor, "a relaxtorch.comm Compressor")
    if op not in OPS:
        raise _invalid("op", op, f"one of {OPS}")


def compress_with(compressor: Compressor, x: torch.Tensor, *, key=0, generator=None, step: int = 0) -> Payload:
    """``compressor.compress``, passing ``key`` to error feedback."""
    if isinstance(compressor, ErrorFeedback):
        return compressor.compress(x, key=key, generator=generator, step=step)
    return compressor.compress(x, generator=generator, step=step)


def allgather_payloads(p: Payload, *, group=None) -> list[Payload]:
    """Every rank's payload (all laid out like ``p``), in rank order; ``p`` itself at this rank."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    buf = p.to_bytes()
    bufs = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(bufs, buf, group=group)
    return [p if r == rank else p.from_bytes(b) for r, b in enumerate(bufs)]


def allreduce(tensor: torch.Tensor, compressor: Compressor = Identity(), *, group=None, op: str = "mean",
              link: LinkModel | None = None, stats: CommStats | None = None, generator=None, step: int = 0,
              key=0) -> torch.Tensor:
    """The mean (or sum) of ``tensor`` over the ranks of ``group``, through ``compressor``.

    Returns a new tensor (``tensor`` is not changed).  ``generator`` drives stochastic
    compressors on this rank; ``step`` is a counter all ranks agree on (RandomK's shared
    positions); ``key`` names the error-feedback residual.  ``stats`` (a CommStats) gets
    this rank's ring bytes and messages, the float32 all-reduce bytes of the same tensor,
    and the time spent compressing and communicating; ``link`` adds simulated seconds.
    """
    _check(compressor, op)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    stats = stats if stats is not None else CommStats()
    f32_bytes, _ = ring_allreduce_bytes(tensor.numel(), 4, world, rank)
    if isinstance(compressor, Identity):
        out = tensor.detach().clone()
        with stats.timing("comm"):
            dist.all_reduce(out, group=group)
        nbytes, messages = ring_allreduce_bytes(out.numel(), out.element_size(), world, rank)
        stats.record_send(nbytes, link, messages=messages, float32_bytes=f32_bytes)
        return out.div_(world) if op == "mean" else out
    with stats.timing("compress"):
        p = compress_with(compressor, tensor, key=key, generator=generator, step=step)
    with stats.timing("comm"):
        payloads = allgather_payloads(p, group=group)
    with stats.timing("compress"):
        out = average_payloads(compressor, payloads, op)
    nbytes, messages = ring_allgather_bytes(p.nbytes, world)
    stats.record_send(nbytes, link, messages=messages, float32_bytes=f32_bytes)
    return out


def average_payloads(compressor: Compressor, payloads: list[Payload], op: str = "mean") -> torch.Tensor:
    """Decompress ``payloads`` and add them in list order (the same bits on every rank)."""
    out = compressor.decompress(payloads[0]).clone()
    for p in payloads[1:]:
        out += compressor.decompress(p)
    return out.div_(len(payloads)) if op == "mean" else out
