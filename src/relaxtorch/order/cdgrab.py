"""CD-GraB: pair balance coordinated across the ranks of a ``torch.distributed`` group.

Cooper, Guo et al., NeurIPS 2023, "CD-GraB: Coordinating Distributed Example Orders for
Provably Accelerated Training".  Every rank keeps an order over its own ``n`` examples; the
ranks balance their pair differences against **one shared running sum**, so the examples all
ranks visit at a step are balanced together (the parallel-herding bound of the paper), not
rank by rank.  Per step and rank:

1. pairs form from consecutive examples of the rank's visit order (across steps, as in
   ``PairBalance``): ``c = g_a - g_b`` (float64; after the optional projection);
2. one ``all_gather`` of a fixed-layout float64 tensor ``[cap, k + 1]`` per rank: the rank's
   pair differences packed from row 0, column ``k`` = 1 for a filled row
   (``cap = batch_size // 2 + 1``); nothing is pickled;
3. every rank walks the gathered pairs in the same order — pair slot ``i`` of rank 0, of rank
   1, ..., then slot ``i + 1`` (the paper's server loop) — with the sign rule of GraB,
   ``+`` when ``<s, c> <= 0``, and updates ``s``: identical inputs, identical float64
   arithmetic, so every rank holds the same ``s`` without a second message;
4. a rank places its own pairs: ``+`` puts a at the front and b at the back of its next
   permutation, ``-`` the other way round.

``observe`` is therefore a collective: every rank calls it once per step (an empty step is
``indices`` of length 0).  Partial epochs follow ``PairBalance``'s rule (examples not placed
go in the middle, in this epoch's order).  Without an initialised process group (or with a
world of one) CD-GraB is ``PairBalance``, permutation for permutation.  A projection is
drawn from ``seed`` (the same on every rank: the ranks must balance in one space).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._numba import njit
from ._base import OrderState, check_positive_int, invalid
from .balance import PairBalance
from .projection import make_projection


@njit(cache=True)
def local_pairs_(g, idx, pending, pending_idx, seen, out, a_out, b_out):
    """Pair this step's examples (skipping those seen this epoch) with the one waiting from
    the last step; ``out[p, :k] = g_a - g_b``, ``out[p, k] = 1``.  Returns the pair count."""
    b, k = g.shape
    count = 0
    for i in range(b):
        j = idx[i]
        if seen[j]:
            continue
        seen[j] = 1
        if pending_idx[0] < 0:
            for q in range(k):
                pending[q] = g[i, q]
            pending_idx[0] = j
            continue
        for q in range(k):
            out[count, q] = pending[q] - g[i, q]
        out[count, k] = 1.0
        a_out[count] = pending_idx[0]
        b_out[count] = j
        count += 1
        pending_idx[0] = -1
    return count


@njit(cache=True)
def shared_balance_(gathered, world, cap, s, rank, a_idx, b_idx, slots, ptr):
    """Walk every rank's pairs (slot-major, rank-minor) against the shared sum ``s``; place
    this rank's pairs in ``slots`` (front at ``ptr[0]``, back at ``ptr[1]``)."""
    k = s.shape[0]
    for i in range(cap):
        for r in range(world):
            row = r * cap + i
            if gathered[row, k] == 0.0:
                continue
            dot = 0.0
            for q in range(k):
                dot += s[q] * gathered[row, q]
            sign = 1.0 if dot <= 0.0 else -1.0
            for q in range(k):
                s[q] += sign * gathered[row, q]
            if r == rank:
                if sign > 0:
                    slots[ptr[0]] = a_idx[i]
                    slots[ptr[1]] = b_idx[i]
                else:
                    slots[ptr[0]] = b_idx[i]
                    slots[ptr[1]] = a_idx[i]
                ptr[0] += 1
                ptr[1] -= 1


def _world(group) -> tuple[int, int]:
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


