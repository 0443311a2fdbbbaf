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

Wraps any ``torch.optim.Optimizer`` (usually ``OptimLP(SGD(...))``) and is one, so LR
schedulers step it (``param_groups`` are the wrapped optimizer's) and its ``state_dict`` is
the wrapped optimizer's plus a ``"swalp"`` entry (step count, number averaged, the average)::

    opt = SWALP(OptimLP(SGD(model.parameters(), lr=0.05, momentum=0.9), weight=..., grad=...),
                start=warmup_steps, cycle=steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=warmup_steps)   # any scheduler
    ... opt.step(); sched.step() in the loop ...
    with opt.averaged():     # the model holds the average inside the block
        evaluate(model)

Averaging counts ``step()`` calls of this wrapper: the ``i``-th call (1-based) folds the
iterate in when ``i > start`` and ``(i - start) % cycle == 0`` (Algorithm 1 of the paper).
"""
from __future__ import annotations

import contextlib

import torch

from .._wrapped import WrappedOptimizer


class SWALP(WrappedOptimizer):
    """Average the parameters of ``optimizer`` every ``cycle`` steps once ``start`` steps passed.

    ``dtype`` is the precision of the running average (float32 as in the paper;
    float64 for long runs).  The wrapped optimizer does the learning; SWALP only
    observes the iterates, so it composes with any optimizer, OptimLP included.

    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = SWALP(torch.optim.SGD([w], lr=0.5), start=1, cycle=1)
    >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    >>> for _ in range(3):
    ...     w.grad = torch.ones(2)
    ...     opt.step(); sched.step()
    >>> w.detach().tolist(), opt.average[0].tolist(), opt.n_averaged   # iterates -0.75, -0.875
    ([-0.875, -0.875], [-0.8125, -0.8125], 2)
    """

    _state_key = "swalp"

    def __init__(self, optimizer: torch.optim.Optimizer, *, start: int = 0, cycle: int = 1,
                 dtype: torch.dtype = torch.float32):
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"Invalid start: {start!r} (must be an int >= 0)")
        if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 1:
            raise ValueError(f"Invalid cycle: {cycle!r} (must be an int >= 1)")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Invalid dtype: {dtype!r} (must be torch.float32 or torch.float64)")
        super().__init__(optimizer)
        self.start, self.cycle, self.dtype = start, cycle, dtype
        self.steps = 0
        self.n_averaged = 0
        self._average: list[torch.Tensor] = []

    @torch.no_grad()
    def step(self, closure=None):
        """Step the wrapped optimizer (with ``closure``), then fold the iterate in when scheduled."""
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

    def add_param_group(self, param_group: dict) -> None:
        if self.n_averaged:
            raise RuntimeError("SWALP: cannot add parameters once averaging started (the average has no entry "
                               "for them)")
        self.optimizer.add_param_group(param_group)

    # -- checkpoints: the wrapped optimizer's state dict plus "swalp" (see WrappedOptimizer) ----------
    def _extra_state(self) -> dict:
        return {"steps": self.steps, "n_averaged": self.n_averaged,
                "average": [a.clone() for a in self._average]}

    def _load_extra_state(self, extra: dict) -> None:
        self.steps, self.n_averaged = int(extra["steps"]), int(extra["n_averaged"])
        self._average = [a.to(self.dtype).clone() for a in extra["average"]]

    def __repr__(self) -> str:
        return f"SWALP(start={self.start}, cycle={self.cycle}, dtype={self.dtype}, optimizer={self.optimizer!r})"
