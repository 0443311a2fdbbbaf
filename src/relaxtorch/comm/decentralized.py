"""Decentralized SGD on a gossip topology: D-PSGD and DeTAG, as wrappers of any torch optimizer.

``DPSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), topology=ring(4))``:
every worker keeps its own model and, after ``loss.backward()`` on its local data, calls
``step()``: the worker mixes models (or gradient trackers) with its neighbours on the
topology, and the wrapped optimizer (SGD, Adam, ``OptimLP(...)``...) takes the local step.
Nothing is ever all-reduced.  One message per neighbour per gossip round carries the
whole model, flattened (all parameters must share one dtype and device).  Learning rate,
momentum and weight decay are the wrapped optimizer's (LR schedulers step the wrapper).

Both optimizers keep ``.stats`` (:class:`CommStats`: exact bytes and messages, comm
time, simulated link time), run gossip synchronously (``.overlap = False``) and save
their buffers and step counters in ``state_dict()`` (the wrapped optimizer's state dict
plus a ``"decentralized"`` entry), so a resumed run is bit-identical.  Start all workers
from the same parameters (broadcast from rank 0) as the papers do.

Weight decay, when the wrapped optimizer has it, is the wrapped optimizer's: D-PSGD
applies it at the mixed model ``W x`` and DeTAG adds it to the tracked direction (it is
not tracked); with ``weight_decay=0`` a wrapped ``SGD`` is exactly the papers' update.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .._wrapped import WrappedOptimizer
from ..quant.optim_lp import OptimLP
from .gossip import consensus_distance, gossip
from .link import LinkModel
from .stats import CommStats
from .topology import Topology


def check_number(name: str, value, *, low: float = 0.0, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False) -> float:
    """Validate a real hyper-parameter in ``[low, high]`` (ends open when asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number in {lo}{low:g}, {high:g}{hi})")
    return float(value)


