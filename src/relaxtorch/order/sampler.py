"""``OrderSampler``: any order as a ``torch.utils.data.Sampler[int]``, for any DataLoader.

Each ``iter(sampler)`` starts an epoch (``order.epoch``) and yields its permutation; the
loop feeds the balancing orders with ``sampler.observe(indices, grads)`` after each step.
The DataLoader draws indices in the main process and keeps their order with any
``num_workers`` (its default ``in_order=True``), so batch k of an epoch is
``sampler.perm[k * batch_size:(k + 1) * batch_size]``; ``WithIndices(dataset)`` hands the
indices to the loop with each item instead.  The sampler pickles (its generator travels as
its state) and is deterministic given the generator's seed.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ._base import Order, check_generator, invalid


class OrderSampler(Sampler[int]):
    """The epochs of ``order`` as a Sampler; ``data_source`` (optional) is checked to have ``order.n`` items.

    >>> from relaxtorch.order import RandomReshuffling
    >>> sampler = OrderSampler(RandomReshuffling(4), torch.Generator().manual_seed(0))
    >>> sorted(sampler), len(sampler)
    ([0, 1, 2, 3], 4)
    """

    def __init__(self, order: Order, generator: torch.Generator, *, data_source=None):
        if not isinstance(order, Order):
            raise invalid("order", order, "a relaxtorch.order order such as GraB(n, d)")
        check_generator(generator)
        if data_source is not None and len(data_source) != order.n:
            raise invalid("data_source", f"len {len(data_source)}", f"the order was built for n={order.n} examples")
        self.order = order
        self.state = order.init(generator)
        self.perm: Tensor | None = None

    def __iter__(self) -> Iterator[int]:
        self.perm, self.state = self.order.epoch(self.state)
        return iter(self.perm.tolist())

    def __len__(self) -> int:
        return self.order.n

    def observe(self, indices, grads=None) -> None:
        """Record one step's examples and their per-example gradients (see ``Order.observe``)."""
        self.state = self.order.observe(self.state, indices, grads)

    def state_bytes(self) -> int:
        """Peak bytes of the order's state."""
        return self.order.state_bytes(self.state)


class WithIndices(Dataset):
    """``dataset`` whose items come with their index: ``(i, *dataset[i])`` (or ``(i, item)``).

    >>> WithIndices([(10, 1), (20, 0)])[1]
    (1, 20, 0)
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (i, *item) if isinstance(item, tuple) else (i, item)
