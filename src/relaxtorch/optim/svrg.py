"""Variance-reduced SGD: SVRG and its low-precision, bit-centred form HALP.

SVRG (Johnson & Zhang, NeurIPS 2013): every epoch, take an anchor ``w~`` and its
full gradient ``g~``; inner steps use ``u = grad_i(w) - grad_i(w~) + g~``.

HALP (De Sa, Leszczynski, Zhang, Marzoev, Aberger, Olukotun & Re, "High-Accuracy
Low-Precision Training", 2018): the inner iterate is stored as ``w = w~ + z`` with
the offset ``z`` in ``bits``-bit fixed point, re-centred every epoch ("bit
centering"), and the fixed-point scale set from the full gradient,
``delta = ||g~|| / (mu (2**(bits-1) - 1))``: the optimum lies within
``||g~|| / mu`` of the anchor for a ``mu``-strongly convex loss, so the grid
shrinks as training converges and HALP keeps SVRG's linear rate where plain
low-precision SGD stalls at a quantization noise floor.  The scale is rounded up
to a power of two (the fixed-point exponent: the paper's dynamic bias
adjustment), so it never overflows nor wastes range by more than 2x.

Use in a loop::

    opt = HALP(model.parameters(), lr=0.1, mu=1e-3, bits=8)
    for epoch in range(epochs):
        opt.recenter(full_loss_closure)          # anchor + full gradient
        for xb, yb in loader:
            def closure():
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                return loss
            opt.step(closure)                    # evaluates closure at w and at w~

The closure must compute the same minibatch loss each time it is called.
"""
from __future__ import annotations

import math

import torch

from ..numbers import FixedPoint, quantize


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a positive number)")


class _VarianceReduced(torch.optim.Optimizer):
    """Shared machinery: anchor, full gradient, two-point closure evaluation."""

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _grads(self):
        return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self._params()]

    def recenter(self, full_closure):
        """Make the current point the anchor and store the full gradient there.

        ``full_closure`` zeroes gradients, computes the loss over the whole data
        set, calls ``backward()`` and returns the loss (which is returned here).
        """
        loss = full_closure()
        for p, g in zip(self._params(), self._grads()):
            st = self.state[p]
            st["anchor"] = p.detach().clone()
            st["full_grad"] = g
        self._on_recenter()
        return loss

    def _on_recenter(self) -> None:
        pass

    def step(self, closure):  # noqa: D102 - torch.optim signature
        if closure is None:
            raise ValueError("Invalid closure: None (SVRG-type optimizers evaluate the minibatch twice)")
        params = self._params()
        if any("anchor" not in self.state[p] for p in params):
            raise RuntimeError("call recenter(full_closure) before the first step")
        with torch.no_grad():
            current = [p.detach().clone() for p in params]
            for p in params:
                p.copy_(self.state[p]["anchor"])
        with torch.enable_grad():
            closure()
        at_anchor = self._grads()
        with torch.no_grad():
            for p, w in zip(params, current):
                p.copy_(w)
        with torch.enable_grad():
            loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    st = self.state[p]
                    g = p.grad if p.grad is not None else torch.zeros_like(p)
                    self._update(p, g - at_anchor[_position(params, p)] + st["full_grad"], group["lr"], st)
        return loss

    def _update(self, p, u, lr, state) -> None:
        raise NotImplementedError


def _position(params, p) -> int:
    return next(i for i, q in enumerate(params) if q is p)


class SVRG(_VarianceReduced):
    """Full-precision SVRG (Johnson & Zhang 2013): ``w <- w - lr * u``."""

    def __init__(self, params, lr: float):
        _check_positive("lr", lr)
        super().__init__(params, dict(lr=lr))

    def _update(self, p, u, lr, state) -> None:
        p.add_(u, alpha=-lr)


class HALP(_VarianceReduced):
    """HALP (De Sa et al. 2018): SVRG whose offset from the anchor is ``bits``-bit fixed point.

    ``mu`` is the strong-convexity constant (for L2-regularised losses, at least
    the regularisation strength); ``bits`` the fixed-point width of the offset
    (the paper uses 8 or 16); the offset is rounded stochastically (unbiased)
    with ``generator``.  ``offset_fmt`` is the offsets' current grid (one ``FixedPoint``
    for all parameters, re-chosen at every re-centring from the full gradient's norm;
    None before the first).
    """

    def __init__(self, params, lr: float, mu: float, *, bits: int = 8,
                 rounding: str = "stochastic", generator=None):
        _check_positive("lr", lr)
        _check_positive("mu", mu)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 24:
            raise ValueError(f"Invalid bits: {bits!r} (must be an int in 2..24)")
        super().__init__(params, dict(lr=lr))
        self.mu, self.bits, self.rounding = mu, bits, rounding
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator().manual_seed(generator)
        self.generator = generator
        quantize(torch.zeros(1), FixedPoint(bits, 0), rounding)  # validates rounding eagerly
        self.offset_fmt: FixedPoint | None = None

    def _on_recenter(self) -> None:
        sq = sum(float(self.state[p]["full_grad"].double().pow(2).sum()) for p in self._params())
        delta = math.sqrt(sq) / (self.mu * (2 ** (self.bits - 1) - 1))
        fl = 149 if delta <= 0 else min(149, max(-126, math.floor(-math.log2(delta))))
        self.offset_fmt = FixedPoint(self.bits, fl)
        for p in self._params():
            self.state[p]["offset"] = torch.zeros_like(p)

    def _update(self, p, u, lr, state) -> None:
        z = quantize(state["offset"] - lr * u, self.offset_fmt, self.rounding, generator=self.generator)
        state["offset"] = z
        p.copy_(state["anchor"] + z)