def innermost(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer at the bottom of a stack of wrappers (``optimizer`` itself if none)."""
    while isinstance(optimizer, WrappedOptimizer):
        optimizer = optimizer.optimizer
    return optimizer


def _stack(optimizer: torch.optim.Optimizer):
    while isinstance(optimizer, WrappedOptimizer):
        yield optimizer
        optimizer = optimizer.optimizer


class DecentralizedOptimizer(WrappedOptimizer):
    """Shared machinery: world checks, flattening, stats, consensus distance, a step counter in the state."""

    overlap = False
    _state_key = "decentralized"

    def __init__(self, optimizer: torch.optim.Optimizer, topology: Topology, *, group=None,
                 link: LinkModel | None = None):
        super().__init__(optimizer)
        if not isinstance(topology, Topology):
            raise ValueError(f"Invalid topology: {topology!r} (a relaxtorch.comm.Topology, e.g. ring(4))")
        if link is not None and not isinstance(link, LinkModel):
            raise ValueError(f"Invalid link: {link!r} (a relaxtorch.comm.LinkModel or None)")
        for wrapper in _stack(optimizer):
            if isinstance(wrapper, DecentralizedOptimizer):
                raise ValueError(f"Invalid optimizer: {optimizer!r} (already gossips: wrap the local optimizer)")
            if isinstance(wrapper, OptimLP) and wrapper.formats["acc"] is not None:
                raise ValueError(f"Invalid optimizer: {wrapper!r} (OptimLP with acc= keeps a copy of the weights "
                                 "that gossip would bypass; use acc=None)")
        ps = self._params()
        if len({(p.dtype, p.device) for p in ps}) > 1:
            raise ValueError(f"Invalid params: {sorted({str(p.dtype) for p in ps})} "
                             "(all parameters must share one dtype and device: they travel as one message)")
        if dist.is_initialized():
            size = dist.get_world_size(group)
            if size != topology.n:
                raise ValueError(f"Invalid topology: {topology!r} (built for {topology.n} workers, "
                                 f"the process group has {size})")
            self.rank = dist.get_rank(group)
        elif topology.n == 1:
            self.rank = 0
        else:
            raise RuntimeError(f"{type(self).__name__} on {topology!r} needs torch.distributed: "
                               "call torch.distributed.init_process_group first")
        self.topology, self.group, self.link = topology, group, link
        self.stats = CommStats()
        self.steps = 0

    # -- helpers ---------------------------------------------------------------------
    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def _flat_params(self) -> torch.Tensor:
        return self._flat([p.detach() for p in self._params()])

    def _flat_grads(self) -> torch.Tensor:
        """The local gradients, flattened (zeros where a parameter has none)."""
        return self._flat([p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self._params()])

    @torch.no_grad()
    def _set_params(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params():
            n = p.numel()
            p.copy_(flat[offset:offset + n].view_as(p))
            offset += n

    def _gossip(self, flat: torch.Tensor, step: int) -> torch.Tensor:
        return gossip(flat, self.topology, step=step, group=self.group, link=self.link, stats=self.stats)

    def consensus_distance(self) -> float:
        """RMS distance of the workers' models from their average (a collective: call on every rank)."""
        return consensus_distance(self._params(), self.group)

    def add_param_group(self, param_group: dict) -> None:
        raise RuntimeError(f"{type(self).__name__}: parameters are fixed at construction (one flat message)")

    # -- state: the wrapped optimizer's state dict plus "decentralized" ---------------------------
    def _extra_state(self) -> dict:
        return {"steps": self.steps}

    def _load_extra_state(self, extra: dict) -> None:
        self.steps = int(extra["steps"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r}, topology={self.topology!r})"


class DPSGD(DecentralizedOptimizer):
    """D-PSGD: Lian, Zhang, Zhang, Hsieh, Zhang & Liu, "Can Decentralized Algorithms Outperform
    Centralized Algorithms? A Case Study for Decentralized Parallel Stochastic Gradient Descent",
    NeurIPS 2017 (Algorithm 1), around the local ``optimizer``.

    Each step, with ``g_i = p.grad`` the local gradient at the current ``x_i``::

        x_i <- sum_j W_ij x_j                (one gossip round on W = topology.matrix(step))
        x_i <- optimizer.step()              (with p.grad = g_i, taken at the old x_i)

    With ``SGD(lr, momentum=m)`` this is the paper's ``x_i <- sum_j W_ij x_j - lr u_i``,
    ``u_i <- m u_i + g_i``.  The gradient is taken before mixing and applied after it, as in
    the paper, so gossip and backward could overlap; here they run one after the other.

    >>> from relaxtorch.comm import ring
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = DPSGD(torch.optim.SGD([w], lr=0.5), topology=ring(1))   # one worker: plain SGD
    >>> w.grad = torch.ones(2); _ = opt.step(); w.detach().tolist()
    [0.5, 0.5]
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        self._set_params(self._gossip(self._flat_params(), self.steps))
        self.optimizer.step()
        self.steps += 1
        self.stats.steps += 1
        return loss


def accelerated_gossip_eta(second_eigenvalue: float) -> float:
    """Chebyshev momentum of accelerated gossip: ``(1 - sqrt(1 - l^2)) / (1 + sqrt(1 - l^2))``."""
    r = math.sqrt(max(0.0, 1.0 - second_eigenvalue ** 2))
    return (1.0 - r) / (1.0 + r)


class DeTAG(DecentralizedOptimizer):
    """DeTAG: Lu & De Sa, "Optimal Complexity in Decentralized Training", ICML 2021:
    gradient tracking with accelerated gossip, one phase per ``step()``, around the local
    ``optimizer``.

    With ``AG(z)`` = ``gossip_rounds`` rounds of accelerated gossip (Liu & Morse,
    "Accelerated linear iterations for distributed averaging", 2011)::

        z_{-1} = z_0 = z;   z_{t+1} = (1 + eta) W z_t - eta z_{t-1};   AG(z) = z_R
        eta = (1 - sqrt(1 - l2^2)) / (1 + sqrt(1 - l2^2)),  l2 = |lambda_2(W)|

    each step, with ``g_i = p.grad`` the gradient of this phase's mini-batch at ``x_i``::

        y_i <- AG(y_i + g_i - g_i_prev)      (gradient tracker; y = g_prev = 0 at the start)
        x_i <- optimizer.step()              (with p.grad = y_i: the tracked direction)
        x_i <- AG(x_i)

    With ``SGD(lr, momentum=m)`` the middle line is ``m_i <- m m_i + y_i; x_i <- x_i - lr m_i``,
    the paper's ``x_i <- AG(x_i - lr m_i)``.  ``p.grad`` holds the local gradient again after
    ``step()``.

    This is the adapt-then-combine form of gradient tracking (ATC-DIGing, Nedic, Olshevsky &
    Shi 2017), which the mean of the workers sees as plain SGD on the global loss (AG keeps
    averages), so the heterogeneity of local data no longer biases the fixed point as it
    does in D-PSGD.  The paper computes phase ``k``'s gradient while gossiping and so applies
    it one phase later; here ``step()`` follows ``backward()`` and applies it at once.  The
    paper's phase accumulates a mini-batch over ``R`` gossip rounds: feed ``step`` a batch
    that many times larger than a D-PSGD step's for the paper's setting.

    ``gossip_rounds`` (R; default ``ceil(1 / sqrt(spectral_gap))``, the paper's
    ``O(1/sqrt(1 - l2))`` phase length) rounds per AG, two AGs per step, so a step sends
    ``2 R`` messages per neighbour.  ``accelerate=False`` (or a non-symmetric topology, whose
    complex eigenvalues Chebyshev acceleration does not handle, or a time-varying one) sets
    ``eta = 0``: plain multi-round gossip; ``.eta`` says which was used.

    Data: DeTAG's advantage is largest on *unshuffled* data (each worker keeps its own
    partition, e.g. skewed by label); the paper's "shuffled" setting re-deals all examples
    across workers every epoch.  That is the data loader's job (the runner's
    partition/shuffle option); the optimizer is the same in both.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, topology: Topology, *, gossip_rounds: int | None = None,
                 accelerate: bool = True, group=None, link: LinkModel | None = None):
        if not isinstance(topology, Topology):
            raise ValueError(f"Invalid topology: {topology!r} (a relaxtorch.comm.Topology, e.g. ring(4))")
        if gossip_rounds is None:
            gap = topology.spectral_gap
            gossip_rounds = 1 if gap >= 1.0 else max(1, math.ceil(1.0 / math.sqrt(gap)))
        if isinstance(gossip_rounds, bool) or not isinstance(gossip_rounds, int) or gossip_rounds < 1:
            raise ValueError(f"Invalid gossip_rounds: {gossip_rounds!r} (must be an int >= 1)")
        if not isinstance(accelerate, bool):
            raise ValueError(f"Invalid accelerate: {accelerate!r} (must be True or False)")
        super().__init__(optimizer, topology, group=group, link=link)
        self.gossip_rounds = gossip_rounds
        self.accelerate = accelerate
        usable = accelerate and not topology.time_varying and topology.symmetric
        self.eta = accelerated_gossip_eta(topology.second_eigenvalue) if usable else 0.0
        self.rounds = 0  # gossip rounds so far: the time index of a time-varying topology
        self.tracker: torch.Tensor | None = None  # y (flat), None before the first step
        self.previous_gradient: torch.Tensor | None = None

    def accelerated_gossip(self, z: torch.Tensor) -> torch.Tensor:
        """``AG(z)``: ``gossip_rounds`` rounds of Chebyshev-accelerated gossip (keeps the average)."""
        prev, cur = z, z
        for _ in range(self.gossip_rounds):
            mixed = self._gossip(cur, self.rounds)
            self.rounds += 1
            nxt = mixed if self.eta == 0.0 else mixed.mul_(1.0 + self.eta).sub_(prev, alpha=self.eta)
            prev, cur = cur, nxt
        return cur

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        params = self._params()
        g = self._flat_grads()
        if self.tracker is None:
            self.tracker, self.previous_gradient = torch.zeros_like(g), torch.zeros_like(g)
        self.tracker = self.accelerated_gossip(self.tracker + g - self.previous_gradient)
        self.previous_gradient = g
        local = [p.grad for p in params]
        offset = 0
        for p in params:  # the tracked direction stands in for the gradient during the wrapped step
            n = p.numel()
            p.grad = self.tracker[offset:offset + n].view_as(p).clone()
            offset += n
        try:
            self.optimizer.step()
        finally:
            for p, grad in zip(params, local):
                p.grad = grad
        self._set_params(self.accelerated_gossip(self._flat_params()))
        self.steps += 1
        self.stats.steps += 1
        return loss

    def _extra_state(self) -> dict:
        return {"steps": self.steps, "rounds": self.rounds,
                **{k: None if v is None else v.clone() for k, v in (("tracker", self.tracker),
                                                                     ("previous_gradient", self.previous_gradient))}}

    def _load_extra_state(self, extra: dict) -> None:
        self.steps, self.rounds = int(extra["steps"]), int(extra["rounds"])
        device = self._params()[0].device if self._params() else None
        self.tracker, self.previous_gradient = (None if extra[k] is None else extra[k].to(device, copy=True)
                                                for k in ("tracker", "previous_gradient"))
