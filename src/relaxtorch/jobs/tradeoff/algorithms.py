"""The training algorithms of the sweep: one function each, one signature.

``fn(model, data, precision, hp, *, seed, objective=None, order="rr") -> Result``

- ``sgd``: SGD with momentum.  At a low precision this is LP-SGD:
  ``quantize_model`` rounds activations (nearest) and errors (stochastic),
  ``OptimLP`` rounds gradients, momentum and weights (``hp.rounding``); at
  ``fp32`` the model is not converted and OptimLP has no format (plain SGD).
- ``swalp``: the same LP-SGD wrapped in ``SWALP``; the float32 average is the
  model evaluated (batch-norm statistics recomputed for it).
- ``svrg``: SVRG with the weights rounded to the precision's weight format after
  every step (LP-SVRG); float32 SVRG at ``fp32``.  Convex models only.
- ``halp``: HALP with ``bits`` = the precision's weight bits (floored) and
  ``mu`` = the L2 strength.  Convex models only; skipped at ``fp32`` (HALP's
  full-precision limit is SVRG).

``seed`` drives the data order and, through a second generator, every
quantizer; the caller seeds torch's global RNG for the model's init.

``order`` names the example order (``relaxtorch.order.ORDERS``): the epoch's permutation
comes from it.  "rr" draws ``torch.randperm(n, generator=generator(seed, "order"))`` every
epoch, the stream of the loop it replaced.  A balancing order gets, before each step, the
per-example gradients of the step's examples at the step's weights (``example_grads`` on
a float32 probe copy of the model, so no quantizer's random stream moves; the data loss, the
L2 term being the same for every example) and is observed with them.  That work — probe
copy, per-example gradients, ``observe`` and ``epoch`` — is timed apart (``sort_seconds``)
and left out of the training clock; ``order_bytes`` is the peak of ``state_bytes``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..._seeding import generator
from ...numbers import quantize
from ...optim import HALP, SVRG, SWALP
from ...order import ORDERS, LinearGrads, RandomReshuffling, example_grads, make, parse_spec
from ...quant import OptimLP, quantize_model
from . import memory
from .hyper import Hyper, lr_at
from .models import CONVEX_MODELS, data_loss, error, l2
from .precisions import Precision

ALGORITHMS = ("sgd", "swalp", "svrg", "halp")
# Below this HALP's offsets diverge on every convex problem of the sweep: with lr 0.5 and L2 0.05, after 12
# epochs 4 bits ends above the starting loss, 5 bits near it, 6 bits at 4e-5..2e-2, 7-8 bits below 1e-6.
HALP_MIN_BITS = 6


@dataclass
class Result:
    """Per-epoch history (epoch 0 = the initial point), bytes stored by role, bits per weight,
    and the example order's cost (seconds of sorting, peak bytes of its state)."""

    history: list[dict]
    memory: dict[str, int]
    weight_bits: float
    extra: dict = field(default_factory=dict)
    sort_seconds: float = 0.0
    order_bytes: int = 0


def unsupported(algorithm: str, model: str, precision: Precision) -> str | None:
    """Why this combination is not run (None when it is)."""
    if algorithm not in ALGORITHMS:
        return f"unknown algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})"
    if algorithm in ("svrg", "halp") and model not in CONVEX_MODELS:
        return f"{algorithm} needs a convex model ({', '.join(CONVEX_MODELS)}), not {model!r}"
    if algorithm == "halp" and precision.is_baseline:
        return "halp at fp32 is svrg (HALP's low-precision offset is its point)"
    bits = int(precision.weight_bits)
    if algorithm == "halp" and bits < HALP_MIN_BITS:
        return (f"halp with {bits}-bit offsets diverges: a grid of {2 ** (bits - 1) - 1} steps per side is too "
                f"coarse for its re-centred offsets (measured on breast_cancer, synthetic_classification and "
                f"digits); HALP needs at least {HALP_MIN_BITS} bits")
    return None


def build_order(spec: str, n: int, model: nn.Module, seed: int):
    """The order ``spec`` (``relaxtorch.order.parse_spec``) for ``n`` examples and the gradients of
    ``model``, its state, and the recorder of its sketches (None unless ``spec`` asks for them)."""
    name, sketch = parse_spec(spec)
    recorder = None if sketch is None else LinearGrads(model, sketch=sketch, generator=generator(seed, "order", "sketch"))
    d = sum(p.numel() for p in model.parameters() if p.requires_grad) if recorder is None else recorder.dim
    order = make(name, n, d=d)
    gen = generator(seed, "order")
    if isinstance(order, RandomReshuffling):  # the stream of the loop before orders were values
        state = order.init(generator(seed, "order", "init"))
        state.generator = gen
    else:
        state = order.init(gen)
    return order, state, recorder


