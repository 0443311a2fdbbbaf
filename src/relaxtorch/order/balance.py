"""Orders that balance per-example gradients: GraB and its relatives.

An epoch of a balancing order visits the examples; after each step the loop calls
``observe(state, indices, grads)`` with that step's per-example gradients, and the compiled
kernel assigns each example a sign (``_kernels.py``).  The next ``epoch`` returns the
permutation those signs build: the ``+`` examples in visit order, then the ``-`` examples in
reverse visit order (the herding-by-balancing reduction of Lu, Guo & De Sa, NeurIPS 2022).
The first epoch is a uniform random permutation.

Partial epochs (``drop_last``, an early ``break``, a second pass): **examples the sorter could
not place this epoch — not observed, observed twice (the second time is ignored), or, in pair
balance, left without a partner (odd n) — keep their relative order from this epoch and go
between the front and the back of the next permutation**.  Stale means use the examples
observed this epoch (the previous mean is kept when none was).

- ``GraB`` ("grab"): mean balance, ``c = g - m`` with ``m`` the previous epoch's mean gradient.
- ``ProbBalance`` ("prob"): mean balance with the self-balancing walk's random signs
  (Alweiss, Liu & Sawhney, STOC 2021), ``P(+) = 1/2 - <s, c> / (2 c_scale)``.
- ``PairBalance`` ("pair"): balances differences of consecutive examples, no stale mean
  (Cooper, Guo et al., NeurIPS 2023); any n (an unpaired example goes in the middle).
- ``RecursiveBalance`` ("recursive"): a tree of running sums of depth ``depth`` (the
  grab-sampler's recursive balance); ``depth=0`` is GraB.
- ``Herding`` ("herding"): greedy herding on the stale gradients of the epoch, the O(n^2 d)
  reference with an n x d table (Lu, Guo & De Sa 2022, Algorithm 1).
Options ``projection="sparse_jl" | "kronecker"`` with ``dim`` balance random projections
(``projection.py``) and shrink every buffer from ``d`` to ``dim``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import _kernels
from ._base import Order, OrderState, check_positive_int, invalid
from .factored import FactoredGrads, as_rows
from .projection import make_projection, project, projected_dim

_NO_UNIFORMS = np.zeros(0)


@dataclass(frozen=True)
class _Balancing(Order):
    n: int
    d: int
    projection: str | None = None
    dim: int | None = None
    needs_gradients = True

    def __post_init__(self):
        super().__post_init__()
        if self.d is None:
            raise invalid("d", None, f"the {self.name!r} order balances gradients: give their length d")
        check_positive_int("d", self.d)
        projected_dim(self.projection, self.d, self.dim)

    @property
    def balanced_dim(self) -> int:
        """The length of the vectors the kernel balances (``d``, or the projection's)."""
        return projected_dim(self.projection, self.d, self.dim)

    # -- state -----------------------------------------------------------------------------
    def _setup(self, state: OrderState) -> None:
        if self.projection is not None:
            state.buffers.update(make_projection(self.projection, self.d, self.dim, state.generator))
        state.buffers["seen"] = np.zeros(self.n, dtype=np.uint8)
        self._setup_sorter(state, self.balanced_dim)

    def _setup_sorter(self, state: OrderState, k: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self, state: OrderState, indices: np.ndarray, grads) -> None:
        if isinstance(grads, FactoredGrads):
            if self.projection is None and self._factored_ok():
                dtype = grads.dtype if grads.dtype in (torch.float32, torch.float64) else torch.float32
                self._observe_factored(state, indices, grads.to(dtype))
                return
            grads = grads.dense()
        self._observe_dense(state, indices, grads)

    def _factored_ok(self) -> bool:
        """True when the sorter balances factored gradients without forming them."""
        return False

    def _observe_dense(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _observe_factored(self, state: OrderState, indices: np.ndarray, grads: FactoredGrads) -> None:  # pragma: no cover
        raise NotImplementedError

    def _vectors(self, state: OrderState, grads: Tensor) -> np.ndarray:
        if self.projection is not None:
            grads = project(self.projection, state.buffers, grads)
        if grads.dtype not in (torch.float32, torch.float64):
            grads = grads.to(torch.float32)
        if not grads.is_cpu:
            grads = grads.cpu()
        array = grads.numpy()
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)

    def _next(self, state: OrderState) -> Tensor:
        if state.perm is None:
            return torch.randperm(self.n, generator=state.generator)
        perm = self._assemble(state, state.perm.numpy())
        state.buffers["seen"][:] = 0
        return torch.from_numpy(perm)


def _with_middle(front: np.ndarray, back: np.ndarray, perm: np.ndarray, n: int) -> np.ndarray:
    """``front`` + the examples of ``perm`` in neither (in ``perm``'s order) + ``back``."""
    placed = np.zeros(n, dtype=bool)
    placed[front] = True
    placed[back] = True
    return np.concatenate([front, perm[~placed[perm]], back]).astype(np.int64)


def _fresh_rows(seen: np.ndarray, idx: np.ndarray, grads: FactoredGrads):
    """(positions, their factored gradients) of the step's examples to place (``take_fresh``)."""
    pos = _kernels.take_fresh(seen, idx)
    return pos, grads if pos.size == idx.shape[0] else grads.rows(torch.from_numpy(pos))


def _dots(f: FactoredGrads, *buffers: np.ndarray) -> Tensor:
    """``<v, g_k>`` [rows, k] (float64) for the rows of the float64 ``buffers`` ([d] or [r, d]),
    computed in the factors' dtype."""
    return f.dots(torch.cat([as_rows(b) for b in buffers]).to(f.dtype)).double()


def _accumulate(f: FactoredGrads, *targets) -> None:
    """``target[r] += Σ_k weights[r, k] g_k`` for each (float64 buffer, float64 weights [r, k]) pair,
    in one pass over the factors."""
    weights = torch.cat([w for _, w in targets]).to(f.dtype)
    sums = f.add_weighted_(torch.zeros(weights.shape[0], f.dim, dtype=f.dtype), weights)
    start = 0
    for buffer, w in targets:
        rows = as_rows(buffer)
        rows += sums[start:start + w.shape[0]]
        start += w.shape[0]


def _place(b: dict, front: np.ndarray, back: np.ndarray) -> None:
    """``front`` to the next front slots (ascending), ``back`` to the next back slots (descending)."""
    left, right = int(b["ptr"][0]), int(b["ptr"][1])
    b["slots"][left:left + front.size] = front
    b["slots"][right - back.size + 1:right + 1] = back[::-1]
    b["ptr"][0], b["ptr"][1] = left + front.size, right - back.size


@dataclass(frozen=True)
class _FrontBack(_Balancing):
    """Shared by mean, probabilistic and pair balance: ``+`` to the front, ``-`` to the back."""

    def _front_back(self, state: OrderState, perm: np.ndarray) -> np.ndarray:
        b = state.buffers
        left, right = int(b["ptr"][0]), int(b["ptr"][1])
        out = _with_middle(b["slots"][:left], b["slots"][right + 1:], perm, self.n)
        b["ptr"][0], b["ptr"][1] = 0, self.n - 1
        b["s"][:] = 0.0
        return out


@dataclass(frozen=True)
class GraB(_FrontBack):
    """GraB: online mean balance on the previous epoch's mean gradient (Lu, Guo & De Sa, NeurIPS 2022).

    >>> order = GraB(4, 2); state = order.init(torch.Generator().manual_seed(0))
    >>> perm, state = order.epoch(state)
    >>> table = torch.tensor([[1., 0.], [2., 0.], [3., 0.], [4., 0.]])  # example i's gradient
    >>> state = order.observe(state, perm, table[perm])
    >>> perm2, state = order.epoch(state)
    >>> sorted(perm2.tolist())
    [0, 1, 2, 3]
    """

    name = "grab"

    def _setup_sorter(self, state: OrderState, k: int) -> None:
        state.buffers.update(
            s=np.zeros(k), mean=np.zeros(k), next_sum=np.zeros(k),
            slots=np.zeros(self.n, dtype=np.int64), ptr=np.array([0, self.n - 1, 0], dtype=np.int64))

    def _uniforms(self, state: OrderState, b: int) -> np.ndarray:
        return _NO_UNIFORMS

    def _c_scale(self) -> float:
        return 1.0

    def _observe_dense(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:
        g = self._vectors(state, grads)
        b = state.buffers
        _kernels.mean_balance_(g, indices, b["mean"], b["s"], b["next_sum"], b["seen"], b["slots"], b["ptr"],
                               self._uniforms(state, g.shape[0]), self._c_scale())

    def _factored_ok(self) -> bool:
        return True

    def _observe_factored(self, state: OrderState, indices: np.ndarray, grads: FactoredGrads) -> None:
        b = state.buffers
        uniforms = self._uniforms(state, indices.shape[0])
        pos, f = _fresh_rows(b["seen"], indices, grads)
        if pos.size == 0:
            return
        s, mean = as_rows(b["s"]), as_rows(b["mean"])
        dots, gram = _dots(f, b["s"], b["mean"]).numpy(), f.gram().double().numpy()
        _kernels.center_(dots, gram, np.array([b["s"] @ b["mean"]]), float(b["mean"] @ b["mean"]))
        eps = _kernels.gram_signs(dots[0], gram, uniforms[pos] if uniforms.size else uniforms, self._c_scale())
        ones = torch.ones(1, pos.size, dtype=torch.float64)
        _accumulate(f, (b["s"], torch.from_numpy(eps)[None]), (b["next_sum"], ones))
        s -= float(eps.sum()) * mean
        j = indices[pos]
        _place(b, j[eps > 0], j[eps < 0])
        b["ptr"][2] += pos.size

    def _assemble(self, state: OrderState, perm: np.ndarray) -> np.ndarray:
        b = state.buffers
        count = int(b["ptr"][2])
        if count:
            b["mean"][:] = b["next_sum"] / count
        b["next_sum"][:] = 0.0
        b["ptr"][2] = 0
        return self._front_back(state, perm)


@dataclass(frozen=True)
class ProbBalance(GraB):
    """Mean balance with random signs, ``P(+) = clip(1/2 - <s, c> / (2 c_scale), 0, 1)``
    (the self-balancing walk of Alweiss, Liu & Sawhney, STOC 2021; grab-sampler's ``c = 30``).

    >>> order = ProbBalance(6, 3); state = order.init(torch.Generator().manual_seed(0))
    >>> perm, state = order.epoch(state); state = order.observe(state, perm, torch.randn(6, 3))
    >>> sorted(order.epoch(state)[0].tolist())
    [0, 1, 2, 3, 4, 5]
    """

    c_scale: float = 30.0
    name = "prob"

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.c_scale, (int, float)) and math.isfinite(self.c_scale) and self.c_scale > 0):
            raise invalid("c_scale", self.c_scale, "a finite number > 0")

    def _uniforms(self, state: OrderState, b: int) -> np.ndarray:
        return torch.rand(b, generator=state.generator, dtype=torch.float64).numpy()

    def _c_scale(self) -> float:
        return float(self.c_scale)


