"""The shape every example order shares: a frozen configuration and an explicit state.

An order is a value (``Order`` subclasses are frozen dataclasses): ``init(generator)``
gives its state, ``epoch(state)`` the next epoch's visiting order, and
``observe(state, indices, grads)`` feeds a balancing order the per-example gradients
of one step.  What changes as training runs lives in the :class:`OrderState`; the state
is the loop's own buffer — ``epoch`` and ``observe`` update it in place and return it
(as a ``torch.Generator`` is updated by the draws it makes); ``state.clone()`` keeps a
copy to branch from.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .._numba import njit


def invalid(name: str, value, why: str) -> ValueError:
    """The project's ``ValueError`` for a bad argument."""
    return ValueError(f"Invalid {name}: {value!r} ({why})")


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise invalid(name, value, f"an integer >= {minimum}")
    return int(value)


def check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise invalid("generator", generator, "a torch.Generator")
    return generator


def own_generator(generator: torch.Generator) -> torch.Generator:
    """A CPU generator of the order's own, seeded by one draw from ``generator`` (so two orders
    built from one generator get independent streams, and the user's generator is read once)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return torch.Generator().manual_seed(seed)


@dataclass
class OrderState:
    """What an order changes as training runs.

    ``n``: the number of examples the state was made for; ``epoch``: epochs started so far;
    ``generator``: the order's own CPU generator; ``perm``: the current epoch's order
    (None before the first ``epoch``); ``buffers``: the sorter's arrays (NumPy, CPU).
    Picklable (the generator travels as its state)."""

    n: int
    generator: torch.Generator
    epoch: int = 0
    perm: Tensor | None = None
    buffers: dict = field(default_factory=dict)

    def clone(self) -> "OrderState":
        """A deep copy (generator included) to branch from."""
        return copy.deepcopy(self)

    def nbytes(self) -> int:
        """Bytes held by the permutation and the sorter's buffers."""
        total = 0 if self.perm is None else self.perm.numel() * self.perm.element_size()
        for value in self.buffers.values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, Tensor):
                total += value.numel() * value.element_size()
        return total

    def __getstate__(self):
        state = dict(self.__dict__)
        state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state):
        gen = torch.Generator()
        gen.set_state(state["generator"])
        self.__dict__.update({**state, "generator": gen})

    def __deepcopy__(self, memo):
        new = OrderState.__new__(OrderState)
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new


class Order:
    """Base of every example order: ``init``, ``epoch``, ``observe``, ``state_bytes``.

    Subclasses are frozen dataclasses with a field ``n`` and implement ``_setup(state)``
    (buffers at init) and ``_next(state) -> LongTensor[n]`` (the coming epoch's order).
    Balancing orders set ``needs_gradients = True`` and implement ``_observe``."""

    name: ClassVar[str] = "order"
    needs_gradients: ClassVar[bool] = False
    n: int

    def __post_init__(self):
        check_positive_int("n", self.n)

    # -- the public protocol -------------------------------------------------------------
    def init(self, generator: torch.Generator) -> OrderState:
        """A fresh state drawing its randomness from ``generator`` (read once)."""
        state = OrderState(n=self.n, generator=own_generator(check_generator(generator)))
        self._setup(state)
        return state

    def epoch(self, state: OrderState) -> tuple[Tensor, OrderState]:
        """The next epoch's visiting order (a new LongTensor[n]) and the updated state."""
        self._check_state(state)
        perm = self._next(state).to(torch.int64)
        state.perm = perm
        state.epoch += 1
        return perm.clone(), state

    def observe(self, state: OrderState, indices, grads=None) -> OrderState:
        """Record one step: ``indices`` LongTensor[b] of the examples it used (in visit order)
        and ``grads`` their per-example gradients, a Tensor[b, d] or a :class:`~.factored.FactoredGrads`
        (from :class:`~.recorder.LinearGrads`: balanced without forming them; ignored by orders that do
        not balance)."""
        self._check_state(state)
        if not self.needs_gradients:
            return state
        if state.perm is None:
            raise invalid("state", "before the first epoch", "call epoch(state) before observe")
        idx = self._check_indices(indices)
        g = self._check_grads(grads, idx.shape[0])
        self._observe(state, idx, g)
        return state

    def state_bytes(self, state: OrderState) -> int:
        """Peak bytes of the order's state: its permutation and the sorter's buffers."""
        self._check_state(state)
        return state.nbytes()

    # -- for subclasses ------------------------------------------------------------------
    def _setup(self, state: OrderState) -> None:
        pass

    def _next(self, state: OrderState) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------
    def _check_state(self, state) -> None:
        if not isinstance(state, OrderState):
            raise invalid("state", type(state).__name__, "an OrderState from this order's init()")
        if state.n != self.n:
            raise invalid("state", f"n={state.n}", f"made for {state.n} examples, this order has n={self.n}")

    def _check_indices(self, indices) -> np.ndarray:
        if type(indices) is Tensor and indices.dtype is torch.int64 and indices.ndim == 1 and indices.is_cpu:
            idx = indices.numpy()  # the common case, a slice of the epoch's permutation
        elif isinstance(indices, Tensor):
            if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.ndim != 1:
                raise invalid("indices", f"Tensor{list(indices.shape)} {indices.dtype}", "a 1-d integer tensor")
            idx = indices if indices.dtype == torch.int64 and indices.is_cpu else indices.to("cpu", torch.int64)
            idx = idx.numpy()  # integer tensors carry no gradient
        else:
            idx = np.asarray(indices)
            if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise invalid("indices", indices, "a 1-d sequence of integers")
            idx = idx.astype(np.int64)
        if not idx.flags.c_contiguous:
            idx = np.ascontiguousarray(idx)
        bad = _first_out_of_range(idx, self.n)
        if bad >= 0:
            raise invalid("indices", int(idx[bad]), f"example indices lie in [0, {self.n})")
        return idx

    def _check_grads(self, grads, b: int):
        d = getattr(self, "d", None)
        if type(grads) is Tensor and grads.ndim == 2 and grads.shape[0] == b and grads.shape[1] == d \
                and grads.dtype.is_floating_point:
            return grads.detach() if grads.requires_grad else grads
        from .factored import FactoredGrads  # factored.py builds on this module

        if isinstance(grads, FactoredGrads):
            if grads.batch != b or grads.dim != d:
                raise invalid("grads", grads, f"expected batch={b}, dim={d}: one gradient per index")
            return grads
        if not isinstance(grads, Tensor):
            raise invalid("grads", type(grads).__name__, f"a Tensor[{b}, {d}] of per-example gradients")
        if grads.ndim != 2 or grads.shape[0] != b or grads.shape[1] != d:
            raise invalid("grads", f"Tensor{list(grads.shape)}",
                          f"expected [{b}, {d}]: one flattened gradient per index")
        if not grads.dtype.is_floating_point:
            raise invalid("grads", grads.dtype, "a floating-point tensor")
        return grads.detach()


@njit(cache=True)
def _first_out_of_range(idx, n):
    """The position of the first index outside [0, n), or -1 (one pass; the check of every observe)."""
    for i in range(idx.shape[0]):
        if idx[i] < 0 or idx[i] >= n:
            return i
    return -1