class _Trainer:
    """Data order, loss, per-epoch evaluation and the training clock of one run."""

    def __init__(self, model, data, hp: Hyper, seed: int, objective, order: str = "rr"):
        self.model, self.data, self.hp, self.objective = model, data, hp, objective
        self.n = data.X_train.shape[0]
        self.probe = copy.deepcopy(model) if ORDERS[parse_spec(order)[0]].needs_gradients else None  # float32
        self.order, self.order_state, self.recorder = build_order(order, self.n, model if self.probe is None else self.probe, seed)
        self.qgen = generator(seed, "rounding")
        self.steps_per_epoch = math.ceil(self.n / hp.batch_size)
        self.history: list[dict] = []
        self.seconds = 0.0
        self.sort_seconds = 0.0
        self.order_bytes = self.order.state_bytes(self.order_state)

    def batches(self):
        t0 = time.perf_counter()
        perm, self.order_state = self.order.epoch(self.order_state)
        self.order_bytes = max(self.order_bytes, self.order.state_bytes(self.order_state))
        self.sort_seconds += time.perf_counter() - t0
        for i in range(0, self.n, self.hp.batch_size):
            idx = perm[i:i + self.hp.batch_size]
            x, y = self.data.X_train[idx], self.data.y_train[idx]
            if self.probe is not None:
                self._observe(idx, x, y)
            yield x, y

    def _observe(self, idx, x, y) -> None:
        """Feed the balancing order this step's per-example gradients (timed as sorting)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            for p, q in zip(self.probe.parameters(), self.model.parameters()):
                p.copy_(q)
        self.probe.train(self.model.training)
        grads = example_grads(self.probe, lambda out, t: data_loss(out, t, self.data), x, y, recorder=self.recorder)
        self.order_state = self.order.observe(self.order_state, idx, grads)
        self.order_bytes = max(self.order_bytes, self.order.state_bytes(self.order_state))
        self.sort_seconds += time.perf_counter() - t0

    def loss(self, x, y) -> torch.Tensor:
        return data_loss(self.model(x), y, self.data) + l2(self.model, self.hp.weight_decay)

    @torch.no_grad()
    def record(self, epoch: int) -> None:
        was_training = self.model.training
        self.model.eval()
        d = self.data
        train_loss = float(data_loss(self.model(d.X_train), d.y_train, d) + l2(self.model, self.hp.weight_decay))
        test_error = error(self.model(d.X_test), d.y_test, d)
        self.model.train(was_training)
        sub = self.objective.suboptimality(self.model) if self.objective is not None else None
        self.history.append(dict(epoch=epoch, train_loss=train_loss, test_error=test_error,
                                 suboptimality=sub, seconds=self.seconds))

    def tick(self, t0: float, sort0: float) -> None:
        """Add the training time since ``t0``, less the sorting done since (``sort0``: its total then)."""
        self.seconds += time.perf_counter() - t0 - (self.sort_seconds - sort0)

    def result(self, memory, weight_bits, extra=None) -> Result:
        return Result(self.history, memory, weight_bits, extra or {}, self.sort_seconds, self.order_bytes)


# -- SGD and SWALP -------------------------------------------------------------------------------
def sgd(model, data, precision: Precision, hp: Hyper, *, seed: int, objective=None, order: str = "rr") -> Result:
    """(LP-)SGD with momentum and the ``lr_schedule``."""
    return _sgd_run(model, data, precision, hp, seed, objective, average=False, order=order)


def swalp(model, data, precision: Precision, hp: Hyper, *, seed: int, objective=None, order: str = "rr") -> Result:
    """LP-SGD whose iterates SWALP averages in float32 once ``swa_start`` of the epochs passed."""
    return _sgd_run(model, data, precision, hp, seed, objective, average=True, order=order)


def _sgd_run(model, data, precision, hp, seed, objective, average: bool, order: str) -> Result:
    tr = _Trainer(model, data, hp, seed, objective, order)
    if not precision.is_baseline:
        model = tr.model = quantize_model(model, weight=precision.weight, activation=precision.activation,
                                          error=precision.error, generator=tr.qgen)
    inner = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)
    lp = opt = OptimLP(inner, weight=precision.weight, grad=precision.grad, momentum=precision.momentum,
                       acc=precision.acc, rounding=hp.rounding, generator=tr.qgen)
    total, start = hp.epochs * tr.steps_per_epoch, None
    if average:
        start = min(round(hp.swa_start * hp.epochs), hp.epochs - 1) * tr.steps_per_epoch
        opt = SWALP(lp, start=start, cycle=tr.steps_per_epoch if hp.swa_every == "epoch" else 1)
    tr.record(0)
    step = 0
    for epoch in range(1, hp.epochs + 1):
        model.train()
        t0, sort0 = time.perf_counter(), tr.sort_seconds
        for x, y in tr.batches():
            for group in opt.param_groups:  # SWALP and OptimLP share the SGD's groups
                group["lr"] = lr_at(hp, step, total, start)
            opt.zero_grad()
            tr.loss(x, y).backward()
            opt.step()
            step += 1
        tr.tick(t0, sort0)
        if average and opt.n_averaged > 0:
            _record_average(tr, opt, epoch)
        else:
            tr.record(epoch)
    mem = {("weights" if k == "weight" else k): v for k, v in lp.memory_bytes().items()}
    extra = {}
    if average:
        mem["swa_average"] = memory.count(opt.average)
        extra["n_averaged"] = opt.n_averaged
    return tr.result(mem, precision.weight_bits, extra)


def _record_average(tr: _Trainer, opt: SWALP, epoch: int) -> None:
    model = tr.model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    with torch.no_grad():  # the last iterate, i.e. the same LP-SGD run without averaging
        model.eval()
        iterate_error = error(model(tr.data.X_test), tr.data.y_test, tr.data)
        model.train()
    with opt.averaged():
        if has_bn:
            loader = [tr.data.X_train[i:i + tr.hp.batch_size] for i in range(0, tr.n, tr.hp.batch_size)]
            torch.optim.swa_utils.update_bn(loader, model)
        tr.record(epoch)
    tr.history[-1]["iterate_test_error"] = iterate_error
    if has_bn:
        model.load_state_dict(saved, strict=False)  # the iterate keeps its own statistics


# -- SVRG and HALP --------------------------------------------------------------------------------
def _vr_run(tr: _Trainer, opt, after_step=None) -> None:
    """Recenter on the full gradient every epoch, then two-point minibatch steps (constant lr)."""
    data = tr.data

    def full():
        opt.zero_grad()
        value = tr.loss(data.X_train, data.y_train)
        value.backward()
        return value

    tr.record(0)
    for epoch in range(1, tr.hp.epochs + 1):
        t0, sort0 = time.perf_counter(), tr.sort_seconds
        opt.recenter(full)
        for x, y in tr.batches():
            def closure(x=x, y=y):
                opt.zero_grad()
                value = tr.loss(x, y)
                value.backward()
                return value
            opt.step(closure)
            if after_step is not None:
                after_step()
        tr.tick(t0, sort0)
        tr.record(epoch)


def svrg(model, data, precision: Precision, hp: Hyper, *, seed: int, objective=None, order: str = "rr") -> Result:
    """SVRG; at a low precision the weights are rounded to ``precision.weight`` after each step."""
    tr = _Trainer(model, data, hp, seed, objective, order)
    opt = SVRG(model.parameters(), lr=hp.lr)
    fmt = precision.weight
    after = None
    if fmt is not None:
        @torch.no_grad()
        def after():
            for p in model.parameters():
                p.copy_(quantize(p, fmt, hp.rounding, generator=tr.qgen))

        after()  # the initial point is stored in the weight format too
    _vr_run(tr, opt, after)
    mem = {"weights": memory.count(model.parameters(), fmt)}
    mem.update(memory.state_bytes(opt.state, {"anchor": fmt}))  # anchors are copies of the weights
    return tr.result(mem, precision.bits("weight"))


def halp(model, data, precision: Precision, hp: Hyper, *, seed: int, objective=None, order: str = "rr") -> Result:
    """HALP, ``bits = floor(precision.weight_bits)``: a float32 anchor plus a ``bits``-bit offset."""
    bits = min(int(precision.weight_bits), 24)
    tr = _Trainer(model, data, hp, seed, objective, order)
    opt = HALP(model.parameters(), lr=hp.lr, mu=hp.weight_decay, bits=bits, rounding=hp.rounding,
               generator=tr.qgen)
    _vr_run(tr, opt)
    # the model's float32 parameters are anchor + offset materialized: counted as anchor and offset
    mem = memory.state_bytes(opt.state, {"offset": opt.offset_fmt})
    mem = {"weights": mem.pop("anchor") + mem.pop("offset"), **mem}
    return tr.result(mem, bits, {"offset_format": repr(opt.offset_fmt)})


RUNNERS = {"sgd": sgd, "swalp": swalp, "svrg": svrg, "halp": halp}
