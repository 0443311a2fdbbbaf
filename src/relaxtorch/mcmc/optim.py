"""``torch.optim.Optimizer`` shells around the SG-MCMC kernels, for ``nn.Module`` models.

What ``.grad`` must hold: the gradient of the user's loss, the **minibatch mean** negative
log-likelihood (PyTorch's usual ``reduction="mean"``), plus ``-log p(θ) / N`` if the loss
carries the prior.  The energy is then U(θ) = N × (the full-data mean of that loss), and the
shell forms ∇log p̂ = -N (grad + weight_decay·θ), the same N/|B| estimate as
:func:`~relaxtorch.mcmc.grad_estimator`.  ``weight_decay`` λ adds torch.optim.SGD's λθ to
the gradient, i.e. a N(0, 1/(N λ)) prior on each parameter.

``lr`` is the learning rate on that mean loss, as for SGD (and cSG-MCMC's code, Zhang et al.
ICLR 2020):
  * SGLD: ε = 2 lr / N, so θ ← θ - lr (grad + λθ) + N(0, 2 lr T / N): at T = 0 it is SGD;
  * SGHMC and AMAGOLD: η = lr / N, so v ← (1 - α) v - lr (grad + λθ) + N(0, 2 α lr T / N).
Each shell calls its kernel's update function, so given the same generator and gradients a
shell and its kernel (with ``step_size`` mapped as above) agree bit for bit.  ``lr``,
``temperature`` and ``weight_decay`` live in the param groups, so LR schedulers (e.g.
:func:`cyclical_lr`) and an exploration phase at temperature 0 work as with any optimizer;
a group whose lr is 0 is left as it is.  Parameters whose ``.grad`` is None are skipped
(AMAGOLD treats them as having a zero gradient).  A non-finite update raises
FloatingPointError before any parameter is written.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ._tree import randn_leaves, vdot
from .amagold import check_correction_every, drift, energy_value, leapfrog_kick, mh_accept
from .sghmc import sghmc_update
from ._noise import Scratch
from .sgld import (check_data_size, check_friction, check_positive, check_temperature, ensure_finite, sgld_apply_,
                   sgld_plan)


def cyclical_lr(total_steps: int, cycles: int) -> Callable[[int], float]:
    """The cyclical cosine factor of cSG-MCMC (Zhang, Li, Zhang, Chen & Wilson, ICLR 2020):
    ``lr_k = lr_0 / 2 · (cos(π · (k mod L) / L) + 1)``, L = ceil(total_steps / cycles), for
    ``torch.optim.lr_scheduler.LambdaLR`` (k counts scheduler steps from 0).

    >>> f = cyclical_lr(100, 4)
    >>> [round(f(k), 3) for k in (0, 12, 25, 26)]
    [1.0, 0.531, 1.0, 0.996]
    """
    for name, v in (("total_steps", total_steps), ("cycles", cycles)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {name}: {v!r} (a positive int)")
    if cycles > total_steps:
        raise ValueError(f"Invalid cycles: {cycles!r} (at most total_steps = {total_steps})")
    length = math.ceil(total_steps / cycles)
    return lambda k: 0.5 * (math.cos(math.pi * (k % length) / length) + 1.0)


def _generator(generator, params) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    device = params[0].device if params else torch.device("cpu")
    seed = 0 if generator is None else generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"Invalid generator: {generator!r} (a torch.Generator, an int seed, or None for seed 0)")
    return torch.Generator(device=device).manual_seed(seed)


class _Shell(torch.optim.Optimizer):
    """Validation and the gradient convention shared by the shells."""

    sampler = "?"

    def __init__(self, params, defaults: dict, data_size: int, generator):
        check_positive("lr", defaults["lr"])
        check_temperature(defaults["temperature"])
        self._check_decay(defaults["weight_decay"])
        self.data_size = check_data_size(data_size)
        super().__init__(params, defaults)
        for group in self.param_groups:
            check_positive("lr", group["lr"])
            check_temperature(group["temperature"])
            self._check_decay(group["weight_decay"])
            if "friction" in group:
                check_friction(group["friction"])
        self.generator = _generator(generator, [p for g in self.param_groups for p in g["params"]])
        self.steps = 0

    @staticmethod
    def _check_decay(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"Invalid weight_decay: {value!r} (a finite number >= 0)")

    def _lr(self, group) -> float:
        lr = group["lr"]
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"Invalid lr: {lr!r} (set by a scheduler? must be finite and >= 0)")
        return float(lr)

    def _log_post_grads(self, group, params) -> list:
        """∇log p̂ = -N (grad + λθ) for each of ``params`` (None grads as zeros)."""
        wd, out = group["weight_decay"], []
        if not wd and all(p.grad is not None for p in params):
            return torch._foreach_mul([p.grad for p in params], -self.data_size)
        for p in params:
            d = torch.zeros_like(p) if p.grad is None else p.grad
            if wd:
                d = d.add(p, alpha=wd)
            out.append(d.mul(-self.data_size))
        return out

    def _closure(self, closure):
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class SGLD(_Shell):
    """SGLD (Welling & Teh, ICML 2011) as an optimizer: ``lr`` maps to ε = 2 lr / N (module docstring).

    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = SGLD([w], lr=1e-3, data_size=100, generator=torch.Generator().manual_seed(0))
    >>> w.grad = torch.ones(2); opt.step(); w.shape
    torch.Size([2])
    """

    sampler = "SGLD"

    def __init__(self, params, lr: float, *, data_size: int, temperature: float = 1.0, weight_decay: float = 0.0,
                 generator=None):
        super().__init__(params, dict(lr=lr, temperature=temperature, weight_decay=weight_decay), data_size, generator)
        self._scratch = Scratch()

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        self.steps += 1
        self._scratch.reset()
        plans = []
        for group in self.param_groups:
            lr, temp = self._lr(group), group["temperature"]
            ps = [p for p in group["params"] if p.grad is not None]
            if lr == 0 or not ps:
                continue
            eps = 2.0 * lr / self.data_size
            if group["weight_decay"]:
                plan = sgld_plan(ps, self._log_post_grads(group, ps), self.generator, eps, temp, self._scratch)
            else:  # -N folded into the update (no gradient copy): the same bits as the kernel given -N·grad
                plan = sgld_plan(ps, [p.grad for p in ps], self.generator, eps, temp, self._scratch,
                                 -float(self.data_size))
            ensure_finite(self.sampler, self.steps, plan is not None)
            plans.append(plan)
        for plan in plans:
            sgld_apply_(plan)
        return loss


class SGHMC(_Shell):
    """SGHMC (Chen, Fox & Guestrin, ICML 2014) as an optimizer: η = lr / N, ``friction`` α per step.

    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = SGHMC([w], lr=1e-3, friction=0.1, data_size=100)
    >>> w.grad = torch.ones(2); opt.step(); opt.state[w]["momentum_buffer"].shape
    torch.Size([2])
    """

    sampler = "SGHMC"

    def __init__(self, params, lr: float, *, friction: float, data_size: int, temperature: float = 1.0,
                 weight_decay: float = 0.0, generator=None):
        check_friction(friction)
        super().__init__(params, dict(lr=lr, friction=friction, temperature=temperature, weight_decay=weight_decay),
                         data_size, generator)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        self.steps += 1
        updates = []
        for group in self.param_groups:
            lr, temp = self._lr(group), group["temperature"]
            ps = [p for p in group["params"] if p.grad is not None]
            if lr == 0 or not ps:
                continue
            vs = [self.state[p].get("momentum_buffer", None) for p in ps]
            vs = [torch.zeros_like(p) if v is None else v for p, v in zip(ps, vs)]
            noise = randn_leaves(ps, self.generator) if temp > 0 else None
            new_x, new_v = sghmc_update(ps, vs, self._log_post_grads(group, ps), noise, lr / self.data_size,
                                        group["friction"], temp)
            updates.append((ps, new_x, new_v))
        ensure_finite(self.sampler, self.steps, [x for _, new, _ in updates for x in new])
        for ps, new_x, new_v in updates:
            for p, x, v in zip(ps, new_x, new_v):
                p.copy_(x)
                self.state[p]["momentum_buffer"] = v
        return loss


class AMAGOLD(_Shell):
    """AMAGOLD (Zhang, Cooper & De Sa, AISTATS 2020) as an optimizer: η = lr / N, ``friction`` α,
    an MH test every ``correction_every`` steps with ``full_energy()``.

    ``full_energy()`` returns U(θ) at the model's current parameters: N × the full-data mean of
    the loss (the NLL summed over all data, plus the prior if the loss carries it); the shell
    adds weight_decay's prior.  Return it in float64 for large N.  The model's parameters are
    the trajectory in flight (where the next gradient must be taken); :meth:`sample` gives the
    chain's current sample θ₀ and ``acceptance_rate`` the accepted fraction of rounds.  A
    round holds the lr its first step found (read at the step that closes the previous round);
    that lr must be > 0.

    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> opt = AMAGOLD([w], lr=0.01, friction=0.5, correction_every=2, data_size=1,
    ...               full_energy=lambda: 0.5 * (w.double() ** 2).sum())
    >>> for _ in range(4):
    ...     w.grad = w.detach().clone(); opt.step()
    >>> opt.rounds, 0 <= opt.acceptance_rate <= 1
    (2, True)
    """

    sampler = "AMAGOLD"

    def __init__(self, params, lr: float, *, friction: float, correction_every: int,
                 full_energy: Callable[[], torch.Tensor], data_size: int, temperature: float = 1.0,
                 weight_decay: float = 0.0, resample_momentum: bool = False, generator=None):
        check_friction(friction)
        self.correction_every = check_correction_every(correction_every)
        if not callable(full_energy):
            raise ValueError(f"Invalid full_energy: {full_energy!r} (a closure returning the full-data U(θ))")
        self.full_energy = full_energy
        self.resample_momentum = bool(resample_momentum)
        super().__init__(params, dict(lr=lr, friction=friction, temperature=temperature, weight_decay=weight_decay),
                         data_size, generator)
        temps = {g["temperature"] for g in self.param_groups}
        if len(temps) != 1:
            raise ValueError(f"Invalid temperature: {sorted(temps)!r} (AMAGOLD's MH test needs one temperature)")
        self.temperature = temps.pop()
        self.round_step, self.rounds, self.accepted = 0, 0, 0
        self._u0: Optional[float] = None
        self._rho = None

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.rounds if self.rounds else math.nan

    def sample(self) -> list:
        """The chain's current sample θ₀ (clones, in parameter order)."""
        return [self.state[p]["start"].clone() if "start" in self.state[p] else p.detach().clone()
                for g in self.param_groups for p in g["params"]]

    def _energy(self) -> float:
        with torch.no_grad():
            u = energy_value(self.sampler, self.steps, self.full_energy())
            for group in self.param_groups:
                if group["weight_decay"]:
                    ps = group["params"]
                    u += 0.5 * self.data_size * group["weight_decay"] * float(vdot(ps, ps))
        return u

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        self.steps += 1
        groups = [(g, g["params"]) for g in self.param_groups if g["params"]]
        if self._u0 is None:
            self._u0 = self._energy()
            for group, ps in groups:
                group["held_eta"] = check_positive("lr", self._lr(group)) / self.data_size
                for p in ps:
                    self.state[p].update(momentum=torch.zeros_like(p), start=p.detach().clone(),
                                         start_momentum=torch.zeros_like(p))
            self._rho = torch.zeros((), dtype=torch.float64, device=groups[0][1][0].device)
        last = self.round_step + 1 == self.correction_every
        rho, moves = self._rho, []
        for group, ps in groups:
            eta = group["held_eta"]
            momenta = [self.state[p]["momentum"] for p in ps]
            noise = randn_leaves(ps, self.generator) if self.temperature > 0 else None
            new_p, d_rho = leapfrog_kick(momenta, self._log_post_grads(group, ps), noise, eta, group["friction"],
                                         self.temperature)
            rho = rho + d_rho
            moves.append((ps, drift(ps, new_p, eta, 0.5 if last else 1.0), new_p))
        ensure_finite(self.sampler, self.steps, [x for _, new, _ in moves for x in new])
        for ps, new_x, new_p in moves:
            for p, x, m in zip(ps, new_x, new_p):
                p.copy_(x)
                self.state[p]["momentum"] = m
        if not last:
            self._rho, self.round_step = rho, self.round_step + 1
            return loss
        self._correct(groups, rho)
        return loss

    def _correct(self, groups, rho) -> None:
        u1 = self._energy()
        rho_value = float(rho)
        if math.isnan(rho_value):
            raise FloatingPointError(f"{self.sampler}: the trajectory's energy change is NaN at step {self.steps}")
        log_ratio = self._u0 - u1 + rho_value
        if math.isnan(log_ratio):
            log_ratio = -math.inf
        accept = mh_accept(self.generator, log_ratio, self.temperature, groups[0][1][0].device)
        self.rounds, self.accepted = self.rounds + 1, self.accepted + int(accept)
        self.last_log_accept_ratio = log_ratio
        if accept:
            self._u0 = u1
        for group, ps in groups:
            if accept:
                thetas, momenta = [p.detach().clone() for p in ps], [self.state[p]["momentum"] for p in ps]
            else:
                thetas = [self.state[p]["start"] for p in ps]
                momenta = [self.state[p]["start_momentum"].neg() for p in ps]
            if self.resample_momentum:
                momenta = ([z.mul_(math.sqrt(self.temperature)) for z in randn_leaves(momenta, self.generator)]
                           if self.temperature > 0 else [torch.zeros_like(m) for m in momenta])
            eta = check_positive("lr", self._lr(group)) / self.data_size
            group["held_eta"] = eta
            for p, x, theta, m in zip(ps, drift(thetas, momenta, eta, 0.5), thetas, momenta):
                p.copy_(x)
                self.state[p].update(momentum=m, start=theta, start_momentum=m)
        self._rho, self.round_step = torch.zeros_like(rho), 0
