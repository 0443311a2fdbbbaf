"""Which training examples each rank sees: IID or label-skewed partitions and per-step minibatches.

``partition`` splits the training set into ``world`` parts (sizes differ by at most
one).  ``"iid"``: a seeded random split.  ``"label"``: the non-IID split of
McMahan et al. (2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): a random fraction ``skew`` of the examples is sorted by
label and cut into ``world`` contiguous shards, the rest is split IID, and rank r
gets shard r of each; ``skew = 1`` gives each rank a few labels of its own,
``skew = 0`` is IID.

``BatchSchedule`` gives rank r's minibatch at any step as a pure function of
(seed, rank, step), so ranks agree without talking and a resumed run sees the
same examples as an uninterrupted one.  An epoch is ``ceil(n / (world *
batch_size))`` steps; in each, a rank walks a fresh permutation of its part
(wrapping round at the end, so each of its examples is seen at least once).
With ``reshuffle`` the partition itself is redrawn every epoch (the
data-shuffling setting of DeTAG, Lu & De Sa, 2021).
"""
from __future__ import annotations

import math

import torch

from ..._seeding import generator
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


class BatchSchedule:
    """Rank ``rank``'s minibatch indices at each step (see the module docstring)."""

    def __init__(self, labels: torch.Tensor, world: int, rank: int, batch_size: int, *, scheme: str = "iid",
                 skew: float = 0.9, reshuffle: bool = False, seed: int = 0):
        if not 0 <= rank < world:
            raise ValueError(f"Invalid rank: {rank!r} (must be in 0..{world - 1})")
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (must be >= 1)")
        self.labels, self.world, self.rank, self.batch_size = labels, world, rank, batch_size
        self.scheme, self.skew, self.reshuffle, self.seed = scheme, skew, reshuffle, seed
        self.steps_per_epoch = math.ceil(labels.shape[0] / (world * batch_size))
        self._fixed = None if reshuffle else partition(labels, world, scheme=scheme, skew=skew, seed=seed)[rank]
        self._cache: tuple[int, torch.Tensor] | None = None

    def part(self, epoch: int) -> torch.Tensor:
        """This rank's examples in ``epoch``."""
        if self._fixed is not None:
            return self._fixed
        return partition(self.labels, self.world, scheme=self.scheme, skew=self.skew, seed=self.seed,
                         epoch=epoch)[self.rank]

    def _order(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            part = self.part(epoch)
            self._cache = (epoch, part[torch.randperm(part.numel(), generator=generator(self.seed, "order", epoch,
                                                                                        self.rank))])
        return self._cache[1]

    def indices(self, step: int) -> torch.Tensor:
        """The training-set rows of this rank's minibatch at ``step`` (0-based)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        pos = (i * self.batch_size + torch.arange(self.batch_size)) % order.numel()
        return order[pos]
