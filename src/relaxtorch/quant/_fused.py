"""When and how ``OptimLP`` runs its fused step (``_fused_sgd``); everything else takes the unfused path."""
from __future__ import annotations

import numpy as np
import torch

from ..numbers import rounding as R
from ..numbers._modes import ROUNDING_CODES, STOCHASTIC
from ..numbers.formats import FixedPoint, FloatFormat

_FLAT = (FloatFormat, FixedPoint)
_NO_ROLE = (np.uint64(0), np.uint64(0), False, False, 0, 0, 0, np.uint32(0), np.uint32(0), 0)


def _flat_or_none(fmt) -> bool:
    return fmt is None or isinstance(fmt, _FLAT)


def _has_hooks(opt) -> bool:
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
    return bool(opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or _global_optimizer_pre_hooks or _global_optimizer_post_hooks)


def _eligible(lp, params) -> bool:
    opt = lp.optimizer
    if R._cpu is None or type(opt) is not torch.optim.SGD or _has_hooks(opt) or not params:
        return False
    f = lp.formats
    mom = f["momentum"]
    if isinstance(mom, dict):
        if set(mom) - {"momentum_buffer"}:
            return False
        mom = mom.get("momentum_buffer")
    if not all(_flat_or_none(x) for x in (f["grad"], f["weight"], f["acc"], mom)):
        return False
    for group in opt.param_groups:
        if (group.get("maximize") or group.get("fused") or group.get("differentiable")
                or isinstance(group["lr"], torch.Tensor)):
            return False
    for p in params:
        g = p.grad
        if (p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous() or g.is_sparse
                or g.dtype != torch.float32 or not g.is_contiguous() or g.shape != p.shape):
            return False
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None and (buf.dtype != torch.float32 or not buf.is_contiguous() or buf.shape != p.shape):
            return False
    return True


def _role(lp, role, fmt):
    """(mode code, kernel arguments without seeds) of a role, or (-1, None)."""
    if fmt is None:
        return -1, None
    rounding = lp.roundings[role]
    away = R._AWAY[rounding]
    return ROUNDING_CODES[rounding], (away[0], away[1]) + R._kernel_args(R._element_grid(fmt))


def _seeds(lp, code):
    return R._draw_seeds(lp.generator, "cpu") if code == STOCHASTIC else (0, 0)


def _args(seeds, role):
    if role is None:
        return _NO_ROLE
    return (np.uint64(seeds[0]), np.uint64(seeds[1])) + role


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.detach().view(-1).numpy().view(np.uint32)


def sgd_step(lp, params) -> bool:
    """Run OptimLP's step around torch.optim.SGD fused, if it can; False leaves it to the unfused path."""
    if not _eligible(lp, params):
        return False
    from . import _fused_sgd as K
    opt, f = lp.optimizer, lp.formats
    mom_fmt = f["momentum"].get("momentum_buffer") if isinstance(f["momentum"], dict) else f["momentum"]
    gm, grole = _role(lp, "grad", f["grad"])
    am, arole = _role(lp, "acc", f["acc"])
    wm, wrole = _role(lp, "weight", f["weight"])
    mm, mrole = _role(lp, "momentum", mom_fmt)
    # seeds in the unfused path's order: every gradient, the new accumulators, (acc, weight) per
    # parameter, then the state
    gseeds = [_seeds(lp, gm) for _ in params]
    if f["acc"] is not None:
        for p in params:
            if p not in lp._acc:
                lp._acc[p] = lp._q(p.detach().float(), "acc")
    aw = [(_seeds(lp, am), _seeds(lp, wm)) for _ in params]
    group_of = {p: g for g in opt.param_groups for p in g["params"]}
    with_buf = [p for p in params if group_of[p]["momentum"] != 0]
    mseeds = {p: _seeds(lp, mm) for p in with_buf}  # momentum_buffer is SGD's only state
    scaled = lp.grad_scaling != 1.0
    for p, gs_, (as_, ws_) in zip(params, gseeds, aw):
        group = group_of[p]
        momentum, wd = group["momentum"], group["weight_decay"]
        state = opt.state[p]
        buf = state.get("momentum_buffer") if momentum != 0 else None
        first = momentum != 0 and buf is None
        if first:
            buf = torch.empty_like(p, memory_format=torch.contiguous_format)
            state["momentum_buffer"] = buf
        kernel = K.sgd_kernel(gm, am, wm, mm if momentum != 0 else -1, scaled, wd != 0, momentum != 0,
                              bool(group["nesterov"]),
                              bool(group["nesterov"]) and bool(group.get("foreach")) and wd == 0 and momentum != 0)
        pb = _bits(p)
        acc = _bits(lp._acc[p]) if f["acc"] is not None else pb
        with R._threads_for(pb.size):
            kernel(pb, _bits(p.grad), _bits(buf) if buf is not None else pb, acc, first,
                   np.float32(lp.grad_scaling), np.float32(wd), np.float32(momentum),
                   np.float32(1 - group["dampening"]), np.float32(-group["lr"]),
                   _args(gs_, grole), _args(as_, arole), _args(ws_, wrole),
                   _args(mseeds.get(p, (0, 0)), mrole))
        torch.autograd.graph.increment_version(p)
    return True
