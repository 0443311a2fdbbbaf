"""``OptimLP``: low-precision training around any torch optimizer (QPyTorch's OptimLP, SWALP, HALP).

``OptimLP(SGD(...), weight=FP8_E4M3, grad=FP8_E5M2, momentum=FP8_E4M3)`` rounds,
around every ``step()`` of the wrapped optimizer:

1. the gradients (times ``grad_scaling``) to ``grad``, in place in ``p.grad``;
2. the wrapped optimizer steps (computing in the parameters' float dtype);
3. the weights to ``weight``.  With ``acc`` (a wider format, e.g. FP16 or
   FP32) each weight has an accumulator copy: the optimizer updates the
   accumulator, which is rounded to ``acc``, and the model's weight becomes
   ``quantize(acc, weight)``: small updates add up in the accumulator instead of
   being lost to the weight's grid (the full-precision accumulator of
   QPyTorch, SWALP and HALP);
4. every float state tensor shaped like its parameter (``momentum_buffer``,
   Adam's ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, Adagrad's ``sum``...)
   to ``momentum``; the ``step`` counters are never rounded.

State is therefore *stored* in ``momentum`` between steps, while within a step
the optimizer uses the unrounded new value (as QPyTorch's OptimLP does; SWALP's
algorithm rounds the momentum before the weight update, a difference of one
zero-mean rounding per step).  Adam's ``exp_avg_sq`` holds squared gradients:
non-negative (stochastic and nearest rounding keep it so) but spanning twice
the exponent range, so a narrow format flushes it to zero; pass a mapping such as
``momentum={"exp_avg": FP8_E4M3, "exp_avg_sq": BF16}`` to choose per state key
(keys not listed stay unrounded).

``OptimLP(torch.optim.SGD(...))`` with float or fixed-point formats (or none) on
contiguous float32 CPU parameters runs all of this as one compiled pass per
parameter (``_fused_sgd``), bit-identical to the steps above; ``fused=False``
forces the unfused path, as do other optimizers, block formats, hooks on the
wrapped optimizer and options the kernel does not cover (maximize, torch's own
fused SGD, a tensor learning rate).

Roles left ``None`` are not rounded: with every role ``None`` and
``grad_scaling=1`` OptimLP is exactly the wrapped optimizer.  Only parameters
with a gradient are touched, as torch optimizers skip the others.  ``step``
evaluates a closure once, before rounding: optimizers that re-evaluate it
within their step (LBFGS) are refused at construction.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from numbers import Real

import torch

from .._wrapped import WrappedOptimizer
from ..numbers import quantize, quantize_
from . import _fused
from ._checks import check_format, make_generator, resolve_roundings, tensor_bits

DEFAULT_ROUNDING = {"weight": "stochastic", "grad": "stochastic", "momentum": "stochastic", "acc": "nearest"}
_QUANTIZABLE = (torch.float32, torch.float16, torch.bfloat16)


def _needs_closure(optimizer) -> bool:
    """Whether ``optimizer.step`` requires a closure (LBFGS): it evaluates the model inside its step."""
    try:
        closure = inspect.signature(type(optimizer).step).parameters.get("closure")
    except (TypeError, ValueError):  # pragma: no cover - a step without a signature
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


class OptimLP(WrappedOptimizer):
    """Wrap ``optimizer`` so that weights, gradients, optimizer state and accumulators are low precision.

    Formats (None: not rounded): ``weight``, ``grad``, ``momentum`` (a format,
    or a mapping from state key to format), ``acc``.  Roundings default to
    stochastic except the accumulator's (nearest: it is the wide copy);
    ``rounding`` sets every role not given explicitly.  ``generator`` (a
    torch.Generator or an int seed) drives stochastic rounding; its state is
    saved by ``state_dict`` and restored by ``load_state_dict``, so a resumed run
    repeats the same bits.  ``grad_scaling`` multiplies the gradients before
    they are rounded (e.g. ``1/S`` to undo a loss scale ``S``).

    OptimLP is a ``torch.optim.Optimizer`` (LR schedulers and SWALP accept it):
    ``param_groups``, ``state`` and ``defaults`` are the wrapped optimizer's.
    Accumulators start from the weights at the first step; call
    ``reset_accumulators()`` after changing the weights outside ``step()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, weight=None, grad=None, momentum=None, acc=None,
                 weight_rounding=None, grad_rounding=None, momentum_rounding=None, acc_rounding=None,
                 rounding=None, generator=None, grad_scaling: float = 1.0, fused: bool = True):
        super().__init__(optimizer)
        self.fused = bool(fused)
        if _needs_closure(optimizer):
            raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} (its step re-evaluates the closure, "
                             "and OptimLP rounds once around a whole step; use a first-order optimizer such "
                             "as SGD or Adam)")
        for name, fmt in (("weight", weight), ("grad", grad), ("acc", acc)):
            check_format(name, fmt)
        if isinstance(momentum, Mapping):
            for key, fmt in momentum.items():
                if not isinstance(key, str):
                    raise TypeError(f"Invalid momentum: key {key!r} (state keys are strings)")
                check_format(f"momentum[{key!r}]", fmt)
            momentum = dict(momentum)
        else:
            check_format("momentum", momentum)
        if (isinstance(grad_scaling, bool) or not isinstance(grad_scaling, Real)
                or not math.isfinite(grad_scaling) or grad_scaling <= 0):
            raise ValueError(f"Invalid grad_scaling: {grad_scaling!r} (must be a finite number > 0)")
        self.formats = {"weight": weight, "grad": grad, "momentum": momentum, "acc": acc}
        self.roundings = resolve_roundings({"weight": weight_rounding, "grad": grad_rounding,
                                            "momentum": momentum_rounding, "acc": acc_rounding},
                                           DEFAULT_ROUNDING, rounding)
        self.grad_scaling = float(grad_scaling)
        self.generator = make_generator(generator)
        self._acc: dict[torch.Tensor, torch.Tensor] = {}
        self._check_params(self._params())

    def _check_params(self, params) -> None:
        f = self.formats
        if all(v is None for v in f.values()):
            return
        for p in params:
            if p.dtype not in _QUANTIZABLE:
                raise ValueError(f"Invalid optimizer: has a {p.dtype} parameter (formats are simulated in "
                                 "float32, float16 or bfloat16; convert the model with .float())")
            if f["acc"] is not None and p.dtype != torch.float32:
                raise ValueError(f"Invalid acc: {f['acc']!r} (parameters of dtype {p.dtype} cannot hold the "
                                 "accumulator's values during the step; keep the model float32)")

    # -- the step -------------------------------------------------------------------------------
    def _q(self, t: torch.Tensor, role: str, fmt=None) -> torch.Tensor:
        fmt = self.formats[role] if fmt is None else fmt
        return quantize(t, fmt, self.roundings[role], generator=self.generator)

    def _q_(self, t: torch.Tensor, role: str, fmt=None) -> torch.Tensor:
        fmt = self.formats[role] if fmt is None else fmt
        return quantize_(t, fmt, self.roundings[role], generator=self.generator)

    @torch.no_grad()
    def step(self, closure=None):
        """Round the gradients, step the wrapped optimizer, round weights, accumulators and state."""
        loss = self._evaluate(closure)
        f = self.formats
        params = [p for p in self._params() if p.grad is not None]
        if self.fused and _fused.sgd_step(self, params):
            return loss
        for p in params:  # rounded in place, tensor by tensor: no temporaries on the hot path
            if self.grad_scaling != 1.0:
                p.grad.mul_(self.grad_scaling)
            if f["grad"] is not None:
                self._q_(p.grad, "grad")
        if f["acc"] is not None:
            for p in params:
                if p not in self._acc:
                    self._acc[p] = self._q(p.detach().float(), "acc")
                p.copy_(self._acc[p])
        self.optimizer.step()
        for p in params:
            if f["acc"] is not None:
                self._acc[p].copy_(self._q_(p, "acc"))
            if f["weight"] is not None:
                self._q_(p, "weight")
        if f["momentum"] is not None:
            for p in params:
                self._round_state(p)
        return loss

    def _round_state(self, p: torch.Tensor) -> None:
        fmts = self.formats["momentum"]
        for key, value in self.optimizer.state.get(p, {}).items():
            fmt = fmts.get(key) if isinstance(fmts, dict) else fmts
            if (fmt is None or key == "step" or not isinstance(value, torch.Tensor)
                    or value.dtype not in _QUANTIZABLE or value.shape != p.shape):
                continue
            self._q_(value, "momentum", fmt)

    @torch.no_grad()
    def reset_accumulators(self) -> None:
        """Forget the accumulators; the next step starts them from the current weights."""
        self._acc.clear()

    # -- the rest of the optimizer interface ---------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        self._check_params(params)
        self.optimizer.add_param_group({**param_group, "params": params})

    # -- checkpoints: the wrapped optimizer's state dict plus "optim_lp" (see WrappedOptimizer) --------
    _state_key = "optim_lp"
    _extra_optional = True  # a bare optimizer's state dict loads (no accumulators yet)

    def _extra_state(self) -> dict:
        """Accumulators (by parameter index) and the generator's state."""
        index = {p: i for i, p in enumerate(self._params())}
        extra = {"acc": {index[p]: a.clone() for p, a in self._acc.items()}}
        if self.generator is not None:
            extra["generator_state"] = self.generator.get_state()
        return extra

    def _load_extra_state(self, extra: dict) -> None:
        params = self._params()
        self._acc = {params[i]: a.to(device=params[i].device, dtype=torch.float32, copy=True)
                     for i, a in extra.get("acc", {}).items()}
        if self.generator is not None and "generator_state" in extra:
            self.generator.set_state(extra["generator_state"])

    # -- counting the cost -------------------------------------------------------------------------------
    def memory_bits(self) -> dict[str, int]:
        """Bits stored, by role: ``"weight"``, ``"acc"`` and each optimizer state key.

        Counts the tensors that exist (state and accumulators appear at the
        first step) at their format's bits, shared block scales included; a role
        without a format counts at its tensor's dtype width, as do state tensors
        that are not rounded (the ``step`` counters).
        """
        f, out = self.formats, {}

        def add(key, bits):
            out[key] = out.get(key, 0) + bits

        for p in self._params():
            add("weight", tensor_bits(p, f["weight"]))
            if p in self._acc:
                add("acc", tensor_bits(self._acc[p], f["acc"]))
            for key, v in self.optimizer.state.get(p, {}).items():
                if not isinstance(v, torch.Tensor):
                    continue
                fmt = f["momentum"].get(key) if isinstance(f["momentum"], dict) else f["momentum"]
                rounded = key != "step" and v.dtype in _QUANTIZABLE and v.shape == p.shape
                add(key, tensor_bits(v, fmt if rounded else None))
        return out

    def memory_bytes(self) -> dict[str, int]:
        """``memory_bits()`` in bytes (rounded up per role)."""
        return {k: math.ceil(b / 8) for k, b in self.memory_bits().items()}

    def bits_per_param(self) -> float:
        """Stored bits (weights, accumulators, optimizer state) per parameter."""
        n = sum(p.numel() for p in self._params())
        return sum(self.memory_bits().values()) / n if n else 0.0

    def __repr__(self) -> str:
        f, r = self.formats, self.roundings
        roles = ", ".join(f"{k}={f[k]!r}" + (f" ({r[k]})" if f[k] is not None else "") for k in f)
        scale = "" if self.grad_scaling == 1.0 else f", grad_scaling={self.grad_scaling}"
        return f"OptimLP({roles}{scale}, optimizer={self.optimizer!r})"
