"""Communication topologies for decentralized training, as frozen values with mixing matrices.

A topology says who talks to whom and with what weight: row ``i`` of the mixing
matrix ``W`` holds the weights worker ``i`` gives to the models it receives
(itself included), so one gossip round is ``x_i <- sum_j W_ij x_j``.  Every ``W``
here is doubly stochastic, so gossip preserves the average of the workers.

Weights.  The undirected graphs (ring, torus, complete) use Metropolis-Hastings
weights ``W_ij = 1 / (1 + max(deg_i, deg_j))`` (Xiao & Boyd, 2004); all of them are
regular, so this is the uniform ``1 / (deg + 1)`` (1/3 on a ring, 1/5 on a torus,
1/n on the complete graph) and ``W`` is symmetric.  The exponential graphs follow
Ying, Yuan, Chen, Hu, Pan & Yin, "Exponential Graph is Provably Efficient for
Decentralized Deep Training" (NeurIPS 2021): they are *directed* (worker ``i``
mixes in the models of ``i + 2^k mod n``), circulant and doubly stochastic but not
symmetric; the static one weighs its ``tau + 1`` inputs uniformly
(``tau = ceil(log2 n)``), the one-peer one averages with a single peer,
``2^(t mod tau)`` hops away at step ``t``.

Spectral gap.  ``spectral_gap = 1 - |lambda_2(W)|`` with ``|lambda_2|`` the second
largest eigenvalue modulus; for a time-varying topology it is that of the product
of the matrices over one period (so for one-peer exponential with ``n`` a power of
two, whose product over ``log2 n`` steps is exact averaging, it is 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

_KINDS = ("ring", "torus", "exp", "one-peer-exp", "complete")
_ALIASES = {"ring": "ring", "torus": "torus", "2d-torus": "torus", "exp": "exp", "exponential": "exp",
            "one-peer-exp": "one-peer-exp", "one-peer-exponential": "one-peer-exp", "onepeer": "one-peer-exp",
            "complete": "complete", "full": "complete", "all": "complete"}


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (must be an int >= 1)")


def _tau(n: int) -> int:
    """Number of distinct hop distances 2^k < n: ceil(log2 n) (0 for n = 1)."""
    return (n - 1).bit_length()


@dataclass(frozen=True)
class Topology:
    """``n`` workers connected as ``kind`` (one of ring, torus, exp, one-peer-exp, complete).

    Build it with :func:`ring`, :func:`torus`, :func:`exponential`,
    :func:`one_peer_exponential`, :func:`complete` or :func:`topology`.
    """

    kind: str
    n: int
    shape: tuple[int, ...] = field(default=())

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Invalid kind: {self.kind!r} (one of {', '.join(_KINDS)})")
        _check_count("n", self.n)
        if self.kind == "torus":
            if len(self.shape) != 2 or self.shape[0] * self.shape[1] != self.n:
                raise ValueError(f"Invalid shape: {self.shape!r} (a torus needs (rows, cols) with rows * cols = n)")
        elif self.shape != ():
            raise ValueError(f"Invalid shape: {self.shape!r} (only a torus has a shape)")

    # -- structure ---------------------------------------------------------------
    @property
    def time_varying(self) -> bool:
        return self.kind == "one-peer-exp" and _tau(self.n) > 1  # n <= 2: one fixed peer

    @property
    def period(self) -> int:
        """Steps after which the mixing matrices repeat (1 for a static topology)."""
        return _tau(self.n) if self.time_varying else 1

    @property
    def symmetric(self) -> bool:
        """Whether every ``W`` is symmetric (undirected graph)."""
        return all(torch.equal(w, w.T) for w in self._matrices)

    @cached_property
    def _matrices(self) -> tuple[torch.Tensor, ...]:
        return tuple(self._build(t) for t in range(self.period))

    @cached_property
    def _rows(self) -> tuple[tuple[dict[int, float], ...], ...]:
        return tuple(tuple({j: float(w[i, j]) for j in range(self.n) if w[i, j] != 0} for i in range(self.n))
                     for w in self._matrices)

    def _build(self, t: int) -> torch.Tensor:
        n = self.n
        adj = torch.zeros(n, n, dtype=torch.bool)
        if self.kind == "ring":
            for i in range(n):
                adj[i, (i + 1) % n] = adj[i, (i - 1) % n] = True
        elif self.kind == "torus":
            rows, cols = self.shape
            for r in range(rows):
                for c in range(cols):
                    i = r * cols + c
                    for j in (((r + 1) % rows) * cols + c, ((r - 1) % rows) * cols + c,
                              r * cols + (c + 1) % cols, r * cols + (c - 1) % cols):
                        adj[i, j] = True
        elif self.kind == "complete":
            adj[:] = True
        elif self.kind == "exp":
            for i in range(n):
                for k in range(_tau(n)):
                    adj[i, (i + 2 ** k) % n] = True
        else:  # one-peer-exp: mix with the model 2^(t mod tau) hops ahead
            for i in range(n):
                adj[i, (i + 2 ** (t % max(1, _tau(n)))) % n] = True
        adj.fill_diagonal_(False)
        w = torch.zeros(n, n, dtype=torch.float64)
        if self.kind in ("exp", "one-peer-exp"):
            w[adj] = 1.0
            w += torch.eye(n, dtype=torch.float64)
            return w / w.sum(dim=1, keepdim=True)
        deg = adj.sum(dim=1).to(torch.float64)
        mh = 1.0 / (1.0 + torch.maximum(deg[:, None], deg[None, :]))
        w[adj] = mh[adj]
        w += torch.diag(1.0 - w.sum(dim=1))
        return w

    def _phase(self, step: int) -> int:
        return step % self.period

    def _check_rank(self, rank: int) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.n:
            raise ValueError(f"Invalid rank: {rank!r} (must be an int in [0, {self.n}))")

    # -- the interface -------------------------------------------------------------
    def matrix(self, step: int = 0) -> torch.Tensor:
        """The ``n x n`` float64 mixing matrix used at ``step`` (a copy)."""
        return self._matrices[self._phase(step)].clone()

    def weights(self, rank: int, step: int = 0) -> dict[int, float]:
        """``{j: W[rank, j]}`` for the models ``rank`` mixes at ``step``, itself included."""
        self._check_rank(rank)
        return dict(self._rows[self._phase(step)][rank])

    def neighbors(self, rank: int, step: int = 0) -> list[int]:
        """The workers whose models ``rank`` receives at ``step`` (in-neighbours; itself excluded)."""
        self._check_rank(rank)
        return [j for j in self._rows[self._phase(step)][rank] if j != rank]

    def out_neighbors(self, rank: int, step: int = 0) -> list[int]:
        """The workers that receive ``rank``'s model at ``step`` (equal to ``neighbors`` when symmetric)."""
        self._check_rank(rank)
        return [i for i in range(self.n) if i != rank and rank in self._rows[self._phase(step)][i]]

    def degree(self, step: int = 0) -> int:
        """The largest number of in-neighbours of any worker at ``step``."""
        return max(len(r) - 1 for r in self._rows[self._phase(step)])

    @cached_property
    def second_eigenvalue(self) -> float:
        """``|lambda_2|``: the second largest eigenvalue modulus of ``W`` (of the period's product)."""
        if self.n == 1:
            return 0.0
        prod = torch.eye(self.n, dtype=torch.float64)
        for w in self._matrices:
            prod = w @ prod
        mods = torch.linalg.eigvals(prod).abs().sort(descending=True).values
        return float(mods[1].clamp(max=1.0))

    @property
    def spectral_gap(self) -> float:
        """``1 - |lambda_2|`` (see the module docstring for time-varying topologies)."""
        return 1.0 - self.second_eigenvalue

    def __repr__(self) -> str:
        if self.kind == "torus":
            return f"torus({self.shape[0]}, {self.shape[1]})"
        name = {"exp": "exponential", "one-peer-exp": "one_peer_exponential"}.get(self.kind, self.kind)
        return f"{name}({self.n})"


