"""Moniqua: decentralized SGD whose messages are ``bits``-bit modulo-quantized models.

Lu & De Sa, "Moniqua: Modulo Quantized Communication in Decentralized SGD", ICML 2020.
Neighbouring models differ by little, so a worker only needs its neighbour's model
*modulo* a small range ``B``: it sends ``Q((x / B) mod 1)`` in ``bits`` bits per
parameter and the receiver lifts the residue back next to its own model.  No
extra buffers are kept (unlike error-feedback or CHOCO-style schemes).

Coding (all arithmetic in float64).  With ``L = 2**bits`` levels, a grid step
``s = B / L`` and a dither ``u`` (uniform in [0, 1) per coordinate and step for
stochastic rounding, 1/2 for ``rounding="nearest"``), worker ``j`` rounds
``k_j = floor(x_j / s + u)`` (an unbiased stochastic rounding of ``x_j / s``) and
sends ``k_j mod L``.  If ``|x_j - x_i| < theta`` coordinate-wise, worker ``i`` knows
``k_j`` lies in a window of ``2 theta / s + 1`` integers above
``floor((x_i - theta) / s + u)`` and recovers it exactly from its residue when that
window fits in ``L``, i.e. ``B = 2 theta / (1 - delta)`` with ``delta = 1 / L`` the
fraction of ``B`` one step takes.  By default the dither is *shared* (the same seed
on every worker, like CocktailSGD's shared random-K seed): each ``Q(x_j)`` is still
an unbiased stochastic rounding, as the paper assumes, but the receiver knows the
dither, which is what makes 1 bit decodable, and neighbours' rounding errors largely
cancel in ``Q(x_j) - Q(x_i)``.  ``shared_randomness=False`` is the paper's setting:
private dithers, a window one wider, ``B = 2 theta / (1 - 2 delta)`` (the paper's
``B_theta``), so at least 2 bits.

Update (Algorithm 1 of the paper, D-PSGD base) with ``xhat = k s``, around any local
torch optimizer (``Moniqua(torch.optim.SGD(params, lr=0.1), topology=ring(4), bits=2)``)::

    x_i <- x_i + gamma * sum_j W_ij (xhat_j - xhat_i)     (modulo-quantized gossip)
    x_i <- optimizer.step()                              (p.grad = g_i, taken at the old x_i)

which with ``SGD(lr)`` is the paper's ``x_i <- x_i + gamma sum_j W_ij (xhat_j - xhat_i) - lr g_i``.

The average over workers moves exactly as SGD (the mixing term sums to zero for a
doubly stochastic W) whenever every residue is decoded in its window.

theta.  The paper bounds ``||x_i - x_j||_inf`` by ``O(lr G_inf / (1 - rho))`` (``G_inf``
bounding gradient coordinates, ``1 - rho`` the spectral gap) and sets theta from that
bound.  ``theta=None`` computes the bound for the actual topology: D-PSGD with mixing
``M_t = (1 - gamma) I + gamma W_t`` keeps every worker within ``lr G_inf C`` of the
average, ``C = sum_s ||(M - J)^s (I - J)||_inf`` (:func:`consensus_bound_factor`; exact
worst case, time-varying matrices included), so
``theta = theta_scale * 2 * lr * G_inf * C / (1 - momentum)`` (a heavy-ball direction is at
most ``G_inf / (1 - momentum)``).  This bound is SGD's: ``theta=None`` needs a
``torch.optim.SGD`` at the bottom of the wrapped stack (``OptimLP(SGD(...))`` fits); for
other optimizers (Adam...) pass ``theta``.  ``G_inf`` is measured once, at the
first step with a non-zero gradient (max over workers of ``||g + weight_decay x||_inf``, in one 40-byte
all-reduce MAX that also checks, by checksums, that all workers start from the same
model, as the bound assumes: a ``ValueError`` otherwise); ``lr`` and ``momentum`` are the current
(largest) ones of the wrapped optimizer's groups, so theta follows a schedule.  Pass ``theta`` for a fixed value
(the paper's use; then identical starting models are up to the caller).

gamma.  A consensus step size as in CHOCO-SGD (Koloskova, Stich & Jaggi 2019); gamma = 1
is the paper's update.  The rounding noise it injects is ~ ``s`` per step against a
consensus contraction ~ ``gap`` per step; the default
``gamma = min(1, spectral_gap * (L - 1) / 4)`` keeps their ratio small (measured on a
4-worker ring: 1 bit with gamma = 1 does not converge; 1/6 does).

Noise floor.  The grid step ``s = 2 theta / (L - 1)`` is of the size of the consensus
bound, so each worker's rounding noise per step is ~ ``lr G_inf C``: with a constant
step size the workers hover around their average at that scale (the average itself
moves as SGD).  As in the paper's analysis, Moniqua converges as the step size decays
(theta follows lr); with a constant step, measured on label-skewed softmax regression
(4-ring, lr 0.5), 2 bits leave the worst worker's loss ~6x above 8 bits'.  A tuned,
smaller ``theta`` (or ``theta_scale``) trades that noise for the risk of mis-decoding.

A step sends ``ceil(numel * bits / 8)`` bytes to each out-neighbour (plus the one-off
all-reduce above); ``float32_bytes`` counts the float32 model for the same messages.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .._seeding import generator
from . import _bits
from .decentralized import DecentralizedOptimizer, check_number, innermost
from .gossip import neighbor_exchange, record_round
from .link import LinkModel
from .topology import Topology

ROUNDINGS = ("stochastic", "nearest")


def modulo_decode(residue: torch.Tensor, reference: torch.Tensor, theta: float, step_size: float,
                  dither: torch.Tensor | float, bits: int) -> torch.Tensor:
    """The grid index ``k`` with ``k = residue (mod 2**bits)`` in the window that starts at
    ``floor((reference - theta) / s + dither)`` (float64 integers)."""
    low = torch.floor((reference.to(torch.float64) - theta) / step_size + dither)
    return low + torch.remainder(residue.to(torch.float64) - low, 2 ** bits)


def consensus_bound_factor(topology: Topology, gamma: float = 1.0, *, max_n: int = 16) -> float:
    """``C = max_phase sum_s ||prod_t (M_t - J) (I - J)||_inf`` with ``M_t = (1 - gamma) I + gamma W_t``:
    the largest distance of a worker from the average, per unit of ``lr * max |g|``, that
    D-PSGD's recursion ``e <- (M_t - J) e - lr (I - J) g`` can build up.  Exact (to 1e-6)
    for ``n <= max_n``; beyond, the spectral estimate ``1.5 / (gamma * per-step gap)``."""
    n = topology.n
    if n == 1:
        return 0.0
    if n > max_n:
        per_step = 1.0 - topology.second_eigenvalue ** (1.0 / topology.period)
        return 1.5 / (gamma * max(per_step, 1e-12))
    eye = torch.eye(n, dtype=torch.float64)
    avg = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    steps = [(1.0 - gamma) * eye + gamma * topology.matrix(t) - avg for t in range(topology.period)]
    best = 0.0
    for phase in range(topology.period):
        prod, total, s = eye - avg, 0.0, 0
        while True:
            norm = float(prod.abs().sum(dim=1).max())
            total += norm
            if norm < 1e-6 * total or s > 1_000_000:
                break
            prod = steps[(phase + s) % topology.period] @ prod
            s += 1
        best = max(best, total)
    return best


class Moniqua(DecentralizedOptimizer):
    """Moniqua on D-PSGD with ``bits``-bit messages around the local ``optimizer`` (see the module
    docstring for theta, delta, gamma).

    ``rounding``: "stochastic" (default, unbiased) or "nearest".  ``seed`` seeds the
    dither: shared by all workers (``shared_randomness=True``) or offset by the rank.
    ``delta`` overrides the fraction of the modulus one rounding step takes when
    sizing ``B`` (default ``2**-bits``, exact; larger adds margin).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, topology: Topology, *, bits: int = 2,
                 theta: float | None = None, delta: float | None = None, gamma: float | None = None,
                 rounding: str = "stochastic", shared_randomness: bool = True, theta_scale: float = 1.5,
                 seed: int = 0, group=None, link: LinkModel | None = None):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"Invalid bits: {bits!r} (must be an int in [1, 8])")
        if rounding not in ROUNDINGS:
            raise ValueError(f"Invalid rounding: {rounding!r} (one of {', '.join(ROUNDINGS)})")
        if not isinstance(shared_randomness, bool):
            raise ValueError(f"Invalid shared_randomness: {shared_randomness!r} (must be True or False)")
        private = rounding == "stochastic" and not shared_randomness
        if private and bits < 2:
            raise ValueError(f"Invalid bits: {bits!r} (private stochastic rounding needs >= 2 bits: its "
                             "window is 2 steps wider; use shared_randomness=True or rounding='nearest')")
        if delta is None:
            delta = 2.0 ** -bits
        check_number("delta", delta, high=0.5 if private else 1.0, low_open=True, high_open=True)
        if delta < 2.0 ** -bits:  # the decoding window needs one grid step of margin
            raise ValueError(f"Invalid delta: {delta!r} (must be >= 2**-bits = {2.0 ** -bits:g}: with less "
                             "margin the residues decode in the wrong window)")
        if theta is not None:
            check_number("theta", theta, low_open=True)
        elif isinstance(optimizer, torch.optim.Optimizer) and not isinstance(innermost(optimizer),
                                                                              torch.optim.SGD):
            raise ValueError(f"Invalid theta: None (derived from SGD's step bound; the wrapped optimizer is "
                             f"{type(innermost(optimizer)).__name__}: pass theta)")
        check_number("theta_scale", theta_scale, low_open=True)
        if not isinstance(topology, Topology):
            raise ValueError(f"Invalid topology: {topology!r} (a relaxtorch.comm.Topology, e.g. ring(4))")
        gap = topology.spectral_gap
        if gamma is None:
            gamma = min(1.0, gap * (2 ** bits - 1) / 4.0)
        check_number("gamma", gamma, high=1.0, low_open=True)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Invalid seed: {seed!r} (must be an int)")
        super().__init__(optimizer, topology, group=group, link=link)
        self.bits, self.theta, self.delta, self.gamma = bits, theta, float(delta), float(gamma)
        self.rounding, self.shared_randomness, self.theta_scale = rounding, shared_randomness, float(theta_scale)
        self.private = private
        self.bound_factor = consensus_bound_factor(topology, self.gamma)
        self.g_inf = 0.0  # measured gradient bound for theta=None (0 until the first non-zero gradient)
        self.last_theta = 0.0
        self.generator = generator(seed, "dither") if shared_randomness else generator(seed, "dither", self.rank)

    def current_theta(self) -> float:
        """The theta this step uses (fixed, or from the measured gradient bound and the current lr)."""
        if self.theta is not None:
            return self.theta
        lr = max(group["lr"] for group in self.param_groups)
        gain = max(1.0 / (1.0 - group.get("momentum", 0.0)) for group in self.param_groups)
        return self.theta_scale * 2.0 * lr * self.g_inf * self.bound_factor * gain

    def _measure_gradient_bound(self, x: torch.Tensor, g: torch.Tensor) -> None:
        """All-reduce MAX of ``||g||_inf`` and of a checksum of ``x`` (+-), to check that every worker
        starts from the same model: the theta bound assumes it (broadcast parameters from rank 0)."""
        x64 = x.to(torch.float64)
        local_g = g.abs().max().to(torch.float64) if g.numel() else torch.zeros((), dtype=torch.float64)
        sums = torch.stack([x64.sum(), (x64 * x64).sum()])
        buf = torch.cat([local_g.reshape(1), sums, -sums])
        if self.topology.n > 1:
            with self.stats.timing("comm"):
                dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=self.group)
            self.stats.record_send(8 * buf.numel(), self.link, messages=1, float32_bytes=4 * buf.numel())
            if not torch.equal(buf[1:3], -buf[3:5]):
                raise ValueError("Invalid params: the workers' models differ at the first step (Moniqua with "
                                 "theta=None assumes identical starting models: broadcast them from rank 0, "
                                 "or pass theta)")
        self.g_inf = float(buf[0])

    def _bound_gradients(self) -> torch.Tensor:
        """The SGD directions the bound measures: ``g + weight_decay * x`` per group (flat)."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
                if group.get("weight_decay", 0.0):
                    g = g.add(p.detach(), alpha=group["weight_decay"])
                out.append(g)
        return self._flat(out)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        x = self._flat_params()
        if self.theta is None and self.g_inf == 0.0:
            self._measure_gradient_bound(x, self._bound_gradients())
        theta = self.current_theta()
        self.last_theta = theta
        if theta > 0 and self.topology.n > 1:
            x64 = x.to(torch.float64)
            self._set_params(x64 + self._mix(x64, theta))
        self.optimizer.step()
        self.steps += 1
        self.stats.steps += 1
        return loss

    def _mix(self, x: torch.Tensor, theta: float) -> torch.Tensor:
        """``gamma * sum_j W_ij (xhat_j - xhat_i)`` for this rank (float64), exchanging residues."""
        levels = 2 ** self.bits
        modulus = 2.0 * theta / (1.0 - (2.0 if self.private else 1.0) * self.delta)
        s = modulus / levels
        with self.stats.timing("compress"):
            if self.rounding == "nearest":
                dither = 0.5
            else:
                dither = torch.rand(x.numel(), generator=self.generator, dtype=torch.float64).to(x.device)
            own = torch.floor(x / s + dither)
            packed = _bits.pack(torch.remainder(own, levels).to(torch.int64), self.bits)
        with self.stats.timing("comm"):
            received = neighbor_exchange(packed, self.topology, step=self.steps, group=self.group)
        record_round(self.stats, self.link, self.topology, self.rank, self.steps, packed.numel(), x.numel())
        with self.stats.timing("compress"):
            low_dither = 0.0 if self.private else dither
            weights = self.topology.weights(self.rank, self.steps)
            acc = torch.zeros_like(x)
            for j in sorted(received):
                k_j = modulo_decode(_bits.unpack(received[j], self.bits, x.numel()), x, theta, s, low_dither,
                                    self.bits)
                acc.add_(k_j - own, alpha=weights[j])
        return acc.mul_(self.gamma * s)

    def _extra_state(self) -> dict:
        return {"steps": self.steps, "g_inf": self.g_inf, "generator": self.generator.get_state()}

    def _load_extra_state(self, extra: dict) -> None:
        self.steps, self.g_inf = int(extra["steps"]), float(extra["g_inf"])
        self.generator.set_state(extra["generator"])
