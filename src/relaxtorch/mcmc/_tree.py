"""Position trees: a sampler's position is a tensor or a dict of str -> tensor.

The few operations the kernels need on them: flatten to a list of leaves (a dict in its
insertion order, so that a ``torch.optim`` parameter list and the dict of a model's
``named_parameters()`` line up leaf for leaf), rebuild, map, draw Gaussian noise with an
explicit generator, and check that every entry is finite.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Union

import torch

Tree = Union[torch.Tensor, Dict[str, torch.Tensor]]


def leaves(tree: Tree) -> List[torch.Tensor]:
    """The tensors of ``tree`` in order (a dict in insertion order).

    >>> [t.tolist() for t in leaves({"a": torch.zeros(1), "b": torch.ones(2)})]
    [[0.0], [1.0, 1.0]]
    """
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tree.items()):
        return list(tree.values())
    raise TypeError(f"Invalid position: {type(tree).__name__} (a tensor or a dict of str -> tensor)")


def unflatten(like: Tree, new: List[torch.Tensor]) -> Tree:
    """A tree shaped like ``like`` holding the tensors ``new`` (in :func:`leaves` order)."""
    if isinstance(like, torch.Tensor):
        (t,) = new
        return t
    return dict(zip(like.keys(), new))


def tree_map(fn: Callable[..., torch.Tensor], tree: Tree, *rest: Tree) -> Tree:
    """``fn`` applied leaf by leaf to ``tree`` and the trees in ``rest`` (same structure).

    >>> tree_map(torch.add, {"a": torch.ones(1)}, {"a": torch.ones(1)})["a"].item()
    2.0
    """
    others = [leaves(r) for r in rest]
    return unflatten(tree, [fn(x, *ys) for x, *ys in zip(leaves(tree), *others)])


def randn_leaves(like: List[torch.Tensor], generator: torch.Generator) -> List[torch.Tensor]:
    """Standard normal noise shaped like each tensor of ``like``, drawn in order from ``generator``
    (on the tensor's device and dtype; the generator must live on that device).  CPU float32/64
    leaves take relaxtorch's counter-based normals (:mod:`._noise`: one seed drawn from ``generator``;
    Box–Muller for float32, the ziggurat for float64), other
    leaves ``torch.randn``."""
    from . import _noise
    if _noise.fast_path(like):
        return _noise.randn_leaves_fast(like, generator)
    return [torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) for x in like]


def randn_like(tree: Tree, generator: torch.Generator) -> Tree:
    """Standard normal noise shaped like ``tree`` from ``generator`` (same generator, same bits).

    >>> g = torch.Generator().manual_seed(0)
    >>> torch.equal(randn_like(torch.zeros(3), g), randn_like(torch.zeros(3), g.manual_seed(0)))
    True
    """
    return unflatten(tree, randn_leaves(leaves(tree), generator))


def all_finite(xs: List[torch.Tensor]) -> bool:
    """True when every entry of every tensor in ``xs`` is finite: one float64 sum per tensor (a NaN or
    inf entry makes it non-finite; a single read pass instead of isfinite's mask and reduction) and
    one host sync.  Only a tensor whose entries' sum overflows float64 (|sum| > 1e308) is misjudged.

    >>> all_finite([torch.ones(2), torch.tensor([1.0, float("inf")])])
    False
    """
    if not xs:
        return True
    total = xs[0].sum(dtype=torch.float64)
    for x in xs[1:]:
        total = total + x.sum(dtype=torch.float64)
    return bool(torch.isfinite(total))


def vdot(xs: List[torch.Tensor], ys: List[torch.Tensor]) -> torch.Tensor:
    """sum_i <xs_i, ys_i> as a float64 0-d tensor on the leaves' device (no host sync)."""
    total = None
    for x, y in zip(xs, ys):
        term = torch.dot(x.reshape(-1).double(), y.reshape(-1).double())
        total = term if total is None else total + term
    return total if total is not None else torch.zeros((), dtype=torch.float64)


def nbytes(tree: Tree) -> int:
    """Bytes held by the tensors of ``tree``."""
    return sum(x.numel() * x.element_size() for x in leaves(tree))


def batch_size(minibatch) -> int:
    """The number of data points in ``minibatch``: the leading size of its first tensor (a tensor,
    or a tuple/list/dict of tensors that share the leading dimension)."""
    x = minibatch
    while not isinstance(x, torch.Tensor):
        if isinstance(x, dict) and x:
            x = next(iter(x.values()))
        elif isinstance(x, (tuple, list)) and x:
            x = x[0]
        else:
            raise TypeError(f"Invalid minibatch: {type(minibatch).__name__} (a tensor or a tuple/list/dict of "
                            f"tensors whose first dimension indexes the data points)")
    if x.dim() == 0:
        raise ValueError(f"Invalid minibatch: a 0-d tensor (the first dimension indexes the data points)")
    return int(x.shape[0])