@dataclass(frozen=True)
class CDGraB(PairBalance):
    """CD-GraB (Cooper, Guo et al., NeurIPS 2023): pair balance with one running sum shared by
    every rank of ``group`` (None: the default group).  ``n``: this rank's examples;
    ``batch_size``: the most examples a rank observes in one step (it fixes the message:
    ``(batch_size // 2 + 1) x (k + 1)`` float64 per rank and step); ``seed``: the projection's
    (the same on every rank).  See the module docstring.

    >>> order = CDGraB(6, 2, batch_size=2); state = order.init(torch.Generator().manual_seed(0))
    >>> perm, state = order.epoch(state)      # no process group here: a world of one
    >>> for t in range(3):
    ...     state = order.observe(state, perm[2 * t:2 * t + 2], torch.randn(2, 2))
    >>> sorted(order.epoch(state)[0].tolist())
    [0, 1, 2, 3, 4, 5]
    """

    batch_size: int | None = None
    seed: int = 0
    group: object = field(default=None, compare=False, repr=False)
    name = "cdgrab"

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        check_positive_int("seed", self.seed, minimum=0)

    def capacity(self, b: int = 0) -> int:
        """Pair rows per rank in a step's message (``batch_size`` None: for a step of ``b``)."""
        return (b if self.batch_size is None else self.batch_size) // 2 + 1

    def message_bytes(self, world: int) -> int:
        """Bytes each rank receives per step (the all-gathered tensor)."""
        return world * self.capacity() * (self.balanced_dim + 1) * 8

    def state_bytes(self, state: OrderState) -> int:
        """Peak bytes: the state plus the step's gathered message (``world`` rows of ``send``)."""
        return super().state_bytes(state) + _world(self.group)[0] * state.buffers["send"].nbytes

    def _setup(self, state: OrderState) -> None:
        if self.projection is not None:
            shared = torch.Generator().manual_seed(self.seed)
            state.buffers.update(make_projection(self.projection, self.d, self.dim, shared))
        state.buffers["seen"] = np.zeros(self.n, dtype=np.uint8)
        self._setup_sorter(state, self.balanced_dim)
        k, cap = self.balanced_dim, self.capacity()
        state.buffers.update(send=np.zeros((cap, k + 1)), pair_a=np.zeros(cap, dtype=np.int64),
                             pair_b=np.zeros(cap, dtype=np.int64))

    def _factored_ok(self) -> bool:
        return False  # the message carries (projected) pair differences: formed gradients

    def _observe_dense(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:
        world, rank = _world(self.group)
        steps = indices.shape[0]
        if self.batch_size is None and world > 1:
            raise invalid("batch_size", None, f"a world of {world} ranks exchanges fixed-layout messages: give "
                                              "the most examples a rank observes per step")
        if self.batch_size is not None and steps > self.batch_size:
            raise invalid("grads", f"Tensor{list(grads.shape)}",
                          f"at most batch_size={self.batch_size} examples per step (the message's layout)")
        g = self._vectors(state, grads) if steps else np.zeros((0, self.balanced_dim))
        b = state.buffers
        cap = self.capacity(steps)
        if b["send"].shape[0] < cap:  # batch_size None (a world of one): grow to this step
            b.update(send=np.zeros((cap, g.shape[1] + 1)), pair_a=np.zeros(cap, dtype=np.int64),
                     pair_b=np.zeros(cap, dtype=np.int64))
        send = b["send"]
        send[:] = 0.0
        local_pairs_(g, indices, b["pending"], b["pending_idx"], b["seen"], send, b["pair_a"], b["pair_b"])
        gathered = send if world == 1 else _all_gather(send, world, self.group)
        shared_balance_(gathered, world, send.shape[0], b["s"], rank, b["pair_a"], b["pair_b"], b["slots"],
                        b["ptr"])


def _all_gather(send: np.ndarray, world: int, group) -> np.ndarray:
    """One all-gather of the fixed-layout message (on the GPU for NCCL), as a NumPy array."""
    import torch.distributed as dist
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
    mine = torch.from_numpy(send).to(device)
    out = torch.empty((world * send.shape[0], send.shape[1]), dtype=mine.dtype, device=device)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the newer name first
    gather(out, mine, group=group)
    return np.ascontiguousarray(out.cpu().numpy())
