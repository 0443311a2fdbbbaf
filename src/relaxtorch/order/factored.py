"""Per-example gradients kept in factored form, so a balancing order never forms them.

The gradient of a ``Linear`` layer's weight for example i is the outer product ``δ_i a_iᵀ`` of
its output's gradient and its input (Goodfellow, "Efficient per-example gradient computations",
2015), and a bias's is ``δ_i``.  GraB and its relatives only need, per step, inner products of
these gradients with a few d-vectors (the running sums, the stale mean), their b x b Gram matrix,
and weighted sums of them — all of which the factors give directly (the "ghost" trick of
Goodfellow 2015 and Li, Tramèr, Liang & Hashimoto, ICLR 2022):

- ``<S, δ_i a_iᵀ> = δ_iᵀ S a_i``          — one (b x o)(o x i) product per layer;
- ``<δ_i a_iᵀ, δ_j a_jᵀ> = (δ_i·δ_j)(a_i·a_j)`` — two b x b products per layer;
- ``Σ_i w_i δ_i a_iᵀ = (w ⊙ δ)ᵀ A``       — one product per layer.

So a step costs O(b·o·i) instead of materialising b·d numbers (5x a plain step on a small MLP).
:class:`FactoredGrads` is that value; :class:`~relaxtorch.order.recorder.LinearGrads` records
it from an ordinary forward and backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._base import invalid


@dataclass(frozen=True)
class Outer:
    """Per-example gradients ``vec(δ_i a_iᵀ)`` (row-major ``o x i``, as ``nn.Linear.weight``),
    followed by ``δ_i`` when ``bias`` (the layer's bias): then ``a`` is treated as ``[a, 1]``."""

    dz: Tensor  # [b, o]
    a: Tensor   # [b, i]
    bias: bool = False

    @property
    def size(self) -> int:
        return self.dz.shape[1] * (self.a.shape[1] + self.bias)

    def augmented(self) -> Tensor:
        """``a``, with a column of ones when ``bias``: [b, i (+1)] (made once)."""
        cached = self.__dict__.get("_augmented")
        if cached is None:
            cached = torch.nn.functional.pad(self.a, (0, 1), value=1.0) if self.bias else self.a
            object.__setattr__(self, "_augmented", cached)
        return cached


@dataclass(frozen=True)
class Dense:
    """Per-example gradients given as they are: ``v`` [b, k]."""

    v: Tensor

    @property
    def size(self) -> int:
        return self.v.shape[1]


class FactoredGrads:
    """``b`` per-example gradients of length ``d`` as consecutive blocks (:class:`Outer` or
    :class:`Dense`), flattened in block order.  ``dense()`` forms them ([b, d]); the balancing
    orders use ``dots``, ``gram`` and ``add_weighted_`` instead.

    >>> dz, a = torch.randn(3, 2), torch.randn(3, 4)
    >>> f = FactoredGrads([Outer(dz, a, bias=True), Dense(torch.randn(3, 5))])
    >>> f.batch, f.dim
    (3, 15)
    >>> dense = f.dense()
    >>> torch.allclose(f.gram(), dense @ dense.T)
    True
    """

    def __init__(self, blocks):
        blocks = list(blocks)
        if not blocks or not all(isinstance(b, (Outer, Dense)) for b in blocks):
            raise invalid("blocks", blocks, "a non-empty list of Outer and Dense blocks")
        sizes = set()
        for blk in blocks:
            for t in (blk.dz, blk.a) if isinstance(blk, Outer) else (blk.v,):
                if not isinstance(t, Tensor) or t.ndim != 2 or not t.dtype.is_floating_point:
                    raise invalid("blocks", getattr(t, "shape", t), "2-d floating-point tensors [b, k]")
                sizes.add(t.shape[0])
        if len(sizes) != 1:
            raise invalid("blocks", sorted(sizes), "every block has the same batch size")
        self.blocks = blocks
        self.batch = sizes.pop()
        self.dim = sum(b.size for b in blocks)
        self.dtype = blocks[0].dz.dtype if isinstance(blocks[0], Outer) else blocks[0].v.dtype

    def __repr__(self) -> str:
        return f"FactoredGrads(batch={self.batch}, dim={self.dim}, blocks={len(self.blocks)})"

    def _tensors(self):
        for b in self.blocks:
            yield from (b.dz, b.a) if isinstance(b, Outer) else (b.v,)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([self.batch, self.dim])

    def rows(self, index: Tensor) -> "FactoredGrads":
        """The examples ``index`` (a LongTensor), as factored gradients."""
        return FactoredGrads([Outer(b.dz[index], b.a[index], b.bias) if isinstance(b, Outer) else Dense(b.v[index])
                              for b in self.blocks])

    def to(self, dtype: torch.dtype) -> "FactoredGrads":
        """The same gradients with every factor in ``dtype``, on the CPU (itself if they are)."""
        if all(t.dtype == dtype and t.device.type == "cpu" and not t.requires_grad for t in self._tensors()):
            return self
        return FactoredGrads([Outer(b.dz.detach().to("cpu", dtype), b.a.detach().to("cpu", dtype), b.bias)
                              if isinstance(b, Outer) else Dense(b.v.detach().to("cpu", dtype)) for b in self.blocks])

    def dense(self) -> Tensor:
        """The gradients formed: [b, d]."""
        parts = []
        for b in self.blocks:
            if isinstance(b, Outer):
                parts.append(torch.einsum("bo,bi->boi", b.dz, b.a).reshape(self.batch, -1))
                if b.bias:
                    parts.append(b.dz)
            else:
                parts.append(b.v)
        return torch.cat(parts, dim=1)

    def _views(self, vectors: Tensor):
        """Each block's slice of ``vectors`` [m, d]: for Outer the weight part [m, o, i] and the
        bias part [m, o] (None without a bias), for Dense [m, k]."""
        start = 0
        for b in self.blocks:
            piece = vectors[:, start:start + b.size]
            start += b.size
            if isinstance(b, Outer):
                o, i = b.dz.shape[1], b.a.shape[1]
                yield b, (piece[:, :o * i].reshape(-1, o, i), piece[:, o * i:] if b.bias else None)
            else:
                yield b, piece

    def dots(self, vectors: Tensor) -> Tensor:
        """``<vectors[r], g_i>`` for each row r of ``vectors`` [m, d] and example i: [m, b]."""
        out = None
        for b, view in self._views(vectors):
            if isinstance(b, Outer):
                weight, bias = view
                full = weight if bias is None else torch.cat([weight, bias[:, :, None]], dim=2)
                part = ((b.dz @ full) * b.augmented()).sum(-1)  # δ_iᵀ S_r a_i: [b, o] @ [m, o, i] -> [m, b, i]
            else:
                part = view @ b.v.T
            out = part if out is None else out.add_(part)
        return out

    def gram(self) -> Tensor:
        """``<g_i, g_j>``: [b, b]."""
        out = None
        for b in self.blocks:
            if isinstance(b, Outer):
                a = b.augmented()
                part = (b.dz @ b.dz.T).mul_(a @ a.T)
            else:
                part = b.v @ b.v.T
            out = part if out is None else out.add_(part)
        return out

    def add_weighted_(self, vectors: Tensor, weights: Tensor) -> Tensor:
        """``vectors[r] += Σ_i weights[r, i] g_i`` in place, for ``vectors`` [m, d] and ``weights`` [m, b]."""
        for b, view in self._views(vectors):
            if isinstance(b, Outer):
                weight, bias = view
                # (w_r ⊙ δ)ᵀ [A, 1] for every r: [m, o, b] @ [b, i (+1)]
                sums = (weights[:, None, :] * b.dz.T[None]) @ b.augmented()
                if bias is None:
                    weight += sums
                else:
                    weight += sums[:, :, :-1]
                    bias += sums[:, :, -1]
            else:
                view += weights @ b.v
        return vectors


def as_rows(array: np.ndarray) -> Tensor:
    """A NumPy buffer [d] or [m, d] as a float64 tensor [m, d] sharing its memory."""
    t = torch.from_numpy(array)
    return t.view(1, -1) if t.ndim == 1 else t
