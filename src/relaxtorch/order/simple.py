"""Orders that need no gradients: sequential, random reshuffling, shuffle once, flip-flop, blocks.

- ``Sequential``: 0, 1, ..., n-1 every epoch (incremental gradient).
- ``RandomReshuffling`` ("rr"): a fresh uniform permutation every epoch.
- ``ShuffleOnce`` ("so"): one uniform permutation, drawn at init, every epoch
  (Mishchenko, Khaled & Richtárik, NeurIPS 2020).
- ``FlipFlop``: a fresh permutation in epochs 1, 3, 5, ... and its reverse in the epoch after
  (Rajput, Lee & Papailiopoulos, ICLR 2022).
- ``Blocks(k)``: the examples cut into contiguous blocks of ``k`` (the last may be shorter);
  the blocks are reshuffled every epoch, each block keeps its own order (block shuffling for
  data stored in chunks, as CorgiPile, Xu et al. 2022).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._base import Order, OrderState, check_positive_int


@dataclass(frozen=True)
class Sequential(Order):
    """The examples in index order every epoch.

    >>> Sequential(4).epoch(Sequential(4).init(torch.Generator()))[0].tolist()
    [0, 1, 2, 3]
    """

    n: int
    name = "sequential"

    def _next(self, state: OrderState) -> Tensor:
        return torch.arange(self.n)


@dataclass(frozen=True)
class RandomReshuffling(Order):
    """A fresh uniform permutation every epoch.

    >>> order = RandomReshuffling(5)
    >>> sorted(order.epoch(order.init(torch.Generator().manual_seed(0)))[0].tolist())
    [0, 1, 2, 3, 4]
    """

    n: int
    name = "rr"

    def _next(self, state: OrderState) -> Tensor:
        return torch.randperm(self.n, generator=state.generator)


@dataclass(frozen=True)
class ShuffleOnce(Order):
    """One uniform permutation, drawn at init and repeated every epoch.

    >>> order = ShuffleOnce(6); state = order.init(torch.Generator().manual_seed(0))
    >>> a, state = order.epoch(state); b, state = order.epoch(state); bool((a == b).all())
    True
    """

    n: int
    name = "so"

    def _setup(self, state: OrderState) -> None:
        state.buffers["perm0"] = torch.randperm(self.n, generator=state.generator)

    def _next(self, state: OrderState) -> Tensor:
        return state.buffers["perm0"].clone()


@dataclass(frozen=True)
class FlipFlop(Order):
    """A fresh permutation in odd epochs, the previous one reversed in even epochs.

    >>> order = FlipFlop(5); state = order.init(torch.Generator().manual_seed(0))
    >>> a, state = order.epoch(state); b, state = order.epoch(state); a.flip(0).tolist() == b.tolist()
    True
    """

    n: int
    name = "flipflop"

    def _next(self, state: OrderState) -> Tensor:
        if state.epoch % 2 == 1 and state.perm is not None:
            return state.perm.flip(0)
        return torch.randperm(self.n, generator=state.generator)


@dataclass(frozen=True)
class Blocks(Order):
    """Contiguous blocks of ``k`` examples, the blocks reshuffled each epoch, in-block order kept.

    >>> order = Blocks(6, k=2); perm, _ = order.epoch(order.init(torch.Generator().manual_seed(1)))
    >>> sorted(perm.view(3, 2).tolist())
    [[0, 1], [2, 3], [4, 5]]
    """

    n: int
    k: int = 1
    name = "blocks"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("k", self.k)

    def _next(self, state: OrderState) -> Tensor:
        nblocks = -(-self.n // self.k)
        blocks = torch.randperm(nblocks, generator=state.generator)
        starts = blocks * self.k
        lengths = torch.clamp(self.n - starts, max=self.k)
        offsets = torch.arange(self.k).expand(nblocks, self.k)
        full = starts[:, None] + offsets
        return full[offsets < lengths[:, None]]
