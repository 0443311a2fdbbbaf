"""Slow, obviously-correct references for the balancing kernels: plain loops over examples,
written from the papers' pseudo-code (Lu, Guo & De Sa, NeurIPS 2022, Algorithms 1-4; the
grab-sampler's recursive balance; Alweiss, Liu & Sawhney, STOC 2021), with lists for the
front and the back of the next permutation and norms (not dot products) for the sign rule.

Each reference has ``step(indices, grads, uniforms=None)`` and ``next_perm(current)``; the
tests drive them side by side with the compiled orders and ask for the same permutations.
``sign_rule=-1`` flips the rule (the wrong-sign sorter the discrepancy test must reject).
"""
from __future__ import annotations

import torch


def _plus(s, c, u, c_scale, sign_rule):
    if u is not None:
        return bool(u <= 0.5 - torch.dot(s, c) / (2.0 * c_scale))
    keep = torch.linalg.vector_norm(s + c) <= torch.linalg.vector_norm(s - c)
    return bool(keep) if sign_rule > 0 else not bool(keep)


def _middle_rule(front, back_reversed, current):
    """front + the examples of ``current`` placed nowhere (in its order) + back."""
    placed = set(front) | set(back_reversed)
    return front + [j for j in current if j not in placed] + back_reversed


class MeanBalance:
    """GraB's online mean balance (Algorithm 4); ``prob=True``: random signs (``c_scale``)."""

    def __init__(self, d, *, prob=False, c_scale=30.0, sign_rule=1):
        self.prob, self.c_scale, self.sign_rule = prob, c_scale, sign_rule
        self.mean = torch.zeros(d, dtype=torch.float64)
        self._reset(d)

    def _reset(self, d):
        self.s = torch.zeros(d, dtype=torch.float64)
        self.next_sum = torch.zeros(d, dtype=torch.float64)
        self.count = 0
        self.front, self.back, self.seen = [], [], set()

    def step(self, indices, grads, uniforms=None):
        for i, j in enumerate(int(v) for v in indices):
            if j in self.seen:
                continue
            self.seen.add(j)
            g = grads[i].double()
            c = g - self.mean
            u = None if uniforms is None else float(uniforms[i])
            if _plus(self.s, c, u, self.c_scale, self.sign_rule):
                self.s = self.s + c
                self.front.append(j)
            else:
                self.s = self.s - c
                self.back.append(j)
            self.next_sum = self.next_sum + g
            self.count += 1

    def next_perm(self, current):
        out = _middle_rule(self.front, self.back[::-1], [int(v) for v in current])
        if self.count:
            self.mean = self.next_sum / self.count
        self._reset(self.mean.shape[0])
        return out


class PairBalance:
    """Pair balance: ``c = g_a - g_b`` for consecutive examples; ``+``: a front, b back."""

    def __init__(self, d, *, sign_rule=1):
        self.d, self.sign_rule = d, sign_rule
        self._reset()

    def _reset(self):
        self.s = torch.zeros(self.d, dtype=torch.float64)
        self.pending = None
        self.front, self.back, self.seen = [], [], set()

    def step(self, indices, grads, uniforms=None):
        for i, j in enumerate(int(v) for v in indices):
            if j in self.seen:
                continue
            self.seen.add(j)
            if self.pending is None:
                self.pending = (j, grads[i].double())
                continue
            a, ga = self.pending
            c = ga - grads[i].double()
            if _plus(self.s, c, None, 1.0, self.sign_rule):
                self.s = self.s + c
                self.front.append(a)
                self.back.append(j)
            else:
                self.s = self.s - c
                self.front.append(j)
                self.back.append(a)
            self.pending = None

    def next_perm(self, current):
        out = _middle_rule(self.front, self.back[::-1], [int(v) for v in current])
        self._reset()
        return out


class RecursiveBalance:
    """A tree of balancing nodes (grab-sampler's recursive balance): each node keeps a running
    sum; ``+`` goes on to the left child, ``-`` to the right; a leaf appends ``+`` examples and
    prepends ``-`` ones; the order is the leaves' lists, left to right."""

    class Node:
        def __init__(self, d, depth):
            self.acc = torch.zeros(d, dtype=torch.float64)
            self.children = None if depth == 0 else (RecursiveBalance.Node(d, depth - 1),
                                                     RecursiveBalance.Node(d, depth - 1))
            self.positives, self.negatives = [], []

        def push(self, c, j):
            plus = bool(torch.linalg.vector_norm(self.acc + c) <= torch.linalg.vector_norm(self.acc - c))
            self.acc = self.acc + c if plus else self.acc - c
            if self.children is None:
                if plus:
                    self.positives.append(j)
                else:
                    self.negatives.insert(0, j)
            else:
                self.children[0 if plus else 1].push(c, j)

        def order(self):
            if self.children is None:
                return self.positives + self.negatives
            return self.children[0].order() + self.children[1].order()

    def __init__(self, d, depth):
        self.d, self.depth = d, depth
        self.mean = torch.zeros(d, dtype=torch.float64)
        self._reset()

    def _reset(self):
        self.root = RecursiveBalance.Node(self.d, self.depth)
        self.next_sum = torch.zeros(self.d, dtype=torch.float64)
        self.count = 0
        self.seen = set()

    def step(self, indices, grads, uniforms=None):
        for i, j in enumerate(int(v) for v in indices):
            if j in self.seen:
                continue
            self.seen.add(j)
            g = grads[i].double()
            self.root.push(g - self.mean, j)
            self.next_sum = self.next_sum + g
            self.count += 1

    def next_perm(self, current):
        if self.root.children is None:
            left, right = self.root.positives, self.root.negatives
        else:
            left, right = self.root.children[0].order(), self.root.children[1].order()
        out = _middle_rule(left, right, [int(v) for v in current])
        if self.count:
            self.mean = self.next_sum / self.count
        self._reset()
        return out


class Herding:
    """Greedy herding on the epoch's stale gradients (Algorithm 1): center them, then repeatedly
    take the remaining example (lowest index first) with the smallest ``||s + g||``."""

    def __init__(self, d):
        self.d = d
        self.table = {}

    def step(self, indices, grads, uniforms=None):
        for i, j in enumerate(int(v) for v in indices):
            if j not in self.table:
                self.table[j] = grads[i].double()

    def next_perm(self, current):
        rows = sorted(self.table)
        if not rows:
            return [int(v) for v in current]
        mean = sum(self.table[j] for j in rows) / len(rows)
        centered = {j: self.table[j] - mean for j in rows}
        s = torch.zeros(self.d, dtype=torch.float64)
        out, remaining = [], list(rows)
        while remaining:
            norms = [float(torch.linalg.vector_norm(s + centered[j])) for j in remaining]
            best = remaining[norms.index(min(norms))]
            s = s + centered[best]
            out.append(best)
            remaining.remove(best)
        self.table = {}
        return _middle_rule(out, [], [int(v) for v in current])
