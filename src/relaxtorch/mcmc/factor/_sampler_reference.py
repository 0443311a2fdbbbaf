"""Slow, plain-Python twins of the samplers' kernels, for the tests: the same algorithm step by step,
factor values from ``functions.factor_value_reference``, and splitmix64 in Python integers.  Fed the
same stream, a reference chain and a kernel chain visit the same states (the tests compare them);
log-potential sums may differ in the last bits where the kernel sums in another order.
"""
from __future__ import annotations

import math

import numpy as np

from .functions import factor_value_reference

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


class Stream:
    """splitmix64 (Steele, Lea & Flood 2014) in Python integers."""

    def __init__(self, state: int):
        self.state = int(state) & _MASK

    def bits(self) -> int:
        self.state = (self.state + _GOLDEN) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.bits() >> 11) * 2.0 ** -53

    def below(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)

    def poisson(self, mean: float) -> int:
        if mean <= 0:
            return 0
        if mean < 12.0:
            limit, k, p = math.exp(-mean), 0, self.uniform()
            while p > limit:
                k += 1
                p *= self.uniform()
            return k
        slam, loglam = math.sqrt(mean), math.log(mean)
        b = 0.931 + 2.53 * slam
        a = -0.059 + 0.02483 * b
        inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
        vr = 0.9277 - 3.6224 / (b - 2.0)
        while True:
            u = self.uniform() - 0.5
            v = self.uniform()
            us = 0.5 - abs(u)
            k = math.floor((2.0 * a / us + b) * u + mean + 0.43)
            if us >= 0.07 and v <= vr:
                return k
            if k < 0 or (us < 0.013 and v > us):
                continue
            if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                    <= -mean + k * loglam - math.lgamma(k + 1.0)):
                return k

    def alias(self, prob, alias, start: int, size: int) -> int:
        t = self.uniform() * size
        col = min(int(t), size - 1)
        return start + col if t - col < prob[start + col] else start + int(alias[start + col])

    def softmax(self, logits) -> int:
        if len(logits) == 2:
            return 1 if self.uniform() * (1.0 + math.exp(logits[0] - logits[1])) < 1.0 else 0
        m = max(logits)
        cum, total = [], 0.0
        for l in logits:
            total += math.exp(l - m)
            cum.append(total)
        t = self.uniform() * total
        for j in range(len(logits) - 1):
            if t < cum[j]:
                return j
        return len(logits) - 1


def value(graph, f: int, x, v: int = -1, k: int = 0) -> float:
    """w·feature·φ_f(x with x_v = k) through the plain-Python factor reference."""
    a, b = int(graph.factor_ptr[f]), int(graph.factor_ptr[f + 1])
    vars_ = [int(u) for u in graph.edge_var[a:b]]
    vals = [k if u == v else int(x[u]) for u in vars_]
    table = graph.table[graph.table_ptr[f]:graph.table_ptr[f + 1]]
    phi = factor_value_reference(int(graph.function[f]), vals, [int(e) for e in graph.edge_value[a:b]], table,
                                 [int(graph.cardinality[u]) for u in vars_])
    return float(graph.weight[graph.weight_id[f]]) * float(graph.feature[f]) * phi


def logits(graph, x, v: int) -> list:
    card = int(graph.cardinality[v])
    out = [0.0] * card
    for j in range(int(graph.var_ptr[v]), int(graph.var_ptr[v + 1])):
        f = int(graph.var_factor[j])
        for k in range(card):
            out[k] += value(graph, f, x, v, k)
    return out


def _order(stream: Stream, free, order, scan: str):
    """The variables of one sweep, in the order the kernels visit them (order: kept between sweeps)."""
    if scan == "systematic":
        return list(free)
    if scan == "permutation":
        for i in range(len(order) - 1, 0, -1):
            j = stream.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return list(order)
    return None


