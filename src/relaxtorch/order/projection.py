"""Random projections that shrink per-example gradients before a sorter balances them.

A sorter's buffers hold a few vectors of the balanced dimension; projecting ``d`` down to
``dim`` cuts them (and herding's n x d table) to ``dim``.  Both maps are linear and keep
squared norms in expectation (Johnson–Lindenstrauss), so balancing the projections balances
the gradients up to the embedding's distortion.

- ``"sparse_jl"``: the sparse JL transform of Kane & Nelson (JACM 2014): each input coordinate
  goes to ``s`` buckets with random signs, scaled by 1/sqrt(s) (``s = 1``: CountSketch).
  Stores ``s`` bucket indices and signs per coordinate.
- ``"kronecker"``: a Kronecker product of two Gaussian maps, ``A ⊗ B`` (Sun, Guo, Tropp &
  Udell, ICML 2021): the gradient padded to a ``d1 x d2`` matrix ``X`` maps to ``A X Bᵀ``.
  Stores ``dim1 * d1 + dim2 * d2`` numbers, about ``2 sqrt(dim d)`` — far fewer than a dense map.
  The output dimension is ``dim1 * dim2 >= dim`` (``dim1 = ceil(sqrt(dim))``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import check_positive_int, invalid

PROJECTIONS = ("sparse_jl", "kronecker")


def kronecker_shape(dim: int) -> tuple[int, int]:
    """``(dim1, dim2)``, the factors' sizes of a Kronecker map to at least ``dim`` numbers:
    ``dim1 = ceil(sqrt(dim))``, ``dim2 = ceil(dim / dim1)``."""
    dim1 = math.isqrt(dim - 1) + 1
    return dim1, -(-dim // dim1)


def projected_dim(kind: str | None, d: int, dim: int | None) -> int:
    """The dimension a sorter balances for ``kind`` (None: ``d``)."""
    if kind is None:
        return d
    if kind not in PROJECTIONS:
        raise invalid("projection", kind, f"one of None, {', '.join(repr(p) for p in PROJECTIONS)}")
    if dim is None:
        raise invalid("dim", dim, f"the target dimension of the {kind!r} projection")
    dim = check_positive_int("dim", dim)
    if kind == "kronecker":
        dim1, dim2 = kronecker_shape(dim)
        return dim1 * dim2
    return dim


def make_projection(kind: str, d: int, dim: int, generator: torch.Generator, *, s: int = 1) -> dict:
    """The projection's random tensors (CPU), drawn from ``generator``."""
    if kind == "sparse_jl":
        buckets = torch.randint(0, dim, (s, d), generator=generator)
        signs = torch.randint(0, 2, (s, d), generator=generator).to(torch.float32).mul_(2).sub_(1)
        return {"proj_buckets": buckets, "proj_signs": signs.div_(math.sqrt(s)), "proj_dim": dim}
    d1, d2 = kronecker_shape(d)
    dim1, dim2 = kronecker_shape(dim)
    a = torch.randn(dim1, d1, generator=generator).div_(math.sqrt(dim1))
    b = torch.randn(dim2, d2, generator=generator).div_(math.sqrt(dim2))
    return {"proj_a": a, "proj_b": b}


def project(kind: str, tensors: dict, grads: Tensor) -> Tensor:
    """``grads`` [b, d] mapped to [b, dim] (float32, on ``grads``' device).

    >>> g = torch.Generator().manual_seed(0)
    >>> p = make_projection("kronecker", 10, 4, g)
    >>> project("kronecker", p, torch.ones(3, 10)).shape
    torch.Size([3, 4])
    """
    x = grads.to(torch.float32)
    b, d = x.shape
    if kind == "sparse_jl":
        buckets = tensors["proj_buckets"].to(x.device)
        signs = tensors["proj_signs"].to(x.device)
        out = torch.zeros(b, tensors["proj_dim"], dtype=torch.float32, device=x.device)
        for r in range(buckets.shape[0]):
            out.index_add_(1, buckets[r], x * signs[r])
        return out
    a = tensors["proj_a"].to(x.device)
    bm = tensors["proj_b"].to(x.device)
    d1, d2 = a.shape[1], bm.shape[1]
    padded = torch.nn.functional.pad(x, (0, d1 * d2 - d))
    right = (padded.view(b * d1, d2) @ bm.T).view(b, d1, -1)  # X Bᵀ, as one 2-d product
    both = right.transpose(1, 2).reshape(-1, d1) @ a.T  # (X Bᵀ)ᵀ Aᵀ = (A X Bᵀ)ᵀ
    return both.view(b, bm.shape[0], a.shape[0]).transpose(1, 2).reshape(b, -1)
