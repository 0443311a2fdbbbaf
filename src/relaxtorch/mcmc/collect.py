"""Keeping samples: burn-in, thinning and a memory bound; the posterior predictive.

:class:`SampleCollector` is fed every position of one chain.  It drops the first
``burn_in``, keeps every ``thin``-th after that, and never holds more than ``max_bytes``:
when the next kept sample would not fit, the policy ``on_full="thin"`` doubles the thinning
and drops every other stored draw (the draws stay equally spaced in the chain, so ESS and
R-hat remain meaningful; the oldest kept draw stays), and ``on_full="error"`` raises
MemoryError.  Samples come out stacked as ArviZ shapes them, (chains, draws, *event).
"""
from __future__ import annotations

from typing import Iterable, List, Optional

import torch

from ._tree import Tree, leaves, nbytes, unflatten


class SampleCollector:
    """Thinned samples of one chain after burn-in, within ``max_bytes`` (None: unbounded).

    ``device`` (None: where the samples are) is where stored copies live, e.g. "cpu" for a
    GPU chain.

    >>> c = SampleCollector(burn_in=2, thin=3)
    >>> for i in range(11):
    ...     _ = c.add(torch.tensor([float(i)]))
    >>> c.samples().flatten().tolist(), c.seen, c.draws
    ([2.0, 5.0, 8.0], 11, 3)
    """

    def __init__(self, *, burn_in: int = 0, thin: int = 1, max_bytes: Optional[int] = None, on_full: str = "thin",
                 device=None):
        for name, v, low in (("burn_in", burn_in, 0), ("thin", thin, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"Invalid {name}: {v!r} (an int >= {low})")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"Invalid max_bytes: {max_bytes!r} (a positive int, or None for no bound)")
        if on_full not in ("thin", "error"):
            raise ValueError(f"Invalid on_full: {on_full!r} ('thin' or 'error')")
        self.burn_in, self.thin, self.max_bytes, self.on_full, self.device = burn_in, thin, max_bytes, on_full, device
        self.seen = 0          # positions offered
        self._kept: List[List[torch.Tensor]] = []
        self._like: Optional[Tree] = None
        self._per_draw = 0

    @property
    def draws(self) -> int:
        return len(self._kept)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored samples."""
        return self._per_draw * len(self._kept)

    def add(self, position: Tree) -> bool:
        """Offer the chain's next position; True when it was stored (copied)."""
        self.seen += 1
        k = self.seen - self.burn_in  # 1-based index after burn-in
        if k < 1 or (k - 1) % self.thin:
            return False
        if self._like is None:
            self._like, self._per_draw = position, nbytes(position)
            if self.max_bytes is not None and self._per_draw > self.max_bytes:
                raise MemoryError(f"one sample takes {self._per_draw} bytes, more than max_bytes={self.max_bytes}")
        while self.max_bytes is not None and self._per_draw * (len(self._kept) + 1) > self.max_bytes:
            if self.on_full == "error":
                raise MemoryError(f"the collector is full: {len(self._kept)} draws of {self._per_draw} bytes "
                                  f"(max_bytes={self.max_bytes})")
            # draws kept so far sit at after-burn-in indices 1, 1+thin, ...; keep every other one
            self._kept = self._kept[::2]
            self.thin *= 2
            if (k - 1) % self.thin:
                return False
        device = self.device
        self._kept.append([x.detach().to(device, copy=True) if device is not None else x.detach().clone()
                           for x in leaves(position)])
        return True

    def samples(self) -> Tree:
        """The stored draws as one chain, each leaf shaped (1, draws, *event)."""
        if self._like is None:
            raise ValueError("Invalid collector: no samples stored yet")
        stacked = [torch.stack(col).unsqueeze(0) for col in zip(*self._kept)]
        return unflatten(self._like, stacked)


def stack_chains(collectors: Iterable[SampleCollector]) -> Tree:
    """Several chains' samples as (chains, draws, *event), cut to the shortest chain.

    >>> a, b = SampleCollector(), SampleCollector()
    >>> for i in range(3):
    ...     _ = a.add(torch.tensor(float(i))); _ = b.add(torch.tensor(-float(i)))
    >>> stack_chains([a, b]).shape
    torch.Size([2, 3])
    """
    trees = [c.samples() for c in collectors]
    if not trees:
        raise ValueError("Invalid collectors: none given")
    n = min(leaves(t)[0].shape[1] for t in trees)
    cols = zip(*[leaves(t) for t in trees])
    return unflatten(trees[0], [torch.cat([x[:, :n] for x in col]) for col in cols])


def posterior_predictive(model: torch.nn.Module, samples: dict, x, *,
                         link: Optional[str] = "softmax") -> torch.Tensor:
    """The model's predictions at ``x`` averaged over posterior ``samples``: (1/S) Σ_s f(x; θ_s).

    ``samples`` maps parameter names (as in ``model.named_parameters()``; missing names keep the
    model's values) to tensors shaped (chains, draws, *shape) or (draws, *shape).  ``link``
    turns outputs into probabilities before averaging: "softmax" (over the last dimension),
    "sigmoid", or None (outputs already are probabilities or means).  The model is not changed.

    >>> m = torch.nn.Linear(1, 2, bias=False)
    >>> s = {"weight": torch.stack([torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])])}
    >>> posterior_predictive(m, s, torch.ones(1, 1)).tolist()   # half the mass on each class
    [[0.5, 0.5]]
    """
    from torch.func import functional_call

    links = {"softmax": lambda y: torch.softmax(y, dim=-1), "sigmoid": torch.sigmoid, None: lambda y: y}
    if link not in links:
        raise ValueError(f"Invalid link: {link!r} ('softmax', 'sigmoid' or None)")
    names = dict(model.named_parameters())
    unknown = sorted(set(samples) - set(names))
    if unknown:
        raise ValueError(f"Invalid samples: {unknown!r} (not parameters of the model)")
    flat = {}
    for name, s in samples.items():
        event = names[name].dim()
        flat[name] = s.reshape(-1, *s.shape[s.dim() - event:]) if s.dim() > event else s.unsqueeze(0)
    counts = {v.shape[0] for v in flat.values()}
    if len(counts) != 1:
        raise ValueError(f"Invalid samples: draw counts {sorted(counts)} differ between parameters")
    total, n = None, counts.pop()
    with torch.no_grad():
        for i in range(n):
            params = {k: v[i] for k, v in flat.items()}
            y = links[link](functional_call(model, params, (x,)))
            total = y.double() if total is None else total + y.double()
    return (total / n).to(y.dtype)
