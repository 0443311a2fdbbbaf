"""SWALP: stochastic weight averaging of a low-precision SGD run.

Yang, Zhang, Rao, De Sa, Weinberger & Wilson, "SWALP: Stochastic Weight
Averaging in Low-Precision Training", ICML 2019.  Low-precision SGD (weights,
gradients, momentum, accumulators all quantized, stochastic rounding) with a
constant or cyclic learning rate, whose iterates are averaged in higher
precision every ``cycle`` steps after a warm-up of ``start`` steps.  The
averaged model is the one evaluated (recompute batch-norm statistics for it with
``torch.optim.swa_utils.update_bn``).  On quadratics the average converges to
the optimum while the low-precision iterates stall in a noise ball of the size
of the quantization step.

Paper defaults (CIFAR, 8-bit block floating point): SGD momentum 0.9, a constant
(or cyclic) learning rate for the last 25% of the budget, ``cycle`` = one
epoch of steps; averaging in float32.

Wraps any optimizer (usually ``OptimLP(SGD(...))``)::

    opt = SWALP(OptimLP(SGD(model.parameters(), lr=0.05, momentum=0.9), weight=..., grad=...),
                start=warmup_steps, cycle=steps_per_epoch)
    ... opt.step() in the loop ...
    with opt.averaged():     # the model holds the average inside the block
        evaluate(model)
"""
from __future__ import annotations

import contextlib

import torch


class SWALP:
    """Average the parameters of ``optimizer`` every ``cycle`` steps once ``start`` steps passed.

    ``dtype`` is the precision of the running average (float32 as in the paper;
    float64 for long runs).  The wrapped optimizer does the learning; SWALP only
    observes the iterates, so it composes with any optimizer, OptimLP included.
    """

    def __init__(self, optimizer, *, start: int = 0, cycle: int = 1, dtype: torch.dtype = torch.float32):
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"Invalid start: {start!r} (must be an int >= 0)")
        if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 1:
            raise ValueError(f"Invalid cycle: {cycle!r} (must be an int >= 1)")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Invalid dtype: {dtype!r} (must be torch.float32 or torch.float64)")
        self.optimizer = optimizer
        self.start, self.cycle, self.dtype = start, cycle, dtype
        self.steps = 0
        self.n_averaged = 0
        self._average: list[torch.Tensor] = []

    # -- the optimizer interface, delegated -------------------------------------
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def step(self, closure=None):
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.steps += 1
        if self.steps > self.start and (self.steps - self.start) % self.cycle == 0:
            self.update_average()
        return loss

    @torch.no_grad()
    def update_average(self) -> None:
        """Fold the current iterate into the running average (done by ``step`` on schedule)."""
        params = self._params()
        if self.n_averaged == 0:
            self._average = [p.detach().to(self.dtype, copy=True) for p in params]
        else:
            for avg, p in zip(self._average, params):
                avg.add_(p.detach().to(self.dtype) - avg, alpha=1.0 / (self.n_averaged + 1))
        self.n_averaged += 1

    @property
    def average(self) -> list[torch.Tensor]:
        """The averaged parameters (in the order of ``param_groups``)."""
        if self.n_averaged == 0:
            raise RuntimeError("no iterate averaged yet: run more than `start` steps")
        return self._average

    @contextlib.contextmanager
    @torch.no_grad()
    def averaged(self):
        """Inside the block the model's parameters hold the average; restored on exit."""
        saved = [p.detach().clone() for p in self._params()]
        for p, avg in zip(self._params(), self.average):
            p.copy_(avg.to(p.dtype))
        try:
            yield
        finally:
            for p, s in zip(self._params(), saved):
                p.copy_(s)

    @torch.no_grad()
    def swap_in_average(self) -> None:
        """Copy the average into the model for good (end of training)."""
        for p, avg in zip(self._params(), self.average):
            p.copy_(avg.to(p.dtype))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps,
                "n_averaged": self.n_averaged, "average": [a.clone() for a in self._average]}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.n_averaged = int(state["steps"]), int(state["n_averaged"])
        self._average = [a.to(self.dtype).clone() for a in state["average"]]

    def __repr__(self) -> str:
        return f"SWALP(start={self.start}, cycle={self.cycle}, dtype={self.dtype}, optimizer={self.optimizer!r})"