def gibbs(graph, x, free, scan: str, sweeps: int, seed_state: int, order=None):
    """Reference Gibbs: returns (x, counts[n, K], per-sweep log-potentials); x is copied."""
    x = [int(v) for v in x]
    order = [int(v) for v in (free if order is None else order)]
    stream = Stream(seed_state)
    counts = np.zeros((len(x), max(int(graph.max_cardinality), 1)), np.int64)
    trace = []
    for _ in range(sweeps):
        visit = _order(stream, free, order, scan)
        steps = visit if visit is not None else [None] * len(free)
        for v in steps:
            if v is None:
                v = int(free[stream.below(len(free))])
            x[v] = stream.softmax(logits(graph, x, int(v)))
        for v in free:
            counts[v, x[v]] += 1
        trace.append(sum(value(graph, f, x) for f in range(graph.num_factors)))
    return np.array(x, np.int32), counts, np.array(trace)


def minibatch(method: str, graph, t, x, free, sweeps: int, seed_state: int, *, lam: float, lam2: float = 1.0,
              eps: float = float("nan")):
    """Reference minibatch sampler (systematic scan), method in {"poisson-gibbs", "min-gibbs", "mgpmh",
    "double-min-gibbs"}, with the alias tables ``t`` (``_minibatch.tables``): returns (x, counts, ε)."""
    x = [int(v) for v in x]
    s = Stream(seed_state)
    m = graph.num_factors
    counts = np.zeros((len(x), max(int(graph.max_cardinality), 1)), np.int64)
    phi = lambda f, y, v=-1, k=0: value(graph, f, y, v, k) - t.lo[f]  # noqa: E731

    def estimate(v, k, rate):
        e = 0.0
        for _ in range(s.poisson(rate)):
            f = s.alias(t.gprob, t.galias, 0, m)
            e += math.log1p(t.psi * phi(f, x, v, k) / (rate * t.span[f]))
        return e

    def local(v, card, poisson_gibbs):
        u = [0.0] * card
        if t.vtotal[v] <= 0:
            return u
        a, deg = int(graph.var_ptr[v]), int(graph.var_ptr[v + 1] - graph.var_ptr[v])
        c = lam / t.big_l
        for _ in range(s.poisson((c + 1.0) * t.vtotal[v] if poisson_gibbs else lam * t.vtotal[v] / t.big_l)):
            f = int(graph.var_factor[s.alias(t.vprob, t.valias, a, deg)])
            mf = t.span[f]
            if poisson_gibbs:
                if s.uniform() * ((c + 1.0) * mf) < c * mf + phi(f, x):
                    for k in range(card):
                        u[k] += math.log1p(t.big_l * phi(f, x, v, k) / (lam * mf))
            else:
                for k in range(card):
                    u[k] += t.big_l / (lam * mf) * phi(f, x, v, k)
        return u

    for _ in range(sweeps):
        for v in free:
            v, card, old = int(v), int(graph.cardinality[v]), x[v]
            if method == "poisson-gibbs":
                x[v] = s.softmax(local(v, card, True))
            elif method == "min-gibbs":
                u = [eps if k == old else estimate(v, k, lam) for k in range(card)]
                x[v] = s.softmax(u)
                eps = u[x[v]]
            else:
                u = local(v, card, False)
                prop = s.softmax(u)
                if method == "mgpmh":
                    if prop != old:
                        d = sum(value(graph, int(f), x, v, prop) - value(graph, int(f), x, v, old)
                                for f in graph.var_factor[graph.var_ptr[v]:graph.var_ptr[v + 1]])
                        log_a = d + u[old] - u[prop]
                        if log_a >= 0 or s.uniform() < math.exp(log_a):
                            x[v] = prop
                else:
                    e2 = estimate(v, prop, lam2)
                    log_a = e2 - eps + u[old] - u[prop]
                    if log_a >= 0 or s.uniform() < math.exp(log_a):
                        x[v], eps = prop, e2
            counts[v, x[v]] += 1
    return np.array(x, np.int32), counts, eps
