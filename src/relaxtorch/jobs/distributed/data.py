"""Which training examples each rank sees: IID or label-skewed partitions and per-step minibatches.

``partition`` splits the training set into ``world`` parts (sizes differ by at most
one).  ``"iid"``: a seeded random split.  ``"label"``: the non-IID split of
McMahan et al. (2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): a random fraction ``skew`` of the examples is sorted by
label and cut into ``world`` contiguous shards, the rest is split IID, and rank r
gets shard r of each; ``skew = 1`` gives each rank a few labels of its own,
``skew = 0`` is IID.

``BatchSchedule`` gives rank r's minibatch at each step.  An epoch is ``ceil(n / (world *
batch_size))`` steps; in each, a rank walks the epoch's permutation of its part, from an
example order of ``relaxtorch.order`` over the part (wrapping round at the end, so each of
its examples is seen at least once; a balancing order ignores the repeats).  With
``reshuffle`` the partition itself is redrawn every epoch (the data-shuffling setting of
DeTAG, Lu & De Sa, 2021; gradient-free orders only).

The orders that need no gradients are a pure function of (seed, rank, step), so ranks agree
without talking and a resumed run sees the same examples as an uninterrupted one:
random reshuffling ("rr", the default) draws epoch e from ``generator(seed, "order", e,
rank)`` (the stream of the loop it replaced); the others replay their epochs from a state
seeded by ``generator(seed, "order", rank)``.  A balancing order ("grab", "pair", "cdgrab",
...) moves forward only: after each step the loop calls ``observe(step, grads)`` with the
step's per-example gradients, and a checkpoint carries its state (``state_tree``).
"""
from __future__ import annotations

import math

import torch

from ..._seeding import generator
from ...order import OrderState, RandomReshuffling, make
from .config import PARTITIONS


