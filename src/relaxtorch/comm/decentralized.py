"""Decentralized SGD on a gossip topology: D-PSGD and DeTAG, as ``torch.optim.Optimizer``s.

Every worker keeps its own model and, after ``loss.backward()`` on its local data,
calls ``step()``: the worker mixes models (or trackers) with its neighbours on the
topology and applies its local direction.  Nothing is ever all-reduced.  One
message per neighbour per gossip round carries the whole model, flattened (all
parameters must share one dtype and device).

Both optimizers keep ``.stats`` (:class:`CommStats`: exact bytes and messages, comm
time, simulated link time), run gossip synchronously (``.overlap = False``) and
save every buffer and the step counter in ``state_dict()``, so a resumed run is
bit-identical.  Start all workers from the same parameters (broadcast from rank 0)
as the papers do.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

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


class DecentralizedOptimizer(torch.optim.Optimizer):
    """Shared machinery: world checks, flattening, stats, consensus distance, state with a step counter."""

    overlap = False

    def __init__(self, params, defaults: dict, topology: Topology, *, group=None, link: LinkModel | None = None):
        if not isinstance(topology, Topology):
            raise ValueError(f"Invalid topology: {topology!r} (a relaxtorch.comm.Topology, e.g. ring(4))")
        if link is not None and not isinstance(link, LinkModel):
            raise ValueError(f"Invalid link: {link!r} (a relaxtorch.comm.LinkModel or None)")
        super().__init__(params, defaults)
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
    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def _gradients(self) -> list[torch.Tensor]:
        """Local gradients with weight decay, one per parameter (zeros where there is none)."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
                if group.get("weight_decay", 0.0):
                    g = g.add(p.detach(), alpha=group["weight_decay"])
                out.append(g)
        return out

    def _gossip(self, flat: torch.Tensor, step: int) -> torch.Tensor:
        return gossip(flat, self.topology, step=step, group=self.group, link=self.link, stats=self.stats)

    def consensus_distance(self) -> float:
        """RMS distance of the workers' models from their average (a collective: call on every rank)."""
        return consensus_distance(self._params(), self.group)

    # -- state -------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {"steps": self.steps}

    def _load_extra_state(self, extra: dict) -> None:
        self.steps = int(extra["steps"])

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["decentralized"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("decentralized", None)
        if extra is None:
            raise ValueError(f"Invalid state_dict: keys {sorted(state_dict)} (not saved by {type(self).__name__})")
        super().load_state_dict(state_dict)
        self._load_extra_state(extra)

    def _closure(self, closure):
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class DPSGD(DecentralizedOptimizer):
    """D-PSGD: Lian, Zhang, Zhang, Hsieh, Zhang & Liu, "Can Decentralized Algorithms Outperform
    Centralized Algorithms? A Case Study for Decentralized Parallel Stochastic Gradient Descent",
    NeurIPS 2017 (Algorithm 1).

    Each step, with ``g_i`` the local gradient at the current ``x_i`` (plus
    ``weight_decay * x_i``)::

        u_i <- momentum * u_i + g_i          (u_i = g_i when momentum = 0; local, never sent)
        x_i <- sum_j W_ij x_j - lr * u_i     (one gossip round on W = topology.matrix(step))

    The gradient is taken before mixing and applied after it, as in the paper, so
    gossip and backward could overlap; here they run one after the other.
    """

    def __init__(self, params, lr: float, topology: Topology, *, momentum: float = 0.0, weight_decay: float = 0.0,
                 group=None, link: LinkModel | None = None):
        check_number("lr", lr)
        check_number("momentum", momentum, high=1.0, high_open=True)
        check_number("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}, topology,
                         group=group, link=link)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        params = self._params()
        directions = self._gradients()
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if group["momentum"]:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        state["momentum_buffer"] = buf = directions[i].clone()
                    else:
                        buf.mul_(group["momentum"]).add_(directions[i])
                    directions[i] = buf
                i += 1
        mixed = self._gossip(self._flat([p.detach() for p in params]), self.steps)
        offset, i = 0, 0
        for group in self.param_groups:
            for p in group["params"]:
                n = p.numel()
                p.copy_(mixed[offset:offset + n].view_as(p) - group["lr"] * directions[i])
                offset += n
                i += 1
        self.steps += 1
        self.stats.steps += 1
        return loss


def accelerated_gossip_eta(second_eigenvalue: float) -> float:
    """Chebyshev momentum of accelerated gossip: ``(1 - sqrt(1 - l^2)) / (1 + sqrt(1 - l^2))``."""
    r = math.sqrt(max(0.0, 1.0 - second_eigenvalue ** 2))
    return (1.0 - r) / (1.0 + r)


class DeTAG(DecentralizedOptimizer):
    """DeTAG: Lu & De Sa, "Optimal Complexity in Decentralized Training", ICML 2021:
    gradient tracking with accelerated gossip, one phase per ``step()``.

    With ``AG(z)`` = ``gossip_rounds`` rounds of accelerated gossip (Liu & Morse,
    "Accelerated linear iterations for distributed averaging", 2011)::

        z_{-1} = z_0 = z;   z_{t+1} = (1 + eta) W z_t - eta z_{t-1};   AG(z) = z_R
        eta = (1 - sqrt(1 - l2^2)) / (1 + sqrt(1 - l2^2)),  l2 = |lambda_2(W)|

    each step, with ``g_i`` the gradient of this phase's mini-batch at ``x_i``::

        y_i <- AG(y_i + g_i - g_i_prev)      (gradient tracker; y = g_prev = 0 at the start)
        m_i <- momentum * m_i + y_i          (m_i = y_i when momentum = 0)
        x_i <- AG(x_i - lr * m_i)

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

    def __init__(self, params, lr: float, topology: Topology, *, gossip_rounds: int | None = None,
                 accelerate: bool = True, momentum: float = 0.0, weight_decay: float = 0.0, group=None,
                 link: LinkModel | None = None):
        check_number("lr", lr)
        check_number("momentum", momentum, high=1.0, high_open=True)
        check_number("weight_decay", weight_decay)
        if not isinstance(topology, Topology):
            raise ValueError(f"Invalid topology: {topology!r} (a relaxtorch.comm.Topology, e.g. ring(4))")
        if gossip_rounds is None:
            gap = topology.spectral_gap
            gossip_rounds = 1 if gap >= 1.0 else max(1, math.ceil(1.0 / math.sqrt(gap)))
        if isinstance(gossip_rounds, bool) or not isinstance(gossip_rounds, int) or gossip_rounds < 1:
            raise ValueError(f"Invalid gossip_rounds: {gossip_rounds!r} (must be an int >= 1)")
        if not isinstance(accelerate, bool):
            raise ValueError(f"Invalid accelerate: {accelerate!r} (must be True or False)")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}, topology,
                         group=group, link=link)
        self.gossip_rounds = gossip_rounds
        self.accelerate = accelerate
        usable = accelerate and not topology.time_varying and topology.symmetric
        self.eta = accelerated_gossip_eta(topology.second_eigenvalue) if usable else 0.0
        self.rounds = 0  # gossip rounds so far: the time index of a time-varying topology

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
        loss = self._closure(closure)
        params = self._params()
        grads = self._gradients()
        tracked = []
        for p, g in zip(params, grads):
            state = self.state[p]
            if "tracker" not in state:
                state["tracker"] = torch.zeros_like(p)
                state["previous_gradient"] = torch.zeros_like(p)
            tracked.append(state["tracker"] + g - state["previous_gradient"])
            state["previous_gradient"] = g.clone()
        y = self.accelerated_gossip(self._flat(tracked))
        offset, moved = 0, []
        for group in self.param_groups:
            for p in group["params"]:
                n = p.numel()
                state = self.state[p]
                state["tracker"] = y[offset:offset + n].view_as(p).clone()
                direction = state["tracker"]
                if group["momentum"]:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        state["momentum_buffer"] = buf = direction.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(direction)
                    direction = buf
                moved.append(p.detach() - group["lr"] * direction)
                offset += n
        x = self.accelerated_gossip(self._flat(moved))
        offset = 0
        for p in params:
            n = p.numel()
            p.copy_(x[offset:offset + n].view_as(p))
            offset += n
        self.steps += 1
        self.stats.steps += 1
        return loss

    def _extra_state(self) -> dict:
        return {"steps": self.steps, "rounds": self.rounds}

    def _load_extra_state(self, extra: dict) -> None:
        self.steps, self.rounds = int(extra["steps"]), int(extra["rounds"])
