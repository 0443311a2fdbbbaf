"""Gossip averaging on torch.distributed: each worker mixes its neighbours' models.

One gossip round replaces worker ``i``'s tensor by ``sum_j W_ij x_j`` with ``W`` the
topology's mixing matrix (Boyd, Ghosh, Prabhakar & Shah, "Randomized Gossip
Algorithms", 2006; the synchronous form used by D-PSGD, Lian et al. 2017).  Sparse
topologies use point-to-point ``isend``/``irecv`` with every send and receive of
a round posted before any is waited on, so no ordering can deadlock (gloo and
NCCL); topologies where everybody hears everybody (complete, rings of 2-3) use
one ``all_gather``.  Waits are bounded by the process group's timeout.

Byte accounting: a rank sends its message once to each out-neighbour, so a round
records ``out_degree`` messages of the message's exact size (for ``all_gather``,
``n - 1`` messages: what a ring all-gather sends per rank); ``float32_bytes`` is
the same count for uncompressed float32 messages.

Every message is a tensor whose shape and dtype the receiver knows from its own: nothing
a peer sends is unpickled (in a decentralized run the peers are other people's machines).
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from .link import LinkModel
from .stats import CommStats
from .topology import Topology


def _world(group) -> tuple[int, int]:
    return dist.get_rank(group), dist.get_world_size(group)


def _global(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def _is_dense(topology: Topology, step: int) -> bool:
    n = topology.n
    return all(len(topology.neighbors(r, step)) == n - 1 for r in range(n))


def _check_world(topology: Topology, group) -> int:
    if not isinstance(topology, Topology):
        raise ValueError(f"Invalid topology: {topology!r} (a relaxtorch.comm.Topology)")
    if topology.n == 1 and not dist.is_initialized():
        return 0
    rank, size = _world(group)
    if size != topology.n:
        raise ValueError(f"Invalid topology: {topology!r} (built for {topology.n} workers, the group has {size})")
    return rank


def neighbor_exchange(tensor: torch.Tensor, topology: Topology, *, step: int = 0, group=None
                      ) -> dict[int, torch.Tensor]:
    """Send ``tensor`` to this rank's out-neighbours at ``step``; return ``{j: x_j}`` from its
    in-neighbours.  Every rank must pass a tensor of the same shape and dtype."""
    rank = _check_world(topology, group)
    x = tensor.detach().contiguous()
    if topology.n == 1:
        return {}
    ins = topology.neighbors(rank, step)
    if _is_dense(topology, step):
        bufs = [torch.empty_like(x) for _ in range(topology.n)]
        dist.all_gather(bufs, x, group=group)
        return {j: bufs[j] for j in ins}
    received = {j: torch.empty_like(x) for j in ins}
    works = [dist.isend(x, _global(group, j), group=group) for j in topology.out_neighbors(rank, step)]
    works += [dist.irecv(received[j], _global(group, j), group=group) for j in ins]
    for w in works:
        w.wait()
    return received


def _wire_format(payload) -> str:
    """How a compressor's payload travels: its ``to_bytes`` (a fixed layout) or as the tensor it is."""
    if hasattr(payload, "to_bytes") and hasattr(payload, "from_bytes"):
        return "bytes"
    if isinstance(payload, torch.Tensor):
        return "tensor"
    raise ValueError(f"Invalid compressor payload: {type(payload).__name__} (gossip sends a torch.Tensor or a "
                     "payload with to_bytes/from_bytes of a fixed layout, like relaxtorch.comm.Payload; "
                     "nothing a peer sends is unpickled)")


def record_round(stats: CommStats | None, link: LinkModel | None, topology: Topology, rank: int, step: int,
                 nbytes: int, numel: int) -> None:
    """Account one gossip round: a message of ``nbytes`` (``numel`` numbers) to each out-neighbour."""
    if stats is None:
        return
    fanout = topology.n - 1 if _is_dense(topology, step) else len(topology.out_neighbors(rank, step))
    if fanout:
        stats.record_send(fanout * nbytes, link, messages=fanout, float32_bytes=fanout * 4 * numel)


def gossip(tensor: torch.Tensor, topology: Topology, *, step: int = 0, group=None, compressor=None,
           link: LinkModel | None = None, stats: CommStats | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Return ``sum_j W_ij x_j`` for this rank ``i`` (``W = topology.matrix(step)``); ``tensor`` is not mutated.

    ``compressor``: any object with ``compress(x, generator=, step=) -> payload`` (the
    payload has ``.nbytes``) and ``decompress(payload)``, e.g. ``relaxtorch.comm.QSGD``;
    neighbours' models are then their decompressed messages while this rank's own term
    stays exact (so the average is preserved only in expectation, for unbiased
    compressors).  The payload is a :class:`relaxtorch.comm.Payload` or any object with
    ``to_bytes``/``from_bytes`` of a fixed layout (it travels as exactly ``nbytes`` bytes,
    read back in this rank's own payload's layout), or a tensor of the same shape and dtype
    on every rank; anything else raises ValueError before anything is sent.
    ``generator`` drives the compressor's randomness.  Bytes, messages and time go
    to ``stats``; ``link`` adds the simulated time of the messages.
    """
    rank = _check_world(topology, group)
    x = tensor.detach()
    weights = topology.weights(rank, step)
    out = x * weights[rank]
    if topology.n == 1:
        return out
    if compressor is None:
        with _timing(stats, "comm"):
            received = neighbor_exchange(x, topology, step=step, group=group)
        record_round(stats, link, topology, rank, step, x.numel() * x.element_size(), x.numel())
    else:
        with _timing(stats, "compress"):
            payload = compressor.compress(x, generator=generator, step=step)
        wire = _wire_format(payload)
        with _timing(stats, "comm"):
            if wire == "bytes":
                # fixed-size payloads (relaxtorch.comm.Payload): the bytes alone travel; ours is the layout
                raw = neighbor_exchange(payload.to_bytes(), topology, step=step, group=group)
                payloads = {j: payload.from_bytes(buf) for j, buf in raw.items()}
            else:
                payloads = neighbor_exchange(payload, topology, step=step, group=group)
        with _timing(stats, "compress"):
            received = {j: compressor.decompress(p).to(x.dtype).reshape(x.shape) for j, p in payloads.items()}
        record_round(stats, link, topology, rank, step, int(payload.nbytes), x.numel())
    for j in sorted(received):
        out.add_(received[j], alpha=weights[j])
    return out


def _timing(stats: CommStats | None, what: str):
    return stats.timing(what) if stats is not None else contextlib.nullcontext()


@torch.no_grad()
def consensus_distance(params, group=None) -> float:
    """``sqrt((1/n) sum_i ||x_i - xbar||^2)`` over the ``n`` ranks of ``group``: the root-mean-square
    distance of the workers' models from their average (Kong et al., ICML 2021, "Consensus
    Control for Decentralized Deep Learning").  ``params``: a tensor or an iterable of tensors
    (flattened together).  Two float64 all-reduces; diagnostic traffic, not counted in any stats.
    """
    if not dist.is_initialized():
        return 0.0  # a single process is its own average
    tensors = [params] if isinstance(params, torch.Tensor) else list(params)
    x = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]) if tensors else torch.zeros(0)
    n = dist.get_world_size(group)
    mean = x.clone()
    dist.all_reduce(mean, group=group)
    mean /= n
    sq = ((x - mean) ** 2).sum().reshape(1)
    dist.all_reduce(sq, group=group)
    return float(torch.sqrt(sq / n))