def ring(n: int) -> Topology:
    """A ring: each worker mixes with its two neighbours, weights 1/3 (1/2 for n = 2)."""
    _check_count("n", n)
    return Topology("ring", n)


def torus(rows: int, cols: int) -> Topology:
    """A 2-D torus (wrap-around grid) of ``rows x cols`` workers; rank ``r * cols + c`` sits at ``(r, c)``."""
    _check_count("rows", rows)
    _check_count("cols", cols)
    return Topology("torus", rows * cols, (rows, cols))


def exponential(n: int) -> Topology:
    """Static exponential graph (Ying et al. 2021): worker ``i`` receives from ``i + 2^k mod n``, ``2^k < n``."""
    _check_count("n", n)
    return Topology("exp", n)


def one_peer_exponential(n: int) -> Topology:
    """One-peer exponential graph (Ying et al. 2021): at step ``t`` worker ``i`` averages with ``i + 2^(t mod tau)``."""
    _check_count("n", n)
    return Topology("one-peer-exp", n)


def complete(n: int) -> Topology:
    """Every worker mixes with every other one, weights 1/n (exact averaging in one round)."""
    _check_count("n", n)
    return Topology("complete", n)


def _near_square(n: int) -> tuple[int, int]:
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def topology(name: str, n: int) -> Topology:
    """Parse a topology name: ``ring``, ``torus`` (the most square ``rows x cols = n``;
    or ``torus:RxC``), ``exp``, ``one-peer-exp`` or ``complete``."""
    _check_count("n", n)
    if not isinstance(name, str):
        raise ValueError(f"Invalid topology: {name!r} (a name: {', '.join(_KINDS)})")
    key = name.strip().lower().replace("_", "-")
    if key.startswith("torus:"):
        try:
            rows, cols = (int(s) for s in key[len("torus:"):].split("x"))
        except ValueError:
            raise ValueError(f"Invalid topology: {name!r} (torus shape must be ROWSxCOLS, e.g. torus:2x4)") from None
        if rows * cols != n:
            raise ValueError(f"Invalid topology: {name!r} (torus {rows}x{cols} does not hold {n} workers)")
        return torus(rows, cols)
    kind = _ALIASES.get(key)
    if kind is None:
        raise ValueError(f"Invalid topology: {name!r} (one of {', '.join(_KINDS)})")
    if kind == "torus":
        return torus(*_near_square(n))
    return Topology(kind, n)
