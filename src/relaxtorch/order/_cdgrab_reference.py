"""A slow, single-process reference of CD-GraB: every rank simulated in one loop.

Written from the paper's pseudo-code (Cooper, Guo et al., NeurIPS 2023, Algorithm 2 and the
reference code's ``CD_GraB`` server loop): each worker pairs consecutive examples of its
visit order, the server walks pair slot i of worker 0, 1, ..., W-1 before slot i + 1 and
keeps one running sum ``s``, choosing the sign that keeps ``||s ± c||`` smaller (norms, not
dot products); ``+`` sends the first example of the pair to the front of its worker's next
order and the second to the back.  Partial epochs follow ``PairBalance``'s middle rule.
"""
from __future__ import annotations

import torch


class CDGraBReference:
    """``step(indices_per_rank, grads_per_rank)`` after each step, ``next_perm(rank, current)``
    at the end of an epoch (call it for every rank, then ``reset()``)."""

    def __init__(self, world: int, d: int):
        self.world, self.d = world, d
        self.reset()

    def reset(self) -> None:
        self.s = torch.zeros(self.d, dtype=torch.float64)
        self.pending = [None] * self.world
        self.front = [[] for _ in range(self.world)]
        self.back = [[] for _ in range(self.world)]
        self.seen = [set() for _ in range(self.world)]

    def step(self, indices_per_rank, grads_per_rank) -> None:
        pairs = []
        for r in range(self.world):
            mine = []
            for i, j in enumerate(int(v) for v in indices_per_rank[r]):
                if j in self.seen[r]:
                    continue
                self.seen[r].add(j)
                g = grads_per_rank[r][i].double()
                if self.pending[r] is None:
                    self.pending[r] = (j, g)
                    continue
                a, ga = self.pending[r]
                mine.append((a, j, ga - g))
                self.pending[r] = None
            pairs.append(mine)
        for i in range(max(len(p) for p in pairs)):
            for r in range(self.world):
                if i >= len(pairs[r]):
                    continue
                a, b, c = pairs[r][i]
                if torch.linalg.vector_norm(self.s + c) <= torch.linalg.vector_norm(self.s - c):
                    self.s = self.s + c
                    self.front[r].append(a)
                    self.back[r].append(b)
                else:
                    self.s = self.s - c
                    self.front[r].append(b)
                    self.back[r].append(a)

    def next_perm(self, rank: int, current) -> list[int]:
        """Rank ``rank``'s next order: its front, the examples it did not place (in ``current``'s
        order), its back reversed."""
        front, back = self.front[rank], self.back[rank][::-1]
        placed = set(front) | set(back)
        return front + [int(j) for j in current if int(j) not in placed] + back