@dataclass(frozen=True)
class PairBalance(_FrontBack):
    """Pair balance: signs for differences of consecutive examples, no stale mean; any n.

    >>> order = PairBalance(5, 2); state = order.init(torch.Generator().manual_seed(0))
    >>> perm, state = order.epoch(state); state = order.observe(state, perm, torch.randn(5, 2))
    >>> sorted(order.epoch(state)[0].tolist())
    [0, 1, 2, 3, 4]
    """

    name = "pair"

    def _setup_sorter(self, state: OrderState, k: int) -> None:
        state.buffers.update(
            s=np.zeros(k), pending=np.zeros(k), pending_idx=np.array([-1], dtype=np.int64),
            slots=np.zeros(self.n, dtype=np.int64), ptr=np.array([0, self.n - 1], dtype=np.int64))

    def _observe_dense(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:
        g = self._vectors(state, grads)
        b = state.buffers
        _kernels.pair_balance_(g, indices, b["s"], b["pending"], b["pending_idx"], b["seen"], b["slots"], b["ptr"],
                               _NO_UNIFORMS, 1.0)

    def _factored_ok(self) -> bool:
        return True

    def _observe_factored(self, state: OrderState, indices: np.ndarray, grads: FactoredGrads) -> None:
        b = state.buffers
        pos, f = _fresh_rows(b["seen"], indices, grads)
        if pos.size == 0:
            return
        s, pending = as_rows(b["s"]), as_rows(b["pending"])
        dots = _dots(f, b["s"], b["pending"])
        u, gram, ids = dots[0], f.gram().double(), indices[pos]
        waiting = int(b["pending_idx"][0])
        if waiting >= 0:  # the example waiting from the last step leads: vectors [pending, fresh...]
            u = torch.cat([(s[0] @ pending[0]).view(1), u])
            gram = torch.cat([torch.cat([(pending[0] @ pending[0]).view(1, 1), dots[1:]], dim=1),
                              torch.cat([dots[1][:, None], gram], dim=1)])
            ids = np.concatenate([[waiting], ids])
        pairs = ids.size // 2
        first, second = np.arange(0, 2 * pairs, 2), np.arange(1, 2 * pairs, 2)
        diff_gram = (gram[first][:, first] - gram[first][:, second] - gram[second][:, first]
                     + gram[second][:, second])
        eps = _kernels.gram_signs((u[first] - u[second]).numpy(), diff_gram.numpy(), _NO_UNIFORMS, 1.0)
        coef = np.zeros(ids.size)
        coef[first], coef[second] = eps, -eps
        if waiting >= 0:
            s += float(coef[0]) * pending
            coef = coef[1:]
        _accumulate(f, (b["s"], torch.from_numpy(coef)[None]))
        plus = eps > 0
        _place(b, np.where(plus, ids[first], ids[second]), np.where(plus, ids[second], ids[first]))
        if ids.size % 2:
            pending[0] = f.rows(torch.tensor([pos.size - 1])).dense()[0].double()
            b["pending_idx"][0] = ids[-1]
        else:
            b["pending_idx"][0] = -1

    def _assemble(self, state: OrderState, perm: np.ndarray) -> np.ndarray:
        state.buffers["pending_idx"][0] = -1
        return self._front_back(state, perm)


@dataclass(frozen=True)
class RecursiveBalance(_Balancing):
    """Recursive balance: a depth-``depth`` binary tree of running sums on ``g - m``; the
    permutation lists the leaves left to right, each its ``+`` examples then its ``-`` examples
    reversed.  Memory ``(2^(depth+1) - 1) d``.  ``depth=0`` is GraB.

    >>> order = RecursiveBalance(8, 2, depth=2); state = order.init(torch.Generator().manual_seed(0))
    >>> perm, state = order.epoch(state); state = order.observe(state, perm, torch.randn(8, 2))
    >>> sorted(order.epoch(state)[0].tolist())
    [0, 1, 2, 3, 4, 5, 6, 7]
    """

    depth: int = 3
    name = "recursive"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("depth", self.depth, minimum=0)
        if self.depth > 20:
            raise invalid("depth", self.depth, "at most 20 (the tree holds 2^(depth+1) - 1 running sums)")

    def _setup_sorter(self, state: OrderState, k: int) -> None:
        state.buffers.update(
            acc=np.zeros(((1 << (self.depth + 1)) - 1, k)), mean=np.zeros(k), next_sum=np.zeros(k),
            group=np.zeros(self.n, dtype=np.int64), seq=np.zeros(self.n, dtype=np.int64),
            ptr=np.zeros(1, dtype=np.int64))

    def _observe_dense(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:
        g = self._vectors(state, grads)
        b = state.buffers
        _kernels.recursive_balance_(g, indices, b["mean"], b["acc"], b["next_sum"], b["seen"], b["group"], b["seq"],
                                    b["ptr"], self.depth)

    def _factored_ok(self) -> bool:
        return self.depth <= 5  # the tree's 2^(depth+1) - 1 sums are dotted with every gradient

    def _observe_factored(self, state: OrderState, indices: np.ndarray, grads: FactoredGrads) -> None:
        b = state.buffers
        pos, f = _fresh_rows(b["seen"], indices, grads)
        if pos.size == 0:
            return
        acc, mean = torch.from_numpy(b["acc"]), as_rows(b["mean"])
        dots, gram = _dots(f, b["acc"], b["mean"]).numpy(), f.gram().double().numpy()
        _kernels.center_(dots, gram, b["acc"] @ b["mean"], float(b["mean"] @ b["mean"]))
        weights, leaf, negative = _kernels.gram_tree_signs(dots[:-1], gram, self.depth)
        weights = torch.from_numpy(weights)
        _accumulate(f, (b["acc"], weights), (b["next_sum"], torch.ones(1, pos.size, dtype=torch.float64)))
        acc -= weights.sum(1, keepdim=True) * mean
        j, start = indices[pos], int(b["ptr"][0])
        b["group"][j] = 2 * leaf + negative
        b["seq"][j] = np.arange(start, start + pos.size)
        b["ptr"][0] = start + pos.size

    def _assemble(self, state: OrderState, perm: np.ndarray) -> np.ndarray:
        b = state.buffers
        count = int(b["ptr"][0])
        seen = np.flatnonzero(b["seen"])
        group, seq = b["group"][seen], b["seq"][seen]
        negative = group % 2 == 1
        placed = seen[np.lexsort((np.where(negative, -seq, seq), group))]
        split = int(np.count_nonzero(group < (1 << self.depth)))
        if count:
            b["mean"][:] = b["next_sum"] / count
        b["next_sum"][:] = 0.0
        b["acc"][:] = 0.0
        b["ptr"][0] = 0
        return _with_middle(placed[:split], placed[split:], perm, self.n)


@dataclass(frozen=True)
class Herding(_Balancing):
    """Greedy herding on the stale (centered) gradients of the epoch: the O(n^2 d) reference
    with an n x d table (Lu, Guo & De Sa, NeurIPS 2022, Algorithm 1).  Examples not observed
    this epoch follow the herded ones, in this epoch's order.

    >>> order = Herding(4, 1); state = order.init(torch.Generator().manual_seed(0))
    >>> perm, state = order.epoch(state)
    >>> state = order.observe(state, torch.arange(4), torch.tensor([[3.], [1.], [-1.], [-3.]]))
    >>> order.epoch(state)[0].tolist()
    [1, 2, 0, 3]
    """

    name = "herding"

    def _setup_sorter(self, state: OrderState, k: int) -> None:
        state.buffers["table"] = np.zeros((self.n, k))

    def _observe_dense(self, state: OrderState, indices: np.ndarray, grads: Tensor) -> None:
        g = self._vectors(state, grads)
        b = state.buffers
        fresh = b["seen"][indices] == 0
        _, first = np.unique(indices, return_index=True)
        keep = np.zeros(indices.shape[0], dtype=bool)
        keep[first] = True
        keep &= fresh
        b["table"][indices[keep]] = g[keep]
        b["seen"][indices[keep]] = 1

    def _assemble(self, state: OrderState, perm: np.ndarray) -> np.ndarray:
        b = state.buffers
        rows = np.flatnonzero(b["seen"])
        if rows.size == 0:
            return perm.copy()
        g = b["table"][rows]
        order = rows[_kernels.herding_order(np.ascontiguousarray(g - g.mean(axis=0)))]
        return _with_middle(order, np.zeros(0, dtype=np.int64), perm, self.n)