def _split(idx: torch.Tensor, world: int, longer_last: bool = False) -> list[torch.Tensor]:
    """Contiguous chunks whose sizes differ by at most one (the first ``n % world`` are longer,
    or the last ones with ``longer_last``)."""
    n = idx.numel()
    sizes = [n // world + (r < n % world) for r in range(world)]
    return list(torch.split(idx, sizes[::-1] if longer_last else sizes))


def partition(labels: torch.Tensor, world: int, *, scheme: str = "iid", skew: float = 0.9,
              seed: int = 0, epoch: int = 0) -> list[torch.Tensor]:
    """Indices of the examples of each of ``world`` ranks (a list of int64 tensors, disjoint, covering all)."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"Invalid world: {world!r} (must be an int >= 1)")
    if scheme not in PARTITIONS:
        raise ValueError(f"Invalid scheme: {scheme!r} (choose from {', '.join(PARTITIONS)})")
    if not 0 <= skew <= 1:
        raise ValueError(f"Invalid skew: {skew!r} (must be in [0, 1])")
    n = labels.shape[0]
    if n < world:
        raise ValueError(f"Invalid world: {world!r} (only {n} training examples to share)")
    gen = generator(seed, "partition", epoch)
    perm = torch.randperm(n, generator=gen)
    if scheme == "iid":
        return _split(perm, world)
    n_sorted = round(skew * n)
    sorted_part, iid_part = perm[:n_sorted], perm[n_sorted:]
    # sort by label; ties keep the random order (stable sort of a random permutation)
    sorted_part = sorted_part[torch.sort(labels[sorted_part], stable=True).indices]
    return [torch.cat([a, b]) for a, b in zip(_split(sorted_part, world), _split(iid_part, world, True))]


def state_tree(state: OrderState) -> dict:
    """An order's state as tensors and plain values (what a checkpoint and ``wire`` carry)."""
    return {"n": state.n, "epoch": state.epoch, "generator": state.generator.get_state(),
            "perm": state.perm, "buffers": {k: torch.from_numpy(v.copy()) if hasattr(v, "dtype") and
                                            not isinstance(v, torch.Tensor) else v
                                            for k, v in state.buffers.items()}}


def state_from_tree(tree: dict) -> OrderState:
    """The inverse of :func:`state_tree`."""
    gen = torch.Generator()
    gen.set_state(tree["generator"])
    buffers = {}
    for k, v in tree["buffers"].items():
        buffers[k] = v.numpy().copy() if isinstance(v, torch.Tensor) and not k.startswith("proj_") else v
    return OrderState(n=tree["n"], generator=gen, epoch=tree["epoch"], perm=tree["perm"], buffers=buffers)


class BatchSchedule:
    """Rank ``rank``'s minibatch indices at each step (see the module docstring)."""

    def __init__(self, labels: torch.Tensor, world: int, rank: int, batch_size: int, *, scheme: str = "iid",
                 skew: float = 0.9, reshuffle: bool = False, seed: int = 0, order: str = "rr",
                 grad_dim: int | None = None):
        if not 0 <= rank < world:
            raise ValueError(f"Invalid rank: {rank!r} (must be in 0..{world - 1})")
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (must be >= 1)")
        self.labels, self.world, self.rank, self.batch_size = labels, world, rank, batch_size
        self.scheme, self.skew, self.reshuffle, self.seed = scheme, skew, reshuffle, seed
        self.steps_per_epoch = math.ceil(labels.shape[0] / (world * batch_size))
        self._fixed = None if reshuffle else partition(labels, world, scheme=scheme, skew=skew, seed=seed)[rank]
        n = self.part(0).numel()
        options = {"batch_size": batch_size, "seed": seed} if order == "cdgrab" else {}
        self.order = make(order, n, d=grad_dim, **options)
        if reshuffle and self.order.needs_gradients:
            raise ValueError(f"Invalid order: {order!r} (a balancing order learns the positions of a fixed "
                             "partition; reshuffle redraws it every epoch)")
        self.state = self.order.init(generator(seed, "order", rank))
        self._cache: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation of the part's positions)

    @property
    def needs_gradients(self) -> bool:
        return self.order.needs_gradients

    def part(self, epoch: int) -> torch.Tensor:
        """This rank's examples in ``epoch``."""
        if self._fixed is not None:
            return self._fixed
        return partition(self.labels, self.world, scheme=self.scheme, skew=self.skew, seed=self.seed,
                         epoch=epoch)[self.rank]

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if isinstance(self.order, RandomReshuffling):  # a pure function of (seed, epoch, rank)
            self.state.generator = generator(self.seed, "order", epoch, self.rank)
            perm, self.state = self.order.epoch(self.state)
        elif self.order.needs_gradients:
            if epoch != self.state.epoch:
                raise ValueError(f"Invalid step: epoch {epoch} (a balancing order moves forward one epoch at a "
                                 f"time; its next is {self.state.epoch})")
            perm, self.state = self.order.epoch(self.state)
        else:  # replay from the seed: any epoch, in any order of questions
            if epoch < self.state.epoch:
                self.state = self.order.init(generator(self.seed, "order", self.rank))
            perm = None
            while self.state.epoch <= epoch:
                perm, self.state = self.order.epoch(self.state)
        self._cache = (epoch, perm)
        return perm

    def positions(self, step: int) -> torch.Tensor:
        """The part positions (the order's example indices) of this rank's minibatch at ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = self._perm(epoch)
        return perm[(i * self.batch_size + torch.arange(self.batch_size)) % perm.numel()]

    def indices(self, step: int) -> torch.Tensor:
        """The training-set rows of this rank's minibatch at ``step`` (0-based)."""
        return self.part(step // self.steps_per_epoch)[self.positions(step)]

    def observe(self, step: int, grads: torch.Tensor) -> None:
        """Feed a balancing order the per-example gradients of the minibatch of ``step`` (a collective
        for "cdgrab": every rank calls it at every step)."""
        self.state = self.order.observe(self.state, self.positions(step), grads)

    def restore(self, tree: dict, step: int) -> None:
        """Continue a balancing order from a checkpoint's ``state_tree`` taken at ``step``."""
        self.state = state_from_tree(tree)
        if self.state.perm is not None and self.state.epoch > 0:
            self._cache = (self.state.epoch - 1, self.state.perm.clone())
